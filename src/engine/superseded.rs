//! Every accepted release ends with an answer. A release replaced in the queue by a later one
//! before it started (latest wins, handle.rs) is answered with a report of its own, result
//! `superseded`, naming the deploy that replaced it: in the reports file, the outbox to SQS and
//! the metrics, like any swap's, so `history`, `deploy --wait` and a build box counting reports
//! all learn of it. The handle journals it as unanswered in the queue file until its report is
//! written, so a crash in between answers it on the next start.

use std::sync::Arc;
use std::time::Duration;

use super::handle::{ServiceHandle, Superseded};
use crate::clock::Backoff;
use crate::report::{Identity, Report, Reporter};

/// Reports written before the queue file is journaled again.
const BATCH: usize = 64;
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Answers the service's superseded deploys as they come, for ever (beside its walker).
pub async fn answer<P: Reporter>(
    handle: Arc<ServiceHandle>,
    reporter: Arc<P>,
    identity: Arc<Identity>,
) {
    loop {
        let batch = handle.unanswered(BATCH).await;
        for s in &batch {
            let report = Report::from_superseded(&identity, s);
            retry(
                "superseded deploy's report not written",
                &handle.name,
                || reporter.report(&report),
            )
            .await;
            tracing::info!(service = %handle.name, deploy_id = %s.release.deploy_id, by = %s.by, "superseded deploy reported");
        }
        retry(
            "queue not journaled after superseded reports",
            &handle.name,
            || std::future::ready(handle.answered(&batch)),
        )
        .await;
    }
}

/// Runs `work` until it succeeds, waiting 100 ms doubling to 5 s between tries.
async fn retry<F, Fut, E>(what: &str, service: &str, mut work: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut wait = Backoff::doubling(RETRY_FIRST, RETRY_MAX);
    while let Err(e) = work().await {
        tracing::error!(service, error = %e, retry_in_ms = wait.peek().as_millis() as u64, "{what}");
        tokio::time::sleep(wait.next()).await;
    }
}

impl Report {
    /// The report of a deploy replaced in the queue before it started.
    pub fn from_superseded(identity: &Identity, s: &Superseded) -> Report {
        let r = &s.release;
        Report {
            kind: crate::model::ReportKind::Swap,
            report_id: format!("{}.superseded", r.deploy_id),
            result: crate::model::Outcome::Superseded,
            phase_reached: "accepted".into(),
            reason: Some(format!("superseded by deploy {} before it started", s.by)),
            superseded_by: Some(s.by.clone()),
            accepted_ms: s.at_ms,
            finished_ms: s.at_ms,
            requested_by: r.requested_by.clone(),
            ..Report::empty(identity, r)
        }
    }
}
