//! Credentials for pulling from private registries, found the way Docker users expect: a
//! `config.json` with `auths`, `credHelpers` and `credsStore` (the `docker-credential-*`
//! protocol, both read by the `docker_credential` crate), and natively for ECR (`GetAuthorizationToken` with the instance's role, cached per
//! registry until shortly before the token expires). A secret never leaves this module except
//! in the header Docker is sent; `Login`'s Debug hides it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use base64::Engine;
use tokio::sync::{Mutex, OnceCell};

use crate::config::RegistrySettings;

/// An ECR token is used until this long before it expires.
const ECR_MARGIN: Duration = Duration::from_secs(300);
/// A credential helper answers within this or is given up on.
const HELPER_TIMEOUT: Duration = Duration::from_secs(30);
/// What Docker calls Docker Hub in `config.json`.
const DOCKER_HUB: &str = "https://index.docker.io/v1/";
/// The user name that says a login's secret is an identity token (Docker's convention).
pub const IDENTITY_TOKEN: &str = "<token>";

/// A user name and secret for one registry, and where they came from (named in errors).
#[derive(Clone)]
pub struct Login {
    pub username: String,
    pub secret: String,
    pub from: String,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Login({} from {}, secret hidden)",
            self.username, self.from
        )
    }
}

#[derive(Debug, thiserror::Error)]
#[error("credentials for registry {host} ({from}): {why}")]
pub struct AuthError {
    pub host: String,
    pub from: String,
    pub why: String,
}

pub struct RegistryAuth {
    settings: RegistrySettings,
    ecr: OnceCell<aws_sdk_ecr::Client>,
    /// ECR logins by registry host, with when they stop being used.
    tokens: Mutex<HashMap<String, (Login, SystemTime)>>,
}

/// The registry host an image reference names: `127.0.0.1:5000/team/web:2` → `127.0.0.1:5000`,
/// `web:2` and `library/web` → Docker Hub.
pub fn registry_host(image: &str) -> &str {
    match image.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => first,
        _ => "docker.io",
    }
}

fn is_docker_hub(host: &str) -> bool {
    matches!(
        host,
        "docker.io" | "index.docker.io" | "registry-1.docker.io"
    )
}

/// `ACCOUNT.dkr.ecr.REGION.amazonaws.com[.cn]` → REGION.
fn ecr_region_of(host: &str) -> Option<&str> {
    let rest = host.split_once(".dkr.ecr.")?.1;
    let region = rest
        .strip_suffix(".amazonaws.com")
        .or_else(|| rest.strip_suffix(".amazonaws.com.cn"))?;
    (!region.is_empty()).then_some(region)
}

impl RegistryAuth {
    pub fn new(settings: RegistrySettings) -> RegistryAuth {
        RegistryAuth {
            settings,
            ecr: OnceCell::new(),
            tokens: Mutex::new(HashMap::new()),
        }
    }

    /// The config file read: the configured one, else `$DOCKER_CONFIG/config.json`, else
    /// `~/.docker/config.json`.
    fn auth_file(&self) -> Option<PathBuf> {
        if let Some(f) = &self.settings.auth_file {
            return Some(f.clone());
        }
        let dir = std::env::var_os("DOCKER_CONFIG")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".docker")))?;
        Some(dir.join("config.json"))
    }

    fn is_ecr(&self, host: &str) -> bool {
        self.settings.ecr_registries.iter().any(|h| h == host) || ecr_region_of(host).is_some()
    }

    /// The login for pulling `image`, or None when nothing names its registry (an anonymous
    /// pull).
    pub async fn login_for(&self, image: &str) -> Result<Option<Login>, AuthError> {
        let host = registry_host(image);
        if self.is_ecr(host) {
            return self.ecr_login(host).await.map(Some);
        }
        let Some(file) = self.auth_file() else {
            return Ok(None);
        };
        let from = file.display().to_string();
        let fail = |why: String| AuthError {
            host: host.to_string(),
            from: from.clone(),
            why,
        };
        let text = match crate::fsutil::read_bounded(&file, crate::fsutil::CONFIG_MAX_BYTES) {
            Ok(t) => t,
            // only a file the config names must exist
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    && self.settings.auth_file.is_none() =>
            {
                return Ok(None)
            }
            Err(e) => return Err(fail(format!("reading it: {e}"))),
        };
        // Docker's own key for Docker Hub; other registries by host
        let server = if is_docker_hub(host) {
            DOCKER_HUB.to_string()
        } else {
            host.to_string()
        };
        // a credential helper is a program that may take its time: off the async threads
        let lookup = tokio::task::spawn_blocking(move || {
            docker_credential::get_credential_from_reader(text.as_slice(), &server)
        });
        let found = tokio::time::timeout(HELPER_TIMEOUT, lookup)
            .await
            .map_err(|_| {
                fail(format!(
                    "its credential helper gave no answer within {} s",
                    HELPER_TIMEOUT.as_secs()
                ))
            })?
            .map_err(|e| fail(e.to_string()))?;
        use docker_credential::{CredentialRetrievalError as E, DockerCredential as C};
        match found {
            Ok(C::UsernamePassword(username, secret)) => Ok(Some(Login {
                username,
                secret,
                from: format!("auths or helpers in {from}"),
            })),
            Ok(C::IdentityToken(token)) => Ok(Some(Login {
                username: IDENTITY_TOKEN.into(),
                secret: token,
                from: format!("auths or helpers in {from}"),
            })),
            Err(E::NoCredentialConfigured) => Ok(None),
            Err(E::HelperFailure { stdout, stderr, .. })
                if format!("{stdout}{stderr}").contains("credentials not found") =>
            {
                Ok(None)
            }
            Err(E::ConfigReadError) => Err(fail("not readable as Docker's config.json".into())),
            Err(e) => Err(fail(e.to_string().trim().replace('\n', " "))),
        }
    }

    async fn ecr_login(&self, host: &str) -> Result<Login, AuthError> {
        let fail = |why: String| AuthError {
            host: host.to_string(),
            from: "ECR GetAuthorizationToken".into(),
            why,
        };
        let mut tokens = self.tokens.lock().await;
        if let Some((login, until)) = tokens.get(host) {
            if SystemTime::now() < *until {
                return Ok(login.clone());
            }
        }
        let client = self
            .ecr
            .get_or_init(|| async {
                let region = self
                    .settings
                    .ecr_region
                    .clone()
                    .or_else(|| ecr_region_of(host).map(str::to_string));
                let conf = crate::sdk::config(region.as_deref(), crate::sdk::Deadlines::CALL).await;
                aws_sdk_ecr::Client::new(&conf)
            })
            .await;
        let out = client
            .get_authorization_token()
            .send()
            .await
            .map_err(|e| fail(aws_sdk_ecr::error::DisplayErrorContext(e).to_string()))?;
        let data = out
            .authorization_data()
            .first()
            .ok_or_else(|| fail("ECR answered no authorization data".into()))?;
        let token = data
            .authorization_token()
            .ok_or_else(|| fail("ECR answered no token".into()))?;
        let (username, secret) = decode_basic(token).map_err(fail)?;
        let login = Login {
            username,
            secret,
            from: "ECR GetAuthorizationToken".into(),
        };
        // used until shortly before it expires; one that expires sooner (or has expired, as
        // moto's do) serves this pull only
        if let Some(expires) = data.expires_at() {
            let expires =
                SystemTime::UNIX_EPOCH + Duration::from_secs(expires.secs().max(0) as u64);
            if let Some(until) = expires.checked_sub(ECR_MARGIN) {
                if until > SystemTime::now() {
                    tokens.insert(host.to_string(), (login.clone(), until));
                }
            }
        }
        Ok(login)
    }
}

