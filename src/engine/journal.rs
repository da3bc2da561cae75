//! The per-service journal: what serves now, what is kept for rollback, and the swap in flight.
//! Written atomically before each phase acts, read back at start-up.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::phase::{Instance, Release, Swap};
use crate::fsutil::write_atomic;

/// How many finished swaps a service remembers for `status`.
const HISTORY: usize = 20;
/// The largest journal read back: 20 swaps with their canary steps take well under 1 MiB.
pub const JOURNAL_MAX_BYTES: u64 = 16 << 20;

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
    #[error("journal {path} cannot be a journal: {why}")]
    Damaged { path: PathBuf, why: String },
    #[error("journal {path} has schema {found}, newer than this hotswapd reads ({JOURNAL_SCHEMA}): run the hotswapd that wrote it")]
    Newer { path: PathBuf, found: u32 },
}

/// The journal's format. 1: hotswap 0.1 (no `schema` key, instances flat); 2: instances say what
/// runs them (`runs`: containers or a process). Older forms are read and rewritten as the current
/// one at the next store; a newer one is refused, naming the file.
pub const JOURNAL_SCHEMA: u32 = 2;

fn schema_v1() -> u32 {
    1
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceRecord {
    #[serde(default = "schema_v1")]
    pub schema: u32,
    pub current: Option<Instance>,
    /// The release that served before `current`: what a rollback goes back to.
    pub previous: Option<Release>,
    /// Images kept for rollback, newest first (never includes the current image).
    pub kept_images: Vec<String>,
    /// The swap in flight, if any.
    pub swap: Option<Swap>,
    /// Finished swaps, newest last.
    pub history: Vec<Swap>,
    /// Containers a step could not remove (Docker did not answer): removed when it answers again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub leftovers: Vec<Leftover>,
    /// State files of this service found damaged and moved aside, each named with where it went:
    /// the service shows degraded until a swap succeeds (the record is then the engine's own).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub damaged: Vec<String>,
}

/// A container of ours that should be gone and is not yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leftover {
    pub container_id: String,
    /// Why it is still there: the last error removing it.
    pub why: String,
}

impl Default for ServiceRecord {
    fn default() -> Self {
        ServiceRecord {
            schema: JOURNAL_SCHEMA,
            current: None,
            previous: None,
            kept_images: Vec::new(),
            swap: None,
            history: Vec::new(),
            leftovers: Vec::new(),
            damaged: Vec::new(),
        }
    }
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
        match crate::fsutil::read_bounded(&path, JOURNAL_MAX_BYTES) {
            Ok(bytes) => {
                let mut record: ServiceRecord =
                    serde_json::from_slice(&bytes).map_err(|source| JournalError::Corrupt {
                        path: path.clone(),
                        source,
                    })?;
                if record.schema > JOURNAL_SCHEMA {
                    return Err(JournalError::Newer {
                        path,
                        found: record.schema,
                    });
                }
                record.schema = JOURNAL_SCHEMA;
                Ok(record)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ServiceRecord::default()),
            Err(e) if crate::fsutil::is_damaged(&e) => Err(JournalError::Damaged {
                path,
                why: e.to_string(),
            }),
            Err(source) => Err(JournalError::Read { path, source }),
        }
    }

    /// Moves the service's journal aside (it could not be read as one), keeping it for the
    /// operator; returns where it went.
    pub fn move_aside(&self, service: &str) -> std::io::Result<PathBuf> {
        crate::fsutil::move_aside(&self.path(service))
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
    fn a_journal_of_schema_1_is_read_with_what_runs_each_release() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        std::fs::write(
            dir.path().join("web.json"),
            include_str!("../../tests/fixtures/journal-v1-web.json"),
        )
        .unwrap();
        let r = j.load("web").unwrap();
        assert_eq!(r.schema, JOURNAL_SCHEMA);
        let current = r.current.as_ref().unwrap();
        let ids: Vec<String> = current.members().into_iter().map(|m| m.server).collect();
        assert_eq!(ids, ["hs-d1", "hs-d1-2"]);
        let swap = r.swap.as_ref().unwrap();
        assert_eq!(swap.phase.name(), "health_gate");
        assert_eq!(swap.new.as_ref().unwrap().members()[0].server, "hs-d2");
        assert_eq!(r.kept_images, ["web:0"]);
        // stored again, it is schema 2 and reads back the same
        j.store("web", &r).unwrap();
        let text = std::fs::read_to_string(dir.path().join("web.json")).unwrap();
        assert!(
            text.contains("\"schema\": 2") && text.contains("\"runs\""),
            "{text}"
        );
        assert_eq!(j.load("web").unwrap(), r);
    }

    #[test]
    fn a_process_instance_of_schema_1_becomes_a_process() {
        let v1 = r#"{"release": {"service": "app", "image": "", "version": "3", "deploy_id": "d3"},
            "container_id": "4242", "server": "/srv/app/releases/d3", "host_port": 8000, "pids": [4243, 4244]}"#;
        let i: Instance = serde_json::from_str(v1).unwrap();
        assert_eq!(i.master(), Some(4242));
        assert_eq!(i.code_dir(), Some(Path::new("/srv/app/releases/d3")));
        assert_eq!(i.workers(), [4243, 4244]);
        assert!(i.members().is_empty());
    }

    #[test]
    fn a_journal_from_a_newer_hotswapd_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        std::fs::write(dir.path().join("web.json"), r#"{"schema": 99, "current": null, "previous": null, "kept_images": [], "swap": null, "history": []}"#).unwrap();
        let err = j.load("web").unwrap_err().to_string();
        assert!(
            err.contains("web.json") && err.contains("schema 99"),
            "{err}"
        );
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
