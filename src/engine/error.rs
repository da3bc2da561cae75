//! What a step of a swap can fail with. Each error names what was being done and the resource it
//! touched (container, server, image, file, process); it becomes text only in a report, a log line
//! or an HTTP body.

use std::path::PathBuf;

use thiserror::Error;

use crate::balancer::BalancerError;
use crate::code::bundle::BundleError;
use crate::health::GateFailed;
use crate::model::Cause;
use crate::runtime::process::ProcessError;
use crate::runtime::RuntimeError;

#[derive(Debug, Error)]
pub enum StepError {
    /// A Docker call failed; `doing` says what for, e.g. `starting container 2 of service "web"`.
    #[error("{doing}: {source}")]
    Docker { doing: String, source: RuntimeError },
    /// An HAProxy runtime API or config file change failed.
    #[error("{doing}: {source}")]
    Haproxy {
        doing: String,
        source: BalancerError,
    },
    #[error(transparent)]
    Gate(#[from] GateFailed),
    #[error("container {container} exited before passing its health gate")]
    ContainerDied { container: String },
    #[error("image archive {location}: {message}")]
    Archive { location: String, message: String },
    #[error(
        "image archive {location} has sha256 {got}, expected {want}: not loaded, nothing started"
    )]
    ArchiveDigest {
        location: String,
        got: String,
        want: String,
    },
    #[error("{what} did not finish before its deadline")]
    Deadline { what: &'static str },
    /// A canary step or the watch window tripped a limit: traffic went back to the old release.
    #[error("{what}: {why}; traffic turned back to the old release")]
    Canary { what: String, why: String },
    #[error("reading HAProxy's figures during {what}: {source}")]
    Figures { what: String, source: BalancerError },
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error("switching {} to {}: {source}", link.display(), dir.display())]
    Current {
        link: PathBuf,
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// An env file or a secret could not be read (named; its value never is).
    #[error(transparent)]
    Secret(#[from] crate::runtime::secrets::SecretError),
    #[error("master pid {pid} exited before the new code passed its health gate")]
    MasterDied { pid: i32 },
    #[error("no new master appeared within 30 s of {signal} to pid {pid}")]
    NoNewMaster { signal: String, pid: i32 },
    #[error(
        "service {service:?} has no [code] section: code releases need code mounted from the host"
    )]
    NoCodeMount { service: String },
    #[error("no running container to reload: deploy an image first")]
    NothingToReload,
    /// The swap lacks what this phase works on (a journal edited by hand, or an engine bug).
    #[error("{0}")]
    Missing(&'static str),
    #[error("a code reload has no canary ramp")]
    NoRamp,
    /// A `before_start` or `before_switch` hook failed: the swap does not go on.
    #[error("the {hook} hook ({command}) failed: {why}")]
    Hook {
        hook: &'static str,
        command: String,
        why: String,
    },
    /// What a step must journal before it acts could not be written.
    #[error(transparent)]
    Journal(#[from] crate::engine::journal::JournalError),
}

impl From<&StepError> for crate::engine::phase::Failure {
    fn from(e: &StepError) -> Self {
        Self::new(e.cause(), e.to_string())
    }
}

impl StepError {
    /// What kind of failure it is, for the report's `cause`.
    pub fn cause(&self) -> Cause {
        use StepError as E;
        match self {
            E::Gate(_) | E::ContainerDied { .. } | E::MasterDied { .. } => Cause::HealthGate,
            E::Canary { .. } | E::Figures { .. } | E::NoRamp => Cause::Canary,
            E::Deadline { .. } => Cause::Deadline,
            E::Docker { .. } => Cause::Docker,
            E::Haproxy { .. } => Cause::Haproxy,
            E::Archive { .. }
            | E::ArchiveDigest { .. }
            | E::Bundle(_)
            | E::Current { .. }
            | E::Secret(_) => Cause::Artifact,
            E::Process(_) | E::NoNewMaster { .. } => Cause::Process,
            E::Hook { .. } => Cause::Hook,
            E::NoCodeMount { .. } | E::NothingToReload | E::Missing(_) | E::Journal(_) => {
                Cause::Refused
            }
        }
    }

    pub fn docker(doing: impl Into<String>) -> impl FnOnce(RuntimeError) -> StepError {
        let doing = doing.into();
        move |source| StepError::Docker { doing, source }
    }

    pub fn haproxy(doing: impl Into<String>) -> impl FnOnce(BalancerError) -> StepError {
        let doing = doing.into();
        move |source| StepError::Haproxy { doing, source }
    }
}
