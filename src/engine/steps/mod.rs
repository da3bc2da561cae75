//! The work of each phase, per kind of service, behind one trait the walker drives. Containers
//! (with or without code mounted from the host) and local pre-fork processes differ only here;
//! a phase a kind does not have defaults to nothing.

pub mod code;
pub mod containers;
pub mod process;

use super::error::StepError;
use super::journal::{JournalError, ServiceRecord};
use super::phase::{Budgets, Instance, Replica, Swap};
use crate::clock::UnixMs;
use crate::health::Passed;
use crate::runtime::Death;

/// A part of the current release that does not serve: it died, turned unhealthy or is gone.
#[derive(Debug, Clone, PartialEq)]
pub struct Dead {
    /// Its place among the release's containers (0 for a local server's master).
    pub index: usize,
    pub part: Part,
    /// "exited with code 137", "killed by the OOM killer", "unhealthy", "gone".
    pub why: String,
    pub death: Death,
}

/// What runs a release, one part of it: a container (and its HAProxy server), or the master of a
/// local pre-fork server.
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Container(Replica),
    Master { pid: i32 },
}

impl Part {
    /// How a report names it: the container's id, or the master's pid.
    pub fn id(&self) -> String {
        match self {
            Part::Container(m) => m.container_id.clone(),
            Part::Master { pid } => pid.to_string(),
        }
    }
}

/// A repair's report names what died by it.
impl From<&Part> for crate::model::RepairedPart {
    fn from(part: &Part) -> Self {
        match part {
            Part::Container(m) => crate::model::RepairedPart::Container {
                container: m.container_id.clone(),
                server: m.server.clone(),
            },
            Part::Master { pid } => crate::model::RepairedPart::Master { master_pid: *pid },
        }
    }
}

impl std::fmt::Display for Part {
    /// "container 1a2b3c4d5e6f", "master 4242".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Part::Container(m) => {
                let id = &m.container_id;
                write!(f, "container {}", &id[..12.min(id.len())])
            }
            Part::Master { pid } => write!(f, "master {pid}"),
        }
    }
}

/// What a step that has no ledger (the gate, the drain) is waiting on now: the walker shows it
/// about once a second (`deploy --wait` prints it), and clears it when the phase ends.
#[derive(Debug, Clone, Default)]
pub struct Activity(std::sync::Arc<std::sync::Mutex<Option<String>>>);

