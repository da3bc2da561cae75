//! rolling back a code reload: `current` back to the old release; hup: reload again and wait for
//! the failed code's workers to go; usr2: stop the new master. A master that died meanwhile (code
//! that fails to import can halt gunicorn) is started again with `start_command`.

use std::time::Duration;

use super::{Processes, POLL};
use crate::config::ReloadStrategy;
use crate::engine::phase::{Instance, Swap};
use crate::engine::steps::code;
use crate::health::Prober;
use crate::runtime::process;

impl<H: Prober> Processes<H> {
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
            (ReloadStrategy::Hup, Some(m)) if process::alive(m) => {
                // the workers running the failed code leave only after the reload: wait for them
                let doomed = process::children(m);
                if let Err(e) = process::signal(m, self.settings.reload_signal) {
                    swap.warnings.push(e.to_string());
                }
                while doomed.iter().any(|p| process::alive(*p)) {
                    tokio::time::sleep(POLL).await;
                }
            }
            (ReloadStrategy::Usr2, Some(m)) if process::alive(m) && old_master != Some(m) => {
                if let Err(e) = process::signal(m, self.settings.stop_old_signal) {
                    swap.warnings.push(e.to_string());
                }
                while process::alive(m) {
                    tokio::time::sleep(POLL).await;
                }
            }
            _ => {}
        }
        self.restart_if_gone(swap).await;
        code::remove_failed(&layout, &swap.release.deploy_id);
    }

    /// If no master runs any more, starts the server again with `start_command` on the code
    /// `current` names now, and waits until its pidfile names a live master.
    async fn restart_if_gone(&self, swap: &mut Swap) {
        let s = &self.settings;
        if process::read_pid(&s.pidfile)
            .map(process::alive)
            .unwrap_or(false)
        {
            return;
        }
        let Some((program, args)) = s.start_command.split_first() else {
            swap.warnings.push(format!(
                "no master runs (pidfile {}) and no start_command is configured: the service is down",
                s.pidfile.display()
            ));
            return;
        };
        // A pidfile naming a dead master (or a zombie nobody reaped) makes gunicorn refuse to
        // start ("Already running on PID"): it is stale, remove it.
        let _ = std::fs::remove_file(&s.pidfile);
        let status = tokio::process::Command::new(program)
            .args(args)
            .stdin(std::process::Stdio::null())
            .status()
            .await;
        match status {
            Ok(st) if st.success() => {}
            Ok(st) => {
                return swap
                    .warnings
                    .push(format!("start_command {program:?} exited with {st}"))
            }
            Err(e) => {
                return swap
                    .warnings
                    .push(format!("start_command {program:?}: {e}"))
            }
        }
        let waited = tokio::time::Instant::now();
        while !process::read_pid(&s.pidfile)
            .map(process::alive)
            .unwrap_or(false)
        {
            if waited.elapsed() > Duration::from_secs(30) {
                return swap.warnings.push(format!(
                    "start_command ran but no master appeared in {} within 30 s",
                    s.pidfile.display()
                ));
            }
            tokio::time::sleep(POLL).await;
        }
        swap.warnings.push(
            "the master had died; it was started again with start_command on the previous code"
                .into(),
        );
    }
}
