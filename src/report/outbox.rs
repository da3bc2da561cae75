//! The durable outbox: a report is a file here before anyone tries to send it, and leaves only
//! once SQS accepted it. Keys (the deploy id; one host, one instance) already sent are kept in
//! `sent.log`, so a report queued again after a restart is not sent twice.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tokio::sync::Notify;

use crate::fsutil::write_atomic;

/// Keys remembered as sent (older ones are dropped when the log is compacted).
const SENT_KEPT: usize = 2000;
/// The largest `sent.log` read back: `SENT_KEPT` keys of a few dozen bytes each, with room.
const SENT_LOG_MAX_BYTES: u64 = 4 << 20;
/// The largest outbox entry read: far more than SQS takes in one message (256 KiB).
const ENTRY_MAX_BYTES: u64 = 1 << 20;
/// Entries read into memory at once by `pending`.
pub const PENDING_BATCH: usize = 64;

pub struct Outbox {
    dir: PathBuf,
    sent: Mutex<BTreeSet<String>>,
    wake: Notify,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub key: String,
    pub path: PathBuf,
    pub body: String,
}

fn sanitize(key: &str) -> String {
    key.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl Outbox {
    pub fn open(dir: &Path) -> std::io::Result<Outbox> {
        std::fs::create_dir_all(dir)?;
        let log = dir.join("sent.log");
        let sent = match crate::fsutil::read_bounded_string(&log, SENT_LOG_MAX_BYTES) {
            Ok(s) => s.lines().map(String::from).collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeSet::new(),
            Err(e) if crate::fsutil::is_damaged(&e) => {
                // what it held only guards against sending a report twice after a crash
                let to = crate::fsutil::move_aside(&log)?;
                tracing::warn!(file = %log.display(), moved_to = %to.display(), error = %e, "the outbox's sent log cannot be read; moved aside, a new one begun");
                BTreeSet::new()
            }
            Err(e) => return Err(e),
        };
        Ok(Outbox {
            dir: dir.to_owned(),
            sent: Mutex::new(sent),
            wake: Notify::new(),
        })
    }

    /// Queues a report durably. Returns false when this key was queued or sent before.
    pub fn put(&self, key: &str, body: &str) -> std::io::Result<bool> {
        let path = self.dir.join(format!("{}.json", sanitize(key)));
        if self.sent.lock().expect("sent lock").contains(key) || path.exists() {
            return Ok(false);
        }
        let record = serde_json::json!({ "key": key, "body": body });
        write_atomic(&path, record.to_string().as_bytes())?;
        self.wake.notify_one();
        Ok(true)
    }

    /// How many reports wait, and how old the oldest is (for metrics: no file is read).
    pub fn depth(&self) -> super::metrics::OutboxDepth {
        let mut depth = super::metrics::OutboxDepth::default();
        let now = std::time::SystemTime::now();
        for entry in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            if !entry.path().extension().is_some_and(|x| x == "json") {
                continue;
            }
            depth.reports += 1;
            let age = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .map_or(0.0, |d| d.as_secs_f64());
            depth.oldest_age_secs = depth.oldest_age_secs.max(age);
        }
        depth
    }

    /// Reports waiting to be sent, oldest first, at most `PENDING_BATCH` of them.
    pub fn pending(&self) -> Vec<Pending> {
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(&self.dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "json"))
                    .map(|p| {
                        (
                            std::fs::metadata(&p)
                                .and_then(|m| m.modified())
                                .unwrap_or(std::time::UNIX_EPOCH),
                            p,
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        let sent = self.sent.lock().expect("sent lock").clone();
        let mut out = Vec::new();
        for (_, path) in files {
            if out.len() == PENDING_BATCH {
                break;
            }
            let text = match crate::fsutil::read_bounded_string(&path, ENTRY_MAX_BYTES) {
                Ok(t) => t,
                Err(e) if crate::fsutil::is_damaged(&e) => {
                    tracing::error!(file = %path.display(), error = %e, "outbox entry cannot be read; moved aside");
                    let _ = std::fs::rename(&path, path.with_extension("corrupt"));
                    continue;
                }
                Err(_) => continue,
            };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
                tracing::error!(file = %path.display(), "outbox file is not valid JSON; moved aside");
                let _ = std::fs::rename(&path, path.with_extension("corrupt"));
                continue;
            };
            let (Some(key), Some(body)) = (v["key"].as_str(), v["body"].as_str()) else {
                continue;
            };
            if sent.contains(key) {
                // sent just before a crash: never twice
                let _ = std::fs::remove_file(&path);
                continue;
            }
            out.push(Pending {
                key: key.to_string(),
                path,
                body: body.to_string(),
            });
        }
        out
    }

    /// Records that SQS accepted the report, then removes it from the outbox.
    pub fn mark_sent(&self, p: &Pending) -> std::io::Result<()> {
        let mut sent = self.sent.lock().expect("sent lock");
        sent.insert(p.key.clone());
        let log = self.dir.join("sent.log");
        if sent.len() > SENT_KEPT {
            let keep: Vec<String> = sent.iter().rev().take(SENT_KEPT / 2).cloned().collect();
            *sent = keep.into_iter().collect();
            let text: String = sent.iter().map(|k| format!("{k}\n")).collect();
            write_atomic(&log, text.as_bytes())?;
        } else {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)?;
            f.write_all(format!("{}\n", p.key).as_bytes())?;
            f.sync_data()?;
        }
        std::fs::remove_file(&p.path)
    }

    /// Waits until something is put (or returns at once if something was put since the last wait).
    pub async fn wait(&self) {
        self.wake.notified().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_stays_until_sent_and_is_never_queued_twice() {
        let dir = tempfile::tempdir().unwrap();
        let o = Outbox::open(dir.path()).unwrap();
        assert!(o.put("d1", "{\"a\":1}").unwrap());
        assert!(!o.put("d1", "{\"a\":1}").unwrap(), "queued twice");
        assert!(o.put("d/2", "{}").unwrap());
        let p = o.pending();
        assert_eq!(
            p.iter().map(|p| p.key.as_str()).collect::<Vec<_>>(),
            ["d1", "d/2"]
        );
        o.mark_sent(&p[0]).unwrap();
        // a restart sees only what was not sent, and refuses a sent key
        let o = Outbox::open(dir.path()).unwrap();
        assert_eq!(o.pending().len(), 1);
        assert!(!o.put("d1", "{}").unwrap());
    }

    #[test]
    fn a_file_left_behind_by_a_crash_after_sending_is_not_sent_again() {
        let dir = tempfile::tempdir().unwrap();
        let o = Outbox::open(dir.path()).unwrap();
        o.put("d1", "{}").unwrap();
        std::fs::write(dir.path().join("sent.log"), "d1\n").unwrap();
        let o = Outbox::open(dir.path()).unwrap();
        assert!(o.pending().is_empty());
        assert!(!dir.path().join("d1.json").exists());
    }
}
