//! rolling_back: undoes a failed swap. After a canary step, all weight goes back to the old
//! release in one runtime API call and the canary's requests finish; then the new servers leave
//! HAProxy, every container labeled with the deploy id is removed (also one started but never
//! journaled), the old servers are put back ready at full weight (undoing a half-done switch) and
//! the config file with them, and the failed release's image goes unless it is kept for rollback.

use std::time::Duration;

use super::{member_spec, servers_of, specs_of, Containers};
use crate::balancer::Balancer;
use crate::clock::{ms, now_ms};
use crate::engine::canary::FULL_WEIGHT;
use crate::engine::phase::Swap;
use crate::engine::steps::Ledger;
use crate::health::Prober;
use crate::runtime::{Runtime, LABEL_DEPLOY_ID};

/// How long a rolled-back canary's servers get to finish their requests before they are removed.
const CANARY_DRAIN: Duration = Duration::from_secs(10);

impl<R: Runtime, B: Balancer, H: Prober> Containers<R, B, H> {
    pub(super) async fn roll_back_new(&self, ledger: &mut dyn Ledger, swap: &mut Swap) {
        let new_servers = servers_of(swap.new.as_ref());
        if swap.mark("ramping").is_some() {
            if let Err(e) = self.set_share(swap, 0).await {
                swap.warnings.push(e.to_string());
            }
            let deadline = now_ms() + ms(CANARY_DRAIN);
            self.drain_servers(swap, &new_servers, deadline).await;
        }
        for s in &new_servers {
            if let Err(e) = self.balancer.take_out(s).await {
                swap.warnings
                    .push(format!("taking {s} out of HAProxy: {e}"));
            }
        }
        self.remove_new_containers(ledger, swap).await;
        if let Some(old) = &swap.old {
            for m in old.members() {
                if let Err(e) = self
                    .balancer
                    .put_in(&member_spec(&m, Some(FULL_WEIGHT)))
                    .await
                {
                    swap.warnings
                        .push(format!("putting {} back in HAProxy: {e}", m.server));
                }
            }
            if let Err(e) = self.balancer.persist(&specs_of(old)).await {
                swap.warnings.push(e.to_string());
            }
        }
        let kept = swap
            .old
            .iter()
            .any(|o| o.release.image == swap.release.image)
            || ledger.record().kept_images.contains(&swap.release.image);
        if !kept {
            if let Err(e) = self.runtime.remove_image(&swap.release.image).await {
                swap.warnings.push(e.to_string());
            }
        }
    }

    /// Every container of the failed release: those journaled and those found by its labels.
    async fn remove_new_containers(&self, ledger: &mut dyn Ledger, swap: &mut Swap) {
        let [instance, service] = self.ours();
        let deploy = (LABEL_DEPLOY_ID, swap.release.deploy_id.as_str());
        let leftovers = self.runtime.list(&[instance, service, deploy]).await;
        let mut ids: Vec<String> = swap
            .new
            .iter()
            .flat_map(|n| n.members().into_iter().map(|m| m.container_id))
            .collect();
        match leftovers {
            Ok(found) => ids.extend(found.into_iter().map(|f| f.id)),
            Err(e) => swap.warnings.push(e.to_string()),
        }
        ids.sort();
        ids.dedup();
        for id in ids {
            if let Err(e) = self
                .runtime
                .stop_and_remove(&id, self.settings.container.stop_grace)
                .await
            {
                swap.warnings.push(format!(
                    "removing new container: {e} (it is removed when Docker answers again)"
                ));
                super::retire::remember(ledger, &id, &e);
            }
        }
    }
}
