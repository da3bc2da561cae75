//! The swap as a pure state machine: phases carry their deadlines, one function moves between them,
//! illegal moves are typed errors. No I/O here; the walker (`walker.rs`) does the work through `steps` and feeds events in.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::model::Cause;

pub use super::instance::{Instance, Replica, Runs};
pub use crate::clock::UnixMs;
pub use crate::model::{Figures, ImageArchive, RampStep, Release, Requester, StepRecord};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    Accepted,
    Starting {
        deadline: UnixMs,
    },
    HealthGate {
        deadline: UnixMs,
    },
    Switching {
        deadline: UnixMs,
    },
    /// Canary: the new release takes `ramp[step]`'s share of traffic while both serve.
    Ramping {
        step: usize,
        deadline: UnixMs,
    },
    /// After the last step: the old release is kept (no traffic), the new one still watched.
    Watching {
        deadline: UnixMs,
    },
    Draining {
        deadline: UnixMs,
    },
    Retiring {
        deadline: UnixMs,
    },
    RollingBack {
        deadline: UnixMs,
    },
    Succeeded,
    Failed,
}

impl Phase {
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Accepted => "accepted",
            Phase::Starting { .. } => "starting",
            Phase::HealthGate { .. } => "health_gate",
            Phase::Switching { .. } => "switching",
            Phase::Ramping { .. } => "ramping",
            Phase::Watching { .. } => "watching",
            Phase::Draining { .. } => "draining",
            Phase::Retiring { .. } => "retiring",
            Phase::RollingBack { .. } => "rolling_back",
            Phase::Succeeded => "succeeded",
            Phase::Failed => "failed",
        }
    }

    pub fn deadline(&self) -> Option<UnixMs> {
        match *self {
            Phase::Starting { deadline }
            | Phase::HealthGate { deadline }
            | Phase::Switching { deadline }
            | Phase::Ramping { deadline, .. }
            | Phase::Watching { deadline }
            | Phase::Draining { deadline }
            | Phase::Retiring { deadline }
            | Phase::RollingBack { deadline } => Some(deadline),
            Phase::Accepted | Phase::Succeeded | Phase::Failed => None,
        }
    }

    pub fn is_terminal(&self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed)
    }

    /// True once the new release may be taking traffic: a failure from here on is not undone by
    /// removing the new release.
    pub fn is_past_switch(&self) -> bool {
        matches!(
            self,
            Phase::Draining { .. } | Phase::Retiring { .. } | Phase::Succeeded
        )
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseMark {
    pub phase: String,
    pub at_ms: UnixMs,
}

/// The time limits of one swap, from the service's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budgets {
    pub health_deadline: Duration,
    /// The draining phase's whole budget (requests' or streams' with their close window,
    /// whichever ends later).
    pub drain_budget: Duration,
    /// Within it: how long requests and streams each get (None: a kind with no streams).
    pub drain_split: Option<DrainSplit>,
    pub host_budget: Duration,
    /// Time allowed to roll back (stop and remove the new container) after a failure.
    pub rollback: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Begin,
    Started(Instance),
    GatePassed,
    Switched,
    /// The current ramp step held without tripping a limit.
    StepPassed,
    /// The watch window ended without trouble.
    Watched,
    Drained,
    Retired,
    Fail(Failure),
    RolledBack,
}

/// Why a swap fails: what kind of failure, and the words for the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub cause: Cause,
    pub message: String,
}

impl Failure {
    pub fn new(cause: Cause, message: impl Into<String>) -> Failure {
        Failure {
            cause,
            message: message.into(),
        }
    }
}

