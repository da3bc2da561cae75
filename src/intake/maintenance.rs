//! Maintenance mode on and off (`POST /v1/services/{name}/maintenance`): the request checked
//! here, then set by `engine::maintenance` (HAProxy through the `Balancer` trait, no reload,
//! then journaled with the service's queue so a restart keeps it; set again after HAProxy
//! reloads, `Services::reapply_maintenance`).

use super::{handle_of, Refusal};
use crate::config::HaproxySettings;
use crate::engine::maintenance::{self, MaintenanceError};
use crate::engine::phase::Requester;
use crate::engine::Maintenance;
use crate::model::api::{MaintenanceOutcome, MaintenanceRequest};
use crate::services::Services;

/// What clients are told when the operator gives no message.
const DEFAULT_MESSAGE: &str = "This service is down for maintenance. Please retry later.";
const DEFAULT_RETRY_AFTER_SECS: u64 = 300;

pub async fn set(
    shared: &Services,
    service: &str,
    req: MaintenanceRequest,
    by: Requester,
) -> Result<MaintenanceOutcome, Refusal> {
    let handle = handle_of(shared, service)?;
    let Some((haproxy, settings)) = shared.haproxy_of(service) else {
        return Err(Refusal::bad(format!(
            "service {service:?} reloads code in a local server: maintenance mode needs an HAProxy backend ([services])"
        )));
    };
    let wanted = wanted(req, by)?;
    match maintenance::set(&haproxy, &handle, wanted.clone()).await {
        Ok(()) => {}
        Err(MaintenanceError::RuleMissing) => {
            return Err(Refusal::Unavailable(rule_missing(service, &settings)))
        }
        Err(e @ MaintenanceError::Haproxy(_)) => return Err(Refusal::Unavailable(e.to_string())),
        Err(e @ MaintenanceError::Journal(_)) => return Err(Refusal::NotQueued(e.to_string())),
    }
    match &wanted {
        Some(m) => {
            tracing::warn!(service, message = %m.message, retry_after_secs = m.retry_after_secs, "maintenance on: clients get 503")
        }
        None => tracing::info!(service, "maintenance off"),
    }
    Ok(MaintenanceOutcome {
        service: service.to_string(),
        maintenance: wanted,
    })
}

/// What the operator asked for, checked: maintenance with its message and Retry-After, or off.
fn wanted(req: MaintenanceRequest, by: Requester) -> Result<Option<Maintenance>, Refusal> {
    if !req.on {
        if req.message.is_some() || req.retry_after_secs.is_some() {
            return Err(Refusal::bad("message and retry_after_secs go with on"));
        }
        return Ok(None);
    }
    let message = req.message.unwrap_or_else(|| DEFAULT_MESSAGE.to_string());
    crate::balancer::maintenance::check_message(&message).map_err(Refusal::bad)?;
    let retry_after_secs = req.retry_after_secs.unwrap_or(DEFAULT_RETRY_AFTER_SECS);
    if !(1..=86_400).contains(&retry_after_secs) {
        return Err(Refusal::bad(format!(
            "retry_after_secs {retry_after_secs}: give 1 to 86400"
        )));
    }
    Ok(Some(Maintenance {
        message,
        retry_after_secs,
        since_ms: crate::clock::now_ms(),
        requested_by: Some(by),
    }))
}

/// Why maintenance cannot be turned on, and what to do about it.
fn rule_missing(service: &str, h: &HaproxySettings) -> String {
    let backend = &h.backend;
    let how = match &h.config_file {
        Some(f) => format!(
            "hotswapd writes it into its block of backend {backend} in {} at every swap; reload HAProxy once it is there (e.g. systemctl reload haproxy), then ask again",
            f.display()
        ),
        None => format!(
            "add it to backend {backend} (no [services.{service}.haproxy] config_file is set, so hotswapd does not write it): {}",
            crate::balancer::maintenance::rule(backend)
        ),
    };
    format!("the running HAProxy has not loaded hotswapd's maintenance rule for backend {backend}: {how}")
}
