//! Containers through the Docker Engine API (bollard).

mod create;
mod endpoint;
mod errors;
mod events;
mod pull;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use bollard::query_parameters::{
    CreateContainerOptions, InspectContainerOptions, KillContainerOptions, ListContainersOptions,
    RemoveContainerOptions, RemoveImageOptions, StopContainerOptions,
};
use futures_util::StreamExt;

use super::{ContainerSpec, Death, Found, Runtime, RuntimeError, Started};
use errors::{chain, is_conflict, is_not_found};

/// Log lines a repair report carries of the container that died.
const LOG_TAIL_LINES: usize = 20;

#[derive(Clone)]
pub struct Docker {
    pub(super) client: bollard::Docker,
    /// Where the engine is looked for, named in errors that never reached it.
    pub(super) endpoint: String,
    /// Credentials, deadline and disk room for pulls (`[registry]`).
    pub(super) pulls: std::sync::Arc<pull::Pulls>,
    /// Container creates and starts in flight at once, across services
    /// (`[daemon] concurrent_starts`).
    pub(super) starts: std::sync::Arc<tokio::sync::Semaphore>,
}

/// Where bollard looks for the engine: the configured socket, else DOCKER_HOST, else its default.
fn endpoint(socket: Option<&Path>) -> String {
    match socket {
        Some(p) => format!("unix://{}", p.display()),
        None => std::env::var("DOCKER_HOST")
            .unwrap_or_else(|_| "unix:///var/run/docker.sock".to_string()),
    }
}

impl Docker {
    /// Connects and agrees on an API version with the engine (Debian's Docker 20.10 speaks 1.41).
    pub async fn connect(socket: Option<&Path>) -> Result<Docker, RuntimeError> {
        let client = match socket {
            Some(path) => bollard::Docker::connect_with_unix(
                &path.to_string_lossy(),
                120,
                bollard::API_DEFAULT_VERSION,
            ),
            None => bollard::Docker::connect_with_defaults(),
        }
        .map_err(|e| {
            RuntimeError::Connect(format!("Docker at {}: {}", endpoint(socket), chain(&e)))
        })?;
        let docker = Docker {
            client,
            endpoint: endpoint(socket),
            pulls: Default::default(),
            starts: std::sync::Arc::new(tokio::sync::Semaphore::new(
                tokio::sync::Semaphore::MAX_PERMITS,
            )),
        };
        let client = docker
            .client
            .clone()
            .negotiate_version()
            .await
            .map_err(|e| RuntimeError::Connect(docker.said(&e)))?;
        Ok(Docker { client, ..docker })
    }

    /// At most `n` container creates and starts at once, whatever the service: twenty at once
    /// on 2 cores took longer each than four at a time (docs/performance.md).
    pub fn with_concurrent_starts(self, n: usize) -> Docker {
        Docker {
            starts: std::sync::Arc::new(tokio::sync::Semaphore::new(n.max(1))),
            ..self
        }
    }

    /// An engine error as text; one that never reached the engine names where it was looked for.
    pub(super) fn said(&self, e: &bollard::errors::Error) -> String {
        match e {
            bollard::errors::Error::DockerResponseServerError { .. } => e.to_string(),
            _ => format!("Docker at {}: {}", self.endpoint, chain(e)),
        }
    }

    pub(super) fn container_err(
        &self,
        id: &str,
        action: &'static str,
        e: &bollard::errors::Error,
    ) -> RuntimeError {
        RuntimeError::Container {
            container: id.to_string(),
            action,
            message: self.said(e),
        }
    }
}

/// How much of an image archive is read at a time while it streams into Docker.
const ARCHIVE_CHUNK: usize = 256 * 1024;

impl Runtime for Docker {
    async fn ensure_image(
        &self,
        image: &str,
        progress: &mut (dyn FnMut(&str) + Send),
    ) -> Result<(), RuntimeError> {
        match self.client.inspect_image(image).await {
            Ok(_) => return Ok(()),
            Err(e) if is_not_found(&e) => {}
            Err(e) => {
                return Err(RuntimeError::Image {
                    image: image.into(),
                    message: self.said(&e),
                })
            }
        }
        self.pull(image, progress).await
    }

