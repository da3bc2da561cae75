//! The code steps both code reloads share (a `[processes]` service, and a container with code
//! mounted from the host): unpack a bundle into its release directory, point `current` at a
//! release, and after a failure remove the failed release's directory.

use std::path::{Path, PathBuf};

use crate::code::bundle;
use crate::code::layout::Layout;
use crate::engine::error::StepError;

/// Unpacks `bundle` into a fresh `releases/<deploy id>` (anything left there by an earlier try
/// is removed first). Returns the release directory.
pub async fn unpack(
    layout: &Layout,
    bundle_path: &Path,
    deploy_id: &str,
) -> Result<PathBuf, StepError> {
    let dir = layout.release(deploy_id);
    let _ = std::fs::remove_dir_all(&dir);
    let (src, dest) = (bundle_path.to_owned(), dir.clone());
    tokio::task::spawn_blocking(move || bundle::unpack(&src, &dest))
        .await
        .expect("unpack task")?;
    Ok(dir)
}

/// Points `current` at `dir` (atomically).
pub fn point_current(layout: &Layout, dir: &Path) -> Result<(), StepError> {
    layout.switch(dir).map_err(|source| StepError::Current {
        link: layout.current_link(),
        dir: dir.to_owned(),
        source,
    })
}

/// After a rollback: the failed release's directory goes, unless `current` names it.
pub fn remove_failed(layout: &Layout, deploy_id: &str) {
    let dir = layout.release(deploy_id);
    if layout.current().as_deref() != Some(dir.as_path()) {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
