//! Containers with code mounted from the host (the Docker variant of a hot code reload): a
//! code-only release is unpacked under the mounted `app_root`, `current` switched, and the
//! container told to reload through the Docker API; the same health gate proves the new code.
//! An image change still swaps containers.

use std::path::PathBuf;

use super::Driver;
use crate::balancer::Balancer;
use crate::code::bundle;
use crate::code::layout::Layout;
use crate::engine::driver::now_ms;
use crate::engine::phase::{Instance, Swap, UnixMs};
use crate::report::Reporter;
use crate::runtime::{process, Runtime};

impl<R: Runtime, B: Balancer, P: Reporter> Driver<R, B, P> {
    fn code_layout(&self) -> Result<(Layout, String), String> {
        let code = self.settings.code.as_ref().ok_or_else(|| {
            format!(
                "service {:?} has no [code] section: code releases need code mounted from the host",
                self.settings.name
            )
        })?;
        Ok((Layout::new(&code.app_root), code.reload_signal.clone()))
    }

    pub(super) async fn code_start(&self, swap: &mut Swap) -> Result<Instance, String> {
        let (layout, signal) = self.code_layout()?;
        let cur = swap
            .old
            .clone()
            .ok_or("no running container to reload: deploy an image first")?;
        let bundle_path = swap.release.code.clone().ok_or("no code bundle")?;
        let dir = layout.release(&swap.release.deploy_id);
        let _ = std::fs::remove_dir_all(&dir);
        let dest = dir.clone();
        tokio::task::spawn_blocking(move || bundle::unpack(&bundle_path, &dest))
            .await
            .expect("unpack task")
            .map_err(|e| e.to_string())?;
        let main_pid = self
            .runtime
            .main_pid(&cur.container_id)
            .await
            .map_err(|e| e.to_string())?;
        if let Some(old) = swap.old.as_mut() {
            old.code_dir = layout.current();
            old.pids = main_pid.map(process::children).unwrap_or_default();
        }
        layout.switch(&dir).map_err(|e| {
            format!(
                "switching {} to {}: {e}",
                layout.current_link().display(),
                dir.display()
            )
        })?;
        swap.signalled_ms = Some(now_ms());
        self.runtime
            .signal(&cur.container_id, &signal)
            .await
            .map_err(|e| e.to_string())?;
        let mut release = swap.release.clone();
        release.image = cur.release.image.clone();
        Ok(Instance {
            release,
            container_id: cur.container_id,
            server: cur.server,
            host_port: cur.host_port,
            pids: vec![],
            code_dir: Some(dir),
            replicas: vec![],
        })
    }

    /// The old code's workers inside the container (if its server forks any) finish and go.
    pub(super) async fn code_drain(&self, swap: &mut Swap, deadline: UnixMs) {
        let pids = swap
            .old
            .as_ref()
            .map(|o| o.pids.clone())
            .unwrap_or_default();
        let left = process::wait_gone(&pids, deadline).await;
        if !left.is_empty() {
            swap.warnings.push(format!(
                "drain budget ended with old workers {left:?} still running"
            ));
        }
    }

    pub(super) fn code_retire(&mut self, swap: &mut Swap) {
        let Ok((layout, _)) = self.code_layout() else {
            return;
        };
        let keep_n = self
            .settings
            .code
            .as_ref()
            .map(|c| c.keep_releases)
            .unwrap_or(1);
        let mut keep: Vec<PathBuf> = swap.new.iter().filter_map(|n| n.code_dir.clone()).collect();
        keep.extend(swap.old.iter().filter_map(|o| o.code_dir.clone()));
        keep.truncate(1 + keep_n);
        let keep: Vec<&std::path::Path> = keep.iter().map(|p| p.as_path()).collect();
        swap.warnings.extend(layout.prune(&keep));
    }

    pub(super) async fn code_roll_back(&self, swap: &mut Swap) {
        let Ok((layout, signal)) = self.code_layout() else {
            return;
        };
        let Some(old) = swap.old.clone() else { return };
        if let Some(dir) = &old.code_dir {
            if let Err(e) = layout.switch(dir) {
                swap.warnings
                    .push(format!("switching current back to {}: {e}", dir.display()));
            }
        }
        if swap.new.is_some() {
            let doomed = match self.runtime.main_pid(&old.container_id).await {
                Ok(Some(pid)) => process::children(pid),
                _ => vec![],
            };
            if let Err(e) = self.runtime.signal(&old.container_id, &signal).await {
                swap.warnings.push(e.to_string());
            }
            let left = process::wait_gone(&doomed, now_ms() + 30_000).await;
            if !left.is_empty() {
                swap.warnings
                    .push(format!("workers {left:?} of the failed code still run"));
            }
        }
        let dir = layout.release(&swap.release.deploy_id);
        if layout.current().as_deref() != Some(dir.as_path()) {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}
