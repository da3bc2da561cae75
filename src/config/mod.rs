//! Configuration: TOML parsed into serde structs (`raw`), defaults filled, then validated into
//! settings that cannot be wrong (`Settings`). Unknown keys are errors naming the file and key.

mod hooks;
mod raw;
mod streams;

pub use hooks::{Hook, HookSettings};
pub use streams::{parse_notice, DrainNotice, StreamSettings};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;

pub const DEFAULT_PATH: &str = "/etc/hotswap/config.toml";

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("reading config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config {path}: {key}: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

/// The whole validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub source: PathBuf,
    pub daemon: DaemonSettings,
    pub report: ReportSettings,
    pub registry: RegistrySettings,
    /// The metadata watcher (`[cloudformation]`); None: releases come by other ways only.
    pub cloudformation: Option<MetadataWatchSettings>,
    pub services: BTreeMap<String, ServiceSettings>,
    /// Local pre-fork servers that reload code on a signal (`[processes.NAME]`).
    pub processes: BTreeMap<String, ProcessSettings>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadStrategy {
    /// Signal the master (HUP): new workers load the new code, old ones stop gracefully.
    Hup,
    /// For apps that preload code: USR2 starts a new master, which must become healthy; then the
    /// old master is stopped gracefully.
    Usr2,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProcessSettings {
    pub name: String,
    pub pidfile: PathBuf,
    /// Where the server listens (127.0.0.1): the health gate's target.
    pub port: u16,
    /// `releases/<id>/` and the `current` symlink live here; the server runs from `current`.
    pub app_root: PathBuf,
    pub strategy: ReloadStrategy,
    pub reload_signal: nix::sys::signal::Signal,
    pub upgrade_signal: nix::sys::signal::Signal,
    pub stop_old_signal: nix::sys::signal::Signal,
    pub health: HealthSettings,
    pub drain_budget: Duration,
    pub host_budget: Duration,
    /// Previous releases kept for rollback.
    pub keep_releases: usize,
    /// How to start the server again if its master died (e.g. new code that fails to import
    /// makes gunicorn's master halt on HUP); run on rollback, after `current` went back.
    pub start_command: Vec<String>,
    pub hooks: HookSettings,
}

/// When a file that only grows (the reports file) is rotated: past `max_bytes` it becomes
/// `<name>.1` (`.1` becomes `.2` ...), and `keep` rotated files are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    pub max_bytes: u64,
    pub keep: usize,
}

impl Default for Rotation {
    fn default() -> Self {
        Rotation {
            max_bytes: 10 << 20,
            keep: 5,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct DaemonSettings {
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub reports_file: PathBuf,
    /// When the reports file is rotated and how many rotated files are kept.
    pub reports_rotation: Rotation,
    /// Where `GET /metrics` is also served over TCP (it always is on the control socket).
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Names this host in labels and reports; several daemons on one Docker engine (tests) keep
    /// apart by it.
    pub instance_id: String,
    /// `None`: bollard's defaults (`DOCKER_HOST` or `/var/run/docker.sock`).
    pub docker_socket: Option<PathBuf>,
    /// Release files dropped here are picked up (see `intake::inbox`).
    pub inbox_dir: Option<PathBuf>,
    /// How often every service is looked at even when no event came (a backstop).
    pub sweep: Duration,
    /// Container creates and starts Docker is asked for at once, across services.
    pub concurrent_starts: usize,
    /// Image archives on this host are taken only from these directories.
    pub archive_dirs: Vec<PathBuf>,
    pub access: AccessSettings,
}

/// Where reports go besides the local reports file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportSettings {
    /// SQS queue for reports (standard or FIFO); None keeps reports local.
    pub sqs_queue_url: Option<String>,
    /// FIFO queues: the message group.
    pub message_group_id: String,
    /// Names the stack in reports.
    pub stack: Option<String>,
    /// IMDSv2 endpoint for the instance id (used when a queue is set); None: use daemon.instance_id.
    pub imds_endpoint: Option<String>,
    pub region: Option<String>,
}

/// Who may use the control socket, besides root and the daemon's own user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessSettings {
    /// The socket file's group (mode 0660); its members may connect. None if the group is absent.
    pub socket_group: String,
    pub allowed_uids: Vec<u32>,
    /// Group names whose members may connect (checked against the peer's groups).
    pub allowed_groups: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServiceSettings {
    pub name: String,
    pub container: ContainerSettings,
    pub container_port: u16,
    pub health: HealthSettings,
    pub haproxy: HaproxySettings,
    pub drain_budget: Duration,
    pub host_budget: Duration,
    /// Images of previous releases kept for rollback.
    pub keep_images: usize,
    /// Code mounted from the host: code-only releases reload the running container instead of
    /// swapping it.
    pub code: Option<MountedCode>,
    /// Canary: after the health gate, traffic moves to the new release step by step.
    pub ramp: Option<RampSettings>,
    /// Containers of the service on this host, all behind the same backend.
    /// The longest wait between two repairs of a current release that keeps dying (the waits
    /// double from 1 s up to it).
    pub repair_backoff_max: Duration,
    pub replicas: usize,
    /// New containers started (and gated) together; the first batch is the canary.
    pub batch: usize,
    pub hooks: HookSettings,
    /// Long-lived connections: the old app's notice, their budget, the close window.
    pub streams: StreamSettings,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RampSettings {
    /// The new release's share of traffic at each step, ascending, the last 100.
    pub steps: Vec<crate::model::RampStep>,
    /// After the last step, the old release is kept this long (no traffic) for a flip back.
    pub watch: Duration,
    /// How often HAProxy's figures are read and judged during a step.
    pub check_interval: Duration,
    pub limits: CanaryLimits,
}

/// When a canary is worse enough than the release it replaces to turn back.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CanaryLimits {
    /// Error ratio (5xx, connection and response errors) the new release may have, in percent...
    pub max_error_pct: f64,
    /// ...unless the old release's ratio over the same step is within this many points of it.
    pub error_margin_pct: f64,
    /// The new release's average response time may be at most this many times the old one's...
    pub max_latency_factor: f64,
    /// ...and response times below this are never judged (noise at a few ms).
    pub latency_floor_ms: u64,
    /// Fewer requests than this to the new release in a step: no judgement yet.
    pub min_requests: u64,
}

impl Default for CanaryLimits {
    fn default() -> Self {
        CanaryLimits {
            max_error_pct: 1.0,
            error_margin_pct: 0.5,
            max_latency_factor: 2.0,
            latency_floor_ms: 20,
            min_requests: 20,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct MountedCode {
    /// `releases/` and `current` live here; a volume mounts it into the container.
    pub app_root: PathBuf,
    /// Sent to the container (Docker API) to reload its code.
    pub reload_signal: String,
    pub keep_releases: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ContainerSettings {
    pub env: BTreeMap<String, String>,
    pub command: Vec<String>,
    pub volumes: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub stop_signal: String,
    pub stop_grace: Duration,
    pub options: ContainerOptions,
    /// Files of KEY=VALUE lines, read when a container is created.
    pub env_files: Vec<PathBuf>,
    /// Env vars whose values come from AWS, fetched when a container is created.
    pub secrets: BTreeMap<String, SecretSource>,
}

/// Where a secret env var's value is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// SSM Parameter Store (SecureString decrypted).
    Ssm { name: String },
    /// Secrets Manager: the whole secret string, or one field of a JSON secret.
    SecretsManager { id: String, field: Option<String> },
}

impl std::fmt::Display for SecretSource {
    /// As written in the config: `ssm:NAME`, `secretsmanager:ID[#FIELD]`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretSource::Ssm { name } => write!(f, "ssm:{name}"),
            SecretSource::SecretsManager { id, field: None } => write!(f, "secretsmanager:{id}"),
            SecretSource::SecretsManager { id, field: Some(k) } => {
                write!(f, "secretsmanager:{id}#{k}")
            }
        }
    }
}

/// `[cloudformation]`: where the releases are read from, as cfn-hup reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataWatchSettings {
    pub stack: String,
    /// The logical id of the resource whose metadata carries the releases.
    pub resource: String,
    /// The metadata's key holding them (default "hotswap").
    pub key: String,
    /// None: AWS_REGION, else `[report] region`.
    pub region: Option<String>,
    pub poll: Duration,
}

/// `[registry]`: credentials, deadline and disk room for pulls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrySettings {
    /// Docker's config.json; None: `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`.
    pub auth_file: Option<PathBuf>,
    /// Hosts whose credentials come from ECR (besides `*.dkr.ecr.*.amazonaws.com`).
    pub ecr_registries: Vec<String>,
    pub ecr_region: Option<String>,
    pub pull_timeout: Duration,
    /// Free space Docker's data root must have before a pull or an archive load.
    pub min_free_disk_mb: u64,
}

impl Default for RegistrySettings {
    fn default() -> Self {
        RegistrySettings {
            auth_file: None,
            ecr_registries: Vec::new(),
            ecr_region: None,
            pull_timeout: Duration::from_secs(600),
            min_free_disk_mb: 1024,
        }
    }
}

/// What every container of a service is created with beyond image, env and command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerOptions {
    pub memory_bytes: Option<i64>,
    /// CPUs × 10⁹.
    pub nano_cpus: Option<i64>,
    pub user: Option<String>,
    pub log_driver: String,
    pub log_options: BTreeMap<String, String>,
    pub ulimits: Vec<Ulimit>,
    pub extra_hosts: Vec<String>,
    pub read_only: bool,
    pub tmpfs: Vec<String>,
    /// Capability names without `CAP_`.
    pub cap_drop: Vec<String>,
    pub cap_add: Vec<String>,
    pub network: Option<String>,
    /// How HAProxy and the health gate reach a container: true (the default) publishes its port
    /// on 127.0.0.1 (through Docker's userland proxy), false goes to its address on its Docker
    /// network, one proxy fewer on every request.
    pub publish: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ulimit {
    pub name: String,
    pub soft: i64,
    pub hard: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HealthSettings {
    pub path: String,
    pub expect_status: u16,
    pub release_match: ReleaseMatch,
    pub attempt_timeout: Duration,
    pub consecutive_passes: u32,
    pub deadline: Duration,
    pub min_interval: Duration,
    pub max_interval: Duration,
}

/// How a health response proves it comes from the new release. `{version}` in the expected text
/// is replaced by the release's version.
#[derive(Debug, Clone, PartialEq)]
pub enum ReleaseMatch {
    None,
    BodyContains(String),
    JsonField { field: String, equals: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwitchMode {
    /// Runtime API: add the new server, drain the old one; no reload.
    Runtime,
    /// Rewrite the config file and reload HAProxy (porter's way), kept for comparison.
    Reload,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ReloadVia {
    MasterSocket(PathBuf),
    Signal {
        pidfile: PathBuf,
        signal: nix::sys::signal::Signal,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct HaproxySettings {
    pub runtime_socket: PathBuf,
    pub backend: String,
    /// The config file whose managed block for this backend is kept in step with the runtime state.
    pub config_file: Option<PathBuf>,
    pub reload: Option<ReloadVia>,
    /// Appended to each `server` line (runtime `add server` and config file).
    pub server_options: String,
    pub switch: SwitchMode,
    /// How long the runtime API may take to answer one command.
    pub command_timeout: Duration,
}

impl Settings {
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        let text = crate::fsutil::read_bounded_string(path, crate::fsutil::CONFIG_MAX_BYTES)
            .map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
        Settings::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Settings, ConfigError> {
        let raw: raw::Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_string(),
        })?;
        raw.validate(path)
    }

    pub fn names(&self) -> Vec<String> {
        self.services
            .keys()
            .chain(self.processes.keys())
            .cloned()
            .collect()
    }

    pub fn service(&self, name: &str) -> Option<&ServiceSettings> {
        self.services.get(name)
    }
}

impl ReleaseMatch {
    /// The expected text for a given release version, if any.
    pub fn expected(&self, version: &str) -> Option<String> {
        match self {
            ReleaseMatch::None => None,
            ReleaseMatch::BodyContains(t) => Some(t.replace("{version}", version)),
            ReleaseMatch::JsonField { equals, .. } => Some(equals.replace("{version}", version)),
        }
    }
}

#[cfg(test)]
mod tests;
