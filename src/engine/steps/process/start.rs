//! starting a code reload: the bundle is unpacked, `current` switched, and the master signalled
//! (hup: it reloads its workers) or told to start a new master beside it (usr2), found by its
//! pidfile.

use super::{handover_pidfile, Processes, POLL};
use crate::clock::now_ms;
use crate::config::ReloadStrategy;
use crate::engine::error::StepError;
use crate::engine::phase::{Instance, Release, Runs, Swap};
use crate::engine::steps::code;
use crate::health::Prober;
use crate::runtime::process::{ProcessError, Server};

impl<H: Prober, S: Server> Processes<H, S> {
    pub(super) async fn start_new(&self, swap: &mut Swap) -> Result<Instance, StepError> {
        let s = &self.settings;
        let release = swap.release.clone();
        let bundle = release
            .code
            .clone()
            .ok_or(StepError::Missing("the release carries no code bundle"))?;
        let master = self.server.read_pid(&s.pidfile)?;
        if !self.server.alive(master) {
            return Err(ProcessError::NotRunning {
                pid: master,
                pidfile: s.pidfile.clone(),
            }
            .into());
        }
        let layout = self.layout();
        if swap.old.is_none() {
            // the first release hotswapd deploys: what serves now is whatever `current` is
            swap.old = Some(Instance {
                release: Release {
                    service: s.name.clone(),
                    image: String::new(),
                    version: String::new(),
                    deploy_id: String::new(),
                    archive: None,
                    code: None,
                    no_ramp: false,
                    requested_by: None,
                },
                runs: Runs::Process {
                    master,
                    release_dir: layout.current(),
                    workers: vec![],
                },
            });
        }
        if let Some(old) = swap.old.as_mut() {
            // what serves now, whatever the journal said when the swap began
            let release_dir = old.code_dir().map(|p| p.to_owned());
            old.runs = Runs::Process {
                master,
                release_dir,
                workers: self.server.children(master),
            };
        }
        let dir = code::unpack(&layout, &bundle, &release.deploy_id).await?;
        code::point_current(&layout, &dir)?;
        let new_master = match s.strategy {
            ReloadStrategy::Hup => {
                swap.signalled_ms = Some(now_ms());
                self.server.signal(master, s.reload_signal)?;
                master
            }
            ReloadStrategy::Usr2 => {
                self.server.remove_pidfile(&handover_pidfile(&s.pidfile));
                swap.signalled_ms = Some(now_ms());
                self.server.signal(master, s.upgrade_signal)?;
                self.new_master(master).await?
            }
        };
        Ok(Instance {
            release,
            runs: Runs::Process {
                master: new_master,
                release_dir: Some(dir),
                workers: vec![],
            },
        })
    }

    /// usr2: the new master writes `<pidfile>.2`; a fast handover may already have renamed it.
    async fn new_master(&self, old: i32) -> Result<i32, StepError> {
        let s = &self.settings;
        let waited = tokio::time::Instant::now();
        loop {
            let candidate = self
                .server
                .read_pid(&handover_pidfile(&s.pidfile))
                .or_else(|_| self.server.read_pid(&s.pidfile));
            if let Ok(pid) = candidate {
                if pid != old && self.server.alive(pid) {
                    return Ok(pid);
                }
            }
            if waited.elapsed() > std::time::Duration::from_secs(30) {
                return Err(StepError::NoNewMaster {
                    signal: s.upgrade_signal.to_string(),
                    pid: old,
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }
}
