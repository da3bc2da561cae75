//! Reports: one per finished swap, success or failure. The embedded default appends JSON lines to
//! a local file; with a queue configured, each report also goes through the durable outbox to SQS.

pub mod imds;
pub mod metrics;
pub mod outbox;
pub mod sqs;

use std::future::Future;
use std::path::PathBuf;

use serde::Serialize;
use thiserror::Error;

use crate::config::Rotation;
use crate::engine::phase::{Phase, RampStep, Requester, StepRecord, Swap};
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
    /// "swap" (a release swapped in, or not) or "repair" (a container of the current release
    /// replaced between swaps).
    pub kind: &'static str,
    /// Unique per report: the deploy id for a swap, `<deploy id>.repair.<ms>` for a repair.
    pub report_id: String,
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
    /// From the release accepted to the new release taking all traffic (the switch done, or the
    /// canary's last step reached); None when it never did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_to_traffic_ms: Option<u64>,
    /// Phase name and how long it took, in order.
    pub phases: Vec<PhaseTiming>,
    /// What the new release answered on its health route when the gate passed.
    pub health_response: Option<String>,
    pub previous_image: Option<String>,
    /// Requests HAProxy counted as failed on the service's backend during the swap (connection
    /// and response errors, 5xx answers); None when it could not be read.
    pub failed_requests: Option<u64>,
    /// Bytes freed on Docker's data root by removing old images (the rollback image is kept).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub images_reclaimed_bytes: Option<u64>,
    /// A code reload: when the server was signalled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signalled_ms: Option<u64>,
    /// The canary: the plan, each step (and the watch window) with HAProxy's figures for both
    /// releases, or that the operator skipped it. None for a service without a ramp.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryReport>,
    /// A repair: what died and what replaced it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repair: Option<RepairReport>,
    /// The host hooks run during the swap: command, exit code, how long, their output's tail.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<crate::runtime::hook::HookRun>,
    /// Who asked for the release (a repair: who asked for the release it repaired).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<Requester>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RepairReport {
    /// What died or turned unhealthy: a container and its HAProxy server, or a local server's
    /// master.
    #[serde(flatten)]
    pub part: RepairedPart,
    /// Why it was replaced ("exited with code 137", "unhealthy", "missing").
    pub why: String,
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    /// Its last log lines.
    pub log_tail: Vec<String>,
    /// What serves in its place (None when the repair failed): the new container's id, or the
    /// new master's pid.
    pub replacement: Option<String>,
    /// From the death being noticed to the replacement serving (or the repair failing).
    pub took_ms: u64,
    /// Repairs of this release in a row without a stable spell between them (1: the first).
    pub attempt: u32,
}

/// `container` and `server`, or `master_pid`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(untagged)]
pub enum RepairedPart {
    Container { container: String, server: String },
    Master { master_pid: i32 },
}

impl From<&crate::engine::steps::Part> for RepairedPart {
    fn from(part: &crate::engine::steps::Part) -> Self {
        use crate::engine::steps::Part;
        match part {
            Part::Container(m) => RepairedPart::Container {
                container: m.container_id.clone(),
                server: m.server.clone(),
            },
            Part::Master { pid } => RepairedPart::Master { master_pid: *pid },
        }
    }
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
            kind: "swap",
            report_id: swap.release.deploy_id.clone(),
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
            canary: (swap.ramp_skipped || !swap.ramp.is_empty()).then(|| CanaryReport {
                skipped: swap.ramp_skipped,
                planned: swap.ramp.clone(),
                watch_ms: swap.watch_ms,
                steps: swap.steps.clone(),
            }),
            repair: None,
            hooks: swap.hooks.clone(),
            requested_by: swap.release.requested_by.clone(),
        }
    }

    /// The report of a repair of the current release (`release`), failed when `reason` is set.
    pub fn from_repair(
        identity: &Identity,
        release: &crate::engine::Release,
        started_ms: u64,
        finished_ms: u64,
        reason: Option<String>,
        repair: RepairReport,
    ) -> Report {
        Report {
            schema: SCHEMA_VERSION,
            kind: "repair",
            report_id: format!("{}.repair.{started_ms}", release.deploy_id),
            instance_id: identity.instance_id.clone(),
            stack: identity.stack.clone(),
            service: release.service.clone(),
            image: release.image.clone(),
            version: release.version.clone(),
            deploy_id: release.deploy_id.clone(),
            result: if reason.is_none() {
                "success"
            } else {
                "failure"
            },
            phase_reached: "repairing".into(),
            reason,
            warnings: Vec::new(),
            accepted_ms: started_ms,
            time_to_traffic_ms: None,
            finished_ms,
            phases: Vec::new(),
            health_response: None,
            previous_image: None,
            failed_requests: None,
            images_reclaimed_bytes: None,
            signalled_ms: None,
            canary: None,
            repair: Some(repair),
            hooks: Vec::new(),
            requested_by: release.requested_by.clone(),
        }
    }
}

