//! Containers with code mounted from the host (the Docker variant of a hot code reload): a
//! code-only release is unpacked under the mounted `app_root`, `current` switched, and the
//! container told to reload through the Docker API; the same health gate proves the new code.
//! Rolling back points `current` back and signals again. An image change still swaps containers.

use super::Containers;
use crate::balancer::Balancer;
use crate::clock::{now_ms, UnixMs};
use crate::code::layout::Layout;
use crate::engine::error::StepError;
use crate::engine::phase::{Instance, Runs, Swap};
use crate::engine::steps::{code, Ledger};
use crate::health::Prober;
use crate::runtime::{process, Runtime};

impl<R: Runtime, B: Balancer, H: Prober> Containers<R, B, H> {
    fn code_layout(&self) -> Result<(Layout, String), StepError> {
        let code = self
            .settings
            .code
            .as_ref()
            .ok_or_else(|| StepError::NoCodeMount {
                service: self.settings.name.clone(),
            })?;
        Ok((Layout::new(&code.app_root), code.reload_signal.clone()))
    }

    pub(super) async fn code_start(&self, swap: &mut Swap) -> Result<Instance, StepError> {
        let (layout, signal) = self.code_layout()?;
        let cur = swap.old.clone().ok_or(StepError::NothingToReload)?;
        let container = cur
            .primary()
            .ok_or(StepError::NothingToReload)?
            .container_id
            .clone();
        let bundle = swap
            .release
            .code
            .clone()
            .ok_or(StepError::Missing("no code bundle"))?;
        let dir = code::unpack(&layout, &bundle, &swap.release.deploy_id).await?;
        let main_pid = self
            .runtime
            .main_pid(&container)
            .await
            .map_err(StepError::docker("finding the container's main process"))?;
        if let Some(Runs::Containers {
            code_dir, workers, ..
        }) = swap.old.as_mut().map(|o| &mut o.runs)
        {
            *code_dir = layout.current();
            *workers = main_pid.map(process::children).unwrap_or_default();
        }
        code::point_current(&layout, &dir)?;
        swap.signalled_ms = Some(now_ms());
        self.runtime
            .signal(&container, &signal)
            .await
            .map_err(StepError::docker(format!(
                "sending {signal} to reload the code"
            )))?;
        let mut release = swap.release.clone();
        release.image = cur.release.image.clone();
        Ok(Instance {
            release,
            runs: Runs::Containers {
                members: cur.members(),
                code_dir: Some(dir),
                workers: vec![],
            },
        })
    }

    /// The old code's workers inside the container (if its server forks any) finish and go.
    pub(super) async fn code_drain(&self, swap: &mut Swap, deadline: UnixMs) {
        let pids = swap
            .old
            .as_ref()
            .map(|o| o.workers().to_vec())
            .unwrap_or_default();
        let left = process::wait_gone(&pids, deadline).await;
        if !left.is_empty() {
            swap.warnings.push(format!(
                "drain budget ended with old workers {left:?} still running"
            ));
        }
    }

    pub(super) fn code_retire(&self, ledger: &mut dyn Ledger, swap: &mut Swap) {
        let Ok((layout, _)) = self.code_layout() else {
            return;
        };
        let keep = self
            .settings
            .code
            .as_ref()
            .map(|c| c.keep_releases)
            .unwrap_or(1);
        code::prune(&layout, swap, &ledger.record().history, keep);
    }

    pub(super) async fn code_roll_back(&self, swap: &mut Swap) {
        let Ok((layout, signal)) = self.code_layout() else {
            return;
        };
        let Some(old) = swap.old.clone() else { return };
        if let Some(dir) = old.code_dir() {
            if let Err(e) = code::point_current(&layout, dir) {
                swap.warnings.push(e.to_string());
            }
        }
        let Some(container) = old.primary().map(|m| m.container_id.clone()) else {
            return;
        };
        if swap.new.is_some() {
            let doomed = match self.runtime.main_pid(&container).await {
                Ok(Some(pid)) => process::children(pid),
                _ => vec![],
            };
            if let Err(e) = self.runtime.signal(&container, &signal).await {
                swap.warnings.push(e.to_string());
            }
            let left = process::wait_gone(&doomed, now_ms() + 30_000).await;
            if !left.is_empty() {
                swap.warnings
                    .push(format!("workers {left:?} of the failed code still run"));
            }
        }
        code::remove_failed(&layout, &swap.release.deploy_id);
    }
}
