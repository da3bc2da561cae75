//! Reports: one per finished swap, success or failure. The embedded default appends JSON lines to
//! a local file; with a queue configured, each report also goes through the durable outbox to SQS.

mod file;
pub mod imds;
pub mod metrics;
pub mod outbox;
pub mod sqs;

use std::future::Future;
use std::path::PathBuf;

pub use file::FileReporter;

use thiserror::Error;

pub use crate::model::report::{
    CanaryReport, Identity, PhaseTiming, RepairReport, RepairedPart, Report, SCHEMA_VERSION,
};

#[derive(Debug, Error)]
#[error("writing report to {path}: {source}")]
pub struct ReportError {
    path: PathBuf,
    source: std::io::Error,
}

pub trait Reporter: Send + Sync + 'static {
    fn report(&self, report: &Report) -> impl Future<Output = Result<(), ReportError>> + Send;
}

/// The daemon's reporter: the local reports file always, and the SQS outbox when a queue is set.
pub struct Reporters {
    pub file: FileReporter,
    pub outbox: Option<std::sync::Arc<outbox::Outbox>>,
    /// Counts what was reported (`GET /metrics`).
    pub metrics: metrics::Metrics,
}

impl Reporter for Reporters {
    async fn report(&self, report: &Report) -> Result<(), ReportError> {
        if let Some(outbox) = &self.outbox {
            let body = serde_json::to_string(report).expect("reports serialize");
            let outbox = outbox.clone();
            let key = report.report_id.clone();
            let queued = tokio::task::spawn_blocking(move || outbox.put(&key, &body))
                .await
                .expect("outbox task");
            if let Err(source) = queued {
                return Err(ReportError {
                    path: PathBuf::from("outbox"),
                    source,
                });
            }
        }
        self.file.report(report).await?;
        self.metrics.observe(report);
        Ok(())
    }
}
