//! Steps of a local pre-fork server (gunicorn-style) whose code reloads on a signal: starting =
//! unpack the bundle, switch `current`, signal the master (hup) or start a new one (usr2);
//! switching = (usr2) tell the old master to stop; draining = wait for the old workers or the old
//! master, and the pidfile handover; retiring = prune old releases; rolling back = `current`
//! back, reload again or stop the new master, wait for the failed code's workers.

mod drain;
mod repair;
mod rollback;
mod start;

pub use repair::Nudge;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::watch;

use super::{Activity, Dead, Ledger, Part, Steps};
use crate::clock::{instant_of, UnixMs};
use crate::code::layout::Layout;
use crate::config::{ProcessSettings, ReloadStrategy};
use crate::engine::error::StepError;
use crate::engine::phase::{Budgets, Instance, Swap};
use crate::health::{Passed, Prober};
use crate::runtime::process::{Os, Server};

use super::containers::ROLLBACK_BUDGET;

/// How often process states are read while waiting on them.
const POLL: Duration = Duration::from_millis(10);

pub struct Processes<H, S = Os> {
    settings: ProcessSettings,
    /// The server's processes, pidfiles and signals.
    server: S,
    updates: watch::Receiver<ProcessSettings>,
    prober: H,
    /// Wakes the walker when the master exits (None in unit tests).
    nudge: Option<Nudge>,
    watched: Option<repair::Watched>,
    /// What the gate waits on now, shown by the walker.
    activity: Activity,
}

fn budgets_of(s: &ProcessSettings) -> Budgets {
    Budgets {
        health_deadline: s.health.deadline,
        drain_budget: s.drain_budget,
        drain_split: None,
        host_budget: s.host_budget,
        rollback: ROLLBACK_BUDGET,
    }
}

/// `<pidfile>.2`: where gunicorn's new master writes its pid during a USR2 handover.
fn handover_pidfile(pidfile: &Path) -> PathBuf {
    let mut name = pidfile.as_os_str().to_owned();
    name.push(".2");
    PathBuf::from(name)
}

impl<H: Prober> Processes<H> {
    pub fn new(updates: watch::Receiver<ProcessSettings>, prober: H, nudge: Option<Nudge>) -> Self {
        Processes::on(updates, prober, nudge, Os)
    }
}

impl<H: Prober, S: Server> Processes<H, S> {
    /// The steps of a server whose world is `server` (the unit tests' fake gunicorn).
    pub fn on(
        updates: watch::Receiver<ProcessSettings>,
        prober: H,
        nudge: Option<Nudge>,
        server: S,
    ) -> Self {
        let settings = updates.borrow().clone();
        Processes {
            settings,
            server,
            updates,
            prober,
            nudge,
            watched: None,
            activity: Activity::default(),
        }
    }

    fn layout(&self) -> Layout {
        Layout::new(&self.settings.app_root)
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.settings.port))
    }
}

impl<H: Prober, S: Server> Steps for Processes<H, S> {
    fn service(&self) -> &str {
        &self.settings.name
    }

    fn activity(&self) -> Activity {
        self.activity.clone()
    }

    fn hooks(&self) -> crate::config::HookSettings {
        self.settings.hooks.clone()
    }

    fn refresh(&mut self) {
        if self.updates.has_changed().unwrap_or(false) {
            self.settings = self.updates.borrow_and_update().clone();
        }
    }

    fn budgets(&self) -> Budgets {
        budgets_of(&self.updates.borrow())
    }

    async fn start(
        &mut self,
        _ledger: &mut dyn Ledger,
        swap: &mut Swap,
    ) -> Result<Instance, StepError> {
        self.start_new(swap).await
    }

    async fn gate(&mut self, swap: &Swap, deadline: UnixMs) -> Result<Passed, StepError> {
        let new = swap
            .new
            .as_ref()
            .ok_or(StepError::Missing("no new code to check"))?;
        let master = new.master().ok_or(StepError::Missing("no master pid"))?;
        let on_miss = |n, last: &str| self.activity.gate_missed(n, last);
        let gate = self.prober.gate(
            self.addr(),
            &self.settings.health,
            &swap.release.version,
            instant_of(deadline),
            &on_miss,
        );
        let died = async {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if !self.server.alive(master) {
                    return;
                }
            }
        };
        tokio::select! {
            r = gate => r.map_err(StepError::from),
            () = died => Err(StepError::MasterDied { pid: master }),
        }
    }

    /// usr2: the old master is told to stop gracefully (its workers finish their requests).
    async fn switch(&mut self, _ledger: &mut dyn Ledger, swap: &mut Swap) -> Result<(), StepError> {
        if self.settings.strategy == ReloadStrategy::Usr2 {
            if let Some(old) = &swap.old {
                let pid = old
                    .master()
                    .ok_or(StepError::Missing("no old master pid"))?;
                self.server.signal(pid, self.settings.stop_old_signal)?;
            }
        }
        Ok(())
    }

    async fn drain(&mut self, swap: &mut Swap, deadline: UnixMs) {
        self.drain_old(swap, deadline).await
    }

    /// Old releases are pruned: the new one, the old one and `keep_releases` stay.
    async fn retire(&mut self, ledger: &mut dyn Ledger, swap: &mut Swap) {
        let history = &ledger.record().history;
        super::code::prune(&self.layout(), swap, history, self.settings.keep_releases);
    }

    async fn roll_back(&mut self, _ledger: &mut dyn Ledger, swap: &mut Swap) {
        self.roll_back_new(swap).await
    }

    async fn reconcile(&mut self, ledger: &mut dyn Ledger) -> Result<Vec<Dead>, StepError> {
        self.reconcile_master(ledger).await
    }

    async fn repair(&mut self, ledger: &mut dyn Ledger, _dead: &Dead) -> Result<Part, StepError> {
        self.restart_master(ledger).await
    }
}
