//! draining, for an old release's long-lived connections: the old app is told first
//! (`drain_notice`), requests waiting on their answer get `drain_budget`, streams (WebSockets,
//! event streams, answers still being sent) get `stream_budget_secs` from the drain's start, and
//! the streams still open then are closed one by one at random instants over
//! `close_spread_secs`, so their clients come back to the new release gradually rather than all
//! at once. What became of them is counted for the report.

use std::collections::BTreeSet;
use std::time::Duration;

use super::drain::DRAIN_POLL;
use super::Containers;
use crate::balancer::Balancer;
use crate::clock::{ms, now_ms, Backoff, UnixMs};
use crate::config::DrainNotice;
use crate::engine::phase::{DrainSplit, Replica, Swap};
use crate::health::Prober;
use crate::model::StreamCounts;
use crate::runtime::Runtime;

/// How often the sessions themselves are read (`show sess`, every session HAProxy holds, so a
/// long reply on a busy proxy) while some are open: at first often, since requests end within
/// milliseconds, then less, since streams only wait on their budget. Their count is read every
/// `DRAIN_POLL`.
const SESSIONS_POLL: Duration = Duration::from_millis(100);
const SESSIONS_POLL_MAX: Duration = Duration::from_secs(1);
/// How often the count of sessions is read once only streams are left.
const STREAMS_POLL: Duration = Duration::from_millis(100);
/// Closes due within this much of each other go in one runtime API call.
const CLOSE_TICK: Duration = Duration::from_millis(20);

/// What a drain knows of the old servers' sessions from its last reading of them.
#[derive(Default)]
struct Sessions {
    /// Every stream seen open during the drain.
    seen: BTreeSet<String>,
    /// The streams open at the last reading.
    open: Vec<String>,
    /// Sessions still waiting on their answer (requests).
    waiting: usize,
    /// Whether the sessions were read at least once (or could not be, said once).
    known: bool,
    /// Why the last reading failed.
    failed: Option<String>,
}

impl Sessions {
    /// Requests still waiting when the drain budget ended, said in the report.
    fn warn_waiting(&self, swap: &mut Swap) {
        if self.waiting > 0 {
            swap.warnings.push(format!(
                "drain budget ended with {} request(s) still waiting on the old release",
                self.waiting
            ));
        }
    }

    /// What `deploy --wait` shows while the drain waits, with the budgets' time left (ms).
    fn shown(&self, requests_left: u64, streams_left: u64) -> String {
        format!(
            "draining: {} request(s) and {} stream(s) open on the old release ({} s of the drain budget, {} s of the stream budget left)",
            self.waiting,
            self.open.len(),
            requests_left.div_ceil(1000),
            streams_left.div_ceil(1000),
        )
    }

    fn read<E: std::fmt::Display>(
        &mut self,
        reading: Result<Vec<crate::balancer::Session>, E>,
        servers: &[String],
        swap: &mut Swap,
    ) {
        self.known = true;
        match reading {
            Ok(all) => {
                let ours: Vec<_> = all
                    .into_iter()
                    .filter(|s| servers.contains(&s.server))
                    .collect();
                self.open = ours
                    .iter()
                    .filter(|s| s.streaming)
                    .map(|s| s.id.clone())
                    .collect();
                self.waiting = ours.len() - self.open.len();
                self.seen.extend(self.open.iter().cloned());
            }
            Err(e) => {
                // no stream can be told apart: whatever is in flight is a request, and the
                // drain budget is what it gets (said once in the report)
                if self.failed.is_none() {
                    swap.warnings.push(format!(
                        "reading HAProxy's sessions: {e}; what was in flight got the drain budget"
                    ));
                }
                self.failed = Some(e.to_string());
                self.open.clear();
                self.waiting = 0;
            }
        }
    }
}

