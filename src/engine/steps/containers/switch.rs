//! switching: the new servers take traffic only now (after their gate); an old one drains only
//! after enough new ones serve. With a ramp the new servers join at weight 0 and the steps move
//! traffic. Without one, the new release's batches join one after another, each draining as many
//! old servers as it replaces, so the serving count never drops below `replicas`.

use super::{member_spec, servers_of, specs_of, Containers};
use crate::balancer::{Balancer, BalancerError};
use crate::config::SwitchMode;
use crate::engine::canary::FULL_WEIGHT;
use crate::engine::error::StepError;
use crate::engine::phase::{Instance, Swap};
use crate::engine::steps::Ledger;
use crate::health::Prober;
use crate::runtime::Runtime;

impl<R: Runtime, B: Balancer, H: Prober> Containers<R, B, H> {
    pub(super) async fn switch_to_new(
        &self,
        ledger: &mut dyn Ledger,
        swap: &mut Swap,
    ) -> Result<(), StepError> {
        let new = swap
            .new
            .clone()
            .ok_or(StepError::Missing("no new container to switch to"))?;
        if self.settings.haproxy.switch == SwitchMode::Reload {
            return self.switch_by_reload(swap, &new).await;
        }
        let can_reload = self.settings.haproxy.reload.is_some()
            && self.settings.haproxy.config_file.is_some()
            && self.settings.replicas == 1;
        let weight = if swap.ramp.is_empty() { FULL_WEIGHT } else { 0 };
        for m in new.members() {
            match self.balancer.put_in(&member_spec(&m, Some(weight))).await {
                Ok(()) => {}
                // the one change that needs a reload: fall back to porter's way
                Err(e @ BalancerError::NeedsReload { .. })
                    if can_reload && swap.ramp.is_empty() =>
                {
                    tracing::warn!(service = self.name(), error = %e, "switching by config reload");
                    swap.warnings.push(format!(
                        "{e}; switched by rewriting the config and reloading HAProxy"
                    ));
                    return self.switch_by_reload(swap, &new).await;
                }
                Err(e) => {
                    return Err(StepError::Haproxy {
                        doing: format!("putting {} in HAProxy", m.server),
                        source: e,
                    })
                }
            }
        }
        if !swap.ramp.is_empty() {
            return Ok(());
        }
        self.drain_replaced(swap).await?;
        loop {
            let have = swap.new.as_ref().map(Instance::count).unwrap_or(0);
            if have >= self.settings.replicas {
                return Ok(());
            }
            let count = self.settings.batch.min(self.settings.replicas - have);
            self.add_batch(ledger, swap, count, Some(FULL_WEIGHT))
                .await?;
            self.drain_replaced(swap).await?;
        }
    }

    /// porter's way: the config file names the new servers, HAProxy reloads.
    async fn switch_by_reload(&self, swap: &mut Swap, new: &Instance) -> Result<(), StepError> {
        swap.switched_by_reload = true;
        self.balancer
            .persist(&specs_of(new))
            .await
            .map_err(StepError::haproxy(
                "writing the new servers into HAProxy's config file",
            ))?;
        let first = new
            .primary()
            .ok_or(StepError::Missing("no new container to switch to"))?;
        self.balancer
            .reload(&first.server)
            .await
            .map_err(StepError::haproxy(format!(
                "reloading HAProxy to serve {}",
                first.server
            )))
    }

    /// Drains the old servers the new ones replace: as many stay ready as `replicas` still needs
    /// beside the new servers, none once the new release is complete.
    pub(super) async fn drain_replaced(&self, swap: &Swap) -> Result<(), StepError> {
        let Some(old) = &swap.old else { return Ok(()) };
        let have = swap.new.as_ref().map(Instance::count).unwrap_or(0);
        let keep = self.settings.replicas.saturating_sub(have);
        let new = servers_of(swap.new.as_ref());
        for (i, m) in old.members().iter().enumerate() {
            if i >= keep && !new.contains(&m.server) {
                self.balancer
                    .drain(&m.server)
                    .await
                    .map_err(StepError::haproxy(format!("draining {}", m.server)))?;
            }
        }
        Ok(())
    }
}
