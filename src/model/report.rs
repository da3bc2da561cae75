//! A report: one per finished swap, repair or superseded deploy, as the reports file, SQS and
//! the metrics read it. Where reports go is `crate::report`; the report of a swap is built by
//! the engine (`engine::book::swap_report`).

use serde::{Deserialize, Serialize};

use super::{RampStep, Release, Requester, StepRecord};

pub const SCHEMA_VERSION: u32 = 1;

/// Who a report says it is from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The EC2 instance id (IMDSv2) or, off EC2, the configured instance id.
    pub instance_id: String,
    pub stack: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    pub schema: u32,
    pub kind: ReportKind,
    /// Unique per report: the deploy id for a swap, `<deploy id>.repair.<ms>` for a repair.
    pub report_id: String,
    pub instance_id: String,
    pub stack: Option<String>,
    pub service: String,
    pub image: String,
    pub version: String,
    pub deploy_id: String,
    pub result: Outcome,
    /// The last phase reached before the end (for a failure: where it failed).
    pub phase_reached: String,
    pub reason: Option<String>,
    /// A failed swap: why, as data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<Cause>,
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
    /// The old release's long-lived streams while it drained: open, ended by themselves, closed
    /// by hotswapd after the stream budget. None when there were none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub streams: Option<StreamCounts>,
    /// A repair: what died and what replaced it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repair: Option<RepairReport>,
    /// The host hooks run during the swap: command, exit code, how long, their output's tail.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<HookRun>,
    /// Who asked for the release (a repair: who asked for the release it repaired).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<Requester>,
    /// A deploy replaced in the queue before it started (result "superseded"): the deploy that
    /// replaced it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub superseded_by: Option<String>,
}

/// What a report is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReportKind {
    /// A release swapped in (or not, or superseded before it started).
    Swap,
    /// A container (or local server) of the current release replaced between swaps.
    Repair,
}

/// Why a swap failed, as data a fleet rollout can act on (`reason` says it in words).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// The new release did not pass its health gate (or died before it did).
    HealthGate,
    /// A canary step or the watch window tripped a limit: traffic turned back.
    Canary,
    /// A phase did not finish before its deadline.
    Deadline,
    /// A Docker call failed (pull, create, start, remove).
    Docker,
    /// An HAProxy runtime API call, config write or reload failed.
    Haproxy,
    /// The release's image archive, code bundle, env file or secret could not be used.
    Artifact,
    /// A local server (gunicorn-style) did not take the new code.
    Process,
    /// A `before_start` or `before_switch` hook failed.
    Hook,
    /// hotswapd restarted mid-swap and rolled it back.
    Restarted,
    /// The release cannot be swapped on this service as configured, or the journal could not
    /// be written.
    Refused,
}

/// How it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Success,
    Failure,
    /// Replaced in the queue before it started (`superseded_by`).
    Superseded,
}

impl ReportKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ReportKind::Swap => "swap",
            ReportKind::Repair => "repair",
        }
    }
}

impl Outcome {
    pub fn of(succeeded: bool) -> Outcome {
        if succeeded {
            Outcome::Success
        } else {
            Outcome::Failure
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Superseded => "superseded",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
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

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CanaryReport {
    /// `--no-ramp`: all traffic moved at once.
    pub skipped: bool,
    pub planned: Vec<RampStep>,
    pub watch_ms: u64,
    pub steps: Vec<StepRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PhaseTiming {
    pub phase: String,
    pub started_ms: u64,
    pub took_ms: u64,
}

impl Report {
    /// A report of `release` with nothing in it yet but who sends it and what it is about.
    pub fn empty(identity: &Identity, release: &Release) -> Report {
        Report {
            schema: SCHEMA_VERSION,
            kind: ReportKind::Swap,
            report_id: release.deploy_id.clone(),
            instance_id: identity.instance_id.clone(),
            stack: identity.stack.clone(),
            service: release.service.clone(),
            image: release.image.clone(),
            version: release.version.clone(),
            deploy_id: release.deploy_id.clone(),
            result: Outcome::Failure,
            phase_reached: "accepted".into(),
            reason: None,
            cause: None,
            warnings: Vec::new(),
            accepted_ms: 0,
            time_to_traffic_ms: None,
            finished_ms: 0,
            phases: Vec::new(),
            health_response: None,
            previous_image: None,
            failed_requests: None,
            images_reclaimed_bytes: None,
            signalled_ms: None,
            canary: None,
            streams: None,
            repair: None,
            hooks: Vec::new(),
            requested_by: None,
            superseded_by: None,
        }
    }

    /// The report of a repair of the current release (`release`), failed when `reason` is set.
    pub fn from_repair(
        identity: &Identity,
        release: &Release,
        started_ms: u64,
        finished_ms: u64,
        reason: Option<String>,
        repair: RepairReport,
    ) -> Report {
        Report {
            kind: ReportKind::Repair,
            report_id: format!("{}.repair.{started_ms}", release.deploy_id),
            result: Outcome::of(reason.is_none()),
            phase_reached: "repairing".into(),
            reason,
            accepted_ms: started_ms,
            finished_ms,
            repair: Some(repair),
            requested_by: release.requested_by.clone(),
            ..Report::empty(identity, release)
        }
    }
}

/// What became of the long-lived streams (WebSockets, event streams) on the old release while it
/// drained: `open` were seen, `ended` ended by themselves (the app, the client), `closed` were
/// closed by hotswapd after the stream budget.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamCounts {
    pub open: u64,
    pub ended: u64,
    pub closed: u64,
}

/// What a hook did, as the journal and the report keep it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookRun {
    /// "before_start", "before_switch", "after_switch", "after_swap".
    pub hook: String,
    pub command: Vec<String>,
    /// None when it did not exit by itself (killed at its timeout, or not started).
    pub exit_code: Option<i32>,
    pub took_ms: u64,
    /// Why it failed ("exited with code 3", "killed after its timeout of 5 s", "cannot start it:
    /// ..."); None when it exited 0.
    pub failure: Option<String>,
    /// Its last lines of output (stdout and stderr as they came).
    pub output_tail: Vec<String>,
}
