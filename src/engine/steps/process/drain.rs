//! draining a code reload: the old code's processes finish their requests and go (hup: the old
//! workers; usr2: the old master), within the drain budget; for usr2 the handover is done when the
//! pidfile names the new master.

use super::{Processes, POLL};
use crate::clock::{now_ms, UnixMs};
use crate::config::ReloadStrategy;
use crate::engine::phase::{Instance, Swap};
use crate::health::Prober;
use crate::runtime::process::Server;

impl<H: Prober, S: Server> Processes<H, S> {
    pub(super) async fn drain_old(&self, swap: &mut Swap, deadline: UnixMs) {
        let Some(old) = swap.old.clone() else { return };
        let waiting: Vec<i32> = match self.settings.strategy {
            ReloadStrategy::Hup => old.workers().to_vec(),
            ReloadStrategy::Usr2 => old.master().into_iter().collect(),
        };
        let left = self.server.wait_gone(&waiting, deadline).await;
        if !left.is_empty() {
            swap.warnings.push(format!(
                "drain budget ended with old processes {left:?} still running"
            ));
        }
        // usr2: the old master removes the pidfile as it exits; the new one renames <pidfile>.2
        // in its place a moment later.
        if self.settings.strategy == ReloadStrategy::Usr2 {
            let new_master: Option<i32> = swap.new.as_ref().and_then(Instance::master);
            while self.server.read_pid(&self.settings.pidfile).ok() != new_master {
                if now_ms() >= deadline {
                    swap.warnings.push(format!(
                        "{} does not name the new master {new_master:?} yet",
                        self.settings.pidfile.display()
                    ));
                    break;
                }
                tokio::time::sleep(POLL).await;
            }
        }
    }
}
