//! What status shows of a service: its state (with why and since when), its current and previous
//! release, the swap in flight, the queue, recent swaps, and where any one deploy is. The
//! service's handle (handle.rs) keeps it; the walker and intake write it.

use serde::{Deserialize, Serialize};

use super::phase::{Instance, Release, Swap};
pub use crate::model::{Maintenance, State};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ServiceView {
    pub service: String,
    pub state: State,
    /// Why the service is not simply serving or swapping.
    pub reason: Option<String>,
    /// When the service entered this state (unix ms).
    pub since_ms: u64,
    /// Start-up is over: the journal's swap ended, and the current release was brought back
    /// (or the service shows why not). READY waits for it.
    #[serde(skip)]
    pub started: bool,
    pub current: Option<Instance>,
    pub previous: Option<Release>,
    /// Images kept for rollback (`rollback --to`), newest first.
    pub kept_images: Vec<String>,
    pub swap: Option<Swap>,
    pub queued: Vec<Release>,
    /// Recent finished swaps, newest last.
    pub history: Vec<Swap>,
    /// Releases replaced in the queue by a later one before they started.
    pub superseded: Vec<Superseded>,
    /// Maintenance mode: the backend answers 503 (journaled with the queue, so a restart keeps it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<Maintenance>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Superseded {
    pub release: Release,
    pub by: String,
    pub at_ms: u64,
}

/// Where a deploy is, as the control API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum DeployState {
    Queued {
        release: Release,
        /// What it waits for: the swap in flight, a repair, start-up.
        behind: Option<String>,
    },
    Running {
        swap: Swap,
    },
    Finished {
        swap: Swap,
    },
    Superseded {
        /// None once only its answer is remembered (see `ServiceHandle::deploy`).
        release: Option<Release>,
        by: String,
    },
    /// A deploy this host no longer holds in memory, as its report in the reports file says.
    Reported {
        /// "success", "failure" or "superseded".
        result: String,
        phase_reached: String,
        reason: Option<String>,
        finished_ms: u64,
    },
}

impl DeployState {
    pub fn is_finished(&self) -> bool {
        matches!(
            self,
            DeployState::Finished { .. }
                | DeployState::Superseded { .. }
                | DeployState::Reported { .. }
        )
    }
}

impl ServiceView {
    /// Sets the state and why; `since_ms` moves only when the state changes.
    pub fn set_state(&mut self, state: State, reason: Option<String>) {
        if self.state != state {
            self.since_ms = crate::clock::now_ms();
        }
        self.state = state;
        self.reason = reason;
    }

    pub fn deploy(&self, deploy_id: &str) -> Option<DeployState> {
        if let Some(r) = self.queued.iter().find(|r| r.deploy_id == deploy_id) {
            return Some(DeployState::Queued {
                release: r.clone(),
                behind: self.busy_with(),
            });
        }
        if let Some(s) = self.swap.iter().find(|s| s.release.deploy_id == deploy_id) {
            return Some(if s.phase.is_terminal() {
                DeployState::Finished { swap: s.clone() }
            } else {
                DeployState::Running { swap: s.clone() }
            });
        }
        if let Some(s) = self
            .history
            .iter()
            .rev()
            .find(|s| s.release.deploy_id == deploy_id)
        {
            return Some(DeployState::Finished { swap: s.clone() });
        }
        self.superseded
            .iter()
            .rev()
            .find(|s| s.release.deploy_id == deploy_id)
            .map(|s| DeployState::Superseded {
                release: Some(s.release.clone()),
                by: s.by.clone(),
            })
    }

    /// What the service is busy with, that a queued release waits for.
    pub fn busy_with(&self) -> Option<String> {
        if let Some(id) = self.running() {
            return Some(format!("the swap of deploy {id}"));
        }
        let why = self.reason.as_deref().unwrap_or("");
        match self.state {
            State::Repairing => Some(format!("a repair ({why})")),
            State::Recovering => Some("start-up recovery".to_string()),
            _ => None,
        }
    }

    /// The deploy id of the swap running now, if any.
    pub fn running(&self) -> Option<&str> {
        self.swap
            .as_ref()
            .filter(|s| !s.phase.is_terminal())
            .map(|s| s.release.deploy_id.as_str())
    }
}
