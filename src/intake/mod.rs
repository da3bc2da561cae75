//! Release intake: every way a release gets in (control socket, inbox files, cfn-hup through the
//! CLI) goes through `accept`, which validates it, names what is wrong, and queues it.

mod dirfd;
pub mod inbox;
pub mod maintenance;
pub mod metadata;
pub mod metadata_watch;
pub mod validate;

use crate::engine::phase::{ImageArchive, Requester};
use crate::engine::ServiceHandle;
use crate::engine::{Release, Submitted};
use crate::model::api::{DeployAccepted, DeployRequest, RollbackRequest};
use crate::services::Services;
use validate::{check_deploy_id, check_image, check_sha256, check_version, default_version};

/// Why a release was refused. The control socket chooses the HTTP status for each kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("unknown service {service:?} (configured: {configured})")]
    UnknownService { service: String, configured: String },
    /// The request names something wrong (an image reference, a path, a digest ...).
    #[error("{0}")]
    Invalid(String),
    #[error("service {0:?} has no previous release to roll back to")]
    NoPrevious(String),
    #[error("service {service:?} has no kept release {to:?} to roll back to (kept: {kept})")]
    NotKept {
        service: String,
        to: String,
        kept: String,
    },
    #[error("the previous release's bundle {0} is gone")]
    BundleGone(String),
    /// HAProxy cannot do it now (not answering, or a rule it needs is not loaded).
    #[error("{0}")]
    Unavailable(String),
    /// The queue could not be journaled: nothing was accepted.
    #[error("{0}")]
    NotQueued(String),
    /// Too much already waits for an answer: nothing was accepted; try again shortly.
    #[error("{0}")]
    Busy(String),
}

impl Refusal {
    fn bad(message: impl Into<String>) -> Refusal {
        Refusal::Invalid(message.into())
    }
}

fn handle_of(registry: &Services, service: &str) -> Result<std::sync::Arc<ServiceHandle>, Refusal> {
    registry
        .handle(service)
        .ok_or_else(|| Refusal::UnknownService {
            service: service.to_string(),
            configured: registry.service_names().join(", "),
        })
}

pub use crate::model::new_deploy_id;

/// An archive on this host must be inside one of `dirs` (its links resolved): the daemon runs as
/// root and would otherwise read any file a client names.
fn check_archive_dir(path: &std::path::Path, dirs: &[std::path::PathBuf]) -> Result<(), String> {
    let real = path
        .canonicalize()
        .map_err(|e| format!("archive {}: {e}", path.display()))?;
    if dirs
        .iter()
        .filter_map(|d| d.canonicalize().ok())
        .any(|d| real.starts_with(d))
    {
        return Ok(());
    }
    let names: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    Err(format!(
        "archive {} is outside the archive directories ({}; daemon.archive_dirs): put it in one of them",
        path.display(),
        names.join(", ")
    ))
}

/// Validates a deploy request and queues its release.
pub fn accept(
    shared: &Services,
    req: DeployRequest,
    by: Requester,
) -> Result<DeployAccepted, Refusal> {
    let handle = handle_of(shared, &req.service)?;
    let deploy_id = req.deploy_id.clone().unwrap_or_else(new_deploy_id);
    check_deploy_id(&deploy_id).map_err(Refusal::bad)?;
    if shared.is_process(&req.service)
        || (req.code.is_some() && req.image.is_empty() && shared.takes_code(&req.service))
    {
        let release = Release {
            requested_by: Some(by),
            ..code_release(req, deploy_id)?
        };
        return submit(&handle, release);
    }
    if req.code.is_some() {
        return Err(Refusal::bad(format!(
            "service {:?} takes no code releases: give an image, or mount its code from the host ([services.{}.code])",
            req.service, req.service
        )));
    }
    check_image(&req.image).map_err(Refusal::bad)?;
    let dirs = || {
        let settings = shared.settings.lock().expect("settings lock");
        settings.daemon.archive_dirs.clone()
    };
    let archive = archive(req.archive, req.archive_sha256, dirs)?;
    if let Some(v) = &req.version {
        check_version(v).map_err(Refusal::bad)?;
    }
    let release = Release {
        service: req.service.clone(),
        version: req.version.unwrap_or_else(|| default_version(&req.image)),
        image: req.image,
        deploy_id,
        archive,
        code: None,
        no_ramp: req.no_ramp,
        requested_by: Some(by),
    };
    submit(&handle, release)
}

