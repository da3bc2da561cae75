//! The config file as written: every key optional where a default exists, unknown keys rejected.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

use super::*;
use crate::engine::phase::RampStep;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Config {
    #[serde(default)]
    daemon: Daemon,
    #[serde(default)]
    report: Report,
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
    socket_group: Option<String>,
    #[serde(default)]
    allowed_uids: Vec<u32>,
    #[serde(default)]
    allowed_groups: Vec<String>,
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

impl Ramp {
    fn validate(self, ctx: &Ctx, key: &str) -> Result<RampSettings, ConfigError> {
        let secs = |k: &str, v: f64| -> Result<Duration, ConfigError> {
            if v.is_finite() && (0.0..=86_400.0).contains(&v) {
                Ok(Duration::from_secs_f64(v))
            } else {
                Err(ctx.invalid(
                    format!("{key}.{k}"),
                    format!("{v}: expected 0 to 86400 seconds"),
                ))
            }
        };
        let hold = secs("hold_secs", self.hold_secs)?;
        let watch = secs("watch_secs", self.watch_secs.unwrap_or(0.0))?;
        if self.steps.is_empty() {
            return Err(ctx.invalid(
                format!("{key}.steps"),
                "give at least one share, e.g. [5, 25, 50, 100]",
            ));
        }
        let mut steps = Vec::new();
        let mut last = 0;
        for (i, &p) in self.steps.iter().enumerate() {
            if p == 0 || p > 100 || p <= last {
                return Err(ctx.invalid(
                    format!("{key}.steps[{i}]"),
                    format!("{p}: shares are percentages from 1 to 100, each above the one before"),
                ));
            }
            last = p;
            steps.push(RampStep {
                share_pct: p as u8,
                hold_ms: hold.as_millis() as u64,
            });
        }
        if last != 100 {
            return Err(ctx.invalid(
                format!("{key}.steps"),
                format!("the last share is {last}: a ramp ends with 100 (all traffic to the new release)"),
            ));
        }
        let d = CanaryLimits::default();
        let pct = |k: &str, v: Option<f64>, default: f64| -> Result<f64, ConfigError> {
            match v {
                None => Ok(default),
                Some(v) if v.is_finite() && (0.0..=100.0).contains(&v) => Ok(v),
                Some(v) => Err(ctx.invalid(
                    format!("{key}.{k}"),
                    format!("{v}: expected a percentage from 0 to 100"),
                )),
            }
        };
        let factor = match self.max_latency_factor {
            None => d.max_latency_factor,
            Some(f) if f.is_finite() && f >= 1.0 => f,
            Some(f) => {
                return Err(ctx.invalid(
                    format!("{key}.max_latency_factor"),
                    format!("{f}: expected 1.0 or more"),
                ))
            }
        };
        Ok(RampSettings {
            steps,
            watch,
            check_interval: Duration::from_millis(positive(
                ctx,
                format!("{key}.check_interval_ms"),
                self.check_interval_ms.unwrap_or(250),
            )?),
            limits: CanaryLimits {
                max_error_pct: pct("max_error_pct", self.max_error_pct, d.max_error_pct)?,
                error_margin_pct: pct(
                    "error_margin_pct",
                    self.error_margin_pct,
                    d.error_margin_pct,
                )?,
                max_latency_factor: factor,
                latency_floor_ms: self.latency_floor_ms.unwrap_or(d.latency_floor_ms),
                min_requests: self.min_requests.unwrap_or(d.min_requests),
            },
        })
    }
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
struct Container {
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    command: Vec<String>,
    #[serde(default)]
    volumes: Vec<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    stop_signal: Option<String>,
    stop_grace_secs: Option<u64>,
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
        let d = self.daemon;
        let state_dir = d
            .state_dir
            .unwrap_or_else(|| PathBuf::from("/var/lib/hotswap"));
        let instance_id = d.instance_id.unwrap_or_else(hostname);
        if !is_plain_name(&instance_id) {
            return Err(ctx.invalid(
                "daemon.instance_id",
                format!("{instance_id:?}: use 1-48 letters, digits, '-' or '_'"),
            ));
        }
        let daemon = DaemonSettings {
            socket: d
                .socket
                .unwrap_or_else(|| PathBuf::from("/run/hotswap/hotswapd.sock")),
            reports_file: d
                .reports_file
                .unwrap_or_else(|| state_dir.join("reports.jsonl")),
            inbox_dir: match d.inbox_dir {
                Some(p) if p.as_os_str().is_empty() => None,
                Some(p) => Some(p),
                None => Some(state_dir.join("inbox")),
            },
            state_dir,
            instance_id,
            docker_socket: d.docker_socket,
            access: AccessSettings {
                socket_group: d.socket_group.unwrap_or_else(|| "hotswap".to_string()),
                allowed_uids: d.allowed_uids,
                allowed_groups: d.allowed_groups,
            },
        };
        let mut services = BTreeMap::new();
        for (name, s) in self.services {
            let key = format!("services.{name}");
            if !is_plain_name(&name) {
                return Err(ctx.invalid(key, "service names use 1-48 letters, digits, '-' or '_'"));
            }
            services.insert(name.clone(), s.validate(&ctx, &key, name)?);
        }
        let mut processes = BTreeMap::new();
        for (name, p) in self.processes {
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
            processes.insert(name.clone(), p.validate(&ctx, &key, name)?);
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
        let r = self.report;
        if let Some(url) = &r.sqs_queue_url {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(ctx.invalid("report.sqs_queue_url", format!("{url:?}: expected the queue URL (https://sqs.REGION.amazonaws.com/ACCOUNT/NAME)")));
            }
        }
        let imds_endpoint = match r.imds_endpoint {
            Some(e) if e.is_empty() => None,
            Some(e) if !e.starts_with("http://") => {
                return Err(ctx.invalid(
                    "report.imds_endpoint",
                    format!("{e:?}: expected http://HOST[:PORT]"),
                ))
            }
            Some(e) => Some(e),
            None => r
                .sqs_queue_url
                .as_ref()
                .map(|_| "http://169.254.169.254".to_string()),
        };
        let report = ReportSettings {
            sqs_queue_url: r.sqs_queue_url,
            message_group_id: r.message_group_id.unwrap_or_else(|| "hotswap".into()),
            stack: r.stack,
            imds_endpoint,
            region: r.region,
        };
        Ok(Settings {
            source: path.to_owned(),
            daemon,
            report,
            services,
            processes,
        })
    }
}

fn health_settings(ctx: &Ctx, key: &str, h: Health) -> Result<HealthSettings, ConfigError> {
    let hk = format!("{key}.health");
    let path = h.path.unwrap_or_else(|| "/health".to_string());
    if !path.starts_with('/') {
        return Err(ctx.invalid(
            format!("{hk}.path"),
            format!("{path:?}: must start with '/'"),
        ));
    }
    let release_match = match (
        h.release_body_contains,
        h.release_json_field,
        h.release_json_equals,
    ) {
        (None, None, None) => ReleaseMatch::None,
        (Some(t), None, None) => ReleaseMatch::BodyContains(t),
        (None, Some(field), equals) => ReleaseMatch::JsonField {
            field,
            equals: equals.unwrap_or_else(|| "{version}".to_string()),
        },
        (None, None, Some(_)) => {
            return Err(ctx.invalid(
                format!("{hk}.release_json_equals"),
                "needs release_json_field to say which field to compare",
            ))
        }
        (Some(_), _, _) => {
            return Err(ctx.invalid(
                format!("{hk}.release_body_contains"),
                "use either release_body_contains or release_json_field, not both",
            ))
        }
    };
    let expect_status = h.expect_status.unwrap_or(200);
    if !(100..=599).contains(&expect_status) {
        return Err(ctx.invalid(
            format!("{hk}.expect_status"),
            "must be an HTTP status 100-599",
        ));
    }
    let consecutive_passes = h.consecutive_passes.unwrap_or(2);
    if consecutive_passes == 0 {
        return Err(ctx.invalid(format!("{hk}.consecutive_passes"), "must be at least 1"));
    }
    let min_interval_ms = positive(
        ctx,
        format!("{hk}.min_interval_ms"),
        h.min_interval_ms.unwrap_or(2),
    )?;
    let max_interval_ms = positive(
        ctx,
        format!("{hk}.max_interval_ms"),
        h.max_interval_ms.unwrap_or(50),
    )?;
    if max_interval_ms < min_interval_ms {
        return Err(ctx.invalid(
            format!("{hk}.max_interval_ms"),
            "must not be below min_interval_ms",
        ));
    }
    Ok(HealthSettings {
        path,
        expect_status,
        release_match,
        attempt_timeout: Duration::from_millis(positive(
            ctx,
            format!("{hk}.attempt_timeout_ms"),
            h.attempt_timeout_ms.unwrap_or(1000),
        )?),
        consecutive_passes,
        deadline: Duration::from_secs(positive(
            ctx,
            format!("{hk}.deadline_secs"),
            h.deadline_secs.unwrap_or(60),
        )?),
        min_interval: Duration::from_millis(min_interval_ms),
        max_interval: Duration::from_millis(max_interval_ms),
    })
}

impl Process {
    fn validate(self, ctx: &Ctx, key: &str, name: String) -> Result<ProcessSettings, ConfigError> {
        if self.port == 0 {
            return Err(ctx.invalid(format!("{key}.port"), "must be 1-65535"));
        }
        if !self.app_root.is_absolute() {
            return Err(ctx.invalid(
                format!("{key}.app_root"),
                format!("{}: must be an absolute path", self.app_root.display()),
            ));
        }
        let strategy = match self.strategy.as_deref().unwrap_or("hup") {
            "hup" => ReloadStrategy::Hup,
            "usr2" => ReloadStrategy::Usr2,
            other => {
                return Err(ctx.invalid(
                    format!("{key}.strategy"),
                    format!("{other:?}: expected \"hup\" or \"usr2\""),
                ))
            }
        };
        let sig = |field: &str, v: Option<String>, default: &str| {
            parse_signal(
                ctx,
                &format!("{key}.{field}"),
                v.as_deref().unwrap_or(default),
            )
        };
        let drain_budget = Duration::from_secs(self.drain_budget_secs.unwrap_or(60));
        let host_budget = Duration::from_secs(positive(
            ctx,
            format!("{key}.host_budget_secs"),
            self.host_budget_secs.unwrap_or(180),
        )?);
        if drain_budget >= host_budget {
            return Err(ctx.invalid(
                format!("{key}.drain_budget_secs"),
                "must be shorter than host_budget_secs",
            ));
        }
        Ok(ProcessSettings {
            health: health_settings(ctx, key, self.health)?,
            name,
            pidfile: self.pidfile,
            port: self.port,
            app_root: self.app_root,
            strategy,
            reload_signal: sig("reload_signal", self.reload_signal, "SIGHUP")?,
            upgrade_signal: sig("upgrade_signal", self.upgrade_signal, "SIGUSR2")?,
            stop_old_signal: sig("stop_old_signal", self.stop_old_signal, "SIGTERM")?,
            drain_budget,
            host_budget,
            keep_releases: self.keep_releases.unwrap_or(1),
            start_command: self.start_command,
        })
    }
}

impl Service {
    fn validate(self, ctx: &Ctx, key: &str, name: String) -> Result<ServiceSettings, ConfigError> {
        if self.container_port == 0 {
            return Err(ctx.invalid(format!("{key}.container_port"), "must be 1-65535"));
        }
        let c = self.container;
        let stop_signal = c.stop_signal.unwrap_or_else(|| "SIGTERM".to_string());
        parse_signal(ctx, &format!("{key}.container.stop_signal"), &stop_signal)?;
        for (i, v) in c.volumes.iter().enumerate() {
            if v.split(':').count() < 2 {
                return Err(ctx.invalid(
                    format!("{key}.container.volumes[{i}]"),
                    format!("{v:?}: expected \"HOST_PATH:CONTAINER_PATH[:ro]\""),
                ));
            }
        }
        for l in c.labels.keys() {
            if l.starts_with("hotswap.") {
                return Err(ctx.invalid(
                    format!("{key}.container.labels.{l}"),
                    "labels starting with \"hotswap.\" are set by hotswapd itself",
                ));
            }
        }
        let container = ContainerSettings {
            env: c.env,
            command: c.command,
            volumes: c.volumes,
            labels: c.labels,
            stop_signal,
            stop_grace: Duration::from_secs(c.stop_grace_secs.unwrap_or(10)),
        };

        let health = health_settings(ctx, key, self.health)?;

        let x = self.haproxy;
        let xk = format!("{key}.haproxy");
        let backend = x.backend.unwrap_or_else(|| name.clone());
        if backend.is_empty() || backend.contains(char::is_whitespace) || backend.contains('/') {
            return Err(ctx.invalid(
                format!("{xk}.backend"),
                format!("{backend:?} is not a backend name"),
            ));
        }
        let reload = match x.reload.as_deref() {
            None if x.master_socket.is_none() && x.pidfile.is_none() => None,
            None | Some("master-socket") if x.master_socket.is_some() => {
                Some(ReloadVia::MasterSocket(x.master_socket.clone().unwrap()))
            }
            None | Some("signal") if x.pidfile.is_some() => {
                let sig = x.reload_signal.as_deref().unwrap_or("SIGUSR2");
                Some(ReloadVia::Signal {
                    pidfile: x.pidfile.clone().unwrap(),
                    signal: parse_signal(ctx, &format!("{xk}.reload_signal"), sig)?,
                })
            }
            Some("master-socket") => {
                return Err(ctx.invalid(
                    format!("{xk}.master_socket"),
                    "reload = \"master-socket\" needs master_socket",
                ))
            }
            Some("signal") => {
                return Err(ctx.invalid(
                    format!("{xk}.pidfile"),
                    "reload = \"signal\" needs pidfile (HAProxy master's pid)",
                ))
            }
            Some(other) => {
                return Err(ctx.invalid(
                    format!("{xk}.reload"),
                    format!("{other:?}: expected \"master-socket\" or \"signal\""),
                ))
            }
            None => unreachable!("handled by the first arm"),
        };
        let switch = match x.switch.as_deref().unwrap_or("runtime") {
            "runtime" => SwitchMode::Runtime,
            "reload" => SwitchMode::Reload,
            other => {
                return Err(ctx.invalid(
                    format!("{xk}.switch"),
                    format!("{other:?}: expected \"runtime\" or \"reload\""),
                ))
            }
        };
        if switch == SwitchMode::Reload && (x.config_file.is_none() || reload.is_none()) {
            return Err(ctx.invalid(
                format!("{xk}.switch"),
                "switch = \"reload\" needs config_file and a way to reload (master_socket or pidfile)",
            ));
        }
        let server_options = x
            .server_options
            .unwrap_or_else(|| "check inter 2s".to_string());
        if server_options.contains('\n') || server_options.contains(';') {
            return Err(ctx.invalid(
                format!("{xk}.server_options"),
                "must be one line without ';'",
            ));
        }
        let haproxy = HaproxySettings {
            runtime_socket: x.runtime_socket,
            backend,
            config_file: x.config_file,
            reload,
            server_options,
            switch,
            command_timeout: Duration::from_millis(positive(
                ctx,
                format!("{xk}.command_timeout_ms"),
                x.command_timeout_ms.unwrap_or(2000),
            )?),
        };
        let drain_budget = Duration::from_secs(self.drain_budget_secs.unwrap_or(60));
        let host_budget = Duration::from_secs(positive(
            ctx,
            format!("{key}.host_budget_secs"),
            self.host_budget_secs.unwrap_or(60 + 120),
        )?);
        if drain_budget >= host_budget {
            return Err(ctx.invalid(
                format!("{key}.drain_budget_secs"),
                "must be shorter than host_budget_secs (the budget of the whole swap)",
            ));
        }
        let code = match self.code {
            None => None,
            Some(c) => {
                let ck = format!("{key}.code");
                if !c.app_root.is_absolute() {
                    return Err(ctx.invalid(
                        format!("{ck}.app_root"),
                        format!("{}: must be an absolute path", c.app_root.display()),
                    ));
                }
                let mounted = container
                    .volumes
                    .iter()
                    .any(|v| Path::new(v.split(':').next().unwrap_or("")) == c.app_root);
                if !mounted {
                    return Err(ctx.invalid(
                        format!("{ck}.app_root"),
                        format!("{} is not mounted into the container: add \"{}:/code\" (or another path) to {key}.container.volumes", c.app_root.display(), c.app_root.display()),
                    ));
                }
                let reload_signal = c.reload_signal.unwrap_or_else(|| "SIGHUP".into());
                parse_signal(ctx, &format!("{ck}.reload_signal"), &reload_signal)?;
                Some(MountedCode {
                    app_root: c.app_root,
                    reload_signal,
                    keep_releases: c.keep_releases.unwrap_or(1),
                })
            }
        };
        let ramp = match self.ramp {
            Some(r) if code.is_none() => Some(r.validate(ctx, &format!("{key}.ramp"))?),
            Some(_) => {
                return Err(ctx.invalid(
                    format!("{key}.ramp"),
                    "a service with mounted code reloads its container in place: there is no second release to ramp traffic to",
                ))
            }
            None => None,
        };
        let replicas = positive(
            ctx,
            format!("{key}.replicas"),
            self.replicas.unwrap_or(1) as u64,
        )? as usize;
        let batch = positive(ctx, format!("{key}.batch"), self.batch.unwrap_or(1) as u64)? as usize;
        if batch > replicas {
            return Err(ctx.invalid(
                format!("{key}.batch"),
                format!("{batch} is more than replicas ({replicas})"),
            ));
        }
        if replicas > 1 && code.is_some() {
            return Err(ctx.invalid(
                format!("{key}.replicas"),
                "a service with mounted code runs one container",
            ));
        }
        if replicas > 1 && switch == SwitchMode::Reload {
            return Err(ctx.invalid(
                format!("{key}.replicas"),
                "replicas need switch = \"runtime\"",
            ));
        }
        if ramp.is_some() && switch == SwitchMode::Reload {
            return Err(ctx.invalid(
                format!("{key}.ramp"),
                "a ramp sets server weights through the runtime API: it needs switch = \"runtime\"",
            ));
        }
        Ok(ServiceSettings {
            ramp,
            replicas,
            batch,
            code,
            name,
            container,
            container_port: self.container_port,
            health,
            haproxy,
            drain_budget,
            host_budget,
            keep_images: self.keep_images.unwrap_or(1),
        })
    }
}
