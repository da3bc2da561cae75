//! health_gate: every new container answers on its health route, end to end, before any of them
//! takes traffic; one that exits meanwhile fails the gate at once.

use std::time::Duration;

use super::Containers;
use crate::balancer::Balancer;
use crate::clock::{instant_of, now_ms, UnixMs};
use crate::engine::error::StepError;
use crate::engine::phase::{Release, Replica, Swap};
use crate::health::{Passed, Prober};
use crate::runtime::Runtime;

/// How often the health gate checks that the new container is still running.
const LIVENESS_POLL: Duration = Duration::from_millis(250);

impl<R: Runtime, B: Balancer, H: Prober> Containers<R, B, H> {
    /// Gates every container given (at once); the first one's answer is returned.
    pub(super) async fn gate_members(
        &self,
        members: &[Replica],
        release: &Release,
        deadline: UnixMs,
    ) -> Result<Passed, StepError> {
        let gates = members.iter().map(|m| self.gate_one(m, release, deadline));
        let mut passed = None;
        for r in futures_util::future::join_all(gates).await {
            let p = r?;
            passed.get_or_insert(p);
        }
        passed.ok_or(StepError::Missing("no container to check"))
    }

    async fn gate_one(
        &self,
        m: &Replica,
        release: &Release,
        deadline: UnixMs,
    ) -> Result<Passed, StepError> {
        let addr = m.socket();
        let on_miss = |n, last: &str| self.activity.gate_missed(n, last);
        let gate = self.prober.gate(
            addr,
            &self.settings.health,
            &release.version,
            instant_of(deadline),
            &on_miss,
        );
        let died = async {
            loop {
                tokio::time::sleep(LIVENESS_POLL).await;
                if let Ok(false) = self.runtime.is_running(&m.container_id).await {
                    return;
                }
            }
        };
        tokio::select! {
            r = gate => r.map_err(StepError::from),
            () = died => Err(StepError::ContainerDied {
                container: m.container_id[..12.min(m.container_id.len())].to_string(),
            }),
        }
    }

    /// Recovery in switching: every container of the new release still runs and passes its gate
    /// (one started by the last batch may still be warming up: it must not join before it is
    /// ready).
    pub(super) async fn new_release_whole(&self, swap: &Swap) -> bool {
        let Some(new) = &swap.new else { return false };
        for m in new.members() {
            if !self
                .runtime
                .is_running(&m.container_id)
                .await
                .unwrap_or(false)
            {
                return false;
            }
        }
        let deadline = now_ms() + swap.health_deadline_ms;
        self.gate_members(&new.members(), &swap.release, deadline)
            .await
            .is_ok()
    }
}
