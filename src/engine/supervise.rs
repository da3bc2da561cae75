//! Supervision between swaps: what the journal holds as current must be serving. Woken by a
//! nudge (a Docker event about one of our containers, HAProxy's config file or socket changing,
//! the safety sweep) or by a retry falling due, the walker makes what runs match the record
//! (`Steps::reconcile`: orphans removed, servers put back in HAProxy and its config file) and
//! replaces what died (`Steps::repair`), one report per attempt. A release that keeps dying is
//! retried with waits doubling from 1 s up to the service's `repair_backoff_max`; meanwhile the
//! service shows down (nothing serves) or degraded (survivors serve), with the reason.

use std::time::Duration;

use tokio::time::Instant;

use super::handle::State;
use super::repairs::BACKOFF_FIRST;
use super::steps::{Dead, Part, Steps};
use super::walker::Walker;
use crate::clock::now_ms;
use crate::report::{RepairReport, Report, Reporter};

/// Retrying a look that failed (Docker or HAProxy not answering): the first wait and the last.
const LOOK_RETRY_FIRST: Duration = Duration::from_secs(1);
const LOOK_RETRY_MAX: Duration = Duration::from_secs(10);

impl<S: Steps, P: Reporter> Walker<S, P> {
    /// Looks at what runs, repairs what does not serve (when its backoff allows), and shows the
    /// truth.
    pub(super) async fn supervise(&mut self) {
        tracing::debug!(service = self.steps.service(), "looking at what runs");
        self.repairs.next_try = None;
        let died = self.book.handle.take_died();
        if !died.is_empty() {
            self.steps.died(died);
        }
        if !self.book.record.leftovers.is_empty() {
            self.steps.tidy(&mut self.book).await;
        }
        let dead = match self.look().await {
            Some(dead) => dead,
            None => return,
        };
        if !dead.is_empty() {
            let max = self.steps.repair_backoff_max();
            if let Some(wait) = self.repairs.wait(max, Instant::now()) {
                self.repairs.next_try = Some(Instant::now() + wait);
                self.health = self.not_serving(&dead, Some(wait));
                self.show_health();
                return;
            }
            let failed = self.repair_all(&dead).await;
            // look again: the record names the replacements now, HAProxy's file gets them
            let Some(dead) = self.look().await else {
                return;
            };
            if !dead.is_empty() {
                let wait = self.repairs.wait(max, Instant::now());
                self.repairs.next_try = Some(Instant::now() + wait.unwrap_or(BACKOFF_FIRST));
                let mut health = self.not_serving(&dead, wait);
                if let (Some(why), Some(e)) = (health.1.as_mut(), failed) {
                    why.push_str(&format!("; the last repair failed: {e}"));
                }
                self.health = health;
                self.show_health();
                return;
            }
        }
        let damaged = self.book.record.damaged.join("; ");
        self.health = match (&self.book.record.current, self.leftovers()) {
            (None, _) if !damaged.is_empty() => (State::Down, Some(damaged)),
            (None, _) => (State::Down, Some("no release deployed yet".into())),
            (Some(_), None) if !damaged.is_empty() => (State::Degraded, Some(damaged)),
            (Some(_), None) => (State::Serving, None),
            (Some(_), Some(left)) => (State::Degraded, Some(left)),
        };
        self.show_health();
    }

    /// "container(s) … not removed yet (why); retrying", while Docker could not remove some.
    fn leftovers(&self) -> Option<String> {
        let left = self.book.record.leftovers.as_slice();
        let first = left.first()?;
        let ids: Vec<&str> = left
            .iter()
            .map(|l| &l.container_id[..12.min(l.container_id.len())])
            .collect();
        Some(format!(
            "container(s) {} not removed yet ({}); retrying",
            ids.join(", "),
            first.why
        ))
    }

    /// Reconciles; on failure (Docker or HAProxy not answering, the backend missing) shows the
    /// service degraded with the reason and looks again later, by itself.
    async fn look(&mut self) -> Option<Vec<Dead>> {
        match self.steps.reconcile(&mut self.book).await {
            Ok(dead) => {
                self.repairs.look_failures = 0;
                Some(dead)
            }
            Err(e) => {
                tracing::error!(service = self.steps.service(), error = %e, "cannot check what serves; looking again later");
                let wait = LOOK_RETRY_FIRST
                    .saturating_mul(1 << self.repairs.look_failures.min(16))
                    .min(LOOK_RETRY_MAX);
                self.repairs.look_failures += 1;
                self.repairs.next_try = Some(Instant::now() + wait);
                let mut why = format!("{e}; looking again in {} s", wait.as_secs().max(1));
                if let Some(left) = self.leftovers() {
                    why = format!("{why}; {left}");
                }
                self.health = (State::Degraded, Some(why));
                self.show_health();
                None
            }
        }
    }

    /// Replaces each dead container in turn, reporting each attempt. Returns the last failure.
    async fn repair_all(&mut self, dead: &[Dead]) -> Option<String> {
        let mut failed = None;
        let reason = describe(dead);
        self.book.publish(State::Repairing, Some(reason));
        self.repairs.attempted(Instant::now());
        let attempt = self.repairs.streak;
        for d in dead {
            let (started_ms, started) = (now_ms(), Instant::now());
            tracing::warn!(service = self.steps.service(), part = %d.part, why = %d.why, attempt, "repairing: replacing a part of the current release");
            let result = self.steps.repair(&mut self.book, d).await;
            let Some(current) = self.book.record.current.as_ref().map(|c| c.release.clone()) else {
                return failed;
            };
            let took_ms = started.elapsed().as_millis() as u64;
            let (replacement, reason) = match result {
                Ok(r) => {
                    tracing::info!(service = self.steps.service(), replacement = %r, took_ms, "repaired");
                    (Some(r), None)
                }
                Err(e) => {
                    tracing::error!(service = self.steps.service(), error = %e, "repair failed");
                    failed = Some(e.to_string());
                    (None, Some(e.to_string()))
                }
            };
            let report = Report::from_repair(
                &self.book.identity,
                &current,
                started_ms,
                now_ms(),
                reason,
                RepairReport {
                    part: (&d.part).into(),
                    why: d.why.clone(),
                    exit_code: d.death.exit_code,
                    oom_killed: d.death.oom_killed,
                    log_tail: d.death.log_tail.clone(),
                    replacement: replacement.as_ref().map(Part::id),
                    took_ms,
                    attempt,
                },
            );
            self.book.deliver(&report).await;
        }
        failed
    }

    /// Down when nothing of the current release serves, degraded when some of it does.
    fn not_serving(&self, dead: &[Dead], wait: Option<Duration>) -> (State, Option<String>) {
        let all = self
            .book
            .record
            .current
            .as_ref()
            .map_or(0, |c| c.members().len());
        let state = if dead.len() >= all {
            State::Down
        } else {
            State::Degraded
        };
        let next = match wait {
            Some(w) => format!(
                "; repair attempt {} in {} s",
                self.repairs.streak + 1,
                w.as_secs_f64().ceil() as u64
            ),
            None => "; repairing again".into(),
        };
        (state, Some(format!("{}{next}", describe(dead))))
    }
}

/// "container 1a2b3c4d5e6f exited with code 137", for one or more.
fn describe(dead: &[Dead]) -> String {
    dead.iter()
        .map(|d| format!("{} {}", d.part, d.why))
        .collect::<Vec<_>>()
        .join(", ")
}