impl Activity {
    pub fn set(&self, text: String) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(text);
    }

    pub fn get(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn clear(&self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// A health gate attempt that did not pass.
    pub fn gate_missed(&self, attempts: u32, last: &str) {
        let last: String = last.chars().take(160).collect();
        self.set(format!(
            "health gate: {attempts} attempt(s) not passed yet; last answer: {last}"
        ));
    }
}

/// What a step may do with the service's record while its phase runs: the walker journals every
/// phase change itself, a step only adds to it mid-phase.
pub trait Ledger: Send {
    /// Journals and shows the swap mid-phase (e.g. a replica just started), so a restart knows it.
    fn note(&mut self, swap: &Swap) -> Result<(), JournalError>;
    /// Shows the swap as it is now (live canary figures) without journaling it.
    fn show(&mut self, swap: &Swap);
    /// The service's journaled record (kept images, history); `store` journals a change to it.
    fn record(&mut self) -> &mut ServiceRecord;
    fn store(&mut self) -> Result<(), JournalError>;
}

/// The steps of one kind of service. Every step is idempotent enough to be run again after a
/// restart in its phase (the walker resumes draining, retiring and rolling back).
#[allow(async_fn_in_trait)] // only driven with concrete types, whose futures are Send
pub trait Steps: Send {
    /// The service's name, for logs.
    fn service(&self) -> &str;
    /// The host hooks the service runs around a swap (none by default).
    fn hooks(&self) -> crate::config::HookSettings {
        crate::config::HookSettings::default()
    }
    /// What a step without a ledger is waiting on (see `Activity`); none by default.
    fn activity(&self) -> Activity {
        Activity::default()
    }
    /// Takes settings from a config reload (between swaps only).
    fn refresh(&mut self) {}
    /// The time limits of a swap taken now.
    fn budgets(&self) -> Budgets;
    /// The longest wait between repairs of a current release that keeps dying.
    fn repair_backoff_max(&self) -> std::time::Duration {
        std::time::Duration::from_secs(60)
    }
    /// Fixes what the swap follows before it begins (the canary plan, counters to compare with).
    async fn plan(&mut self, swap: Swap) -> Swap {
        swap
    }
    /// starting: the new release runs, out of traffic.
    async fn start(
        &mut self,
        ledger: &mut dyn Ledger,
        swap: &mut Swap,
    ) -> Result<Instance, StepError>;
    /// health_gate: the new release answers as it should, end to end.
    async fn gate(&mut self, swap: &Swap, deadline: UnixMs) -> Result<Passed, StepError>;
    /// switching: traffic moves to the new release (the old one keeps serving until it has).
    async fn switch(
        &mut self,
        _ledger: &mut dyn Ledger,
        _swap: &mut Swap,
    ) -> Result<(), StepError> {
        Ok(())
    }
    /// ramping: one canary step.
    async fn ramp(
        &mut self,
        _ledger: &mut dyn Ledger,
        _swap: &mut Swap,
        _step: usize,
    ) -> Result<(), StepError> {
        Err(StepError::NoRamp)
    }
    /// watching: the window after the last canary step.
    async fn watch(&mut self, _ledger: &mut dyn Ledger, _swap: &mut Swap) -> Result<(), StepError> {
        Err(StepError::NoRamp)
    }
    /// draining: the old release finishes its requests, within the budget. Problems are warnings.
    async fn drain(&mut self, _swap: &mut Swap, _deadline: UnixMs) {}
    /// retiring: the old release goes (what rollback needs is kept). Problems are warnings.
    async fn retire(&mut self, _ledger: &mut dyn Ledger, _swap: &mut Swap) {}
    /// rolling_back: the new release goes, the old one serves as before. Problems are warnings.
    async fn roll_back(&mut self, ledger: &mut dyn Ledger, swap: &mut Swap);
    /// After the last phase, before the report (e.g. the failed requests HAProxy counted).
    async fn finish(&mut self, _swap: &mut Swap) {}

    /// Between swaps: finishes work Docker could not do before (the record's leftovers).
    /// Returns true when nothing is left.
    async fn tidy(&mut self, _ledger: &mut dyn Ledger) -> bool {
        true
    }
    /// Recovery: fails when what the service needs (Docker, HAProxy) does not answer yet.
    async fn reachable(&mut self) -> Result<(), StepError> {
        Ok(())
    }
    /// Recovery in `switching`: whether the new release may still be switched to (every part of
    /// it runs and passes its gate); else the swap rolls back.
    async fn may_finish_switch(&mut self, _swap: &Swap) -> bool {
        false
    }
    /// Between swaps (at start-up, and whenever something may have drifted): makes what runs
    /// match the record where that needs no new container (orphans removed, the current
    /// release's servers back in the load balancer and its config file). Returns the current
    /// release's containers that do not serve, for `repair`.
    async fn reconcile(&mut self, _ledger: &mut dyn Ledger) -> Result<Vec<Dead>, StepError> {
        Ok(Vec::new())
    }
    /// A journal that could not be read: the release that serves, as Docker and HAProxy show
    /// it (None: nothing to rebuild the record from; a local server's kind has nothing here).
    async fn observed_current(&mut self) -> Result<Option<Instance>, StepError> {
        Ok(None)
    }
    /// Containers Docker said died: the next `reconcile` takes them as dead even while Docker's
    /// list still shows them running.
    fn died(&mut self, _ids: Vec<String>) {}
    /// Replaces a part of the current release that does not serve: a fresh container of the
    /// same release (or the local server started again), gated, put in the load balancer,
    /// journaled as current; the dead one removed. Returns the replacement.
    async fn repair(&mut self, _ledger: &mut dyn Ledger, _dead: &Dead) -> Result<Part, StepError> {
        Err(StepError::Missing("this kind of service is not repaired"))
    }
}
