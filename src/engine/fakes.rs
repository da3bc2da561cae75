//! Recording fakes of the outside world (Docker, HAProxy, the health gate, the reporter) for the
//! engine's unit tests: each keeps the state a real one would show and the calls made to it, in
//! order, and can be told to fail a given call.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

mod gunicorn;
mod haproxy;
pub use gunicorn::FakeGunicorn;
pub use haproxy::{FakeHaproxy, FakeServer};

use crate::config::HealthSettings;
use crate::health::{GateFailed, Passed, Prober};
use crate::report::{Report, ReportError, Reporter};
use crate::runtime::{ContainerSpec, Death, Found, Runtime, RuntimeError, Started};

/// A shared log of calls, across fakes, so a test can assert on their order.
#[derive(Clone, Default)]
pub struct Calls(Arc<Mutex<Vec<String>>>);

impl Calls {
    pub fn push(&self, call: String) {
        self.0.lock().unwrap().push(call);
    }
    pub fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
    /// Index of the first call starting with `prefix`.
    pub fn index(&self, prefix: &str) -> Option<usize> {
        self.all().iter().position(|c| c.starts_with(prefix))
    }
    pub fn any(&self, prefix: &str) -> bool {
        self.index(prefix).is_some()
    }
    pub fn count(&self, prefix: &str) -> usize {
        self.all().iter().filter(|c| c.starts_with(prefix)).count()
    }
}

#[derive(Debug, Clone)]
pub struct FakeContainer {
    pub name: String,
    pub image: String,
    pub labels: BTreeMap<String, String>,
    pub running: bool,
    /// The port its container port is published on (whether or not it is asked for).
    pub host_port: u16,
    /// Its address on its Docker network.
    pub ip: std::net::IpAddr,
}

#[derive(Default)]
pub struct DockerState {
    pub containers: BTreeMap<String, FakeContainer>,
    pub images: BTreeSet<String>,
    next: u32,
    /// Calls that fail: "ensure_image", "start", "remove", "list", "signal".
    pub failing: BTreeSet<&'static str>,
    /// Start this many containers, then fail the next starts.
    pub starts_left: Option<u32>,
    /// Containers of this image exit right after they start.
    pub dies: BTreeSet<String>,
}

#[derive(Clone, Default)]
pub struct FakeDocker {
    pub state: Arc<Mutex<DockerState>>,
    pub calls: Calls,
}

impl FakeDocker {
    fn fail(&self, op: &'static str, what: &str) -> Result<(), RuntimeError> {
        if self.state.lock().unwrap().failing.contains(op) {
            return Err(RuntimeError::Connect(format!(
                "{op} {what}: the fake Docker engine is told to fail"
            )));
        }
        Ok(())
    }
    pub fn running(&self) -> Vec<FakeContainer> {
        let s = self.state.lock().unwrap();
        s.containers
            .values()
            .filter(|c| c.running)
            .cloned()
            .collect()
    }
    pub fn kill(&self, id: &str) {
        if let Some(c) = self.state.lock().unwrap().containers.get_mut(id) {
            c.running = false;
        }
    }
}