impl Event {
    fn name(&self) -> &'static str {
        match self {
            Event::Begin => "begin",
            Event::Started(_) => "started",
            Event::GatePassed => "gate_passed",
            Event::Switched => "switched",
            Event::StepPassed => "step_passed",
            Event::Watched => "watched",
            Event::Drained => "drained",
            Event::Retired => "retired",
            Event::Fail(_) => "fail",
            Event::RolledBack => "rolled_back",
        }
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
#[error("swap {deploy_id}: event {event} is not allowed in phase {phase}")]
pub struct IllegalMove {
    pub deploy_id: String,
    pub event: &'static str,
    pub phase: &'static str,
}

/// One swap of one service, as journaled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Swap {
    pub release: Release,
    pub phase: Phase,
    pub accepted_ms: UnixMs,
    /// End of the host budget: no phase deadline is later than this.
    pub host_deadline: UnixMs,
    pub drain_budget_ms: u64,
    pub health_deadline_ms: u64,
    pub rollback_ms: u64,
    /// The release serving when the swap began (None on a first deploy).
    pub old: Option<Instance>,
    /// The new release once its container runs.
    pub new: Option<Instance>,
    pub marks: Vec<PhaseMark>,
    /// Why it failed (set with the first failure).
    pub reason: Option<String>,
    /// What kind of failure it was (set with `reason`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<Cause>,
    /// Problems after the switch that did not fail the swap (e.g. the old image could not be removed).
    #[serde(default)]
    pub warnings: Vec<String>,
    /// What the new release answered on its health route when the gate passed.
    #[serde(default)]
    pub health_response: Option<String>,
    /// What the phase is doing right now, for `deploy --wait` (a pull's progress).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activity: Option<String>,
    /// The switch was done by rewriting HAProxy's config and reloading it.
    #[serde(default)]
    pub switched_by_reload: bool,
    /// HAProxy's failed-request counter of the backend when the swap began, and the difference
    /// at its end.
    #[serde(default)]
    pub lb_failures_at_start: Option<u64>,
    #[serde(default)]
    pub failed_requests: Option<u64>,
    /// Bytes Docker's data root gained when retiring removed old images (None: none removed, or
    /// the data root is not visible from here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images_reclaimed_bytes: Option<u64>,
    /// A code reload: when the server was signalled (the new code's clock starts here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signalled_ms: Option<UnixMs>,
    /// The canary plan this swap follows (empty: switch at once), fixed when the swap begins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ramp: Vec<RampStep>,
    #[serde(default)]
    pub watch_ms: u64,
    /// The service has a ramp but this release skipped it (`--no-ramp`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ramp_skipped: bool,
    /// Each ramp step (and the watch window) as it went, with HAProxy's figures.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepRecord>,
    /// The host hooks run so far (a hook already here is not run again after a restart).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<crate::runtime::hook::HookRun>,
    /// The old release's long-lived streams during the drain (None: it had none to count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub streams: Option<crate::model::StreamCounts>,
    /// How the drain budget divides (None in a journal written before it was kept here: the
    /// service's settings then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_split: Option<DrainSplit>,
}

/// How the draining phase's budget divides, journaled with the swap so a restart after a config
/// change drains by the budgets the swap began with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainSplit {
    /// Requests waiting on their answer get this from the drain's start.
    pub requests_ms: u64,
    /// Streams get this from the drain's start; then they are closed over `close_spread_ms`.
    pub streams_ms: u64,
    pub close_spread_ms: u64,
}

/// A ramp step or watch window may overrun its hold by this much (reading figures, setting
/// weights) before its deadline passes; a step also gets the health deadline for the replicas it
/// may start and gate.
const STEP_SLACK_MS: u64 = 30_000;

use crate::clock::ms;

impl Swap {
    pub fn new(release: Release, old: Option<Instance>, budgets: Budgets, now: UnixMs) -> Swap {
        Swap {
            release,
            phase: Phase::Accepted,
            accepted_ms: now,
            host_deadline: now.saturating_add(ms(budgets.host_budget)),
            drain_budget_ms: ms(budgets.drain_budget),
            health_deadline_ms: ms(budgets.health_deadline),
            rollback_ms: ms(budgets.rollback),
            old,
            new: None,
            marks: vec![PhaseMark {
                phase: Phase::Accepted.name().to_string(),
                at_ms: now,
            }],
            reason: None,
            cause: None,
            warnings: Vec::new(),
            health_response: None,
            activity: None,
            switched_by_reload: false,
            lb_failures_at_start: None,
            failed_requests: None,
            images_reclaimed_bytes: None,
            signalled_ms: None,
            ramp: Vec::new(),
            watch_ms: 0,
            ramp_skipped: false,
            steps: Vec::new(),
            hooks: Vec::new(),
            streams: None,
            drain_split: budgets.drain_split,
        }
    }

