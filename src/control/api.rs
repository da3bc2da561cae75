//! Request and response bodies of the control API, shared by the daemon and the CLI.

use serde::{Deserialize, Serialize};

use crate::engine::{DeployState, ServiceView};

/// Bodies larger than this are refused.
pub const MAX_BODY: usize = 64 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    pub service: String,
    /// The image of a container release (empty for a code release).
    #[serde(default)]
    pub image: String,
    /// What the app reports for this release; defaults to the image tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Given by the caller to make retries safe; generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy_id: Option<String>,
    /// An image archive on this host (`docker save` output) holding `image`, loaded first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<std::path::PathBuf>,
    /// Hex sha256 of the archive, checked before loading.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_sha256: Option<String>,
    /// A code bundle on this host (directory or .tar.gz) for a service that reloads code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<std::path::PathBuf>,
    /// Skip the service's canary ramp: switch all traffic once the health gate passes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_ramp: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeployAccepted {
    pub deploy_id: String,
    pub service: String,
    /// false when the deploy id was seen before and nothing new was started.
    pub accepted: bool,
    /// The deploy running now that this one waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_behind: Option<String>,
    /// Queued deploys this one replaced (they will not run).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub superseded: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReloadOutcome {
    pub services: Vec<String>,
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
}

/// One line per service, for `hotswapctl services`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServiceSummary {
    pub service: String,
    /// serving, swapping, repairing, recovering, degraded or down.
    pub state: String,
    /// Why, for every state but serving and swapping.
    #[serde(default)]
    pub reason: Option<String>,
    pub current: Option<String>,
    pub current_version: Option<String>,
    pub previous: Option<String>,
    /// The phase of the swap in flight.
    pub phase: Option<String>,
    pub queued: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Health {
    pub version: String,
    pub instance_id: String,
    pub host: String,
    pub uptime_secs: u64,
    /// Service name → state ("serving", "swapping", "repairing", "recovering", "degraded: why",
    /// "down: why").
    pub services: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeployStatus {
    pub deploy_id: String,
    pub service: String,
    #[serde(flatten)]
    pub state: serde_json::Value,
    pub finished: bool,
}

impl DeployStatus {
    pub fn new(deploy_id: &str, service: &str, state: &DeployState) -> DeployStatus {
        DeployStatus {
            deploy_id: deploy_id.to_string(),
            service: service.to_string(),
            state: serde_json::to_value(state).expect("deploy state serializes"),
            finished: state.is_finished(),
        }
    }

    /// "queued", "running", "finished" or "superseded".
    pub fn status(&self) -> &str {
        self.state
            .get("status")
            .and_then(|v| v.as_str())
            .unwrap_or("unknown")
    }

    /// The phase of the swap ("succeeded", "failed", ...), once it runs.
    pub fn phase(&self) -> Option<&str> {
        self.state
            .pointer("/swap/phase/phase")
            .and_then(|v| v.as_str())
    }

    pub fn reason(&self) -> Option<&str> {
        self.state.pointer("/swap/reason").and_then(|v| v.as_str())
    }

    /// For a superseded deploy: the deploy that replaced it.
    pub fn superseded_by(&self) -> Option<&str> {
        self.state.get("by").and_then(|v| v.as_str())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DaemonStatus {
    pub version: String,
    pub instance_id: String,
    pub uptime_secs: u64,
    pub services: Vec<serde_json::Value>,
}

impl DaemonStatus {
    pub fn service_views(views: &[ServiceView]) -> Vec<serde_json::Value> {
        views
            .iter()
            .map(|v| serde_json::to_value(v).expect("views serialize"))
            .collect()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErrorBody {
    pub error: String,
}