impl<R: Runtime, B: Balancer, H: Prober> Containers<R, B, H> {
    /// Tells each old container that it is being drained, as `drain_notice` says; a notice that
    /// fails is a warning (the budgets still apply).
    pub(super) async fn notify_old(&self, swap: &mut Swap, old: &[Replica]) {
        let Some(notice) = &self.settings.streams.notice else {
            return;
        };
        let notices = old.iter().map(|m| async move {
            let said = match notice {
                DrainNotice::Signal(sig) => self
                    .runtime
                    .signal(&m.container_id, sig)
                    .await
                    .map_err(|e| e.to_string()),
                DrainNotice::Http { method, path } => {
                    match self.prober.notify(m.socket(), method, path).await {
                        Ok(status) if (200..300).contains(&status) => Ok(()),
                        Ok(status) => Err(format!("answered {status}")),
                        Err(e) => Err(e),
                    }
                }
            };
            said.map_err(|e| format!("drain notice {notice} to {}: {e}", m.server))
        });
        for r in futures_util::future::join_all(notices).await {
            if let Err(e) = r {
                swap.warnings.push(e);
            }
        }
    }

    /// The drain's budgets as the swap journaled them (the settings for a swap journaled before
    /// they were kept there).
    fn split(&self, swap: &Swap) -> DrainSplit {
        swap.drain_split.unwrap_or(DrainSplit {
            requests_ms: ms(self.settings.drain_budget),
            streams_ms: ms(self.settings.streams.budget),
            close_spread_ms: ms(self.settings.streams.close_spread),
        })
    }

    /// Tells the old app (after counting the streams it holds), then waits until `servers` hold
    /// no session, or: no request waits on its answer (or the drain budget ended) and no stream
    /// is open (or the stream budget ended); then closes the streams left over the close window.
    /// `started` is when the drain began (the budgets count from there, across a restart too).
    pub(super) async fn drain_with_streams(
        &self,
        swap: &mut Swap,
        old: &[Replica],
        started: UnixMs,
        deadline: UnixMs,
    ) {
        let servers: Vec<String> = old.iter().map(|m| m.server.clone()).collect();
        let split = self.split(swap);
        let requests_until = deadline.min(started + split.requests_ms);
        let streams_until = deadline
            .saturating_sub(split.close_spread_ms)
            .min(started + split.streams_ms);
        let mut s = Sessions::default();
        // read the sessions before the notice: streams the app ends on it count as open
        let mut read_at = now_ms();
        let mut notified = false;
        let mut every = Backoff::by_half(SESSIONS_POLL, SESSIONS_POLL_MAX);
        loop {
            let (in_flight, failed) = self.in_flight_on(&servers).await;
            let now = now_ms();
            if in_flight == 0 && failed.is_none() {
                s.open.clear();
                break;
            }
            let fresh = now >= read_at;
            if fresh {
                read_at = now + ms(every.next());
                s.read(self.balancer.sessions().await, &servers, swap);
            }
            if !notified {
                notified = true;
                self.notify_old(swap, old).await;
            }
            // what HAProxy counts in flight and is no stream it listed waits on its answer
            s.waiting = s
                .waiting
                .max((in_flight as usize).saturating_sub(s.open.len()));
            let requests_done = s.waiting == 0 || now >= requests_until;
            let may_end = s.known && requests_done && (s.open.is_empty() || now >= streams_until);
            if may_end && !fresh {
                // decide on a fresh reading of the sessions, not an old one
                read_at = now;
                continue;
            }
            if may_end {
                s.warn_waiting(swap);
                break;
            }
            self.activity.set(s.shown(
                requests_until.saturating_sub(now),
                streams_until.saturating_sub(now),
            ));
            if now >= deadline {
                swap.warnings.push(failed.unwrap_or_else(|| {
                    format!("drain budget ended with {in_flight} session(s) still open")
                }));
                break;
            }
            // requests end within milliseconds; streams only wait on their budget
            tokio::time::sleep(if s.known && requests_done {
                STREAMS_POLL
            } else {
                DRAIN_POLL
            })
            .await;
        }
        if !notified {
            self.notify_old(swap, old).await;
        }
        let seen = s.seen.len() as u64;
        let closed = self.close_spread(swap, s.open, deadline).await;
        swap.streams = Some(StreamCounts {
            open: seen,
            ended: seen.saturating_sub(closed),
            closed,
        })
        .filter(|c| c.open > 0);
    }

