//! rolling back a code reload: `current` back to the old release; hup: reload again and wait for
//! the failed code's workers to go; usr2: stop the new master. A master that died meanwhile (code
//! that fails to import can halt gunicorn) is started again with `start_command`.

use super::{Processes, POLL};
use crate::config::ReloadStrategy;
use crate::engine::phase::{Instance, Swap};
use crate::engine::steps::code;
use crate::health::Prober;
use crate::runtime::process::Server;

impl<H: Prober, S: Server> Processes<H, S> {
    pub(super) async fn roll_back_new(&self, swap: &mut Swap) {
        let layout = self.layout();
        if let Some(dir) = swap.old.as_ref().and_then(Instance::code_dir) {
            if let Err(e) = code::point_current(&layout, dir) {
                swap.warnings.push(e.to_string());
            }
        }
        let new_master = swap.new.as_ref().and_then(Instance::master);
        let old_master = swap.old.as_ref().and_then(Instance::master);
        match (self.settings.strategy, new_master) {
            (ReloadStrategy::Hup, Some(m)) if self.server.alive(m) => {
                // the workers running the failed code leave only after the reload: wait for them
                let doomed = self.server.children(m);
                if let Err(e) = self.server.signal(m, self.settings.reload_signal) {
                    swap.warnings.push(e.to_string());
                }
                while doomed.iter().any(|p| self.server.alive(*p)) {
                    tokio::time::sleep(POLL).await;
                }
            }
            (ReloadStrategy::Usr2, Some(m)) if self.server.alive(m) && old_master != Some(m) => {
                if let Err(e) = self.server.signal(m, self.settings.stop_old_signal) {
                    swap.warnings.push(e.to_string());
                }
                while self.server.alive(m) {
                    tokio::time::sleep(POLL).await;
                }
            }
            _ => {}
        }
        self.restart_if_gone(swap).await;
        code::remove_failed(&layout, &swap.release.deploy_id);
    }

    /// If no master runs any more, starts the server again with `start_command` on the code
    /// `current` names now.
    async fn restart_if_gone(&self, swap: &mut Swap) {
        if self
            .server
            .read_pid(&self.settings.pidfile)
            .map(|pid| self.server.alive(pid))
            .unwrap_or(false)
        {
            return;
        }
        match self.start_master().await {
            Ok(_) => swap.warnings.push(
                "the master had died; it was started again with start_command on the previous code"
                    .into(),
            ),
            Err(e) => swap.warnings.push(format!("{e}: the service is down")),
        }
    }
}
