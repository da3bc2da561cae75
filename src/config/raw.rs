//! The config file as written: every key optional where a default exists, unknown keys rejected.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;

use super::*;
use crate::model::RampStep;

mod aws;
mod container;
mod daemon;
mod hooks;
mod ramp;
mod services;

use container::Container;
use hooks::Hooks;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Config {
    #[serde(default)]
    daemon: Daemon,
    #[serde(default)]
    report: Report,
    #[serde(default)]
    registry: Registry,
    cloudformation: Option<CloudFormation>,
    #[serde(default)]
    services: BTreeMap<String, Service>,
    #[serde(default)]
    processes: BTreeMap<String, Process>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Process {
    pidfile: PathBuf,
    port: u16,
    app_root: PathBuf,
    strategy: Option<String>,
    reload_signal: Option<String>,
    upgrade_signal: Option<String>,
    stop_old_signal: Option<String>,
    #[serde(default)]
    health: Health,
    drain_budget_secs: Option<u64>,
    host_budget_secs: Option<u64>,
    keep_releases: Option<usize>,
    #[serde(default)]
    start_command: Vec<String>,
    #[serde(default)]
    hooks: Hooks,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Daemon {
    socket: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    reports_file: Option<PathBuf>,
    instance_id: Option<String>,
    docker_socket: Option<PathBuf>,
    inbox_dir: Option<PathBuf>,
    sweep_secs: Option<u64>,
    concurrent_starts: Option<usize>,
    archive_dirs: Option<Vec<PathBuf>>,
    reports_max_mb: Option<u64>,
    reports_keep: Option<usize>,
    metrics_listen: Option<String>,
    socket_group: Option<String>,
    #[serde(default)]
    allowed_uids: Vec<u32>,
    #[serde(default)]
    allowed_groups: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CloudFormation {
    stack: String,
    resource: String,
    key: Option<String>,
    region: Option<String>,
    poll_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Registry {
    auth_file: Option<PathBuf>,
    #[serde(default)]
    ecr_registries: Vec<String>,
    ecr_region: Option<String>,
    pull_timeout_secs: Option<u64>,
    min_free_disk_mb: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Report {
    sqs_queue_url: Option<String>,
    message_group_id: Option<String>,
    stack: Option<String>,
    imds_endpoint: Option<String>,
    region: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Service {
    container_port: u16,
    #[serde(default)]
    container: Container,
    #[serde(default)]
    health: Health,
    haproxy: Haproxy,
    drain_budget_secs: Option<u64>,
    host_budget_secs: Option<u64>,
    keep_images: Option<usize>,
    code: Option<Code>,
    ramp: Option<Ramp>,
    replicas: Option<usize>,
    batch: Option<usize>,
    repair_backoff_max_secs: Option<u64>,
    #[serde(default)]
    hooks: Hooks,
    stream_budget_secs: Option<u64>,
    close_spread_secs: Option<u64>,
    drain_notice: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Ramp {
    /// Percent of traffic to the new release at each step, e.g. [5, 25, 50, 100].
    steps: Vec<u64>,
    hold_secs: f64,
    watch_secs: Option<f64>,
    check_interval_ms: Option<u64>,
    max_error_pct: Option<f64>,
    error_margin_pct: Option<f64>,
    max_latency_factor: Option<f64>,
    latency_floor_ms: Option<u64>,
    min_requests: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Code {
    app_root: PathBuf,
    reload_signal: Option<String>,
    keep_releases: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Health {
    path: Option<String>,
    expect_status: Option<u16>,
    release_body_contains: Option<String>,
    release_json_field: Option<String>,
    release_json_equals: Option<String>,
    attempt_timeout_ms: Option<u64>,
    consecutive_passes: Option<u32>,
    deadline_secs: Option<u64>,
    min_interval_ms: Option<u64>,
    max_interval_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Haproxy {
    runtime_socket: PathBuf,
    backend: Option<String>,
    config_file: Option<PathBuf>,
    reload: Option<String>,
    master_socket: Option<PathBuf>,
    pidfile: Option<PathBuf>,
    reload_signal: Option<String>,
    server_options: Option<String>,
    switch: Option<String>,
    command_timeout_ms: Option<u64>,
}

struct Ctx<'a> {
    path: &'a Path,
}

impl Ctx<'_> {
    fn invalid(&self, key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_owned(),
            key: key.into(),
            message: message.into(),
        }
    }
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// A path the daemon opens must mean the same wherever it runs: relative, it would resolve
/// against the working directory (`/` under systemd, something else from a shell).
fn absolute(ctx: &Ctx, key: impl Into<String>, p: &Path) -> Result<(), ConfigError> {
    use std::os::unix::ffi::OsStrExt;
    let key = key.into();
    if p.as_os_str().as_bytes().contains(&0) {
        return Err(ctx.invalid(key, "holds a NUL byte: not a path"));
    }
    if !p.is_absolute() {
        return Err(ctx.invalid(
            key,
            format!(
                "{}: must be an absolute path (a relative one would resolve against the daemon's working directory, / under systemd)",
                p.display()
            ),
        ));
    }
    Ok(())
}

/// Every path `[daemon]` takes, checked before any is used.
fn check_daemon_paths(ctx: &Ctx, d: &Daemon) -> Result<(), ConfigError> {
    let paths = [
        ("daemon.socket", &d.socket),
        ("daemon.state_dir", &d.state_dir),
        ("daemon.reports_file", &d.reports_file),
        ("daemon.docker_socket", &d.docker_socket),
    ];
    for (key, p) in paths {
        if let Some(p) = p {
            absolute(ctx, key, p)?;
        }
    }
    // an empty inbox_dir turns the inbox off
    match &d.inbox_dir {
        Some(p) if !p.as_os_str().is_empty() => absolute(ctx, "daemon.inbox_dir", p),
        _ => Ok(()),
    }
}

/// Names go into container names, HAProxy server names and file names: keep them plain.
fn is_plain_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 48
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn parse_signal(ctx: &Ctx, key: &str, s: &str) -> Result<nix::sys::signal::Signal, ConfigError> {
    let name = s.to_ascii_uppercase();
    let name = if name.starts_with("SIG") {
        name
    } else {
        format!("SIG{name}")
    };
    nix::sys::signal::Signal::from_str(&name).map_err(|_| {
        ctx.invalid(
            key,
            format!("{s:?} is not a signal name (expected e.g. \"SIGUSR2\" or \"SIGHUP\")"),
        )
    })
}

/// `v` (or `default`) milliseconds, more than 0.
fn positive_ms(
    ctx: &Ctx,
    key: String,
    v: Option<u64>,
    default: u64,
) -> Result<std::time::Duration, ConfigError> {
    positive(ctx, key, v.unwrap_or(default)).map(std::time::Duration::from_millis)
}

/// `v` (or `default`) seconds, more than 0.
fn positive_secs(
    ctx: &Ctx,
    key: String,
    v: Option<u64>,
    default: u64,
) -> Result<std::time::Duration, ConfigError> {
    positive(ctx, key, v.unwrap_or(default)).map(std::time::Duration::from_secs)
}

fn positive(ctx: &Ctx, key: String, v: u64) -> Result<u64, ConfigError> {
    if v == 0 {
        Err(ctx.invalid(key, "must be greater than 0"))
    } else {
        Ok(v)
    }
}

impl Config {
    pub(super) fn validate(self, path: &Path) -> Result<Settings, ConfigError> {
        let ctx = Ctx { path };
        let daemon = daemon::daemon_settings(&ctx, self.daemon)?;
        let services = service_table(&ctx, self.services)?;
        let processes = process_table(&ctx, self.processes, &services)?;
        let report = daemon::report_settings(&ctx, self.report)?;
        let registry = aws::registry_settings(&ctx, self.registry)?;
        let cloudformation = self
            .cloudformation
            .map(|c| aws::cloudformation_settings(&ctx, c, report.region.clone()))
            .transpose()?;
        Ok(Settings {
            source: path.to_owned(),
            daemon,
            report,
            registry,
            cloudformation,
            services,
            processes,
        })
    }
}

/// `[services.*]`: plain names, each backend managed by one service only.
fn service_table(
    ctx: &Ctx,
    given: BTreeMap<String, Service>,
) -> Result<BTreeMap<String, ServiceSettings>, ConfigError> {
    let mut services = BTreeMap::new();
    for (name, s) in given {
        let key = format!("services.{name}");
        if !is_plain_name(&name) {
            return Err(ctx.invalid(key, "service names use 1-48 letters, digits, '-' or '_'"));
        }
        services.insert(name.clone(), s.validate(ctx, &key, name)?);
    }
    let mut backends = BTreeMap::new();
    for s in services.values() {
        let k = (s.haproxy.runtime_socket.clone(), s.haproxy.backend.clone());
        if let Some(other) = backends.insert(k, s.name.clone()) {
            return Err(ctx.invalid(
                format!("services.{}.haproxy.backend", s.name),
                format!(
                    "backend {:?} is already managed by service {other:?}",
                    s.haproxy.backend
                ),
            ));
        }
    }
    Ok(services)
}

/// `[processes.*]`: plain names, none also a service's.
fn process_table(
    ctx: &Ctx,
    given: BTreeMap<String, Process>,
    services: &BTreeMap<String, ServiceSettings>,
) -> Result<BTreeMap<String, ProcessSettings>, ConfigError> {
    let mut processes = BTreeMap::new();
    for (name, p) in given {
        let key = format!("processes.{name}");
        if !is_plain_name(&name) {
            return Err(ctx.invalid(key, "names use 1-48 letters, digits, '-' or '_'"));
        }
        if services.contains_key(&name) {
            return Err(ctx.invalid(
                key,
                format!("{name:?} is also a service: names must be unique"),
            ));
        }
        processes.insert(name.clone(), p.validate(ctx, &key, name)?);
    }
    Ok(processes)
}
