//! The fake HAProxy: servers with their admin state and weight, the config file's block, requests
//! in flight, sessions (requests and streams), figures that grow as traffic goes on.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use super::Calls;
use crate::balancer::{
    AdminState, Balancer, BalancerError, ServerFigures, ServerSpec, ServerStatus, Session,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeServer {
    pub addr: std::net::IpAddr,
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
    /// The running HAProxy lacks the maintenance rule (its config was never reloaded with it).
    pub no_maintenance_rule: bool,
    /// Maintenance as set in HAProxy (message, Retry-After); a reload loses it.
    pub maintenance: Option<(String, u64)>,
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
    async fn maintenance_rule_loaded(&self) -> Result<bool, BalancerError> {
        self.fail("maintenance")?;
        Ok(!self.state.lock().unwrap().no_maintenance_rule)
    }

    async fn maintenance_on(&self) -> Result<bool, BalancerError> {
        self.fail("maintenance")?;
        Ok(self.state.lock().unwrap().maintenance.is_some())
    }

    async fn set_maintenance(&self, on: Option<(&str, u64)>) -> Result<(), BalancerError> {
        self.calls.push(match on {
            Some((m, s)) => format!("haproxy maintenance on {s} {m}"),
            None => "haproxy maintenance off".to_string(),
        });
        self.fail("maintenance")?;
        self.state.lock().unwrap().maintenance = on.map(|(m, s)| (m.to_string(), s));
        Ok(())
    }

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
        // and loses the runtime API's variables (maintenance)
        s.maintenance = None;
        Ok(())
    }
}
