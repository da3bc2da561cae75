//! What runs a release: containers behind HAProxy (with code mounted from the host or not), or a
//! local pre-fork server. Journaled with each swap; schema 1 journals (flat instances) are read
//! through `InstanceV1`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::model::Release;

/// A release as it runs: the release and what runs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Instance {
    pub release: Release,
    pub runs: Runs,
}

/// What runs a release: containers behind HAProxy, or a local pre-fork server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Runs {
    Containers {
        /// Every container of the release, the first one first (a service with `replicas`
        /// above 1 has more).
        members: Vec<Replica>,
        /// With code mounted from the host: the release directory `current` named.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code_dir: Option<PathBuf>,
        /// The code's worker processes in the container when a code reload replaced it (host pids).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        workers: Vec<i32>,
    },
    Process {
        master: i32,
        /// The release directory its code runs from; None for code hotswapd did not deploy.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        release_dir: Option<PathBuf>,
        /// Its workers when a code reload replaced it.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        workers: Vec<i32>,
    },
}

/// One container of a release and its HAProxy server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replica {
    pub container_id: String,
    pub server: String,
    /// Where HAProxy and the health gate reach it: the container's address on its Docker
    /// network, or 127.0.0.1 for a port published on the host (`reach = "published"`, and every
    /// journal written before `addr` existed).
    #[serde(default = "loopback")]
    pub addr: IpAddr,
    /// The port at `addr`: the container port, or the published host port.
    pub host_port: u16,
}

impl Replica {
    /// Where HAProxy and the health gate reach it.
    pub fn socket(&self) -> std::net::SocketAddr {
        (self.addr, self.host_port).into()
    }
}

fn loopback() -> IpAddr {
    IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
}

impl Instance {
    pub fn containers(release: Release, members: Vec<Replica>) -> Instance {
        Instance {
            release,
            runs: Runs::Containers {
                members,
                code_dir: None,
                workers: vec![],
            },
        }
    }

    /// Every container of the release (none for a local process).
    pub fn members(&self) -> Vec<Replica> {
        match &self.runs {
            Runs::Containers { members, .. } => members.clone(),
            Runs::Process { .. } => vec![],
        }
    }

    /// The first container: the one a code reload signals.
    pub fn primary(&self) -> Option<&Replica> {
        match &self.runs {
            Runs::Containers { members, .. } => members.first(),
            Runs::Process { .. } => None,
        }
    }

    pub fn count(&self) -> usize {
        match &self.runs {
            Runs::Containers { members, .. } => members.len(),
            Runs::Process { .. } => 1,
        }
    }

    /// Adds a container (the next of a batch).
    pub fn push(&mut self, member: Replica) {
        if let Runs::Containers { members, .. } = &mut self.runs {
            members.push(member);
        }
    }

    /// Puts `member` in place `index` (in `members()` order): a repaired container.
    pub fn set_member(&mut self, index: usize, member: Replica) {
        if let Runs::Containers { members, .. } = &mut self.runs {
            if let Some(m) = members.get_mut(index) {
                *m = member;
            }
        }
    }

    /// Sets where member `index` (in `members()` order) is reached.
    pub fn set_endpoint(&mut self, index: usize, addr: IpAddr, port: u16) {
        if let Runs::Containers { members, .. } = &mut self.runs {
            if let Some(m) = members.get_mut(index) {
                m.addr = addr;
                m.host_port = port;
            }
        }
    }

    /// The release directory its code runs from (mounted code or a local process).
    pub fn code_dir(&self) -> Option<&Path> {
        match &self.runs {
            Runs::Containers { code_dir, .. } => code_dir.as_deref(),
            Runs::Process { release_dir, .. } => release_dir.as_deref(),
        }
    }

    /// Worker processes noted when a code reload replaced this release.
    pub fn workers(&self) -> &[i32] {
        match &self.runs {
            Runs::Containers { workers, .. } | Runs::Process { workers, .. } => workers,
        }
    }

    pub fn master(&self) -> Option<i32> {
        match &self.runs {
            Runs::Process { master, .. } => Some(*master),
            Runs::Containers { .. } => None,
        }
    }
}

/// Journals of schema 1 (hotswap 0.1) wrote an instance flat: `container_id` held a container id
/// or, for a local process, the master's pid; `server` an HAProxy server or the release directory.
#[derive(Deserialize)]
struct InstanceV1 {
    release: Release,
    container_id: String,
    server: String,
    host_port: u16,
    #[serde(default)]
    pids: Vec<i32>,
    #[serde(default)]
    code_dir: Option<PathBuf>,
    #[serde(default)]
    replicas: Vec<Replica>,
}

impl From<InstanceV1> for Instance {
    fn from(v1: InstanceV1) -> Instance {
        // a Docker container id is 64 hex digits; a pid is a short decimal number
        let pid = (v1.container_id.len() < 12)
            .then(|| v1.container_id.parse::<i32>().ok())
            .flatten();
        let runs = match pid {
            Some(master) => Runs::Process {
                master,
                release_dir: (!v1.server.is_empty()).then(|| PathBuf::from(&v1.server)),
                workers: v1.pids,
            },
            None => {
                let mut members = vec![Replica {
                    container_id: v1.container_id,
                    server: v1.server,
                    addr: loopback(),
                    host_port: v1.host_port,
                }];
                members.extend(v1.replicas);
                Runs::Containers {
                    members,
                    code_dir: v1.code_dir,
                    workers: v1.pids,
                }
            }
        };
        Instance {
            release: v1.release,
            runs,
        }
    }
}

impl<'de> Deserialize<'de> for Instance {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Instance, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Now { release: Release, runs: Runs },
            V1(InstanceV1),
        }
        Ok(match Form::deserialize(d)? {
            Form::Now { release, runs } => Instance { release, runs },
            Form::V1(v1) => v1.into(),
        })
    }
}

pub use crate::model::StreamCounts;