    async fn load_archive(&self, path: &Path) -> Result<(), RuntimeError> {
        let err = |message: String| RuntimeError::Image {
            image: path.display().to_string(),
            message,
        };
        // opened as a regular file only: a FIFO swapped in must not block the daemon; streamed
        // in chunks, so the daemon's memory stays bounded whatever the archive's size
        let file =
            crate::fsutil::open_regular(path).map_err(|e| err(format!("reading archive: {e}")))?;
        let chunks = futures_util::stream::try_unfold(
            tokio::fs::File::from_std(file),
            |mut file| async move {
                let mut chunk = Vec::with_capacity(ARCHIVE_CHUNK);
                let n = tokio::io::AsyncReadExt::read_buf(&mut file, &mut chunk).await?;
                Ok::<_, std::io::Error>((n > 0).then(|| (hyper::body::Bytes::from(chunk), file)))
            },
        );
        self.check_disk(&path.display().to_string()).await?;
        let options = bollard::query_parameters::ImportImageOptions {
            quiet: true,
            platform: None,
        };
        let mut load = self
            .client
            .import_image(options, bollard::body_try_stream(chunks), None);
        while let Some(step) = load.next().await {
            step.map_err(|e| err(format!("loading archive into Docker: {}", self.said(&e))))?;
        }
        Ok(())
    }

    async fn start(&self, spec: &ContainerSpec) -> Result<Started, RuntimeError> {
        let _permit = self.starts.acquire().await.ok();
        let body = create::create_body(spec);
        let options = CreateContainerOptions {
            name: Some(spec.name.clone()),
            ..Default::default()
        };
        let created = self
            .client
            .create_container(Some(options), body)
            .await
            .map_err(|e| self.container_err(&spec.name, "creating", &e))?;
        let id = created.id;
        let started = async {
            self.client
                .start_container(
                    &id,
                    None::<bollard::query_parameters::StartContainerOptions>,
                )
                .await
                .map_err(|e| self.container_err(&spec.name, "starting", &e))?;
            self.inspect_endpoint(&id, spec.container_port, spec.options.publish)
                .await?
                .ok_or_else(|| RuntimeError::Container {
                    container: spec.name.clone(),
                    action: "reading where it answers",
                    message: if spec.options.publish {
                        "Docker published no host port".into()
                    } else {
                        "it has no address on a Docker network".into()
                    },
                })
        };
        match started.await {
            Ok((addr, port)) => Ok(Started { id, addr, port }),
            Err(e) => {
                // never leave a half-started container behind
                let _ = self
                    .client
                    .remove_container(
                        &id,
                        Some(RemoveContainerOptions {
                            force: true,
                            ..Default::default()
                        }),
                    )
                    .await;
                Err(e)
            }
        }
    }