    /// Sets the canary plan (before the swap begins): the host budget grows by the time the
    /// ramp and the watch window are planned to take.
    pub fn with_ramp(mut self, ramp: Vec<RampStep>, watch_ms: u64) -> Swap {
        let extra: u64 = ramp.iter().map(|s| s.hold_ms).sum::<u64>() + watch_ms;
        self.host_deadline = self.host_deadline.saturating_add(extra);
        self.ramp = ramp;
        self.watch_ms = if self.ramp.is_empty() { 0 } else { watch_ms };
        self
    }

    /// How long ramp step `step` may take: its hold, starting and gating replicas, slack.
    fn step_span(&self, step: usize) -> u64 {
        self.ramp[step].hold_ms + self.health_deadline_ms + STEP_SLACK_MS
    }

    /// The phase after the ramp step `step` passed.
    fn after_step(&self, step: usize, now: UnixMs) -> Phase {
        if step + 1 < self.ramp.len() {
            Phase::Ramping {
                step: step + 1,
                deadline: self.within_host(now, self.step_span(step + 1)),
            }
        } else if self.watch_ms > 0 {
            Phase::Watching {
                deadline: self.within_host(now, self.watch_ms + STEP_SLACK_MS),
            }
        } else {
            Phase::Draining {
                deadline: self.within_host(now, self.drain_budget_ms),
            }
        }
    }

    fn within_host(&self, now: UnixMs, span_ms: u64) -> UnixMs {
        now.saturating_add(span_ms).min(self.host_deadline)
    }

    /// The one place where phases change.
    pub fn apply(mut self, event: Event, now: UnixMs) -> Result<Swap, IllegalMove> {
        let next = match (&self.phase, &event) {
            (Phase::Accepted, Event::Begin) => Phase::Starting {
                deadline: self.host_deadline,
            },
            (Phase::Starting { .. }, Event::Started(instance)) => {
                self.new = Some(instance.clone());
                Phase::HealthGate {
                    deadline: self.within_host(now, self.health_deadline_ms),
                }
            }
            (Phase::HealthGate { .. }, Event::GatePassed) => Phase::Switching {
                deadline: self.host_deadline,
            },
            (Phase::Switching { .. }, Event::Switched) if !self.ramp.is_empty() => Phase::Ramping {
                step: 0,
                deadline: self.within_host(now, self.step_span(0)),
            },
            (Phase::Switching { .. }, Event::Switched) => Phase::Draining {
                deadline: self.within_host(now, self.drain_budget_ms),
            },
            (Phase::Ramping { step, .. }, Event::StepPassed) => self.after_step(*step, now),
            (Phase::Watching { .. }, Event::Watched) => Phase::Draining {
                deadline: self.within_host(now, self.drain_budget_ms),
            },
            (Phase::Draining { .. }, Event::Drained) => Phase::Retiring {
                deadline: self.host_deadline,
            },
            (Phase::Retiring { .. }, Event::Retired) => Phase::Succeeded,
            (
                Phase::Accepted
                | Phase::Starting { .. }
                | Phase::HealthGate { .. }
                | Phase::Switching { .. }
                | Phase::Ramping { .. }
                | Phase::Watching { .. },
                Event::Fail(failure),
            ) => {
                if self.reason.is_none() {
                    self.reason = Some(failure.message.clone());
                    self.cause = Some(failure.cause);
                }
                // Rolling back gets its own time even when the host budget is spent: the new
                // container must not be left behind.
                Phase::RollingBack {
                    deadline: now.saturating_add(self.rollback_ms),
                }
            }
            (Phase::RollingBack { .. }, Event::RolledBack) => Phase::Failed,
            (phase, event) => {
                return Err(IllegalMove {
                    deploy_id: self.release.deploy_id.clone(),
                    event: event.name(),
                    phase: phase.name(),
                })
            }
        };
        self.marks.push(PhaseMark {
            phase: next.name().to_string(),
            at_ms: now,
        });
        self.phase = next;
        Ok(self)
    }

    pub fn mark(&self, phase: &str) -> Option<UnixMs> {
        self.marks
            .iter()
            .find(|m| m.phase == phase)
            .map(|m| m.at_ms)
    }

    /// How long each phase took, in order, for reports.
    pub fn durations(&self) -> Vec<(String, u64)> {
        self.marks
            .windows(2)
            .map(|w| (w[0].phase.clone(), w[1].at_ms.saturating_sub(w[0].at_ms)))
            .collect()
    }
}

#[cfg(test)]
#[path = "phase_tests.rs"]
mod tests;
