//! The code steps both code reloads share (a `[processes]` service, and a container with code
//! mounted from the host): unpack a bundle into its release directory, point `current` at a
//! release, and after a failure remove the failed release's directory.

use std::path::{Path, PathBuf};

use crate::code::bundle;
use crate::code::layout::Layout;
use crate::engine::error::StepError;
use crate::engine::phase::Swap;

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

/// Retiring: old release directories are pruned. The new release's, the old one's and the newest
/// of `history` stay, `1 + keep_releases` in all; problems become the swap's warnings.
pub fn prune(layout: &Layout, swap: &mut Swap, history: &[Swap], keep_releases: usize) {
    let candidates = swap
        .new
        .iter()
        .chain(swap.old.iter())
        .chain(history.iter().rev().filter_map(|h| h.new.as_ref()));
    let mut keep: Vec<PathBuf> = Vec::new();
    for dir in candidates.filter_map(|i| i.code_dir()) {
        if !keep.iter().any(|k| k == dir) {
            keep.push(dir.to_owned());
        }
    }
    keep.truncate(1 + keep_releases);
    let keep: Vec<&Path> = keep.iter().map(PathBuf::as_path).collect();
    swap.warnings.extend(layout.prune(&keep));
}

/// After a rollback: the failed release's directory goes, unless `current` names it.
pub fn remove_failed(layout: &Layout, deploy_id: &str) {
    let dir = layout.release(deploy_id);
    if layout.current().as_deref() != Some(dir.as_path()) {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
