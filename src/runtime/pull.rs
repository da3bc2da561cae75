//! Pulling an image: with the registry's credentials (`registry_auth`), within a deadline, and
//! only when Docker's data root has room for it. Every failure names the image, the registry and
//! where the credentials came from, never the credentials.

use std::path::PathBuf;

use bollard::auth::DockerCredentials;
use bollard::query_parameters::CreateImageOptions;
use futures_util::StreamExt;
use tokio::sync::OnceCell;

use super::docker::Docker;
use super::registry_auth::{registry_host, RegistryAuth};
use super::RuntimeError;
use crate::config::RegistrySettings;

pub struct Pulls {
    auth: RegistryAuth,
    timeout: std::time::Duration,
    min_free_mb: u64,
    /// Docker's data root (`docker info`), when this host can see it.
    root_dir: OnceCell<Option<PathBuf>>,
}

impl Default for Pulls {
    fn default() -> Self {
        Pulls::new(RegistrySettings::default())
    }
}

impl Pulls {
    pub fn new(settings: RegistrySettings) -> Pulls {
        Pulls {
            timeout: settings.pull_timeout,
            min_free_mb: settings.min_free_disk_mb,
            auth: RegistryAuth::new(settings),
            root_dir: OnceCell::new(),
        }
    }
}

impl Docker {
    /// Pulls as `[registry]` says.
    pub fn with_registry(self, settings: RegistrySettings) -> Docker {
        Docker {
            pulls: std::sync::Arc::new(Pulls::new(settings)),
            ..self
        }
    }

    pub(super) async fn pull(&self, image: &str) -> Result<(), RuntimeError> {
        let host = registry_host(image);
        let fail = |message: String| RuntimeError::Image {
            image: image.into(),
            message,
        };
        self.check_disk(image).await?;
        let login = self
            .pulls
            .auth
            .login_for(image)
            .await
            .map_err(|e| fail(format!("not present locally, and {e}")))?;
        let from = match &login {
            Some(l) => format!("with credentials from {}", l.from),
            None => "without credentials".to_string(),
        };
        tracing::info!(image, registry = host, credentials = %from, "image missing locally, pulling");
        let credentials = login.map(|l| DockerCredentials {
            username: Some(l.username),
            password: Some(l.secret),
            serveraddress: Some(host.to_string()),
            ..Default::default()
        });
        let options = CreateImageOptions {
            from_image: Some(image.to_string()),
            ..Default::default()
        };
        let pulled = async {
            let mut pull = self.client.create_image(Some(options), None, credentials);
            while let Some(step) = pull.next().await {
                step.map_err(|e| {
                    fail(format!(
                        "not present locally; pulling it from {host} {from} failed: {}",
                        self.said(&e)
                    ))
                })?;
            }
            Ok(())
        };
        let limit = self.pulls.timeout;
        tokio::time::timeout(limit, pulled).await.map_err(|_| {
            fail(format!(
                "pulling it from {host} did not finish within {} s (registry.pull_timeout_secs)",
                limit.as_secs()
            ))
        })?
    }

    /// Fails when Docker's data root has less free space than `min_free_disk_mb`; `what` is the
    /// image or archive that would have been written there.
    pub(super) async fn check_disk(&self, what: &str) -> Result<(), RuntimeError> {
        let want = self.pulls.min_free_mb;
        if want == 0 {
            return Ok(());
        }
        let root = self
            .pulls
            .root_dir
            .get_or_init(|| async {
                let info = self.client.info().await.ok()?;
                let dir = PathBuf::from(info.docker_root_dir?);
                dir.exists().then_some(dir)
            })
            .await;
        let Some(root) = root else {
            return Ok(()); // a remote engine, or one this host cannot see: Docker will say
        };
        let Ok(stat) = nix::sys::statvfs::statvfs(root) else {
            return Ok(());
        };
        let free_mb = stat.blocks_available() as u64 * stat.fragment_size() as u64 >> 20;
        if free_mb < want {
            return Err(RuntimeError::Image {
                image: what.to_string(),
                message: format!(
                    "Docker's data root {} has {free_mb} MiB free, less than registry.min_free_disk_mb ({want} MiB): nothing pulled or loaded",
                    root.display()
                ),
            });
        }
        Ok(())
    }
}
