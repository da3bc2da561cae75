//! The control API's views of deploys and of the daemon; the request and answer bodies that
//! name no engine type are `model::api`'s, re-exported here.

use serde::{Deserialize, Serialize};

use crate::engine::{DeployState, Release, ServiceView, Swap};
pub use crate::model::api::*;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeployStatus {
    pub deploy_id: String,
    pub service: String,
    #[serde(flatten)]
    pub state: DeployState,
    pub finished: bool,
}

impl DeployStatus {
    pub fn new(deploy_id: &str, service: &str, state: &DeployState) -> DeployStatus {
        DeployStatus {
            deploy_id: deploy_id.to_string(),
            service: service.to_string(),
            state: state.clone(),
            finished: state.is_finished(),
        }
    }

    /// "queued", "running", "finished", "superseded" or "reported".
    pub fn status(&self) -> &'static str {
        match self.state {
            DeployState::Queued { .. } => "queued",
            DeployState::Running { .. } => "running",
            DeployState::Finished { .. } => "finished",
            DeployState::Superseded { .. } => "superseded",
            DeployState::Reported { .. } => "reported",
        }
    }

    /// The swap, once it runs.
    pub fn swap(&self) -> Option<&Swap> {
        match &self.state {
            DeployState::Running { swap } | DeployState::Finished { swap } => Some(swap),
            _ => None,
        }
    }

    /// The release: queued, swapping or swapped (None once only its answer is known).
    pub fn release(&self) -> Option<&Release> {
        match &self.state {
            DeployState::Queued { release, .. } => Some(release),
            DeployState::Superseded { release, .. } => release.as_ref(),
            _ => self.swap().map(|s| &s.release),
        }
    }

    /// The phase of the swap ("succeeded", "failed", ...), once it runs.
    pub fn phase(&self) -> Option<&'static str> {
        self.swap().map(|s| s.phase.name())
    }

    pub fn reason(&self) -> Option<&str> {
        match &self.state {
            DeployState::Reported { reason, .. } => reason.as_deref(),
            _ => self.swap().and_then(|s| s.reason.as_deref()),
        }
    }

    /// For a deploy known only from its report: "success", "failure" or "superseded".
    pub fn result(&self) -> Option<&str> {
        match &self.state {
            DeployState::Reported { result, .. } => Some(result),
            _ => None,
        }
    }

    /// For a superseded deploy: the deploy that replaced it.
    pub fn superseded_by(&self) -> Option<&str> {
        match &self.state {
            DeployState::Superseded { by, .. } => Some(by),
            _ => None,
        }
    }

    /// For a queued deploy: what it waits for.
    pub fn behind(&self) -> Option<&str> {
        match &self.state {
            DeployState::Queued { behind, .. } => behind.as_deref(),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DaemonStatus {
    pub version: String,
    pub instance_id: String,
    pub uptime_secs: u64,
    pub services: Vec<ServiceView>,
    /// The CloudFormation metadata watcher, when configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloudformation: Option<WatchView>,
}
