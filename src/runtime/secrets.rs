//! A service's env from outside the config file, resolved when a container is created: env files
//! (refused when others may read them) and secrets in AWS SSM Parameter Store and Secrets
//! Manager. Errors name the file or the parameter, never a value; values go only into the
//! container's env.

use std::collections::BTreeMap;
use std::path::Path;

use tokio::sync::OnceCell;

use crate::config::SecretSource;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("env file {path}: {why}")]
    EnvFile { path: String, why: String },
    #[error("secret {name} from {source_name}: {why}")]
    Source {
        name: String,
        source_name: String,
        why: String,
    },
}

/// The AWS clients, made on first use (a host with no secrets never loads AWS config).
pub struct Secrets {
    region: Option<String>,
    ssm: OnceCell<aws_sdk_ssm::Client>,
    secrets_manager: OnceCell<aws_sdk_secretsmanager::Client>,
}

impl Secrets {
    pub fn new(region: Option<String>) -> Secrets {
        Secrets {
            region,
            ssm: OnceCell::new(),
            secrets_manager: OnceCell::new(),
        }
    }

    async fn sdk_config(&self) -> aws_config::SdkConfig {
        crate::sdk::config(self.region.as_deref(), crate::sdk::Deadlines::CALL).await
    }

    /// `KEY=VALUE` for each env file line and each secret, files first, secrets last (a secret
    /// wins over a file's line of the same name, and both over nothing: the inline env is
    /// added by the caller before these).
    pub async fn resolve(
        &self,
        env_files: &[std::path::PathBuf],
        secrets: &BTreeMap<String, SecretSource>,
    ) -> Result<Vec<String>, SecretError> {
        let mut env = Vec::new();
        for f in env_files {
            env.extend(read_env_file(f)?);
        }
        for (name, source) in secrets {
            let value = self
                .fetch(source)
                .await
                .map_err(|why| SecretError::Source {
                    name: name.clone(),
                    source_name: source.to_string(),
                    why,
                })?;
            env.push(format!("{name}={value}"));
        }
        Ok(env)
    }

    async fn fetch(&self, source: &SecretSource) -> Result<String, String> {
        match source {
            SecretSource::Ssm { name } => {
                let client = self
                    .ssm
                    .get_or_init(|| async { aws_sdk_ssm::Client::new(&self.sdk_config().await) })
                    .await;
                let out = client
                    .get_parameter()
                    .name(name)
                    .with_decryption(true)
                    .send()
                    .await
                    .map_err(|e| aws_sdk_ssm::error::DisplayErrorContext(e).to_string())?;
                out.parameter()
                    .and_then(|p| p.value())
                    .map(str::to_string)
                    .ok_or_else(|| "Parameter Store answered no value".to_string())
            }
            SecretSource::SecretsManager { id, field } => {
                let client = self
                    .secrets_manager
                    .get_or_init(|| async {
                        aws_sdk_secretsmanager::Client::new(&self.sdk_config().await)
                    })
                    .await;
                let out = client
                    .get_secret_value()
                    .secret_id(id)
                    .send()
                    .await
                    .map_err(|e| {
                        aws_sdk_secretsmanager::error::DisplayErrorContext(e).to_string()
                    })?;
                let text = out.secret_string().ok_or_else(|| {
                    "the secret has no string value (binary secrets are not taken)".to_string()
                })?;
                match field {
                    None => Ok(text.to_string()),
                    Some(f) => {
                        let json: serde_json::Value = serde_json::from_str(text).map_err(|_| {
                            format!("the secret is not a JSON object, so it has no field {f:?}")
                        })?;
                        match json.get(f) {
                            Some(serde_json::Value::String(s)) => Ok(s.clone()),
                            Some(v) if !v.is_null() && !v.is_object() && !v.is_array() => {
                                Ok(v.to_string())
                            }
                            _ => Err(format!("the secret's JSON has no text field {f:?}")),
                        }
                    }
                }
            }
        }
    }
}

/// The largest env file read (Docker's own limit on a container's env is about this).
const ENV_FILE_MAX_BYTES: u64 = 1 << 20;

/// Docker's `--env-file` format: `KEY=VALUE` per line, `#` comments and blank lines skipped,
/// nothing unquoted. The file must be a regular file others cannot read.
pub fn read_env_file(path: &Path) -> Result<Vec<String>, SecretError> {
    use std::os::unix::fs::MetadataExt;
    let fail = |why: String| SecretError::EnvFile {
        path: path.display().to_string(),
        why,
    };
    let file = crate::fsutil::open_regular(path).map_err(|e| fail(e.to_string()))?;
    let mode = file.metadata().map_err(|e| fail(e.to_string()))?.mode();
    if mode & 0o004 != 0 {
        return Err(fail(format!(
            "readable by others (mode {:04o}): it holds secrets; chmod o-r it",
            mode & 0o7777
        )));
    }
    let text = std::io::read_to_string(std::io::Read::take(file, ENV_FILE_MAX_BYTES + 1))
        .map_err(|e| fail(e.to_string()))?;
    if text.len() as u64 > ENV_FILE_MAX_BYTES {
        return Err(fail(format!(
            "larger than {ENV_FILE_MAX_BYTES} bytes: an env file holds a few variables"
        )));
    }
    let mut env = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.split_once('=') {
            Some((k, _)) if !k.is_empty() && !k.contains(char::is_whitespace) => {
                env.push(line.to_string())
            }
            // the line itself may be a secret: only its number is named
            _ => return Err(fail(format!("line {} is not KEY=VALUE", i + 1))),
        }
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn env_files_are_read_as_docker_reads_them_and_refused_when_others_can_read() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("web.env");
        std::fs::write(&f, "# db\nDB_URL=postgres://u:p@db/x?a=b\n\n  TOKEN=abc=\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(
            read_env_file(&f).unwrap(),
            ["DB_URL=postgres://u:p@db/x?a=b", "TOKEN=abc="]
        );
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_env_file(&f).unwrap_err().to_string();
        assert!(
            e.contains("readable by others") && e.contains("0644"),
            "{e}"
        );
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&f, "GOOD=1\nsecret-without-a-key\n").unwrap();
        let e = read_env_file(&f).unwrap_err().to_string();
        assert!(e.contains("line 2") && !e.contains("secret-without"), "{e}");
        let e = read_env_file(&dir.path().join("missing.env"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.env"), "{e}");
    }
}
