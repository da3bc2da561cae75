//! The record of one service's swaps, kept by its walker whatever the kind of service:
//! the journal, the view status queries see, and the report at the end. A phase change is
//! journaled (`advance`) before the walker acts on it; a swap's end is published only once it is
//! reported (`settle`).

use std::sync::Arc;
use std::time::Duration;

use super::handle::{ServiceHandle, State};
use super::journal::{Journal, JournalError, ServiceRecord};
use super::phase::{Budgets, Event, Phase, Swap};
use super::steps::Ledger;
use crate::clock::{now_ms, Backoff};
use crate::report::{Identity, Report, Reporter};

/// Retrying a journal or report write: the first wait, doubling up to the last.
const STORE_RETRY_FIRST: Duration = Duration::from_millis(100);
const STORE_RETRY_MAX: Duration = Duration::from_secs(5);

pub struct Book<P> {
    pub service: String,
    pub journal: Journal,
    pub record: ServiceRecord,
    pub handle: Arc<ServiceHandle>,
    pub reporter: Arc<P>,
    pub identity: Arc<Identity>,
}

impl<P: Reporter> Book<P> {
    pub fn new(
        service: &str,
        journal: Journal,
        handle: Arc<ServiceHandle>,
        reporter: Arc<P>,
        identity: Arc<Identity>,
    ) -> Self {
        Book {
            service: service.to_string(),
            journal,
            record: ServiceRecord::default(),
            handle,
            reporter,
            identity,
        }
    }

    fn service(&self) -> &str {
        &self.service
    }

    /// Waits for the next release and makes it a swap (budgets read when it is taken, from the
    /// latest settings). None when the release was already journaled before a crash and
    /// recovery handled it.
    pub async fn next_swap(&mut self, budgets: impl FnOnce() -> Budgets) -> Option<Swap> {
        let old = self.record.current.clone();
        let handle = self.handle.clone();
        let swap = handle
            .next(|release, view| {
                let swap = Swap::new(release.clone(), old, budgets(), now_ms());
                view.set_state(State::Swapping, None);
                view.swap = Some(swap.clone());
                swap
            })
            .await;
        if self.record.find(&swap.release.deploy_id).is_some() {
            self.handle.taken(&swap.release.deploy_id);
            return None;
        }
        Some(swap)
    }

    /// Journals a swap that was just taken from the queue, and drops it from the queue file.
    pub async fn begin(&mut self, swap: &Swap) {
        self.record.swap = Some(swap.clone());
        self.store_until_written().await;
        self.handle.taken(&swap.release.deploy_id);
    }

    /// Shows the record and a state (with why, unless it is simply serving or swapping).
    pub fn publish(&self, state: State, reason: Option<String>) {
        let r = &self.record;
        let (current, previous, swap) = (r.current.clone(), r.previous.clone(), r.swap.clone());
        let history = r.history.clone();
        let kept_images = r.kept_images.clone();
        // one change: no reader sees the new state beside the old record
        self.handle.publish(move |v| {
            v.set_state(state, reason);
            v.current = current;
            v.previous = previous;
            v.swap = swap;
            v.history = history;
            v.kept_images = kept_images;
        });
    }
    /// Journals the record as it is now.
    pub fn store(&mut self) -> Result<(), JournalError> {
        self.journal.store(&self.service, &self.record)
    }

    /// Journals the record, waiting (and retrying, with backoff) while it cannot be written: the
    /// journal is the truth, so nothing acts on a phase it does not hold. Meanwhile the service
    /// shows degraded, naming the journal and why; the phase before still holds (the old release
    /// serves until the switch is journaled).
    pub async fn store_until_written(&mut self) {
        let mut wait = Backoff::doubling(STORE_RETRY_FIRST, STORE_RETRY_MAX);
        let mut failed = false;
        loop {
            match self.store() {
                Ok(()) => {
                    let phase = self
                        .record
                        .swap
                        .as_ref()
                        .map_or("closed", |s| s.phase.name());
                    super::crash::at("journaled", phase);
                    break;
                }
                Err(e) => {
                    tracing::error!(service = self.service(), error = %e, "journal not written; waiting before acting");
                    self.publish(
                        State::Degraded,
                        Some(format!(
                            "{e}; the swap waits where it is until the journal can be written"
                        )),
                    );
                    failed = true;
                    tokio::time::sleep(wait.next()).await;
                }
            }
        }
        if failed {
            tracing::info!(
                service = self.service(),
                "journal written again; the swap goes on"
            );
        }
    }
    /// Shows the swap as it is now (live ramp figures) without journaling it.
    pub fn show(&mut self, swap: &Swap) {
        self.record.swap = Some(swap.clone());
        self.publish(State::Swapping, None);
    }

    /// Journals and shows the swap mid-phase (e.g. new replicas started), so a restart knows them.
    pub fn note(&mut self, swap: &Swap) -> Result<(), JournalError> {
        self.record.swap = Some(swap.clone());
        self.store()?;
        self.publish(State::Swapping, None);
        Ok(())
    }

