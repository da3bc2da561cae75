//! A real HAProxy (Debian package) per test, in master-worker mode, on a loopback port; the
//! master and its workers are killed when it is dropped or the test process dies
//! (`super::process::Guarded`).
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::process::{wait_until, Guarded};

pub struct Haproxy {
    child: Guarded,
    /// The first backend's frontend.
    pub frontend: SocketAddr,
    /// Backend name → its frontend.
    pub frontends: std::collections::BTreeMap<String, SocketAddr>,
    pub admin_socket: PathBuf,
    pub master_socket: PathBuf,
    pub config: PathBuf,
    pub pidfile: PathBuf,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn haproxy_binary() -> Result<PathBuf, String> {
    for dir in ["/usr/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin"] {
        let p = Path::new(dir).join("haproxy");
        if p.exists() {
            return Ok(p);
        }
    }
    Err("haproxy not found (looked in /usr/sbin, /usr/local/sbin, /usr/bin): these tests need HAProxy; \
         scripts/test installs it with apt-get install haproxy"
        .into())
}

impl Haproxy {
    /// Starts HAProxy with one frontend sending everything to `backend`, which starts empty.
    pub fn start(dir: &Path, backend: &str) -> Result<Haproxy, String> {
        Haproxy::start_with_balance(dir, backend, "roundrobin")
    }

    /// As `start`, with another balance algorithm (a static one takes no dynamic servers).
    pub fn start_with_balance(dir: &Path, backend: &str, balance: &str) -> Result<Haproxy, String> {
        Haproxy::start_backends(dir, &[(backend, balance)])
    }

    /// One frontend (own port) and one initially empty backend per entry.
    pub fn start_backends(dir: &Path, backends: &[(&str, &str)]) -> Result<Haproxy, String> {
        Haproxy::start_backends_with(dir, backends, "")
    }

    /// As `start_backends`, with `defaults` lines added to the `defaults` section.
    pub fn start_backends_with(
        dir: &Path,
        backends: &[(&str, &str)],
        defaults: &str,
    ) -> Result<Haproxy, String> {
        let bin = haproxy_binary()?;
        let admin_socket = dir.join("haproxy-admin.sock");
        let master_socket = dir.join("haproxy-master.sock");
        let config = dir.join("haproxy.cfg");
        let pidfile = dir.join("haproxy.pid");
        let mut text = format!(
            "global\n    stats socket {admin} mode 600 level admin expose-fd listeners\n    maxconn 4000\n\n\
             defaults\n    mode http\n    timeout connect 2s\n    timeout client 30s\n    timeout server 30s\n    timeout http-keep-alive 30s\n    timeout tunnel 1h\n{defaults}\n",
            admin = admin_socket.display()
        );
        let mut frontends = std::collections::BTreeMap::new();
        for (backend, balance) in backends {
            let port = free_port();
            frontends.insert(
                backend.to_string(),
                SocketAddr::from(([127, 0, 0, 1], port)),
            );
            text.push_str(&format!(
                "frontend fe_{backend}\n    bind 127.0.0.1:{port}\n    default_backend {backend}\n\n\
                 backend {backend}\n    balance {balance}\n\n"
            ));
        }
        let port = frontends[backends[0].0].port();
        std::fs::write(&config, text).map_err(|e| e.to_string())?;
        let log = std::fs::File::create(dir.join("haproxy.log")).map_err(|e| e.to_string())?;
        let mut cmd = Command::new(bin);
        cmd.arg("-W")
            .arg("-S")
            .arg(&master_socket)
            .arg("-f")
            .arg(&config)
            .arg("-p")
            .arg(&pidfile)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let child = Guarded::spawn(cmd).map_err(|e| format!("starting haproxy: {e}"))?;
        let h = Haproxy {
            child,
            frontend: SocketAddr::from(([127, 0, 0, 1], port)),
            frontends,
            admin_socket,
            master_socket,
            config,
            pidfile,
        };
        if !wait_until(Duration::from_secs(10), || h.command("show info").is_ok()) {
            let log = std::fs::read_to_string(dir.join("haproxy.log")).unwrap_or_default();
            return Err(format!(
                "haproxy did not open its admin socket in 10 s: {log}"
            ));
        }
        Ok(h)
    }

    /// One runtime API command (for assertions; the daemon speaks it itself).
    pub fn command(&self, cmd: &str) -> Result<String, String> {
        command_at(&self.admin_socket, cmd)
    }
}

/// One runtime API command on the admin socket at `socket` (usable from another thread).
pub fn command_at(socket: &Path, cmd: &str) -> Result<String, String> {
    {
        use std::io::{Read, Write};
        let mut s = std::os::unix::net::UnixStream::connect(socket).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok();
        s.write_all(format!("{cmd}\n").as_bytes())
            .map_err(|e| e.to_string())?;
        let mut out = String::new();
        s.read_to_string(&mut out).map_err(|e| e.to_string())?;
        Ok(out)
    }
}

impl Haproxy {
    /// Names of the servers in `backend` (from `show servers state`).
    pub fn servers(&self, backend: &str) -> Vec<String> {
        let out = self
            .command(&format!("show servers state {backend}"))
            .unwrap_or_default();
        out.lines()
            .filter(|l| !l.starts_with('#') && l.split_whitespace().count() > 4)
            .map(|l| l.split_whitespace().nth(3).unwrap().to_string())
            .collect()
    }

    /// Hitless reload: SIGUSR2 to the master.
    pub fn reload(&self) {
        self.child
            .signal(nix::sys::signal::Signal::SIGUSR2)
            .unwrap();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The pid of the worker answering the admin socket.
    pub fn worker_pid(&self) -> Option<String> {
        let info = self.command("show info").ok()?;
        info.lines()
            .find_map(|l| l.strip_prefix("Pid: "))
            .map(str::to_string)
    }

    /// Reloads and waits (up to 10 s) until a new worker answers the admin socket.
    pub fn reload_and_wait(&self) {
        let before = self.worker_pid();
        self.reload();
        let ok = wait_until(Duration::from_secs(10), || {
            self.worker_pid()
                .is_some_and(|p| Some(&p) != before.as_ref())
        });
        assert!(ok, "HAProxy's new worker did not answer within 10 s");
    }
}
