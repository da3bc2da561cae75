//! The real hotswapd binary, configured for one test, and the CLI beside it. The daemon is
//! killed when dropped or when the test process dies (`super::process::Guarded`).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::haproxy::Haproxy;
use super::process::{die_with_caller, Guarded};

pub const HOTSWAPD: &str = env!("CARGO_BIN_EXE_hotswapd");
pub const HOTSWAPCTL: &str = env!("CARGO_BIN_EXE_hotswapctl");

#[derive(Clone)]
pub struct ServiceOpts {
    pub health_deadline_secs: u64,
    pub drain_budget_secs: u64,
    pub switch: &'static str,
    pub keep_images: usize,
    /// Extra `KEY = "value"` lines for the container's env table.
    pub env: Vec<(&'static str, String)>,
    /// Lines added to `[services.NAME]` itself (e.g. `replicas = 4`).
    pub top: String,
    /// Lines added to `[services.NAME.container]` (e.g. `memory = "32m"`).
    pub container: String,
    /// TOML appended after the service's tables (e.g. a `[services.web.ramp]` table).
    pub extra: String,
}

impl Default for ServiceOpts {
    fn default() -> Self {
        ServiceOpts {
            health_deadline_secs: 20,
            drain_budget_secs: 10,
            switch: "runtime",
            keep_images: 1,
            env: Vec::new(),
            top: String::new(),
            container: String::new(),
            extra: String::new(),
        }
    }
}

pub fn write_config(dir: &Path, instance: &str, haproxy: &Haproxy, opts: &ServiceOpts) -> PathBuf {
    write_config_services(dir, instance, haproxy, &[("web", opts)])
}

/// One `[services.NAME]` per entry, each on the HAProxy backend of the same name.
pub fn write_config_services(
    dir: &Path,
    instance: &str,
    haproxy: &Haproxy,
    services: &[(&str, &ServiceOpts)],
) -> PathBuf {
    let path = dir.join("hotswap.toml");
    let mut text = format!(
        r#"[daemon]
socket = "{dir}/hotswapd.sock"
state_dir = "{dir}/state"
instance_id = "{instance}"
"#,
        dir = dir.display()
    );
    for (name, opts) in services {
        text.push_str(&service_toml(name, haproxy, opts));
    }
    std::fs::write(&path, text).unwrap();
    path
}

/// Adds `lines` to the `[daemon]` table of a config `write_config` wrote.
pub fn add_daemon_lines(config: &Path, lines: &str) {
    let text = std::fs::read_to_string(config).unwrap();
    let text = text.replacen("[daemon]\n", &format!("[daemon]\n{lines}\n"), 1);
    std::fs::write(config, text).unwrap();
}

pub fn service_toml(name: &str, haproxy: &Haproxy, opts: &ServiceOpts) -> String {
    format!(
        r#"
[services.{name}]
container_port = 8080
drain_budget_secs = {drain}
host_budget_secs = 120
keep_images = {keep}
{top}
[services.{name}.container]
stop_grace_secs = 5
env = {{ {env} }}
{container}

[services.{name}.health]
path = "/health"
release_json_field = "release"
deadline_secs = {deadline}

[services.{name}.haproxy]
runtime_socket = "{admin}"
backend = "{name}"
config_file = "{cfg}"
reload = "signal"
pidfile = "{pid}"
reload_signal = "SIGUSR2"
server_options = "check inter 1s"
switch = "{switch}"
{extra}
"#,
        drain = opts.drain_budget_secs,
        keep = opts.keep_images,
        deadline = opts.health_deadline_secs,
        admin = haproxy.admin_socket.display(),
        cfg = haproxy.config.display(),
        pid = haproxy.pidfile.display(),
        switch = opts.switch,
        top = opts.top,
        container = opts.container,
        extra = opts.extra,
        env = opts
            .env
            .iter()
            .map(|(k, v)| format!("{k} = {v:?}"))
            .collect::<Vec<_>>()
            .join(", "),
    )
}

pub struct Daemon {
    child: Option<Guarded>,
    pub config: PathBuf,
    pub dir: PathBuf,
    pub socket: PathBuf,
    /// An HAProxy the config names that lives as long as the daemon (see `with_haproxy`);
    /// dropped after the daemon is killed.
    haproxy: Option<Haproxy>,
}

impl Daemon {
    /// Starts hotswapd and waits until every service finished its start-up recovery.
    pub fn start(dir: &Path, config: &Path) -> Daemon {
        Daemon::start_env(dir, config, &[])
    }

    /// As `start`, with extra environment (e.g. an AWS endpoint).
    pub fn start_env(dir: &Path, config: &Path, env: &[(&str, String)]) -> Daemon {
        let d = Daemon::spawn_env(dir, config, env);
        d.wait_idle(Duration::from_secs(60));
        d
    }

