//! Maintenance mode, the one place that changes it: HAProxy through the `Balancer` trait, the
//! journal through the service's handle, kept in step. Turning it on or off sets HAProxy first
//! and journals second (a journal that cannot be written puts HAProxy back, so the two never
//! disagree); `reapply` makes HAProxy agree with the journal again after HAProxy lost its
//! runtime variables (a reload or restart). The request's checks (message, Retry-After) are
//! intake's; who may ask is the control socket's.

use thiserror::Error;

use super::handle::{QueueError, ServiceHandle};
use crate::balancer::{Balancer, BalancerError};
use crate::model::Maintenance;

#[derive(Debug, Error)]
pub enum MaintenanceError {
    /// HAProxy cannot answer 503 for it: the running process has not loaded the rule.
    #[error("the running HAProxy has not loaded hotswapd's maintenance rule")]
    RuleMissing,
    #[error(transparent)]
    Haproxy(#[from] BalancerError),
    /// HAProxy was put back to what the journal holds.
    #[error(transparent)]
    Journal(#[from] QueueError),
}

/// What `reapply` found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reapplied {
    /// The journal holds no maintenance: nothing to do.
    Off,
    /// HAProxy still had it.
    AlreadyOn,
    /// HAProxy had lost it; set again.
    SetAgain,
    /// HAProxy lost it and its running config has no rule: clients are not told.
    RuleMissing,
}

fn in_haproxy(m: &Option<Maintenance>) -> Option<(&str, u64)> {
    m.as_ref().map(|m| (m.message.as_str(), m.retry_after_secs))
}

/// Turns maintenance on (`Some`) or off (`None`) in HAProxy, then journals it.
pub async fn set<B: Balancer>(
    balancer: &B,
    handle: &ServiceHandle,
    wanted: Option<Maintenance>,
) -> Result<(), MaintenanceError> {
    if wanted.is_some() && !balancer.maintenance_rule_loaded().await? {
        return Err(MaintenanceError::RuleMissing);
    }
    let previous = handle.view().maintenance;
    balancer.set_maintenance(in_haproxy(&wanted)).await?;
    if let Err(e) = handle.set_maintenance(wanted) {
        // not journaled: HAProxy goes back to what the journal holds
        if let Err(back) = balancer.set_maintenance(in_haproxy(&previous)).await {
            tracing::warn!(service = %handle.name, error = %back, "cannot put HAProxy's maintenance back; the sweep will");
        }
        return Err(e.into());
    }
    Ok(())
}

/// Sets HAProxy's maintenance again when the journal holds it and HAProxy does not.
pub async fn reapply<B: Balancer>(
    balancer: &B,
    handle: &ServiceHandle,
) -> Result<Reapplied, BalancerError> {
    let journaled = handle.view().maintenance;
    if journaled.is_none() {
        return Ok(Reapplied::Off);
    }
    if balancer.maintenance_on().await? {
        return Ok(Reapplied::AlreadyOn);
    }
    if !balancer.maintenance_rule_loaded().await? {
        return Ok(Reapplied::RuleMissing);
    }
    balancer.set_maintenance(in_haproxy(&journaled)).await?;
    Ok(Reapplied::SetAgain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::fakes::FakeHaproxy;

    fn on(message: &str) -> Option<Maintenance> {
        Some(Maintenance {
            message: message.into(),
            retry_after_secs: 120,
            since_ms: 1,
            requested_by: None,
        })
    }

    #[tokio::test]
    async fn on_sets_haproxy_then_the_journal_and_off_clears_both() {
        let (h, handle) = (FakeHaproxy::default(), ServiceHandle::new("web"));
        set(&h, &handle, on("back at noon")).await.unwrap();
        assert_eq!(
            h.state.lock().unwrap().maintenance,
            Some(("back at noon".into(), 120))
        );
        assert_eq!(handle.view().maintenance.unwrap().message, "back at noon");
        set(&h, &handle, None).await.unwrap();
        assert_eq!(h.state.lock().unwrap().maintenance, None);
        assert_eq!(handle.view().maintenance, None);
    }

    #[tokio::test]
    async fn without_the_rule_loaded_nothing_changes() {
        let (h, handle) = (FakeHaproxy::default(), ServiceHandle::new("web"));
        h.state.lock().unwrap().no_maintenance_rule = true;
        let e = set(&h, &handle, on("x")).await.unwrap_err();
        assert!(matches!(e, MaintenanceError::RuleMissing), "{e}");
        assert!(!h.calls.any("haproxy maintenance"));
        assert_eq!(handle.view().maintenance, None);
        // off needs no rule
        set(&h, &handle, None).await.unwrap();
    }

    #[tokio::test]
    async fn an_unreachable_haproxy_leaves_the_journal_as_it_was() {
        let (h, handle) = (FakeHaproxy::default(), ServiceHandle::new("web"));
        h.state.lock().unwrap().failing.insert("maintenance");
        assert!(set(&h, &handle, on("x")).await.is_err());
        assert_eq!(handle.view().maintenance, None);
    }

    #[tokio::test]
    async fn a_journal_that_cannot_be_written_puts_haproxy_back() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("web.queue.json");
        let handle = ServiceHandle::open("web", Some(file)).unwrap();
        let h = FakeHaproxy::default();
        // the queue file's directory gone: nothing can be journaled
        drop(dir);
        assert!(matches!(
            set(&h, &handle, on("x")).await,
            Err(MaintenanceError::Journal(_))
        ));
        assert_eq!(h.state.lock().unwrap().maintenance, None);
        assert_eq!(handle.view().maintenance, None);
        assert_eq!(
            h.calls.all(),
            ["haproxy maintenance on 120 x", "haproxy maintenance off"]
        );
    }

    #[tokio::test]
    async fn after_haproxy_reloads_it_is_set_again_once() {
        let (h, handle) = (FakeHaproxy::default(), ServiceHandle::new("web"));
        assert_eq!(reapply(&h, &handle).await.unwrap(), Reapplied::Off);
        set(&h, &handle, on("upgrade")).await.unwrap();
        assert_eq!(reapply(&h, &handle).await.unwrap(), Reapplied::AlreadyOn);
        h.reload("anything").await.unwrap();
        assert_eq!(h.state.lock().unwrap().maintenance, None);
        assert_eq!(reapply(&h, &handle).await.unwrap(), Reapplied::SetAgain);
        assert_eq!(
            h.state.lock().unwrap().maintenance,
            Some(("upgrade".into(), 120))
        );
        assert_eq!(reapply(&h, &handle).await.unwrap(), Reapplied::AlreadyOn);
        h.reload("anything").await.unwrap();
        h.state.lock().unwrap().no_maintenance_rule = true;
        assert_eq!(reapply(&h, &handle).await.unwrap(), Reapplied::RuleMissing);
    }
}