    /// Applies an event, journals the new phase, publishes it. Called before the phase acts.
    pub async fn advance(&mut self, swap: Swap, event: Event) -> Swap {
        let before = swap.phase.name();
        let fallback = swap.clone();
        let swap = match swap.apply(event, now_ms()) {
            Ok(s) => s,
            Err(e) => {
                // A bug in the walker or a step, not in the input: end the swap rather than loop.
                tracing::error!(service = self.service(), error = %e, "illegal move");
                let mut s = fallback;
                s.warnings.push(e.to_string());
                s.phase = Phase::Failed;
                s.reason.get_or_insert_with(|| e.to_string());
                s
            }
        };
        tracing::info!(
            service = self.service(),
            release = %swap.release.image,
            deploy_id = %swap.release.deploy_id,
            from = before,
            phase = swap.phase.name(),
            "phase"
        );
        if swap.phase == Phase::Succeeded {
            // journaled together with the phase: the new release is current from here on
            self.record.previous = swap.old.as_ref().map(|o| o.release.clone());
            self.record.current = swap.new.clone();
        }
        self.record.swap = Some(swap.clone());
        self.store_until_written().await;
        // the end of a swap becomes visible only once it is reported (see `settle`)
        if !swap.phase.is_terminal() {
            self.publish(State::Swapping, None);
        }
        swap
    }
    /// Writes a report, retrying until it is written: a report is never dropped. Meanwhile the
    /// service shows why it waits.
    pub async fn deliver(&self, report: &Report) {
        let mut wait = Backoff::doubling(STORE_RETRY_FIRST, STORE_RETRY_MAX);
        for attempt in 1u32.. {
            match self.reporter.report(report).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::error!(service = self.service(), error = %e, attempt, "report not written; retrying");
                    if attempt >= 3 {
                        self.publish(
                            State::Degraded,
                            Some(format!("report not written: {e}; retrying")),
                        );
                    }
                    tokio::time::sleep(wait.next()).await;
                }
            }
        }
    }

    /// Records the outcome, reports it, and closes the swap in the journal.
    pub async fn settle(&mut self, swap: Swap) {
        let report = swap_report(
            &self.identity.instance_id,
            self.identity.stack.as_deref(),
            &swap,
        );
        // the journal holds the swap meanwhile, so a restart reports it again
        self.deliver(&report).await;
        super::crash::at("reported", "");
        tracing::info!(
            service = self.service(),
            release = %swap.release.image,
            deploy_id = %swap.release.deploy_id,
            result = %report.result,
            reason = swap.reason.as_deref().unwrap_or(""),
            "swap finished"
        );
        if swap.phase == Phase::Succeeded {
            // the record is the engine's own again: what was found damaged is behind us
            self.record.damaged.clear();
        }
        self.record.finish();
        self.store_until_written().await;
        // the walker shows what is true now (serving, or degraded and why)
    }
}

impl<P: Reporter> Ledger for Book<P> {
    fn note(&mut self, swap: &Swap) -> Result<(), JournalError> {
        Book::note(self, swap)
    }
    fn show(&mut self, swap: &Swap) {
        Book::show(self, swap)
    }
    fn record(&mut self) -> &mut ServiceRecord {
        &mut self.record
    }
    fn store(&mut self) -> Result<(), JournalError> {
        Book::store(self)
    }
}

/// The report of a finished swap: its result, the phase it reached, each phase's time, the canary
/// and streams, who asked.
pub fn swap_report(instance_id: &str, stack: Option<&str>, swap: &Swap) -> Report {
    let succeeded = swap.phase == Phase::Succeeded;
    let phase_reached = swap
        .marks
        .iter()
        .rev()
        .map(|m| m.phase.as_str())
        .find(|p| !matches!(*p, "succeeded" | "failed" | "rolling_back"))
        .unwrap_or("accepted")
        .to_string();
    let phases = swap
        .marks
        .windows(2)
        .map(|w| crate::report::PhaseTiming {
            phase: w[0].phase.clone(),
            started_ms: w[0].at_ms,
            took_ms: w[1].at_ms.saturating_sub(w[0].at_ms),
        })
        .collect();
    Report {
        schema: crate::report::SCHEMA_VERSION,
        kind: crate::model::ReportKind::Swap,
        report_id: swap.release.deploy_id.clone(),
        instance_id: instance_id.to_string(),
        stack: stack.map(String::from),
        service: swap.release.service.clone(),
        image: swap.release.image.clone(),
        version: swap.release.version.clone(),
        deploy_id: swap.release.deploy_id.clone(),
        result: crate::model::Outcome::of(succeeded),
        phase_reached,
        reason: swap.reason.clone(),
        cause: swap.cause,
        warnings: swap.warnings.clone(),
        accepted_ms: swap.accepted_ms,
        time_to_traffic_ms: swap
            .marks
            .iter()
            .find(|m| matches!(m.phase.as_str(), "watching" | "draining"))
            .filter(|_| succeeded)
            .map(|m| m.at_ms.saturating_sub(swap.accepted_ms)),
        finished_ms: swap
            .marks
            .last()
            .map(|m| m.at_ms)
            .unwrap_or(swap.accepted_ms),
        phases,
        health_response: swap.health_response.clone(),
        previous_image: swap.old.as_ref().map(|o| o.release.image.clone()),
        failed_requests: swap.failed_requests,
        images_reclaimed_bytes: swap.images_reclaimed_bytes,
        signalled_ms: swap.signalled_ms,
        canary: (swap.ramp_skipped || !swap.ramp.is_empty()).then(|| crate::report::CanaryReport {
            skipped: swap.ramp_skipped,
            planned: swap.ramp.clone(),
            watch_ms: swap.watch_ms,
            steps: swap.steps.clone(),
        }),
        streams: swap.streams.filter(|c| c.open > 0),
        repair: None,
        hooks: swap.hooks.clone(),
        requested_by: swap.release.requested_by.clone(),
        superseded_by: None,
    }
}