    /// In-flight sessions summed over `servers`, and the last error reading them.
    async fn in_flight_on(&self, servers: &[String]) -> (u64, Option<String>) {
        let mut total = 0;
        let mut failed = None;
        for s in servers {
            match self.balancer.in_flight(s).await {
                Ok(n) => total += n.unwrap_or(0),
                Err(e) => failed = Some(format!("draining {s}: {e}")),
            }
        }
        (total, failed)
    }

    /// Closes `ids` one by one at random instants spread over the close window (ending by
    /// `deadline` at the latest); how many were still open when closed.
    async fn close_spread(&self, swap: &mut Swap, ids: Vec<String>, deadline: UnixMs) -> u64 {
        if ids.is_empty() {
            return 0;
        }
        let start = now_ms();
        let window = self
            .split(swap)
            .close_spread_ms
            .min(deadline.saturating_sub(start));
        let due = spread(ids, window, start);
        let mut closed = 0u64;
        let mut failed: Option<(usize, String)> = None;
        let mut next = 0;
        while next < due.len() {
            let now = now_ms();
            if due[next].0 > now {
                tokio::time::sleep(Duration::from_millis(due[next].0 - now)).await;
            }
            let until = now_ms() + ms(CLOSE_TICK);
            let batch: Vec<String> = due[next..]
                .iter()
                .take_while(|(at, _)| *at <= until)
                .map(|(_, id)| id.clone())
                .collect();
            next += batch.len();
            match self.balancer.shutdown_sessions(&batch).await {
                Ok(n) => closed += n as u64,
                Err(e) => {
                    let n = failed.as_ref().map_or(0, |f| f.0) + batch.len();
                    failed = Some((n, e.to_string()));
                }
            }
            self.activity.set(format!(
                "draining: closed {closed} stream(s) of {}, {} s of the close window left",
                due.len(),
                (start + window).saturating_sub(now_ms()).div_ceil(1000)
            ));
        }
        if let Some((n, e)) = failed {
            swap.warnings.push(format!(
                "closing {n} stream(s) failed (they end when the old container stops): {e}"
            ));
        }
        closed
    }
}

/// When each of `ids` is closed: the window cut in one slot per stream, a random instant in each
/// slot, slots dealt to the streams in random order.
fn spread(mut ids: Vec<String>, window_ms: u64, start: UnixMs) -> Vec<(UnixMs, String)> {
    let mut rng = seed();
    let n = ids.len() as u64;
    for i in (1..ids.len()).rev() {
        ids.swap(i, (next(&mut rng) % (i as u64 + 1)) as usize);
    }
    ids.into_iter()
        .enumerate()
        .map(|(i, id)| {
            let slot = window_ms * 1000 / n;
            let at = (i as u64 * slot + next(&mut rng) % slot.max(1)) / 1000;
            (start + at, id)
        })
        .collect()
}

fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (t.as_nanos() as u64) ^ ((std::process::id() as u64) << 32) | 1
}

/// xorshift64: jitter, not secrets.
fn next(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closes_are_spread_over_the_window_one_per_slot() {
        let ids: Vec<String> = (0..200).map(|i| format!("0x{i:x}")).collect();
        let due = spread(ids.clone(), 2000, 1_000);
        assert_eq!(due.len(), 200);
        let mut at: Vec<u64> = due.iter().map(|(t, _)| t - 1_000).collect();
        assert!(at.iter().all(|t| *t < 2000), "{at:?}");
        at.sort();
        // one per 10 ms slot: never two in the same slot, none outside
        for (i, t) in at.iter().enumerate() {
            assert_eq!(*t / 10, i as u64, "close {i} at {t} ms");
        }
        let mut got: Vec<String> = due.into_iter().map(|(_, id)| id).collect();
        got.sort();
        let mut want = ids;
        want.sort();
        assert_eq!(got, want);
    }
}