/// The image archive a release names: in S3 (with its digest, checked before anything is
/// loaded), or a regular file on this host inside `daemon.archive_dirs`.
fn archive(
    path: Option<std::path::PathBuf>,
    sha256: Option<String>,
    archive_dirs: impl FnOnce() -> Vec<std::path::PathBuf>,
) -> Result<Option<ImageArchive>, Refusal> {
    match (path, sha256) {
        (None, None) => Ok(None),
        (None, Some(_)) => Err(Refusal::bad("archive_sha256 given without archive")),
        (Some(path), sha256) if path.to_string_lossy().starts_with("s3://") => {
            if crate::runtime::archive::parse_s3_url(&path.to_string_lossy()).is_none() {
                return Err(Refusal::bad(format!(
                    "archive {} is not s3://BUCKET/KEY",
                    path.display()
                )));
            }
            match &sha256 {
                Some(s) => check_sha256(s).map_err(Refusal::bad)?,
                None => return Err(Refusal::bad("an archive in S3 needs archive_sha256: it is checked before anything is loaded")),
            }
            Ok(Some(ImageArchive { path, sha256 }))
        }
        (Some(path), sha256) => {
            if !path.is_absolute() {
                return Err(Refusal::bad(format!(
                    "archive {} must be an absolute path",
                    path.display()
                )));
            }
            check_archive_dir(&path, &archive_dirs()).map_err(Refusal::bad)?;
            match std::fs::metadata(&path) {
                Ok(m) if m.is_file() => {}
                Ok(_) => {
                    return Err(Refusal::bad(format!(
                        "archive {} is not a regular file",
                        path.display()
                    )))
                }
                Err(e) => return Err(Refusal::bad(format!("archive {}: {e}", path.display()))),
            }
            if let Some(s) = &sha256 {
                check_sha256(s).map_err(Refusal::bad)?;
            }
            Ok(Some(ImageArchive { path, sha256 }))
        }
    }
}

/// A release of code for a local pre-fork server: a bundle on this host and the version the new
/// code reports (given, or the bundle's VERSION file).
fn code_release(req: DeployRequest, deploy_id: String) -> Result<Release, Refusal> {
    if !req.image.is_empty() || req.archive.is_some() {
        return Err(Refusal::bad(format!(
            "service {:?} reloads code: give a code bundle, not an image",
            req.service
        )));
    }
    let code = req.code.ok_or_else(|| {
        Refusal::bad(format!(
            "service {:?} reloads code: give a code bundle (--code)",
            req.service
        ))
    })?;
    if !code.is_absolute() {
        return Err(Refusal::bad(format!(
            "code bundle {} must be an absolute path",
            code.display()
        )));
    }
    match std::fs::metadata(&code) {
        Ok(m) if m.is_file() || m.is_dir() => {}
        Ok(_) => {
            return Err(Refusal::bad(format!(
                "code bundle {} is not a regular file or a directory",
                code.display()
            )))
        }
        Err(_) => {
            return Err(Refusal::bad(format!(
                "code bundle {} does not exist",
                code.display()
            )))
        }
    }
    let version = match req.version {
        Some(v) => v,
        None => crate::code::bundle::read_version(&code).ok_or_else(|| {
            Refusal::bad(format!(
                "code bundle {}: give --version or put a VERSION file at its top",
                code.display()
            ))
        })?,
    };
    check_version(&version).map_err(Refusal::bad)?;
    Ok(Release {
        service: req.service,
        image: code.display().to_string(),
        version,
        deploy_id,
        archive: None,
        code: Some(code),
        no_ramp: req.no_ramp,
        requested_by: None,
    })
}

