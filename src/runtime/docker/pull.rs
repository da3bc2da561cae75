//! Pulling an image: with the registry's credentials (`registry_auth`), within a deadline, and
//! only when Docker's data root has room for it. Every failure names the image, the registry and
//! where the credentials came from, never the credentials.

use std::path::PathBuf;

use bollard::auth::DockerCredentials;
use bollard::query_parameters::CreateImageOptions;
use futures_util::StreamExt;
use tokio::sync::OnceCell;

use super::Docker;
use crate::config::RegistrySettings;
use crate::runtime::registry_auth::{registry_host, RegistryAuth, IDENTITY_TOKEN};
use crate::runtime::RuntimeError;

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

/// A pull's layers as Docker reports them: bytes downloaded of each, and which are done.
#[derive(Default)]
struct Layers {
    by_id: std::collections::BTreeMap<String, (u64, u64, bool)>,
}

impl Layers {
    /// Takes one progress message; true when it was about a layer.
    fn saw(&mut self, info: &bollard::models::CreateImageInfo) -> bool {
        let (Some(id), Some(status)) = (&info.id, &info.status) else {
            return false;
        };
        let layer = self.by_id.entry(id.clone());
        match status.as_str() {
            "Pulling fs layer" | "Waiting" => {
                layer.or_default();
            }
            "Downloading" => {
                let l = layer.or_default();
                if let Some(d) = &info.progress_detail {
                    l.0 = d.current.unwrap_or(0).max(0) as u64;
                    l.1 = d.total.unwrap_or(0).max(0) as u64;
                }
            }
            "Download complete" | "Verifying Checksum" | "Extracting" => {
                let l = layer.or_default();
                l.0 = l.1.max(l.0);
            }
            "Pull complete" | "Already exists" => {
                let l = layer.or_default();
                l.0 = l.1.max(l.0);
                l.2 = true;
            }
            _ => return false,
        }
        true
    }
}

impl std::fmt::Display for Layers {
    /// "3 of 5 layers, 12.1 of 40.3 MB".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let done = self.by_id.values().filter(|l| l.2).count();
        let got: u64 = self.by_id.values().map(|l| l.0).sum();
        let total: u64 = self.by_id.values().map(|l| l.1).sum();
        let mb = |b: u64| b as f64 / 1e6;
        write!(
            f,
            "{done} of {} layers, {:.1} of {:.1} MB",
            self.by_id.len(),
            mb(got),
            mb(total)
        )
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

    pub(super) async fn pull(
        &self,
        image: &str,
        progress: &mut (dyn FnMut(&str) + Send),
    ) -> Result<(), RuntimeError> {
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
        let credentials = login.map(|l| match l.username.as_str() {
            IDENTITY_TOKEN => DockerCredentials {
                identitytoken: Some(l.secret),
                serveraddress: Some(host.to_string()),
                ..Default::default()
            },
            _ => DockerCredentials {
                username: Some(l.username),
                password: Some(l.secret),
                serveraddress: Some(host.to_string()),
                ..Default::default()
            },
        });
        let options = CreateImageOptions {
            from_image: Some(image.to_string()),
            ..Default::default()
        };
        let pulled = async {
            let mut pull = self.client.create_image(Some(options), None, credentials);
            let mut layers = Layers::default();
            while let Some(step) = pull.next().await {
                let step = step.map_err(|e| {
                    fail(format!(
                        "not present locally; pulling it from {host} {from} failed: {}",
                        self.said(&e)
                    ))
                })?;
                if layers.saw(&step) {
                    progress(&format!("pulling {image}: {layers}"));
                }
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

    /// Docker's data root and the bytes free there, when this host can see it.
    pub(super) async fn free_on_data_root(&self) -> Option<(PathBuf, u64)> {
        let root = self
            .pulls
            .root_dir
            .get_or_init(|| async {
                let info = self.client.info().await.ok()?;
                let dir = PathBuf::from(info.docker_root_dir?);
                dir.exists().then_some(dir)
            })
            .await
            .clone()?;
        let stat = nix::sys::statvfs::statvfs(&root).ok()?;
        let free = stat.blocks_available() as u64 * stat.fragment_size() as u64;
        Some((root, free))
    }

    /// Fails when Docker's data root has less free space than `min_free_disk_mb`; `what` is the
    /// image or archive that would have been written there.
    pub(super) async fn check_disk(&self, what: &str) -> Result<(), RuntimeError> {
        let want = self.pulls.min_free_mb;
        if want == 0 {
            return Ok(());
        }
        let Some((root, free)) = self.free_on_data_root().await else {
            return Ok(()); // a remote engine, or one this host cannot see: Docker will say
        };
        let free_mb = free >> 20;
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

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{CreateImageInfo, ProgressDetail};

    fn info(id: &str, status: &str, detail: Option<(i64, i64)>) -> CreateImageInfo {
        CreateImageInfo {
            id: Some(id.into()),
            status: Some(status.into()),
            progress_detail: detail.map(|(current, total)| ProgressDetail {
                current: Some(current),
                total: Some(total),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_pull_is_summed_up_by_layers_and_bytes() {
        let mut l = Layers::default();
        assert!(
            !l.saw(&info("2", "Pulling from team/web", None)),
            "the tag's line is no layer"
        );
        assert!(l.saw(&info("a", "Pulling fs layer", None)));
        assert!(l.saw(&info("b", "Already exists", None)));
        assert!(l.saw(&info("a", "Downloading", Some((2_000_000, 8_000_000)))));
        assert_eq!(l.to_string(), "1 of 2 layers, 2.0 of 8.0 MB");
        l.saw(&info("a", "Download complete", None));
        l.saw(&info("a", "Pull complete", None));
        assert_eq!(l.to_string(), "2 of 2 layers, 8.0 of 8.0 MB");
    }
}
