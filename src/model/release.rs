//! A release: what to run for a service, with its deploy id and who asked for it.

use serde::{Deserialize, Serialize};

use super::Requester;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub service: String,
    /// Image reference to run, e.g. `web:2`.
    pub image: String,
    /// What the app reports on its health route for this release (defaults to the image tag).
    pub version: String,
    pub deploy_id: String,
    /// An image archive on this host (`docker save` output) to load before the swap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<ImageArchive>,
    /// A code bundle (directory or .tar.gz) for a service that reloads instead of swapping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<std::path::PathBuf>,
    /// The operator asked to skip the service's canary ramp (`--no-ramp`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_ramp: bool,
    /// Who asked for it and how: journaled with the release, shown in history and the report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<Requester>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageArchive {
    pub path: std::path::PathBuf,
    /// Hex sha256 of the file; checked before loading when given.
    pub sha256: Option<String>,
}

/// A fresh deploy id: the time in ms and 24 random bits, `d<hex ms>-<hex>`.
pub fn new_deploy_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let salt = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    format!("d{:x}-{:06x}", crate::clock::now_ms(), salt & 0xff_ffff)
}
