//! Reports: one per finished swap, success or failure. The embedded default appends JSON lines to
//! a local file; with a queue configured, each report also goes through the durable outbox to SQS.

pub mod imds;
pub mod outbox;
pub mod sqs;

use std::future::Future;
use std::path::PathBuf;

use serde::Serialize;
use thiserror::Error;

use crate::engine::phase::{Phase, RampStep, StepRecord, Swap};
use crate::fsutil::append_line;

pub const SCHEMA_VERSION: u32 = 1;

/// Who a report says it is from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The EC2 instance id (IMDSv2) or, off EC2, the configured instance id.
    pub instance_id: String,
    pub stack: Option<String>,
}

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
    pub stack: Option<String>,
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
    /// Requests HAProxy counted as failed on the service's backend during the swap (connection
    /// and response errors, 5xx answers); None when it could not be read.
    pub failed_requests: Option<u64>,
    /// A code reload: when the server was signalled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signalled_ms: Option<u64>,
    /// The canary: the plan, each step (and the watch window) with HAProxy's figures for both
    /// releases, or that the operator skipped it. None for a service without a ramp.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryReport>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CanaryReport {
    /// `--no-ramp`: all traffic moved at once.
    pub skipped: bool,
    pub planned: Vec<RampStep>,
    pub watch_ms: u64,
    pub steps: Vec<StepRecord>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PhaseTiming {
    pub phase: String,
    pub started_ms: u64,
    pub took_ms: u64,
}

impl Report {
    pub fn from_swap(instance_id: &str, stack: Option<&str>, swap: &Swap) -> Report {
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
            stack: stack.map(String::from),
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
            failed_requests: swap.failed_requests,
            signalled_ms: swap.signalled_ms,
            canary: (swap.ramp_skipped || !swap.ramp.is_empty()).then(|| CanaryReport {
                skipped: swap.ramp_skipped,
                planned: swap.ramp.clone(),
                watch_ms: swap.watch_ms,
                steps: swap.steps.clone(),
            }),
        }
    }
}

pub trait Reporter: Send + Sync + 'static {
    fn report(&self, report: &Report) -> impl Future<Output = Result<(), ReportError>> + Send;
}

/// Appends each report as one JSON line, fsynced; once per deploy: a daemon killed between
/// writing a report and closing the swap in its journal reports the swap again when it starts,
/// and finds it already written.
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
        let deploy_id = report.deploy_id.clone();
        tokio::task::spawn_blocking(move || {
            if written_before(&path, &deploy_id)? {
                return Ok(());
            }
            append_line(&path, &line)
        })
        .await
        .expect("report writer task")
        .map_err(|source| ReportError {
            path: self.path.clone(),
            source,
        })
    }
}

/// How far back from the end of the reports file a report of the same deploy is looked for: a
/// swap reported again after a crash was the last thing the service reported.
const WRITTEN_LOOKBACK: u64 = 1 << 20;

/// Whether a report of this deploy is among the last lines of the reports file.
fn written_before(path: &std::path::Path, deploy_id: &str) -> std::io::Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = match crate::fsutil::open_regular(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    let from = len.saturating_sub(WRITTEN_LOOKBACK);
    f.seek(SeekFrom::Start(from))?;
    let mut tail = Vec::with_capacity((len - from) as usize);
    f.read_to_end(&mut tail)?;
    // a line cut by the look-back window is not a report
    let lines = tail.split(|b| *b == b'\n').skip(usize::from(from > 0));
    Ok(lines
        .filter_map(|l| serde_json::from_slice::<serde_json::Value>(l).ok())
        .any(|r| r["deploy_id"] == deploy_id))
}

/// The daemon's reporter: the local reports file always, and the SQS outbox when a queue is set.
pub struct Reporters {
    pub file: FileReporter,
    pub outbox: Option<std::sync::Arc<outbox::Outbox>>,
}

impl Reporter for Reporters {
    async fn report(&self, report: &Report) -> Result<(), ReportError> {
        if let Some(outbox) = &self.outbox {
            let body = serde_json::to_string(report).expect("reports serialize");
            let outbox = outbox.clone();
            let key = report.deploy_id.clone();
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
        self.file.report(report).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deploy_is_found_among_whole_lines_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reports.jsonl");
        assert!(!written_before(&path, "d1").unwrap(), "no file yet");
        std::fs::write(
            &path,
            "{\"deploy_id\":\"d1\",\"result\":\"success\"}\n{\"deploy_id\":\"d2\",\"res",
        )
        .unwrap();
        assert!(written_before(&path, "d1").unwrap());
        assert!(
            !written_before(&path, "d2").unwrap(),
            "a torn line is no report"
        );
        assert!(!written_before(&path, "d").unwrap());
    }

    #[test]
    fn only_the_tail_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reports.jsonl");
        let mut text = String::from("{\"deploy_id\":\"old\"}\n");
        let filler = format!("{{\"deploy_id\":\"x\",\"pad\":\"{}\"}}\n", "p".repeat(1000));
        while (text.len() as u64) < WRITTEN_LOOKBACK + 10 {
            text.push_str(&filler);
        }
        text.push_str("{\"deploy_id\":\"new\"}\n");
        std::fs::write(&path, text).unwrap();
        assert!(written_before(&path, "new").unwrap());
        assert!(!written_before(&path, "old").unwrap());
    }
}
