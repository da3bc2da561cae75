//! A real gunicorn (PyPI, in the venv scripts/install-deps makes), daemonized with a pidfile and
//! running from `<app_root>/current`, plus code bundles of the test WSGI app.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub struct Gunicorn {
    /// How it was started: hotswapd's `start_command`.
    pub argv: Vec<String>,
    pub pidfile: PathBuf,
    pub port: u16,
    pub app_root: PathBuf,
    log: PathBuf,
}

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
        };
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]).stdin(Stdio::null());
        assert!(
            cmd.status().unwrap().success(),
            "gunicorn did not start: {}",
            std::fs::read_to_string(&g.log).unwrap_or_default()
        );
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() || !g.pidfile.exists() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "gunicorn not up in 20 s: {}",
                std::fs::read_to_string(&g.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
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
        let mut pids: Vec<i32> = self.master().into_iter().collect();
        let mut two = self.pidfile.clone().into_os_string();
        two.push(".2");
        if let Some(p) = std::fs::read_to_string(PathBuf::from(two))
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            pids.push(p);
        }
        for p in pids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p),
                nix::sys::signal::Signal::SIGQUIT,
            );
        }
        // anything left of this instance
        let _ = Command::new("pkill")
            .arg("-9")
            .arg("-f")
            .arg(self.app_root.display().to_string())
            .status();
    }
}
