//! The queue as journaled: `<state_dir>/queue/<service>.json`, what a restart reads back (the
//! queued release, superseded deploys, those still to be answered, maintenance mode), and what
//! happens to one that cannot be read.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::phase::Release;
use super::view::{Maintenance, Superseded};

/// The queue file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("reading queue file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("journaling the queue to {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Too many superseded deploys wait for their report: nothing new is accepted until they
    /// are answered (a storm of releases is slowed down, never accepted and lost).
    #[error("service {service:?} has {waiting} superseded deploys waiting for their report; try again in a moment")]
    Full { service: String, waiting: usize },
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct QueueFile {
    pub(super) queued: Vec<Release>,
    pub(super) superseded: Vec<Superseded>,
    /// Superseded deploys whose report is not written yet (the answerer writes them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) unanswered: Vec<Superseded>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) maintenance: Option<Maintenance>,
}

/// The largest queue file read back: one queued release and the superseded ones remembered.
const QUEUE_MAX_BYTES: u64 = 16 << 20;

/// Reads the queue file back. One that cannot be a queue (not a regular file, too large, not
/// JSON of the queue's shape) is moved aside and the queue starts empty: the service is still
/// supervised, and the note says what was found and where it went.
pub(super) fn read_queue(
    path: &std::path::Path,
) -> Result<(QueueFile, Option<String>), QueueError> {
    let why = match crate::fsutil::read_bounded(path, QUEUE_MAX_BYTES) {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(q) => return Ok((q, None)),
            Err(e) => format!("not a valid queue: {e}"),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok((QueueFile::default(), None))
        }
        Err(e) if crate::fsutil::is_damaged(&e) => e.to_string(),
        Err(source) => {
            return Err(QueueError::Read {
                path: path.to_owned(),
                source,
            })
        }
    };
    let to = crate::fsutil::move_aside(path).map_err(|source| QueueError::Read {
        path: path.to_owned(),
        source,
    })?;
    let note = format!(
        "queue file {} was damaged ({why}); moved to {}, the releases it held are not run",
        path.display(),
        to.display()
    );
    tracing::error!(file = %path.display(), moved_to = %to.display(), error = %why, "queue file damaged; moved aside, supervision goes on");
    Ok((QueueFile::default(), Some(note)))
}