impl Runtime for FakeDocker {
    async fn ensure_image(
        &self,
        image: &str,
        _progress: &mut (dyn FnMut(&str) + Send),
    ) -> Result<(), RuntimeError> {
        self.calls.push(format!("docker ensure_image {image}"));
        self.fail("ensure_image", image)?;
        self.state.lock().unwrap().images.insert(image.to_string());
        Ok(())
    }
    async fn load_archive(&self, path: &Path) -> Result<(), RuntimeError> {
        self.calls.push(format!("docker load {}", path.display()));
        self.fail("load", "archive")
    }
    async fn start(&self, spec: &ContainerSpec) -> Result<Started, RuntimeError> {
        self.calls.push(format!("docker start {}", spec.name));
        self.fail("start", &spec.name)?;
        let mut s = self.state.lock().unwrap();
        if let Some(left) = s.starts_left.as_mut() {
            if *left == 0 {
                return Err(RuntimeError::Container {
                    container: spec.name.clone(),
                    action: "starting",
                    message: "no more starts allowed".into(),
                });
            }
            *left -= 1;
        }
        s.next += 1;
        let id = format!("c{:02}{}", s.next, "0".repeat(10));
        let port = 20_000 + u16::try_from(s.next).unwrap();
        let ip = std::net::IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + s.next as u32));
        let running = !s.dies.contains(&spec.image);
        s.containers.insert(
            id.clone(),
            FakeContainer {
                name: spec.name.clone(),
                image: spec.image.clone(),
                labels: spec.labels.clone(),
                running,
                host_port: port,
                ip,
            },
        );
        let (addr, port) = if spec.options.publish {
            (std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), port)
        } else {
            (ip, spec.container_port)
        };
        Ok(Started { id, addr, port })
    }
    async fn stop_and_remove(&self, id: &str, _grace: Duration) -> Result<(), RuntimeError> {
        self.calls.push(format!("docker remove {id}"));
        self.fail("remove", id)?;
        self.state.lock().unwrap().containers.remove(id);
        Ok(())
    }
    async fn signal(&self, id: &str, signal: &str) -> Result<(), RuntimeError> {
        self.calls.push(format!("docker signal {id} {signal}"));
        self.fail("signal", id)
    }
    async fn main_pid(&self, _id: &str) -> Result<Option<i32>, RuntimeError> {
        Ok(None)
    }
    async fn is_running(&self, id: &str) -> Result<bool, RuntimeError> {
        let s = self.state.lock().unwrap();
        Ok(s.containers.get(id).map(|c| c.running).unwrap_or(false))
    }
    async fn death(&self, id: &str) -> Result<Death, RuntimeError> {
        self.calls.push(format!("docker death {id}"));
        let s = self.state.lock().unwrap();
        Ok(match s.containers.get(id) {
            Some(c) if !c.running => Death {
                exit_code: Some(137),
                oom_killed: false,
                log_tail: vec![format!("{} was here", c.name)],
            },
            _ => Death::default(),
        })
    }
    async fn list(&self, labels: &[(&str, &str)]) -> Result<Vec<Found>, RuntimeError> {
        self.fail("list", "containers")?;
        let s = self.state.lock().unwrap();
        Ok(s.containers
            .iter()
            .filter(|(_, c)| {
                labels
                    .iter()
                    .all(|(k, v)| c.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(id, c)| Found {
                id: id.clone(),
                name: c.name.clone(),
                image: c.image.clone(),
                labels: c.labels.clone(),
                running: c.running,
                unhealthy: false,
                host_port: Some(c.host_port),
                ip: Some(c.ip),
            })
            .collect())
    }
    async fn remove_image(&self, image: &str) -> Result<bool, RuntimeError> {
        self.calls.push(format!("docker remove_image {image}"));
        let mut s = self.state.lock().unwrap();
        if s.containers.values().any(|c| c.image == image) {
            return Ok(false);
        }
        Ok(s.images.remove(image))
    }
}

/// The health gate: passes at once unless the release's version is told to fail.
#[derive(Clone, Default)]
pub struct FakeGate {
    pub failing_versions: Arc<Mutex<BTreeSet<String>>>,
    pub calls: Calls,
}

impl Prober for FakeGate {
    async fn gate(
        &self,
        addr: SocketAddr,
        settings: &HealthSettings,
        version: &str,
        _deadline: Instant,
        _on_miss: crate::health::OnMiss<'_>,
    ) -> Result<Passed, GateFailed> {
        self.calls.push(format!("gate {} {version}", addr.port()));
        if self.failing_versions.lock().unwrap().contains(version) {
            return Err(GateFailed {
                addr,
                path: settings.path.clone(),
                deadline_ms: 10,
                attempts: 3,
                last: "status 503".into(),
            });
        }
        Ok(Passed {
            body: format!("{{\"release\":\"{version}\"}}"),
            attempts: 1,
        })
    }
    async fn notify(&self, addr: SocketAddr, method: &str, path: &str) -> Result<u16, String> {
        self.calls
            .push(format!("notify {} {method} {path}", addr.port()));
        Ok(200)
    }
}

#[derive(Clone, Default)]
pub struct FakeReporter {
    pub reports: Arc<Mutex<Vec<Report>>>,
    pub calls: Calls,
}

impl FakeReporter {
    pub fn all(&self) -> Vec<Report> {
        self.reports.lock().unwrap().clone()
    }
}

impl Reporter for FakeReporter {
    async fn report(&self, report: &Report) -> Result<(), ReportError> {
        self.calls
            .push(format!("report {} {}", report.deploy_id, report.result));
        self.reports.lock().unwrap().push(report.clone());
        Ok(())
    }
}