/// Queues a kept release again: the previous one, or with `to` the newest successful swap whose
/// version (or image, or image tag) is `to` and whose image was kept (`keep_images`), so nothing
/// is pulled.
pub fn rollback(
    shared: &Services,
    service: &str,
    req: RollbackRequest,
    by: Requester,
) -> Result<DeployAccepted, Refusal> {
    let handle = handle_of(shared, service)?;
    let view = handle.view();
    let target = match &req.to {
        None => view
            .previous
            .clone()
            .ok_or_else(|| Refusal::NoPrevious(service.to_string()))?,
        Some(to) => rollback_target(&view, to)?,
    };
    let deploy_id = req
        .deploy_id
        .unwrap_or_else(|| format!("rollback-{}", new_deploy_id()));
    check_deploy_id(&deploy_id).map_err(Refusal::bad)?;
    let release = Release {
        deploy_id,
        archive: None,
        // a rollback goes through the ramp like any release; the operator may skip it
        no_ramp: false,
        requested_by: Some(by),
        ..target
    };
    if let Some(code) = &release.code {
        if !code.exists() {
            return Err(Refusal::BundleGone(code.display().to_string()));
        }
    }
    submit(&handle, release)
}

/// The release `rollback --to` goes back to: a kept image's newest successful swap.
fn rollback_target(view: &crate::engine::ServiceView, to: &str) -> Result<Release, Refusal> {
    let current = view.current.as_ref().map(|c| &c.release);
    if current.is_some_and(|c| names(c, to)) {
        return Err(Refusal::bad(format!(
            "service {:?} already runs {to:?}",
            view.service
        )));
    }
    let kept = |r: &Release| {
        view.kept_images.contains(&r.image)
            || view.previous.as_ref().is_some_and(|p| p.image == r.image)
    };
    view.history
        .iter()
        .rev()
        .filter(|s| s.phase == crate::engine::phase::Phase::Succeeded)
        .map(|s| &s.release)
        .find(|r| names(r, to) && kept(r))
        .cloned()
        .ok_or_else(|| {
            let mut known: Vec<String> = view
                .history
                .iter()
                .rev()
                .filter(|s| s.phase == crate::engine::phase::Phase::Succeeded)
                .map(|s| &s.release)
                .filter(|r| kept(r) && !current.is_some_and(|c| c.image == r.image))
                .map(|r| format!("{} ({})", r.version, r.image))
                .collect();
            known.dedup();
            Refusal::NotKept {
                service: view.service.clone(),
                to: to.to_string(),
                kept: if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                },
            }
        })
}

/// Whether `to` names this release: its version, its image, or its image's tag.
fn names(r: &Release, to: &str) -> bool {
    r.version == to || r.image == to || r.image.rsplit_once(':').is_some_and(|(_, tag)| tag == to)
}

fn submit(handle: &ServiceHandle, release: Release) -> Result<DeployAccepted, Refusal> {
    let service = release.service.clone();
    tracing::info!(service = %service, release = %release.image, deploy_id = %release.deploy_id, "release submitted");
    match handle.submit(release) {
        Ok(Submitted::Accepted {
            deploy_id,
            queued_behind,
            superseded,
        }) => {
            if !superseded.is_empty() {
                tracing::info!(service = %service, deploy_id = %deploy_id, superseded = ?superseded, "queued releases superseded");
            }
            Ok(DeployAccepted {
                deploy_id,
                service,
                accepted: true,
                queued_behind,
                superseded,
            })
        }
        Ok(Submitted::Existing { deploy_id }) => Ok(DeployAccepted {
            deploy_id,
            service,
            accepted: false,
            queued_behind: None,
            superseded: vec![],
        }),
        Err(e @ crate::engine::handle::QueueError::Full { .. }) => {
            Err(Refusal::Busy(e.to_string()))
        }
        Err(e) => Err(Refusal::NotQueued(e.to_string())),
    }
}
