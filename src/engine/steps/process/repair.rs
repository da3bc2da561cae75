//! Supervising a local pre-fork server between swaps: its master must run. The pidfile names it
//! (a master started again by someone else, systemd or an operator, is taken as current); one
//! that is gone is started again with `start_command` on the code `current` names, gated like a
//! new release, and journaled. The walker is woken when the master exits by a pidfd, whoever its
//! parent is (gunicorn daemonizes), so an idle daemon still sleeps.

use std::sync::Arc;
use std::time::Duration;

use super::{Processes, POLL};
use crate::clock::{instant_of, now_ms};
use crate::engine::error::StepError;
use crate::engine::phase::Runs;
use crate::engine::steps::{Dead, Ledger, Part};
use crate::health::Prober;
use crate::runtime::process::{ProcessError, Server};
use crate::runtime::Death;

/// How long `start_command` has to make a live master appear in the pidfile.
const START_WITHIN: Duration = Duration::from_secs(30);

/// Wakes the service's walker (`ServiceHandle::nudge`).
pub type Nudge = Arc<dyn Fn() + Send + Sync>;

/// The master being watched, and the task that nudges when it exits.
pub(super) struct Watched {
    pid: i32,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<H: Prober, S: Server> Processes<H, S> {
    /// The current release's master, or why it is dead.
    pub(super) async fn reconcile_master(
        &mut self,
        ledger: &mut dyn Ledger,
    ) -> Result<Vec<Dead>, StepError> {
        let Some(mut current) = ledger.record().current.clone() else {
            return Ok(vec![]);
        };
        let Runs::Process { master, .. } = &mut current.runs else {
            return Ok(vec![]);
        };
        let pidfile = &self.settings.pidfile;
        let named = self.server.read_pid(pidfile);
        let live = match &named {
            Ok(pid) if self.server.alive(*pid) => *pid,
            _ if self.server.alive(*master) => *master,
            _ => {
                let why = match named {
                    Ok(pid) if pid == *master => "is not running".to_string(),
                    Ok(pid) => format!(
                        "is not running (nor is pid {pid}, which {} names)",
                        pidfile.display()
                    ),
                    Err(e) => format!("is not running ({e})"),
                };
                return Ok(vec![Dead {
                    index: 0,
                    part: Part::Master { pid: *master },
                    why,
                    death: Death::default(),
                }]);
            }
        };
        if live != *master {
            tracing::warn!(service = %self.settings.name, old = *master, new = live, "the master was started again outside hotswapd; following it");
            *master = live;
            ledger.record().current = Some(current);
            ledger.store()?;
        }
        self.watch(live);
        Ok(vec![])
    }

    /// Starts the server again on the current code, gates it, and journals its new master. A
    /// master that fails its gate is stopped, so the next look repairs again (with backoff).
    pub(super) async fn restart_master(
        &mut self,
        ledger: &mut dyn Ledger,
    ) -> Result<Part, StepError> {
        let mut current = ledger
            .record()
            .current
            .clone()
            .ok_or(StepError::Missing("no current release to repair"))?;
        let pid = self.start_master().await?;
        let deadline = now_ms() + self.settings.health.deadline.as_millis() as u64;
        let gate = self.prober.gate(
            self.addr(),
            &self.settings.health,
            &current.release.version,
            instant_of(deadline),
            &|_, _| {},
        );
        if let Err(e) = gate.await {
            let _ = self.server.signal(pid, nix::sys::signal::Signal::SIGTERM);
            self.server.wait_gone(&[pid], now_ms() + 10_000).await;
            let _ = self.server.signal(pid, nix::sys::signal::Signal::SIGKILL);
            return Err(e.into());
        }
        if let Runs::Process {
            master, workers, ..
        } = &mut current.runs
        {
            *master = pid;
            workers.clear();
        }
        ledger.record().current = Some(current);
        ledger.store()?;
        self.watch(pid);
        Ok(Part::Master { pid })
    }

    /// Starts the server with `start_command` on the code `current` names, and waits until its
    /// pidfile names a live master.
    pub(super) async fn start_master(&self) -> Result<i32, ProcessError> {
        let s = &self.settings;
        let Some(program) = s.start_command.first() else {
            return Err(ProcessError::NoStartCommand {
                pidfile: s.pidfile.clone(),
            });
        };
        let failed = |why: String| ProcessError::StartCommand {
            program: program.clone(),
            why,
        };
        // A pidfile naming a dead master (or a zombie nobody reaped) makes gunicorn refuse to
        // start ("Already running on PID"): it is stale, remove it.
        self.server.remove_pidfile(&s.pidfile);
        self.server.run(&s.start_command).await.map_err(failed)?;
        let waited = tokio::time::Instant::now();
        loop {
            if let Ok(pid) = self.server.read_pid(&s.pidfile) {
                if self.server.alive(pid) {
                    return Ok(pid);
                }
            }
            if waited.elapsed() > START_WITHIN {
                return Err(failed(format!(
                    "ran, but no live master appeared in {} within {} s",
                    s.pidfile.display(),
                    START_WITHIN.as_secs()
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Nudges the walker when `pid` exits (once; the next look watches the next master).
    fn watch(&mut self, pid: i32) {
        if self
            .watched
            .as_ref()
            .is_some_and(|w| w.pid == pid && !w.task.is_finished())
        {
            return;
        }
        let Some(nudge) = self.nudge.clone() else {
            return;
        };
        let service = self.settings.name.clone();
        let exited = self.server.exited(pid);
        let task = tokio::spawn(async move {
            if let Err(e) = exited.await {
                tracing::warn!(service, pid, error = %e, "cannot watch the master; the sweep will notice if it dies");
                return;
            }
            tracing::debug!(service, pid, "the master exited");
            nudge();
        });
        self.watched = Some(Watched { pid, task });
    }
}
