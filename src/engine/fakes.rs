//! Recording fakes of the outside world (Docker, HAProxy, the health gate, the reporter) for the
//! engine's unit tests: each keeps the state a real one would show and the calls made to it, in
//! order, and can be told to fail a given call.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::balancer::{
    AdminState, Balancer, BalancerError, ServerFigures, ServerSpec, ServerStatus, Session,
};
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
    pub ip: String,
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
        let ip = format!("10.0.0.{}", s.next);
        let running = !s.dies.contains(&spec.image);
        s.containers.insert(
            id.clone(),
            FakeContainer {
                name: spec.name.clone(),
                image: spec.image.clone(),
                labels: spec.labels.clone(),
                running,
                host_port: port,
                ip: ip.clone(),
            },
        );
        let (addr, port) = if spec.options.publish {
            ("127.0.0.1".to_string(), port)
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
                ip: Some(c.ip.clone()),
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeServer {
    pub addr: String,
    pub port: u16,
    pub admin: AdminState,
    pub weight: u16,
}

#[derive(Default)]
pub struct HaproxyState {
    pub servers: BTreeMap<String, FakeServer>,
    /// The config file's managed block: the servers last persisted.
    pub persisted: Vec<String>,
    /// Calls that fail: "put_in", "drain", "servers", "persist", "set_weights", "figures".
    pub failing: BTreeSet<&'static str>,
    /// Requests in flight per server; a drained server reports them until drained away.
    pub in_flight: BTreeMap<String, u64>,
    /// Cumulative figures per server (for canary steps).
    pub figures: BTreeMap<String, ServerFigures>,
    /// What each reading of the figures adds per server (responses, errors): traffic going on.
    pub growth: BTreeMap<String, (u64, u64)>,
    pub backend_failures: u64,
    /// Open sessions (requests and streams), and how many readings of the sessions each still
    /// lasts by itself (None: until closed).
    pub sessions: Vec<(Session, Option<u32>)>,
}

#[derive(Clone, Default)]
pub struct FakeHaproxy {
    pub state: Arc<Mutex<HaproxyState>>,
    pub calls: Calls,
}

impl FakeHaproxy {
    fn fail(&self, op: &'static str) -> Result<(), BalancerError> {
        if self.state.lock().unwrap().failing.contains(op) {
            return Err(BalancerError::Api {
                socket: "fake.sock".into(),
                message: format!("{op}: the fake HAProxy is told to fail"),
            });
        }
        Ok(())
    }
    /// Servers taking traffic: ready with a weight above 0.
    pub fn serving(&self) -> Vec<String> {
        let s = self.state.lock().unwrap();
        s.servers
            .iter()
            .filter(|(_, v)| v.admin == AdminState::Ready && v.weight > 0)
            .map(|(k, _)| k.clone())
            .collect()
    }
    pub fn server(&self, name: &str) -> Option<FakeServer> {
        self.state.lock().unwrap().servers.get(name).cloned()
    }
}

impl Balancer for FakeHaproxy {
    async fn servers(&self) -> Result<Vec<ServerStatus>, BalancerError> {
        self.fail("servers")?;
        let s = self.state.lock().unwrap();
        Ok(s.servers
            .iter()
            .map(|(name, v)| ServerStatus {
                name: name.clone(),
                addr: v.addr.clone(),
                port: v.port,
                admin: v.admin,
                up: true,
            })
            .collect())
    }
    async fn put_in(&self, server: &ServerSpec) -> Result<(), BalancerError> {
        self.calls.push(format!(
            "haproxy put_in {} weight {:?}",
            server.name, server.weight
        ));
        self.fail("put_in")?;
        let mut s = self.state.lock().unwrap();
        let weight = server.weight.unwrap_or(1);
        s.servers.insert(
            server.name.clone(),
            FakeServer {
                addr: server.addr.clone(),
                port: server.port,
                admin: AdminState::Ready,
                weight,
            },
        );
        Ok(())
    }
    async fn drain(&self, name: &str) -> Result<(), BalancerError> {
        self.calls.push(format!("haproxy drain {name}"));
        self.fail("drain")?;
        if let Some(v) = self.state.lock().unwrap().servers.get_mut(name) {
            v.admin = AdminState::Drain;
        }
        Ok(())
    }
    async fn in_flight(&self, name: &str) -> Result<Option<u64>, BalancerError> {
        let mut s = self.state.lock().unwrap();
        if !s.servers.contains_key(name) {
            return Ok(None);
        }
        // each reading finds one request fewer: the server drains away
        let open = s.sessions.iter().filter(|(x, _)| x.server == name).count() as u64;
        let n = s.in_flight.entry(name.to_string()).or_insert(0);
        let now = *n;
        *n = n.saturating_sub(1);
        Ok(Some(now + open))
    }
    async fn sessions(&self) -> Result<Vec<Session>, BalancerError> {
        self.fail("sessions")?;
        let mut s = self.state.lock().unwrap();
        s.sessions.retain(|(_, left)| *left != Some(0));
        for (_, left) in s.sessions.iter_mut() {
            if let Some(n) = left {
                *n -= 1;
            }
        }
        Ok(s.sessions.iter().map(|(x, _)| x.clone()).collect())
    }
    async fn shutdown_sessions(&self, ids: &[String]) -> Result<usize, BalancerError> {
        self.calls
            .push(format!("haproxy shutdown_sessions {}", ids.len()));
        let mut s = self.state.lock().unwrap();
        let before = s.sessions.len();
        s.sessions.retain(|(x, _)| !ids.contains(&x.id));
        Ok(before - s.sessions.len())
    }
    async fn take_out(&self, name: &str) -> Result<(), BalancerError> {
        self.calls.push(format!("haproxy take_out {name}"));
        self.fail("take_out")?;
        self.state.lock().unwrap().servers.remove(name);
        Ok(())
    }
    async fn persist(&self, servers: &[ServerSpec]) -> Result<(), BalancerError> {
        let names: Vec<String> = servers.iter().map(|s| s.name.clone()).collect();
        self.calls
            .push(format!("haproxy persist {}", names.join(",")));
        self.fail("persist")?;
        self.state.lock().unwrap().persisted = names;
        Ok(())
    }
    async fn backend_failures(&self) -> Result<u64, BalancerError> {
        Ok(self.state.lock().unwrap().backend_failures)
    }
    async fn figures(&self) -> Result<Vec<ServerFigures>, BalancerError> {
        self.fail("figures")?;
        let mut s = self.state.lock().unwrap();
        let growth = s.growth.clone();
        for (name, (responses, errors)) in growth {
            let f = s.figures.entry(name).or_default();
            f.responses += responses;
            f.errors += errors;
        }
        Ok(s.servers
            .iter()
            .map(|(name, v)| {
                let mut f = s.figures.get(name).cloned().unwrap_or_default();
                f.name = name.clone();
                f.weight = u64::from(v.weight);
                f
            })
            .collect())
    }
    async fn set_weights(&self, weights: &[(String, u16)]) -> Result<(), BalancerError> {
        let all: Vec<String> = weights.iter().map(|(n, w)| format!("{n}={w}")).collect();
        self.calls
            .push(format!("haproxy set_weights {}", all.join(",")));
        self.fail("set_weights")?;
        let mut s = self.state.lock().unwrap();
        for (name, w) in weights {
            if let Some(v) = s.servers.get_mut(name) {
                v.weight = *w;
            }
        }
        Ok(())
    }
    async fn reload(&self, expect: &str) -> Result<(), BalancerError> {
        self.calls.push(format!("haproxy reload {expect}"));
        self.fail("reload")?;
        // a reload brings back what the config file names, and only that
        let mut s = self.state.lock().unwrap();
        let keep = s.persisted.clone();
        s.servers.retain(|name, _| keep.contains(name));
        Ok(())
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
