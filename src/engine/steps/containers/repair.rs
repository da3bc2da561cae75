//! Repair, between swaps: a container of the current release that died, turned unhealthy or went
//! missing is replaced by a fresh one of the same release, gated like any new release before it
//! takes traffic; the survivors (with replicas) serve meanwhile. The dead container goes first,
//! so its replacement takes its name, its HAProxy server and its place in the record.
//! A crash part-way leaves an orphan (removed by the next reconcile) and the record still naming
//! the dead container, which is then repaired again.

use super::{member_spec, Containers};
use crate::balancer::Balancer;
use crate::balancer::ServerSpec;
use crate::clock::now_ms;
use crate::engine::error::StepError;
use crate::engine::phase::Replica;
use crate::engine::steps::Ledger;
use crate::health::Prober;
use crate::runtime::Runtime;

impl<R: Runtime, B: Balancer, H: Prober> Containers<R, B, H> {
    pub(super) async fn replace(
        &self,
        ledger: &mut dyn Ledger,
        index: usize,
        dead: &Replica,
    ) -> Result<Replica, StepError> {
        let current = ledger
            .record()
            .current
            .clone()
            .ok_or(StepError::Missing("no current release to repair"))?;
        let release = current.release.clone();
        // no new request goes to it while it is replaced (HAProxy's own checks take seconds)
        if let Err(e) = self.balancer.drain(&dead.server).await {
            tracing::warn!(service = self.name(), server = %dead.server, error = %e, "could not set the dead server to drain");
        }
        self.runtime
            .stop_and_remove(&dead.container_id, self.settings.container.stop_grace)
            .await
            .map_err(StepError::docker(format!(
                "removing dead container {}",
                dead.container_id
            )))?;
        self.runtime
            .ensure_image(&release.image, &mut |_| {})
            .await
            .map_err(StepError::docker(format!(
                "preparing image {} to repair service {:?}",
                release.image,
                self.name()
            )))?;
        let mut member = self.start_member(&release, index).await?;
        // the server keeps its name: HAProxy's entry is pointed at the new port once it passes
        member.server = dead.server.clone();
        let serves = async {
            let deadline = now_ms() + self.settings.health.deadline.as_millis() as u64;
            self.gate_members(std::slice::from_ref(&member), &release, deadline)
                .await?;
            self.balancer
                .put_in(&ServerSpec {
                    fresh: true,
                    ..member_spec(&member, None)
                })
                .await
                .map_err(StepError::haproxy(format!(
                    "putting {} back in HAProxy",
                    member.server
                )))
        }
        .await;
        if let Err(e) = serves {
            let _ = self
                .runtime
                .stop_and_remove(&member.container_id, self.settings.container.stop_grace)
                .await;
            return Err(e);
        }
        let mut current = current;
        current.set_member(index, member.clone());
        ledger.record().current = Some(current);
        ledger.store()?;
        Ok(member)
    }
}