/// `base64("user:secret")` → (user, secret).
fn decode_basic(b64: &str) -> Result<(String, String), String> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|e| format!("the auth value is not base64: {e}"))?;
    let text = String::from_utf8(raw).map_err(|_| "the auth value is not text".to_string())?;
    let (user, secret) = text
        .split_once(':')
        .ok_or_else(|| "the auth value is not USER:SECRET".to_string())?;
    Ok((user.to_string(), secret.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth_with(file: &Path) -> RegistryAuth {
        RegistryAuth::new(RegistrySettings {
            auth_file: Some(file.to_owned()),
            ..Default::default()
        })
    }

    #[test]
    fn registry_hosts_are_read_as_docker_reads_them() {
        assert_eq!(registry_host("127.0.0.1:5000/team/web:2"), "127.0.0.1:5000");
        assert_eq!(registry_host("localhost/web"), "localhost");
        assert_eq!(registry_host("ghcr.io/o/web@sha256:ab"), "ghcr.io");
        assert_eq!(registry_host("team/web:2"), "docker.io");
        assert_eq!(registry_host("web"), "docker.io");
        assert_eq!(
            ecr_region_of("123456789012.dkr.ecr.eu-west-1.amazonaws.com"),
            Some("eu-west-1")
        );
        assert_eq!(ecr_region_of("ghcr.io"), None);
    }

    #[tokio::test]
    async fn auths_entries_and_helpers_are_found_by_host() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.json");
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        // a helper that answers for one host only, as docker-credential-* do
        let bin = dir.path().join("docker-credential-test");
        std::fs::write(
            &bin,
            "#!/bin/sh\nread host\n[ \"$host\" = helped.example ] || { echo 'credentials not found in native keychain'; exit 1; }\necho '{\"ServerURL\":\"helped.example\",\"Username\":\"h\",\"Secret\":\"s3\"}'\n",
        )
        .unwrap();
        std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        std::fs::write(
            &file,
            serde_json::json!({
                "auths": {
                    "https://127.0.0.1:5000": {"auth": b64("u:p:with:colons")},
                    "https://index.docker.io/v1/": {"username": "hub", "password": "pw"},
                    "bad.example": {"auth": "!!"}
                },
                "credHelpers": {"helped.example": "test", "other.example": "test"}
            })
            .to_string(),
        )
        .unwrap();
        let path = std::env::var("PATH").unwrap_or_default();
        std::env::set_var("PATH", format!("{}:{path}", dir.path().display()));
        let auth = auth_with(&file);
        let l = auth
            .login_for("127.0.0.1:5000/team/web:1")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (l.username.as_str(), l.secret.as_str()),
            ("u", "p:with:colons")
        );
        assert!(
            !format!("{l:?}").contains("p:with"),
            "Debug hides the secret"
        );
        let l = auth.login_for("team/web").await.unwrap().unwrap();
        assert_eq!(l.username, "hub");
        let l = auth.login_for("helped.example/web").await.unwrap().unwrap();
        assert_eq!((l.username.as_str(), l.secret.as_str()), ("h", "s3"));
        assert!(auth.login_for("other.example/web").await.unwrap().is_none());
        assert!(auth.login_for("ghcr.io/web").await.unwrap().is_none());
        let e = auth
            .login_for("bad.example/web")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("bad.example") && e.contains("Unable to decode"),
            "{e}"
        );
        std::fs::write(&file, "{").unwrap();
        let e = auth
            .login_for("127.0.0.1:5000/web")
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains(&file.display().to_string()), "{e}");
    }
}
