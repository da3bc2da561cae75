//! A real gunicorn (PyPI, in the venv scripts/install-deps makes), daemonized with a pidfile and
//! running from `<app_root>/current`, plus code bundles of the test WSGI app.
//!
//! gunicorn daemonizes (fork, setsid, fork), so it is no child of the test and PDEATHSIG cannot
//! reach it; neither can it reach a master hotswapd starts again with `start_command`. Dropping
//! a `Gunicorn` stops every master its pidfiles name (SIGQUIT, then SIGKILL to its process group,
//! which a daemonized master, its workers and a USR2 re-exec share), then SIGKILLs every process
//! whose command line or working directory names its app root. A `Watchdog` does the latter if
//! the test process dies first. A master's parent is init: it stays a zombie until init reaps it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::{getpgid, Pid};

use super::daemon::{write_config_services, Daemon};
use super::haproxy::Haproxy;
use super::process::{kill_mentioning, listening, mentions, wait_until, Watchdog};

pub struct Gunicorn {
    /// How it was started: hotswapd's `start_command`.
    pub argv: Vec<String>,
    pub pidfile: PathBuf,
    pub port: u16,
    pub app_root: PathBuf,
    log: PathBuf,
    _watchdog: Watchdog,
}

/// Kills, until none is left, every process naming "$1" (an app root, with a trailing slash) in
/// its command line or working directory, but itself.
const SWEEP: &str = r#"
for round in 1 2 3 4 5 6 7 8 9 10; do
    found=
    for p in $( { grep -lsaF -- "$1" /proc/[0-9]*/cmdline
                  find /proc -mindepth 2 -maxdepth 2 -name cwd -lname "$1*"; } 2>/dev/null |
                cut -d/ -f3 | sort -u); do
        [ "$p" = "$$" ] && continue
        kill -KILL "$p" 2>/dev/null && found=1
    done
    [ -n "$found" ] || exit 0
    sleep 0.2
done
"#;

fn gunicorn_binary() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/pyenv/bin/gunicorn");
    assert!(p.exists(), "gunicorn not found at {}: these tests need gunicorn (PyPI); scripts/install-deps installs it", p.display());
    p
}

/// A bundle of the test app reporting `version`: a directory, or a .tar.gz when `tgz`.
pub fn bundle(dir: &Path, version: &str, tgz: bool) -> PathBuf {
    let src = dir.join(format!("bundle-{version}"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/gunicorn-app/app.py"
        ),
        src.join("app.py"),
    )
    .unwrap();
    std::fs::write(src.join("VERSION"), format!("{version}\n")).unwrap();
    if !tgz {
        return src;
    }
    let out = dir.join(format!("bundle-{version}.tar.gz"));
    let ok = Command::new("tar")
        .arg("-czf")
        .arg(&out)
        .arg("-C")
        .arg(&src)
        .args(["app.py", "VERSION"])
        .status()
        .unwrap();
    assert!(ok.success());
    out
}

impl Gunicorn {
    /// Starts gunicorn on release "0" (2 workers); `preload` loads the app in the master.
    pub fn start(dir: &Path, preload: bool) -> Gunicorn {
        let app_root = dir.join("app");
        let first = app_root.join("releases/initial");
        std::fs::create_dir_all(&first).unwrap();
        std::fs::copy(
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/gunicorn-app/app.py"
            ),
            first.join("app.py"),
        )
        .unwrap();
        std::fs::write(first.join("VERSION"), "0\n").unwrap();
        std::os::unix::fs::symlink("releases/initial", app_root.join("current")).unwrap();
        let watchdog = Watchdog::start(SWEEP, &[&format!("{}/", app_root.display())]);
        let port = super::haproxy::free_port();
        let pidfile = dir.join("gunicorn.pid");
        let log = dir.join("gunicorn.log");
        let mut argv: Vec<String> = vec![
            gunicorn_binary().display().to_string(),
            "--pid".into(),
            pidfile.display().to_string(),
        ];
        argv.extend(
            [
                "-w",
                "2",
                "-b",
                &format!("127.0.0.1:{port}"),
                "--daemon",
                "--no-control-socket",
                "--graceful-timeout",
                "10",
            ]
            .map(String::from),
        );
        argv.extend([
            "--chdir".into(),
            app_root.join("current").display().to_string(),
            "--log-file".into(),
            log.display().to_string(),
        ]);
        if preload {
            argv.push("--preload".into());
        }
        argv.push("app:app".into());
        let g = Gunicorn {
            argv: argv.clone(),
            pidfile,
            port,
            app_root: app_root.clone(),
            log,
            _watchdog: watchdog,
        };
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]).stdin(Stdio::null());
        assert!(
            cmd.status().unwrap().success(),
            "gunicorn did not start: {}",
            std::fs::read_to_string(&g.log).unwrap_or_default()
        );
        assert!(
            wait_until(Duration::from_secs(20), || listening(g.addr())
                && g.pidfile.exists()),
            "gunicorn not up in 20 s: {}",
            std::fs::read_to_string(&g.log).unwrap_or_default()
        );
        g
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn master(&self) -> Option<i32> {
        std::fs::read_to_string(&self.pidfile)
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The `[processes.app]` table for hotswapd.
    pub fn config(&self, strategy: &str, health_deadline_secs: u64) -> String {
        format!(
            r#"
[processes.app]
pidfile = "{pid}"
port = {port}
app_root = "{root}"
strategy = "{strategy}"
drain_budget_secs = 20
host_budget_secs = 60
start_command = {argv:?}

[processes.app.health]
path = "/health"
release_json_field = "release"
deadline_secs = {health_deadline_secs}
"#,
            pid = self.pidfile.display(),
            port = self.port,
            root = self.app_root.display(),
            argv = self.argv,
        )
    }
}

impl Drop for Gunicorn {
    fn drop(&mut self) {
        let root = format!("{}/", self.app_root.display());
        let mut two = self.pidfile.clone().into_os_string();
        two.push(".2");
        for pidfile in [self.pidfile.clone(), PathBuf::from(two)] {
            let pid = std::fs::read_to_string(pidfile)
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok());
            // a pid from a stale pidfile may be anybody's by now
            if let Some(pid) = pid.filter(|p| mentions(*p, &root)) {
                let master = Pid::from_raw(pid);
                if let Ok(group) = getpgid(Some(master)) {
                    // quick shutdown: the master stops and reaps its workers then exits (its own
                    // parent is init); SIGKILL to the group for whatever is left after 3 s
                    let _ = kill(master, Signal::SIGQUIT);
                    wait_until(Duration::from_secs(3), || !mentions(pid, &root));
                    let _ = killpg(group, Signal::SIGKILL);
                }
            }
        }
        // and anything else of this instance
        kill_mentioning(&root);
    }
}

/// hotswapd with no container service and `[processes.app]` on `g`. HAProxy is not involved in a
/// code reload, but the config is written for one: it runs as long as the daemon.
pub fn daemon_for(
    dir: &Path,
    g: &Gunicorn,
    instance: &str,
    strategy: &str,
    health_deadline_secs: u64,
) -> Daemon {
    let haproxy = Haproxy::start(dir, "unused").unwrap_or_else(|e| panic!("{e}"));
    let config = write_config_services(dir, instance, &haproxy, &[]);
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!("{text}{}", g.config(strategy, health_deadline_secs)),
    )
    .unwrap();
    Daemon::start(dir, &config).with_haproxy(haproxy)
}
