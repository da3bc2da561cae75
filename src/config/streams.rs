//! How a container service's long-lived connections (WebSockets, server-sent events) end when
//! its release is replaced: the old app is told first, the streams get a budget of their own,
//! then what is left is closed spread over a window.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSettings {
    /// From the drain's start, how long streams on the old release may go on (the app was told
    /// and may end them itself); requests have `drain_budget` beside it.
    pub budget: Duration,
    /// After the budget, the streams left are closed one by one over this window, at random
    /// instants, so their clients reconnect to the new release gradually.
    pub close_spread: Duration,
    /// What tells the old app, as the drain starts, that it should end its streams.
    pub notice: Option<DrainNotice>,
}

impl Default for StreamSettings {
    fn default() -> Self {
        StreamSettings {
            budget: Duration::from_secs(60),
            close_spread: Duration::from_secs(10),
            notice: None,
        }
    }
}

impl StreamSettings {
    /// The longest the draining phase may take: requests' budget or the streams' with their
    /// close window, whichever ends later.
    pub fn phase_budget(&self, drain_budget: Duration) -> Duration {
        drain_budget.max(self.budget + self.close_spread)
    }
}

/// `drain_notice`: a signal to each old container, or an HTTP request to each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DrainNotice {
    /// A signal name as Docker takes it (`SIGUSR1`).
    Signal(String),
    /// `POST /drain`: sent to the container where the health gate reaches it.
    Http { method: String, path: String },
}

impl std::fmt::Display for DrainNotice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DrainNotice::Signal(s) => f.write_str(s),
            DrainNotice::Http { method, path } => write!(f, "{method} {path}"),
        }
    }
}

/// Reads `drain_notice` as written: `"SIGUSR1"` or `"POST /drain"`; Err says what is expected.
pub fn parse_notice(s: &str) -> Result<DrainNotice, String> {
    let s = s.trim();
    if let Some((method, path)) = s.split_once(' ') {
        let path = path.trim();
        if !matches!(method, "GET" | "POST" | "PUT") {
            return Err(format!(
                "{s:?}: the method must be GET, POST or PUT (e.g. \"POST /drain\")"
            ));
        }
        if !path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "{s:?}: the path must start with '/' and hold no spaces (e.g. \"POST /drain\")"
            ));
        }
        return Ok(DrainNotice::Http {
            method: method.to_string(),
            path: path.to_string(),
        });
    }
    Err(format!(
        "{s:?} is neither a signal name (\"SIGUSR1\") nor a method and path (\"POST /drain\")"
    ))
}
