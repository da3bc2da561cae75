//! retiring: the old release leaves HAProxy (maint, delete), its containers are stopped with the
//! configured signal and grace and removed, and images no longer needed are removed, keeping
//! `keep_images` previous ones for rollback (newest first). Problems are warnings: the new
//! release already serves.

use super::{servers_of, Containers};
use crate::balancer::Balancer;
use crate::engine::journal::Leftover;
use crate::engine::phase::Swap;
use crate::engine::steps::Ledger;
use crate::health::Prober;
use crate::runtime::Runtime;

/// Notes a container that could not be removed, to be removed when Docker answers again.
pub(super) fn remember(ledger: &mut dyn Ledger, container_id: &str, e: &impl std::fmt::Display) {
    let record = ledger.record();
    record.leftovers.retain(|l| l.container_id != container_id);
    record.leftovers.push(Leftover {
        container_id: container_id.to_string(),
        why: e.to_string(),
    });
}

impl<R: Runtime, B: Balancer, H: Prober> Containers<R, B, H> {
    /// Tries again to remove what could not be removed; returns true when nothing is left.
    pub(super) async fn remove_leftovers(&self, ledger: &mut dyn Ledger) -> bool {
        let left = ledger.record().leftovers.clone();
        if left.is_empty() {
            return true;
        }
        let mut still = Vec::new();
        for l in left {
            match self
                .runtime
                .stop_and_remove(&l.container_id, self.settings.container.stop_grace)
                .await
            {
                Ok(()) => {
                    tracing::info!(service = self.name(), container = %l.container_id, "leftover container removed")
                }
                Err(e) => still.push(Leftover {
                    container_id: l.container_id,
                    why: e.to_string(),
                }),
            }
        }
        let done = still.is_empty();
        ledger.record().leftovers = still;
        if let Err(e) = ledger.store() {
            tracing::error!(service = self.name(), error = %e, "journal not written after removing leftovers");
        }
        done
    }

    pub(super) async fn retire_old(&self, ledger: &mut dyn Ledger, swap: &mut Swap) {
        if let Some(old) = swap.old.clone() {
            let new = servers_of(swap.new.as_ref());
            for m in old.members() {
                if new.contains(&m.server) {
                    continue;
                }
                if let Err(e) = self.balancer.take_out(&m.server).await {
                    swap.warnings
                        .push(format!("taking {} out of HAProxy: {e}", m.server));
                }
                if let Err(e) = self
                    .runtime
                    .stop_and_remove(&m.container_id, self.settings.container.stop_grace)
                    .await
                {
                    swap.warnings.push(format!(
                        "removing old container: {e} (it is removed when Docker answers again)"
                    ));
                    remember(ledger, &m.container_id, &e);
                }
            }
        }
        let record = ledger.record();
        let mut candidates: Vec<String> =
            swap.old.iter().map(|o| o.release.image.clone()).collect();
        candidates.extend(record.kept_images.iter().cloned());
        let mut kept: Vec<String> = Vec::new();
        let mut removed = Vec::new();
        let free_before = self.runtime.free_bytes().await;
        for image in candidates {
            if image == swap.release.image || kept.contains(&image) {
                continue;
            }
            if kept.len() < self.settings.keep_images {
                kept.push(image);
            } else {
                match self.runtime.remove_image(&image).await {
                    Ok(true) => removed.push(image),
                    Ok(false) => {}
                    Err(e) => swap.warnings.push(e.to_string()),
                }
            }
        }
        if !removed.is_empty() {
            // what the disk gained: honest about shared layers, which freed nothing
            let after = self.runtime.free_bytes().await;
            swap.images_reclaimed_bytes = free_before
                .zip(after)
                .map(|(before, after)| after.saturating_sub(before));
            tracing::info!(service = self.name(), images = ?removed, reclaimed_bytes = ?swap.images_reclaimed_bytes, "old images removed");
        }
        ledger.record().kept_images = kept;
    }
}
