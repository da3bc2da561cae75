//! Reports: one per finished swap, success or failure. The embedded default appends JSON lines to
//! a local file; SQS delivery plugs in behind the same trait.

use std::future::Future;
use std::path::PathBuf;

use serde::Serialize;
use thiserror::Error;

use crate::engine::phase::{Phase, Swap};
use crate::fsutil::append_line;

pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Error)]
#[error("writing report to {path}: {source}")]
pub struct ReportError {
    path: PathBuf,
    source: std::io::Error,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    pub schema: u32,
    pub instance_id: String,
    pub service: String,
    pub image: String,
    pub version: String,
    pub deploy_id: String,
    /// "success" or "failure".
    pub result: &'static str,
    /// The last phase reached before the end (for a failure: where it failed).
    pub phase_reached: String,
    pub reason: Option<String>,
    pub warnings: Vec<String>,
    pub accepted_ms: u64,
    pub finished_ms: u64,
    /// Phase name and how long it took, in order.
    pub phases: Vec<PhaseTiming>,
    /// What the new release answered on its health route when the gate passed.
    pub health_response: Option<String>,
    pub previous_image: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PhaseTiming {
    pub phase: String,
    pub started_ms: u64,
    pub took_ms: u64,
}

impl Report {
    pub fn from_swap(instance_id: &str, swap: &Swap) -> Report {
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
            .map(|w| PhaseTiming {
                phase: w[0].phase.clone(),
                started_ms: w[0].at_ms,
                took_ms: w[1].at_ms.saturating_sub(w[0].at_ms),
            })
            .collect();
        Report {
            schema: SCHEMA_VERSION,
            instance_id: instance_id.to_string(),
            service: swap.release.service.clone(),
            image: swap.release.image.clone(),
            version: swap.release.version.clone(),
            deploy_id: swap.release.deploy_id.clone(),
            result: if succeeded { "success" } else { "failure" },
            phase_reached,
            reason: swap.reason.clone(),
            warnings: swap.warnings.clone(),
            accepted_ms: swap.accepted_ms,
            finished_ms: swap
                .marks
                .last()
                .map(|m| m.at_ms)
                .unwrap_or(swap.accepted_ms),
            phases,
            health_response: swap.health_response.clone(),
            previous_image: swap.old.as_ref().map(|o| o.release.image.clone()),
        }
    }
}

pub trait Reporter: Send + Sync + 'static {
    fn report(&self, report: &Report) -> impl Future<Output = Result<(), ReportError>> + Send;
}

/// Appends each report as one JSON line, fsynced.
#[derive(Debug, Clone)]
pub struct FileReporter {
    path: PathBuf,
}

impl FileReporter {
    pub fn new(path: PathBuf) -> FileReporter {
        FileReporter { path }
    }
}

impl Reporter for FileReporter {
    async fn report(&self, report: &Report) -> Result<(), ReportError> {
        let line = serde_json::to_string(report).expect("reports serialize");
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || append_line(&path, &line))
            .await
            .expect("report writer task")
            .map_err(|source| ReportError {
                path: self.path.clone(),
                source,
            })
    }
}