pub trait Reporter: Send + Sync + 'static {
    fn report(&self, report: &Report) -> impl Future<Output = Result<(), ReportError>> + Send;
}

/// Appends each report as one JSON line, fsynced; once per deploy: a daemon killed between
/// writing a report and closing the swap in its journal reports the swap again when it starts,
/// and finds it already written.
///
/// Past `rotation.max_bytes` the file is rotated before the next line (`reports.jsonl.1`, ...),
/// `rotation.keep` rotated files kept; `history` reads back through them.
#[derive(Debug, Clone)]
pub struct FileReporter {
    path: PathBuf,
    rotation: Rotation,
}

impl FileReporter {
    pub fn new(path: PathBuf) -> FileReporter {
        FileReporter::rotated(path, Rotation::default())
    }

    pub fn rotated(path: PathBuf, rotation: Rotation) -> FileReporter {
        FileReporter { path, rotation }
    }

    /// The `n`th rotated file (0: the file itself).
    fn generation(&self, n: usize) -> PathBuf {
        if n == 0 {
            return self.path.clone();
        }
        let mut name = self.path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    /// Moves the file to `.1` (and `.1` to `.2` ...) when the next line would pass the limit.
    fn rotate_for(&self, next_line: usize) -> std::io::Result<()> {
        let len = match std::fs::metadata(&self.path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        if len == 0 || len + next_line as u64 <= self.rotation.max_bytes {
            return Ok(());
        }
        for n in (1..=self.rotation.keep).rev() {
            match std::fs::rename(self.generation(n - 1), self.generation(n)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    /// The last `limit` reports (of `service`, or all), newest first, read from the file and
    /// then its rotated copies; lines that are not JSON objects are skipped.
    pub fn history(
        &self,
        service: Option<&str>,
        limit: usize,
    ) -> std::io::Result<Vec<serde_json::Value>> {
        let mut out = Vec::new();
        for n in 0..=self.rotation.keep {
            let text = match std::fs::read(self.generation(n)) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for line in text.split(|b| *b == b'\n').rev() {
                let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) else {
                    continue;
                };
                if !v.is_object() || service.is_some_and(|s| v["service"] != s) {
                    continue;
                }
                out.push(v);
                if out.len() == limit {
                    return Ok(out);
                }
            }
        }
        Ok(out)
    }
}

impl Reporter for FileReporter {
    async fn report(&self, report: &Report) -> Result<(), ReportError> {
        let line = serde_json::to_string(report).expect("reports serialize");
        let me = self.clone();
        let id = report.report_id.clone();
        tokio::task::spawn_blocking(move || {
            // a report written just before a rotation is in `.1`
            if written_before(&me.path, &id)? || written_before(&me.generation(1), &id)? {
                return Ok(());
            }
            me.rotate_for(line.len() + 1)?;
            append_line(&me.path, &line)
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

/// Whether the report `id` is among the last lines of the reports file (reports written before
/// `report_id` existed are known by their deploy id).
fn written_before(path: &std::path::Path, id: &str) -> std::io::Result<bool> {
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
        .any(|r| match r.get("report_id") {
            Some(rid) => rid == id,
            None => r["deploy_id"] == id,
        }))
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
    fn the_file_rotates_and_history_reads_back_through_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reports.jsonl");
        let r = FileReporter::rotated(
            path.clone(),
            Rotation {
                max_bytes: 100,
                keep: 2,
            },
        );
        for i in 0..10 {
            let line = format!(
                "{{\"service\":\"{}\",\"n\":{i},\"pad\":\"{}\"}}",
                if i % 2 == 0 { "web" } else { "api" },
                "x".repeat(15)
            );
            r.rotate_for(line.len() + 1).unwrap();
            append_line(&path, &line).unwrap();
        }
        // 48 bytes a line, 100 at most: two lines a file, two rotated files kept
        assert!(std::fs::metadata(&path).unwrap().len() <= 100);
        assert!(dir.path().join("reports.jsonl.2").exists());
        assert!(!dir.path().join("reports.jsonl.3").exists());
        let all: Vec<u64> = r
            .history(None, 100)
            .unwrap()
            .iter()
            .map(|v| v["n"].as_u64().unwrap())
            .collect();
        assert_eq!(
            all,
            [9, 8, 7, 6, 5, 4],
            "newest first, the oldest rotated away"
        );
        let web: Vec<u64> = r
            .history(Some("web"), 2)
            .unwrap()
            .iter()
            .map(|v| v["n"].as_u64().unwrap())
            .collect();
        assert_eq!(web, [8, 6]);
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