    async fn stop_and_remove(&self, id: &str, grace: Duration) -> Result<(), RuntimeError> {
        let stop = StopContainerOptions {
            t: Some(i32::try_from(grace.as_secs()).unwrap_or(i32::MAX)),
            signal: None,
        };
        match self.client.stop_container(id, Some(stop)).await {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => return Ok(()),
            // 304: already stopped
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304, ..
            }) => {}
            Err(e) => {
                tracing::warn!(container = id, error = %e, "stop failed, killing");
                let _ = self
                    .client
                    .kill_container(
                        id,
                        Some(KillContainerOptions {
                            signal: "SIGKILL".into(),
                        }),
                    )
                    .await;
            }
        }
        match self
            .client
            .remove_container(
                id,
                Some(RemoveContainerOptions {
                    force: true,
                    v: true,
                    ..Default::default()
                }),
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            // 409: removal already in progress
            Err(e) if is_conflict(&e) => Ok(()),
            Err(e) => Err(self.container_err(id, "removing", &e)),
        }
    }

    async fn signal(&self, id: &str, signal: &str) -> Result<(), RuntimeError> {
        self.client
            .kill_container(
                id,
                Some(KillContainerOptions {
                    signal: signal.to_string(),
                }),
            )
            .await
            .map_err(|e| self.container_err(id, "signalling", &e))
    }

    async fn main_pid(&self, id: &str) -> Result<Option<i32>, RuntimeError> {
        match self
            .client
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
        {
            Ok(info) => Ok(info
                .state
                .and_then(|s| s.pid)
                .filter(|p| *p > 0)
                .map(|p| p as i32)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(self.container_err(id, "inspecting", &e)),
        }
    }

    async fn is_running(&self, id: &str) -> Result<bool, RuntimeError> {
        match self
            .client
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
        {
            Ok(info) => Ok(info.state.and_then(|s| s.running).unwrap_or(false)),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(self.container_err(id, "inspecting", &e)),
        }
    }

    async fn death(&self, id: &str) -> Result<Death, RuntimeError> {
        let info = match self
            .client
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
        {
            Ok(info) => info,
            Err(e) if is_not_found(&e) => return Ok(Death::default()),
            Err(e) => return Err(self.container_err(id, "inspecting", &e)),
        };
        let state = info.state.unwrap_or_default();
        let options = bollard::query_parameters::LogsOptions {
            stdout: true,
            stderr: true,
            tail: LOG_TAIL_LINES.to_string(),
            ..Default::default()
        };
        let mut lines = Vec::new();
        let mut logs = self.client.logs(id, Some(options));
        // a container's logs are read to their end, or for a second at most
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while let Some(Ok(chunk)) = logs.next().await {
                let text = String::from_utf8_lossy(&chunk.into_bytes()).into_owned();
                lines.extend(text.lines().map(str::to_string));
            }
        })
        .await;
        let extra = lines.len().saturating_sub(LOG_TAIL_LINES);
        lines.drain(..extra);
        Ok(Death {
            exit_code: state.exit_code,
            oom_killed: state.oom_killed.unwrap_or(false),
            log_tail: lines,
        })
    }

    async fn list(&self, labels: &[(&str, &str)]) -> Result<Vec<Found>, RuntimeError> {
        let filters = HashMap::from([(
            "label".to_string(),
            labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>(),
        )]);
        let options = ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        };
        let found = self
            .client
            .list_containers(Some(options))
            .await
            .map_err(|e| RuntimeError::List(self.said(&e)))?;
        Ok(found
            .into_iter()
            .map(|c| Found {
                id: c.id.unwrap_or_default(),
                name: c
                    .names
                    .and_then(|n| n.into_iter().next())
                    .unwrap_or_default()
                    .trim_start_matches('/')
                    .to_string(),
                image: c.image.unwrap_or_default(),
                labels: c.labels.unwrap_or_default().into_iter().collect(),
                running: c.state.map(|s| s.to_string() == "running").unwrap_or(false),
                unhealthy: c.status.is_some_and(|s| s.contains("(unhealthy)")),
                host_port: c
                    .ports
                    .unwrap_or_default()
                    .iter()
                    .find_map(|p| p.public_port),
                ip: c
                    .network_settings
                    .and_then(|n| n.networks)
                    .and_then(|n| endpoint::first_ip(n.into_values())),
            })
            .collect())
    }

    async fn free_bytes(&self) -> Option<u64> {
        self.free_on_data_root().await.map(|(_, free)| free)
    }

    async fn remove_image(&self, image: &str) -> Result<bool, RuntimeError> {
        match self
            .client
            .remove_image(
                image,
                Some(RemoveImageOptions {
                    force: false,
                    noprune: false,
                }),
                None,
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            // 409: a container still uses it
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(RuntimeError::Image {
                image: image.into(),
                message: format!("removing: {}", self.said(&e)),
            }),
        }
    }
}
