//! starting a code reload: the bundle is unpacked, `current` switched, and the master signalled
//! (hup: it reloads its workers) or told to start a new master beside it (usr2), found by its
//! pidfile.

use super::{handover_pidfile, Processes, POLL};
use crate::clock::now_ms;
use crate::config::ReloadStrategy;
use crate::engine::error::StepError;
use crate::engine::phase::{Instance, Release, Swap};
use crate::engine::steps::code;
use crate::health::Prober;
use crate::runtime::process::{self, ProcessError};

impl<H: Prober> Processes<H> {
    pub(super) async fn start_new(&self, swap: &mut Swap) -> Result<Instance, StepError> {
        let s = &self.settings;
        let release = swap.release.clone();
        let bundle = release
            .code
            .clone()
            .ok_or(StepError::Missing("the release carries no code bundle"))?;
        let master = process::read_pid(&s.pidfile)?;
        if !process::alive(master) {
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
                },
                container_id: master.to_string(),
                server: layout
                    .current()
                    .map(|d| d.display().to_string())
                    .unwrap_or_default(),
                host_port: s.port,
                pids: vec![],
                code_dir: None,
                replicas: vec![],
            });
        }
        if let Some(old) = swap.old.as_mut() {
            old.container_id = master.to_string();
            old.pids = process::children(master);
        }
        let dir = code::unpack(&layout, &bundle, &release.deploy_id).await?;
        code::point_current(&layout, &dir)?;
        let new_master = match s.strategy {
            ReloadStrategy::Hup => {
                swap.signalled_ms = Some(now_ms());
                process::signal(master, s.reload_signal)?;
                master
            }
            ReloadStrategy::Usr2 => {
                let _ = std::fs::remove_file(handover_pidfile(&s.pidfile));
                swap.signalled_ms = Some(now_ms());
                process::signal(master, s.upgrade_signal)?;
                self.new_master(master).await?
            }
        };
        Ok(Instance {
            release,
            container_id: new_master.to_string(),
            server: dir.display().to_string(),
            host_port: s.port,
            pids: vec![],
            code_dir: None,
            replicas: vec![],
        })
    }

    /// usr2: the new master writes `<pidfile>.2`; a fast handover may already have renamed it.
    async fn new_master(&self, old: i32) -> Result<i32, StepError> {
        let s = &self.settings;
        let waited = tokio::time::Instant::now();
        loop {
            let candidate = process::read_pid(&handover_pidfile(&s.pidfile))
                .or_else(|_| process::read_pid(&s.pidfile));
            if let Ok(pid) = candidate {
                if pid != old && process::alive(pid) {
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
