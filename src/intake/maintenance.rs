//! Maintenance mode on and off (`POST /v1/services/{name}/maintenance`): set in HAProxy through
//! the runtime API (`balancer/maintenance.rs`, no reload), then journaled with the service's
//! queue so a restart keeps it; HAProxy's variables are set again after it reloads
//! (`Services::reapply_maintenance`).

use super::{handle_of, Refusal};
use crate::balancer::maintenance;
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
    let Some((api, backend, config_file)) = shared.haproxy_of(service) else {
        return Err(Refusal::bad(format!(
            "service {service:?} reloads code in a local server: maintenance mode needs an HAProxy backend ([services])"
        )));
    };
    let wanted = if req.on {
        let message = req.message.unwrap_or_else(|| DEFAULT_MESSAGE.to_string());
        maintenance::check_message(&message).map_err(Refusal::bad)?;
        let retry_after_secs = req.retry_after_secs.unwrap_or(DEFAULT_RETRY_AFTER_SECS);
        if !(1..=86_400).contains(&retry_after_secs) {
            return Err(Refusal::bad(format!(
                "retry_after_secs {retry_after_secs}: give 1 to 86400"
            )));
        }
        Some(Maintenance {
            message,
            retry_after_secs,
            since_ms: crate::clock::now_ms(),
            requested_by: Some(by),
        })
    } else {
        if req.message.is_some() || req.retry_after_secs.is_some() {
            return Err(Refusal::bad("message and retry_after_secs go with on"));
        }
        None
    };
    let unreachable = |e: crate::balancer::BalancerError| Refusal::Unavailable(e.to_string());
    if wanted.is_some()
        && !maintenance::rule_loaded(&api, &backend)
            .await
            .map_err(unreachable)?
    {
        let how = match config_file {
            Some(f) => format!(
                "hotswapd writes it into its block of backend {backend} in {} at every swap; reload HAProxy once it is there (e.g. systemctl reload haproxy), then ask again",
                f.display()
            ),
            None => format!(
                "add it to backend {backend} (no [services.{service}.haproxy] config_file is set, so hotswapd does not write it): {}",
                maintenance::rule(&backend)
            ),
        };
        return Err(Refusal::Unavailable(format!(
            "the running HAProxy has not loaded hotswapd's maintenance rule for backend {backend}: {how}"
        )));
    }
    let previous = handle.view().maintenance;
    let on = |m: &Option<Maintenance>| m.as_ref().map(|m| (m.message.clone(), m.retry_after_secs));
    let set_in_haproxy = |m: Option<(String, u64)>| {
        let (api, backend) = (&api, &backend);
        async move { maintenance::apply(api, backend, m.as_ref().map(|(t, s)| (t.as_str(), *s))).await }
    };
    set_in_haproxy(on(&wanted)).await.map_err(unreachable)?;
    if let Err(e) = handle.set_maintenance(wanted.clone()) {
        // not journaled: HAProxy goes back to what the journal holds
        let _ = set_in_haproxy(on(&previous)).await;
        return Err(Refusal::NotQueued(e.to_string()));
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
