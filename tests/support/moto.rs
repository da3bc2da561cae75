//! A real moto server (PyPI, in the venv scripts/install-deps makes) on a loopback port, as the
//! AWS endpoint for SQS, CloudFormation, Auto Scaling, S3 and ELBv2.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Moto {
    child: Option<Child>,
    pub addr: SocketAddr,
    log: PathBuf,
}

fn moto_binary() -> Result<PathBuf, String> {
    if let Ok(p) = std::env::var("MOTO_SERVER") {
        return Ok(PathBuf::from(p));
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/pyenv/bin/moto_server");
    if p.exists() {
        Ok(p)
    } else {
        Err(format!("moto_server not found at {}: these tests need moto (PyPI moto[server]); scripts/install-deps installs it", p.display()))
    }
}

impl Moto {
    pub fn start(dir: &std::path::Path) -> Moto {
        let port = super::haproxy::free_port();
        let mut m = Moto {
            child: None,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log: dir.join("moto.log"),
        };
        m.spawn();
        m
    }

    fn spawn(&mut self) {
        let bin = moto_binary().unwrap_or_else(|e| panic!("{e}"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &self.addr.port().to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting moto_server");
        self.child = Some(child);
        let started = Instant::now();
        while std::net::TcpStream::connect(self.addr).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "moto did not listen in 20 s: {}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Environment for an AWS SDK client pointed at this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.url()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ]
    }

    /// Stops the server (an outage); `resume` starts it again on the same port (state is lost,
    /// as with a real outage of a fresh endpoint).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn resume(&mut self) {
        self.spawn();
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}
