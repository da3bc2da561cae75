//! The canary ramp's data: the planned steps, HAProxy's figures for a release over a step, and
//! each step's record as the journal, status and the report keep it.

use serde::{Deserialize, Serialize};

use crate::clock::UnixMs;

/// One step of a canary ramp: the new release's share of traffic and how long it is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RampStep {
    pub share_pct: u8,
    pub hold_ms: u64,
}

/// What HAProxy counted for one release over a step (all its servers, differences of counters).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Figures {
    /// Responses sent plus connection and response errors.
    pub requests: u64,
    /// 5xx responses, connection errors and response errors.
    pub errors: u64,
    /// HAProxy's average response time over the server's last 1024 requests, in ms.
    pub rtime_ms: u64,
}

impl Figures {
    /// Errors per 10 000 requests (integers keep the journal exact); 0 with no requests.
    pub fn error_bp(&self) -> u64 {
        (self.errors * 10_000)
            .checked_div(self.requests)
            .unwrap_or(0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    /// "ramp" for a step, "watch" for the watch window.
    pub kind: String,
    pub share_pct: u8,
    pub started_ms: UnixMs,
    pub ended_ms: UnixMs,
    pub new: Figures,
    pub old: Figures,
    /// "passed", "too few requests to judge", or why it aborted.
    pub verdict: String,
}
