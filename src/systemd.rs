//! The systemd protocol (sd_notify): READY once the socket listens and every service recovered,
//! STATUS with what each service does, WATCHDOG at half the unit's WatchdogSec, RELOADING/READY
//! around a config reload (SIGHUP), STOPPING at SIGTERM. Without NOTIFY_SOCKET all of it is silent.
//! And logs made for the journal when stderr is the journal's stream.

use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;

use crate::engine::{ServiceHandle, ServiceView};

/// True when stderr is the journal's stream: JOURNAL_STREAM names stderr's device and inode (as
/// systemd.exec(5) says to check: a child of a service inherits the variable, not the stream).
pub fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(var) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = var.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let stderr = std::io::stderr();
    let Ok(file) = std::os::fd::AsFd::as_fd(&stderr).try_clone_to_owned() else {
        return false;
    };
    match std::fs::File::from(file).metadata() {
        Ok(m) => dev.parse() == Ok(m.dev()) && ino.parse() == Ok(m.ino()),
        Err(_) => false,
    }
}

/// Logs with tracing's structured fields (`service=web deploy_id=... phase=...`). Under systemd
/// (stderr is the journal's stream) entries go to journald's native socket, each field a journal
/// field (`journalctl SERVICE=web`); `HOTSWAP_JOURNAL_SOCKET` names another socket (tests). When
/// that socket does not answer, stderr: no colors, no time (journald adds it), and each line
/// starts with its syslog priority (`<3>` error .. `<7>` debug) so `journalctl -p warning` works.
pub fn init_logging() {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
    };
    let journal = stderr_is_journal();
    if journal {
        let path = std::env::var_os("HOTSWAP_JOURNAL_SOCKET")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| crate::journald::SOCKET.into());
        if let Ok(layer) = crate::journald::Journald::connect(&path, "hotswapd") {
            tracing_subscriber::registry()
                .with(filter())
                .with(layer)
                .init();
            return;
        }
    }
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr);
    if journal {
        logs.with_ansi(false)
            .event_format(Prioritized(
                tracing_subscriber::fmt::format()
                    .without_time()
                    .with_level(false),
            ))
            .init();
    } else {
        logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
}

/// Prefixes each event with its syslog priority, as sd-daemon(3) describes for stderr, and its
/// level without padding (journald strips the prefix; the level stays readable in `-o cat`).
struct Prioritized<F>(F);

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for Prioritized<F>
where
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let level = *event.metadata().level();
        let priority = crate::journald::priority(&level);
        write!(writer, "<{priority}>{level} ")?;
        self.0.format_event(ctx, writer, event)
    }
}

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
                .map(|s| match s.phase {
                    // a canary step with its share: "ramping 25%"
                    crate::engine::Phase::Ramping { step, .. } => format!(
                        "ramping {}%",
                        s.ramp.get(step).map(|r| r.share_pct).unwrap_or(0)
                    ),
                    _ => s.phase.name().to_string(),
                });
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
                    "{}: {} {}{}",
                    v.service,
                    v.state,
                    v.current
                        .as_ref()
                        .map(|c| c.release.version.as_str())
                        .unwrap_or("-"),
                    v.reason
                        .as_deref()
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default()
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

/// Waits until every service has finished its start-up: swap left by the last run ended, current
/// release brought back or shown down (READY must not come before).
pub async fn recovered(handles: &[Arc<ServiceHandle>]) {
    for h in handles {
        let mut rx = h.subscribe();
        while !rx.borrow_and_update().started {
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
