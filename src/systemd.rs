//! The systemd protocol (sd_notify): READY once the socket listens and every service recovered,
//! STATUS with what each service does, WATCHDOG at half the unit's WatchdogSec, RELOADING/READY
//! around a config reload (SIGHUP), STOPPING at SIGTERM. Without NOTIFY_SOCKET all of it is silent.

use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;

use crate::engine::{ServiceHandle, ServiceView};

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::debug!(error = %e, "sd_notify");
    }
}

pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// Half the unit's WatchdogSec, when it set one for us: WATCHDOG_USEC, and WATCHDOG_PID naming
/// this process if it is set at all (as sd_watchdog_enabled(3) reads them).
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC")
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|u| *u > 0)?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
            return None;
        }
    }
    Some(Duration::from_micros(usec / 2))
}

/// Pings the watchdog for ever (only started when the unit asks for it).
pub async fn watchdog(every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        send(&[NotifyState::Watchdog]);
    }
}

/// One line for STATUS=: each service and what it does.
pub fn summary(views: &[ServiceView]) -> String {
    let parts: Vec<String> = views
        .iter()
        .map(|v| {
            let phase = v
                .swap
                .as_ref()
                .filter(|s| !s.phase.is_terminal())
                .map(|s| s.phase.name());
            match phase {
                Some(p) => format!(
                    "{}: swapping {} ({p})",
                    v.service,
                    v.swap
                        .as_ref()
                        .map(|s| s.release.image.as_str())
                        .unwrap_or("")
                ),
                None => format!(
                    "{}: {} {}",
                    v.service,
                    v.state,
                    v.current
                        .as_ref()
                        .map(|c| c.release.version.as_str())
                        .unwrap_or("-")
                ),
            }
        })
        .collect();
    if parts.is_empty() {
        "no services".into()
    } else {
        parts.join("; ")
    }
}

/// Waits until no service is recovering any more (READY must not come before).
pub async fn recovered(handles: &[Arc<ServiceHandle>]) {
    for h in handles {
        let mut rx = h.subscribe();
        while rx.borrow_and_update().state == "recovering" {
            if rx.changed().await.is_err() {
                break;
            }
        }
    }
}

/// Sends STATUS= whenever a service's view changes; sleeps otherwise (no timer).
pub async fn follow_status(handles: Vec<Arc<ServiceHandle>>) {
    let mut receivers: Vec<_> = handles.iter().map(|h| h.subscribe()).collect();
    let mut last = String::new();
    loop {
        let views: Vec<ServiceView> = receivers
            .iter_mut()
            .map(|r| r.borrow_and_update().clone())
            .collect();
        let line = summary(&views);
        if line != last {
            status(&line);
            last = line;
        }
        if receivers.is_empty() {
            return;
        }
        let changes = receivers.iter_mut().map(|r| Box::pin(r.changed()));
        let (result, _, _) = futures_util::future::select_all(changes).await;
        if result.is_err() {
            return;
        }
    }
}
