//! What status says of a service: its state, and its maintenance mode.

use serde::{Deserialize, Serialize};

use super::Requester;

/// What a service is doing, as status shows it; every state but `serving` and `swapping` comes
/// with a reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Start-up: the journal is being read and what runs matched to it.
    #[default]
    Recovering,
    /// The current release serves, whole.
    Serving,
    /// A swap is in flight (`swap` says its phase); the old release serves until the switch.
    Swapping,
    /// A dead or unhealthy container of the current release is being replaced.
    Repairing,
    /// Serving, but not as it should be (a container not removed, a journal not written).
    Degraded,
    /// Not serving: the current release does not run and could not be brought back yet.
    Down,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Recovering => "recovering",
            State::Serving => "serving",
            State::Swapping => "swapping",
            State::Repairing => "repairing",
            State::Degraded => "degraded",
            State::Down => "down",
        }
    }

    /// Whether the service is as it should be (a swap keeps the old release serving).
    pub fn is_well(self) -> bool {
        matches!(self, State::Serving | State::Swapping)
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A service in maintenance mode: HAProxy answers its clients 503 with this message and
/// Retry-After, whatever runs behind (swaps and repairs go on).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Maintenance {
    pub message: String,
    pub retry_after_secs: u64,
    pub since_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<Requester>,
}