    /// Starts hotswapd without waiting for anything.
    pub fn spawn_env(dir: &Path, config: &Path, env: &[(&str, String)]) -> Daemon {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("hotswapd.log"))
            .unwrap();
        let mut cmd = Command::new(HOTSWAPD);
        cmd.arg("--config")
            .arg(config)
            .env("RUST_LOG", "info")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let child = Guarded::spawn(cmd).expect("starting hotswapd");
        Daemon {
            child: Some(child),
            config: config.to_owned(),
            dir: dir.to_owned(),
            socket: dir.join("hotswapd.sock"),
            haproxy: None,
        }
    }

    /// Keeps `haproxy` (whose sockets and files the config names) running as long as the daemon.
    pub fn with_haproxy(mut self, haproxy: Haproxy) -> Daemon {
        self.haproxy = Some(haproxy);
        self
    }

    /// The daemon's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Guarded::id)
    }

    /// Waits until every service has settled: recovered, nothing swapping or repairing (serving,
    /// or degraded or down with a reason).
    pub fn wait_idle(&self, limit: Duration) {
        let started = Instant::now();
        loop {
            if let Ok(status) = self.status_json() {
                let services = status["services"].as_array().cloned().unwrap_or_default();
                let settled = |s: &serde_json::Value| {
                    !matches!(
                        s["state"].as_str(),
                        Some("recovering" | "swapping" | "repairing") | None
                    )
                };
                if !services.is_empty() && services.iter().all(settled) {
                    return;
                }
            }
            assert!(
                started.elapsed() < limit,
                "hotswapd not idle after {limit:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn ctl(&self, args: &[&str]) -> Output {
        die_with_caller(
            Command::new(HOTSWAPCTL)
                .arg("--socket")
                .arg(&self.socket)
                .args(args)
                .stdin(Stdio::null()),
        )
        .output()
        .expect("running hotswapctl")
    }

    pub fn status_json(&self) -> Result<serde_json::Value, String> {
        let out = self.ctl(&["status", "--json"]);
        // 14: a service is not serving; the status is still whole
        if !matches!(out.status.code(), Some(0 | 14)) {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
    }

    /// `hotswapctl deploy web --image IMAGE --wait`, returning (exit code, stdout, stderr).
    pub fn deploy(&self, image: &str) -> (i32, String, String) {
        self.deploy_to("web", image)
    }

    pub fn deploy_to(&self, service: &str, image: &str) -> (i32, String, String) {
        let out = self.ctl(&[
            "deploy",
            service,
            "--image",
            image,
            "--wait",
            "--timeout-secs",
            "120",
        ]);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn deploy_ok(&self, image: &str) {
        self.deploy_ok_to("web", image)
    }

    pub fn deploy_ok_to(&self, service: &str, image: &str) {
        let (code, out, err) = self.deploy_to(service, image);
        assert_eq!(
            code,
            0,
            "deploy {image} failed: {out}{err}\nlog:\n{}",
            self.log()
        );
    }

    pub fn reports(&self) -> Vec<serde_json::Value> {
        self.reports_at(&self.dir.join("state/reports.jsonl"))
    }

    /// Reports from a reports file the config names; every line must be a whole JSON report.
    pub fn reports_at(&self, path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("report lines are JSON"))
            .collect()
    }

    /// `GET /metrics` on the control socket, checked by `promtool check metrics` (Debian's
    /// prometheus package; scripts/install-deps installs it): the text, or what is wrong.
    pub fn metrics(&self) -> String {
        let socket = self.socket.clone();
        let text = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(hotswap::control::client::Client::new(&socket).metrics())
        })
        .join()
        .unwrap()
        .expect("GET /metrics");
        promtool_check(&text);
        text
    }

    /// The value of the metric line that starts with `series` (name and labels as written).
    pub fn metric(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("hotswapd.log")).unwrap_or_default()
    }

    /// Sends a signal to the daemon (SIGHUP, SIGTERM, ...).
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        self.child
            .as_ref()
            .expect("daemon running")
            .signal(sig)
            .unwrap();
    }

    /// Waits up to `limit` for the daemon to exit; its exit status.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let st = self.child.as_mut()?.wait_timeout(limit)?;
        self.child = None;
        Some(st)
    }

    /// SIGKILL: no chance to tidy up, as in a crash.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Fails the test with promtool's findings unless `promtool check metrics` passes `text`.
pub fn promtool_check(text: &str) {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("promtool is missing ({e}): scripts/install-deps installs Debian's prometheus package")
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}\non:\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
