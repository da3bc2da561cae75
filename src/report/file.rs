//! The local reports file: one JSON line per report, written once, rotated by size, read back
//! for `history`.

use std::path::PathBuf;

use super::{Report, ReportError, Reporter};
use crate::config::Rotation;
use crate::fsutil::append_line;

/// Appends each report as one JSON line, fsynced; once per deploy: a daemon killed between
/// writing a report and closing the swap in its journal reports the swap again when it starts,
/// and finds it already written.
///
/// Past `rotation.max_bytes` the file is rotated before the next line (`reports.jsonl.1`, ...),
/// `rotation.keep` rotated files kept; `history` reads back through them.
#[derive(Debug, Clone)]
pub struct FileReporter {
    path: PathBuf,
    rotation: Rotation,
}

impl FileReporter {
    pub fn new(path: PathBuf) -> FileReporter {
        FileReporter::rotated(path, Rotation::default())
    }

    pub fn rotated(path: PathBuf, rotation: Rotation) -> FileReporter {
        FileReporter { path, rotation }
    }

    /// The `n`th rotated file (0: the file itself).
    fn generation(&self, n: usize) -> PathBuf {
        if n == 0 {
            return self.path.clone();
        }
        let mut name = self.path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    /// Moves the file to `.1` (and `.1` to `.2` ...) when the next line would pass the limit.
    fn rotate_for(&self, next_line: usize) -> std::io::Result<()> {
        let len = match std::fs::metadata(&self.path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        if len == 0 || len + next_line as u64 <= self.rotation.max_bytes {
            return Ok(());
        }
        for n in (1..=self.rotation.keep).rev() {
            match std::fs::rename(self.generation(n - 1), self.generation(n)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    /// The last `limit` reports (of `service`, or all), newest first, read from the file and
    /// then its rotated copies; lines that are not JSON objects are skipped.
    pub fn history(
        &self,
        service: Option<&str>,
        limit: usize,
    ) -> std::io::Result<Vec<serde_json::Value>> {
        let mut out = Vec::new();
        for n in 0..=self.rotation.keep {
            let text = match std::fs::read(self.generation(n)) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for line in text.split(|b| *b == b'\n').rev() {
                let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) else {
                    continue;
                };
                if !v.is_object() || service.is_some_and(|s| v["service"] != s) {
                    continue;
                }
                out.push(v);
                if out.len() == limit {
                    return Ok(out);
                }
            }
        }
        Ok(out)
    }
}

impl Reporter for FileReporter {
    async fn report(&self, report: &Report) -> Result<(), ReportError> {
        let line = serde_json::to_string(report).expect("reports serialize");
        let me = self.clone();
        let id = report.report_id.clone();
        tokio::task::spawn_blocking(move || {
            // a report written just before a rotation is in `.1`
            if written_before(&me.path, &id)? || written_before(&me.generation(1), &id)? {
                return Ok(());
            }
            me.rotate_for(line.len() + 1)?;
            append_line(&me.path, &line)
        })
        .await
        .expect("report writer task")
        .map_err(|source| ReportError {
            path: self.path.clone(),
            source,
        })
    }
}

/// How far back from the end of the reports file a report of the same deploy is looked for: a
/// swap reported again after a crash was the last thing the service reported.
const WRITTEN_LOOKBACK: u64 = 1 << 20;

/// Whether the report `id` is among the last lines of the reports file (reports written before
/// `report_id` existed are known by their deploy id).
fn written_before(path: &std::path::Path, id: &str) -> std::io::Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = match crate::fsutil::open_regular(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    let from = len.saturating_sub(WRITTEN_LOOKBACK);
    f.seek(SeekFrom::Start(from))?;
    let mut tail = Vec::with_capacity((len - from) as usize);
    f.read_to_end(&mut tail)?;
    // a line cut by the look-back window is not a report
    let lines = tail.split(|b| *b == b'\n').skip(usize::from(from > 0));
    Ok(lines
        .filter_map(|l| serde_json::from_slice::<serde_json::Value>(l).ok())
        .any(|r| match r.get("report_id") {
            Some(rid) => rid == id,
            None => r["deploy_id"] == id,
        }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deploy_is_found_among_whole_lines_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reports.jsonl");
        assert!(!written_before(&path, "d1").unwrap(), "no file yet");
        std::fs::write(
            &path,
            "{\"deploy_id\":\"d1\",\"result\":\"success\"}\n{\"deploy_id\":\"d2\",\"res",
        )
        .unwrap();
        assert!(written_before(&path, "d1").unwrap());
        assert!(
            !written_before(&path, "d2").unwrap(),
            "a torn line is no report"
        );
        assert!(!written_before(&path, "d").unwrap());
    }

    #[test]
    fn the_file_rotates_and_history_reads_back_through_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reports.jsonl");
        let r = FileReporter::rotated(
            path.clone(),
            Rotation {
                max_bytes: 100,
                keep: 2,
            },
        );
        for i in 0..10 {
            let line = format!(
                "{{\"service\":\"{}\",\"n\":{i},\"pad\":\"{}\"}}",
                if i % 2 == 0 { "web" } else { "api" },
                "x".repeat(15)
            );
            r.rotate_for(line.len() + 1).unwrap();
            append_line(&path, &line).unwrap();
        }
        // 48 bytes a line, 100 at most: two lines a file, two rotated files kept
        assert!(std::fs::metadata(&path).unwrap().len() <= 100);
        assert!(dir.path().join("reports.jsonl.2").exists());
        assert!(!dir.path().join("reports.jsonl.3").exists());
        let all: Vec<u64> = r
            .history(None, 100)
            .unwrap()
            .iter()
            .map(|v| v["n"].as_u64().unwrap())
            .collect();
        assert_eq!(
            all,
            [9, 8, 7, 6, 5, 4],
            "newest first, the oldest rotated away"
        );
        let web: Vec<u64> = r
            .history(Some("web"), 2)
            .unwrap()
            .iter()
            .map(|v| v["n"].as_u64().unwrap())
            .collect();
        assert_eq!(web, [8, 6]);
    }

    #[test]
    fn only_the_tail_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reports.jsonl");
        let mut text = String::from("{\"deploy_id\":\"old\"}\n");
        let filler = format!("{{\"deploy_id\":\"x\",\"pad\":\"{}\"}}\n", "p".repeat(1000));
        while (text.len() as u64) < WRITTEN_LOOKBACK + 10 {
            text.push_str(&filler);
        }
        text.push_str("{\"deploy_id\":\"new\"}\n");
        std::fs::write(&path, text).unwrap();
        assert!(written_before(&path, "new").unwrap());
        assert!(!written_before(&path, "old").unwrap());
    }
}
