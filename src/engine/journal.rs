//! The per-service journal: what serves now, what is kept for rollback, and the swap in flight.
//! Written atomically before each phase acts, read back at start-up.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::phase::{Instance, Release, Swap};
use crate::fsutil::write_atomic;

/// How many finished swaps a service remembers for `status`.
const HISTORY: usize = 20;

#[derive(Debug, Error)]
pub enum JournalError {
    #[error("writing journal {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("reading journal {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("journal {path} is not valid: {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceRecord {
    pub current: Option<Instance>,
    /// The release that served before `current`: what a rollback goes back to.
    pub previous: Option<Release>,
    /// Images kept for rollback, newest first (never includes the current image).
    pub kept_images: Vec<String>,
    /// The swap in flight, if any.
    pub swap: Option<Swap>,
    /// Finished swaps, newest last.
    pub history: Vec<Swap>,
}

impl ServiceRecord {
    pub fn finish(&mut self) {
        if let Some(swap) = self.swap.take() {
            self.history.push(swap);
            let extra = self.history.len().saturating_sub(HISTORY);
            self.history.drain(..extra);
        }
    }

    pub fn find(&self, deploy_id: &str) -> Option<&Swap> {
        self.swap
            .iter()
            .chain(self.history.iter().rev())
            .find(|s| s.release.deploy_id == deploy_id)
    }
}

#[derive(Debug, Clone)]
pub struct Journal {
    dir: PathBuf,
}

impl Journal {
    pub fn open(dir: &Path) -> Result<Journal, JournalError> {
        std::fs::create_dir_all(dir).map_err(|source| JournalError::Write {
            path: dir.to_owned(),
            source,
        })?;
        Ok(Journal {
            dir: dir.to_owned(),
        })
    }

    fn path(&self, service: &str) -> PathBuf {
        self.dir.join(format!("{service}.json"))
    }

    pub fn load(&self, service: &str) -> Result<ServiceRecord, JournalError> {
        let path = self.path(service);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|source| JournalError::Corrupt { path, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ServiceRecord::default()),
            Err(source) => Err(JournalError::Read { path, source }),
        }
    }

    pub fn store(&self, service: &str, record: &ServiceRecord) -> Result<(), JournalError> {
        let path = self.path(service);
        let bytes = serde_json::to_vec_pretty(record).expect("journal records serialize");
        write_atomic(&path, &bytes).map_err(|source| JournalError::Write { path, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_journal_is_an_empty_record_and_store_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("journal")).unwrap();
        assert_eq!(j.load("web").unwrap(), ServiceRecord::default());
        let mut r = ServiceRecord::default();
        r.kept_images.push("web:1".into());
        j.store("web", &r).unwrap();
        assert_eq!(j.load("web").unwrap(), r);
    }

    #[test]
    fn corrupt_journal_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        std::fs::write(dir.path().join("web.json"), "{not json").unwrap();
        let err = j.load("web").unwrap_err().to_string();
        assert!(err.contains("web.json"), "{err}");
    }
}
