//! Where releases run. Containers through the Docker API are the production implementation.

pub mod archive;
mod docker;
pub mod hook;
pub mod process;
pub mod registry_auth;
pub mod secrets;

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use thiserror::Error;

pub use docker::Docker;

/// Labels every container of ours carries, so a restarted daemon knows what it is.
pub const LABEL_INSTANCE: &str = "hotswap.instance";
pub const LABEL_SERVICE: &str = "hotswap.service";
pub const LABEL_RELEASE: &str = "hotswap.release";
pub const LABEL_VERSION: &str = "hotswap.version";
pub const LABEL_DEPLOY_ID: &str = "hotswap.deploy_id";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    pub env: Vec<String>,
    pub command: Vec<String>,
    pub volumes: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub container_port: u16,
    pub stop_signal: String,
    pub stop_grace: Duration,
    pub options: crate::config::ContainerOptions,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    pub id: String,
    /// Where the container answers: its address on its Docker network and the container port,
    /// or 127.0.0.1 and the host port Docker published it on (`options.publish`).
    pub addr: std::net::IpAddr,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub id: String,
    pub name: String,
    pub image: String,
    pub labels: BTreeMap<String, String>,
    pub running: bool,
    /// Its image's HEALTHCHECK says unhealthy.
    pub unhealthy: bool,
    /// The host port its container port is published on, if it is.
    pub host_port: Option<u16>,
    /// Its address on its (first) Docker network, if it has one.
    pub ip: Option<std::net::IpAddr>,
}

/// How a container ended, for a repair report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Death {
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    /// Its last log lines (stdout and stderr).
    pub log_tail: Vec<String>,
}

#[derive(Debug, Error)]
pub enum RuntimeError {
    #[error("connecting to the Docker engine: {0}")]
    Connect(String),
    #[error("image {image}: {message}")]
    Image { image: String, message: String },
    #[error("container {container}: {action}: {message}")]
    Container {
        container: String,
        action: &'static str,
        message: String,
    },
    #[error("listing containers: {0}")]
    List(String),
}

pub trait Runtime: Send + Sync + 'static {
    /// Makes sure the image is present, pulling it only if missing; `progress` is told how a
    /// pull goes ("pulling …: 3 of 5 layers, 12.1 of 40.3 MB"), as often as Docker says.
    fn ensure_image(
        &self,
        image: &str,
        progress: &mut (dyn FnMut(&str) + Send),
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// Loads an image archive (`docker save` format) into the engine.
    fn load_archive(
        &self,
        path: &std::path::Path,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// Creates and starts the container, publishing its port on 127.0.0.1; removes it again if it
    /// cannot be started.
    fn start(
        &self,
        spec: &ContainerSpec,
    ) -> impl Future<Output = Result<Started, RuntimeError>> + Send;
    /// Stop signal, grace, kill, then remove. A container already gone is fine.
    fn stop_and_remove(
        &self,
        id: &str,
        grace: Duration,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// Sends a signal to the container's main process (e.g. to reload its code).
    fn signal(
        &self,
        id: &str,
        signal: &str,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// The host pid of the container's main process, if it runs.
    fn main_pid(&self, id: &str) -> impl Future<Output = Result<Option<i32>, RuntimeError>> + Send;
    fn is_running(&self, id: &str) -> impl Future<Output = Result<bool, RuntimeError>> + Send;
    /// How the container ended: exit code, OOM flag, last log lines (empty when it is gone).
    fn death(&self, id: &str) -> impl Future<Output = Result<Death, RuntimeError>> + Send;
    /// Containers carrying all the given labels, running or not.
    fn list(
        &self,
        labels: &[(&str, &str)],
    ) -> impl Future<Output = Result<Vec<Found>, RuntimeError>> + Send;
    /// Removes the image reference unless a container uses it. Returns whether it was removed.
    fn remove_image(&self, image: &str) -> impl Future<Output = Result<bool, RuntimeError>> + Send;
    /// Free bytes on the engine's data root, when this host can see it.
    fn free_bytes(&self) -> impl Future<Output = Option<u64>> + Send {
        std::future::ready(None)
    }
}
