//! draining: the config file is brought in step (a reload from here on keeps the new servers),
//! then the old servers get no new requests and finish theirs, until none is in flight or the
//! drain budget ends. Nothing is stopped here: that is retiring.

use std::time::Duration;

use tokio::time::Instant;

use super::{servers_of, specs_of, Containers};
use crate::balancer::Balancer;
use crate::clock::{instant_of, now_ms, UnixMs};
use crate::engine::phase::{Replica, Swap};
use crate::health::Prober;
use crate::runtime::Runtime;

/// How often a draining server's in-flight count is read.
pub(super) const DRAIN_POLL: Duration = Duration::from_millis(10);
/// With `switch = "reload"` the old HAProxy worker's sessions cannot be read: wait this long.
const RELOAD_SETTLE: Duration = Duration::from_millis(500);

impl<R: Runtime, B: Balancer, H: Prober> Containers<R, B, H> {
    pub(super) async fn drain_old(&self, swap: &mut Swap, deadline: UnixMs) {
        if let Some(new) = &swap.new {
            if let Err(e) = self.balancer.persist(&specs_of(new)).await {
                swap.warnings
                    .push(format!("HAProxy config file not updated: {e}"));
            }
        }
        let Some(old) = swap.old.clone() else { return };
        if swap.switched_by_reload {
            tokio::time::sleep_until(instant_of(deadline).min(Instant::now() + RELOAD_SETTLE))
                .await;
            return;
        }
        let new = servers_of(swap.new.as_ref());
        let old: Vec<Replica> = old
            .members()
            .into_iter()
            .filter(|m| !new.contains(&m.server))
            .collect();
        // after a ramp the old servers are ready at weight 0: drain them now (idempotent)
        for m in &old {
            if let Err(e) = self.balancer.drain(&m.server).await {
                swap.warnings.push(format!("draining {}: {e}", m.server));
            }
        }
        let started = swap
            .marks
            .iter()
            .rev()
            .find(|m| m.phase == "draining")
            .map_or_else(now_ms, |m| m.at_ms);
        self.drain_with_streams(swap, &old, started, deadline).await;
    }

    /// Sets `servers` to drain, then waits until none has a request in flight, or the deadline.
    pub(super) async fn drain_servers(
        &self,
        swap: &mut Swap,
        servers: &[String],
        deadline: UnixMs,
    ) {
        for s in servers {
            if let Err(e) = self.balancer.drain(s).await {
                swap.warnings.push(format!("draining {s}: {e}"));
            }
        }
        loop {
            let mut busy = Vec::new();
            let mut failed = None;
            for s in servers {
                match self.balancer.in_flight(s).await {
                    Ok(None) | Ok(Some(0)) => {}
                    Ok(Some(n)) => busy.push(format!("{n} on {s}")),
                    Err(e) => failed = Some(format!("draining {s}: {e}")),
                }
            }
            if busy.is_empty() && failed.is_none() {
                return;
            }
            self.activity.set(format!(
                "draining: {} in flight on the old release ({} s of the budget left)",
                busy.join(", "),
                deadline.saturating_sub(now_ms()).div_ceil(1000)
            ));
            if now_ms() >= deadline {
                swap.warnings.push(failed.unwrap_or_else(|| {
                    format!(
                        "drain budget ended with requests still in flight: {}",
                        busy.join(", ")
                    )
                }));
                return;
            }
            tokio::time::sleep(DRAIN_POLL).await;
        }
    }
}
