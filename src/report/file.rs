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

    /// The last `limit` reports (of `service`, or all), newest first, read from the end of the
    /// file and then its rotated copies, a chunk at a time: memory stays bounded by `limit`
    /// whatever the files' size. Lines that are not JSON objects are skipped; a file in the
    /// way that is not a regular file is named.
    pub fn history(
        &self,
        service: Option<&str>,
        limit: usize,
    ) -> std::io::Result<Vec<serde_json::Value>> {
        let mut out = Vec::new();
        for n in 0..=self.rotation.keep {
            let f = match crate::fsutil::open_regular(&self.generation(n)) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            lines_backwards(&f, |line| {
                let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) else {
                    return true;
                };
                if v.is_object() && !service.is_some_and(|s| v["service"] != s) {
                    out.push(v);
                }
                out.len() < limit
            })?;
            if out.len() == limit {
                break;
            }
        }
        Ok(out)
    }

    /// The newest report of `deploy_id` (a swap's, not a repair's) in the file and its rotated
    /// copies, for a deploy this host no longer remembers in memory.
    pub fn find_deploy(&self, deploy_id: &str) -> std::io::Result<Option<serde_json::Value>> {
        let needle = serde_json::to_string(deploy_id).expect("strings serialize");
        let needle = format!("\"deploy_id\":{needle}");
        let mut found = None;
        for n in 0..=self.rotation.keep {
            let f = match crate::fsutil::open_regular(&self.generation(n)) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            lines_backwards(&f, |line| {
                if !contains(line, needle.as_bytes()) {
                    return true;
                }
                match serde_json::from_slice::<serde_json::Value>(line) {
                    Ok(v) if v["deploy_id"] == deploy_id && v["kind"] != "repair" => {
                        found = Some(v);
                        false
                    }
                    _ => true,
                }
            })?;
            if found.is_some() {
                break;
            }
        }
        Ok(found)
    }

    /// A reports file that is not a regular file (a FIFO, a link to a device) is moved aside
    /// and a new one begun: reports are never written into something that is not a file.
    fn set_aside_if_damaged(&self) -> std::io::Result<()> {
        match std::fs::metadata(&self.path) {
            Ok(m) if !m.is_file() => {
                let to = crate::fsutil::move_aside(&self.path)?;
                tracing::warn!(file = %self.path.display(), moved_to = %to.display(), "the reports file is not a regular file; moved aside, a new one begun");
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(hay, needle).is_some()
}

/// Lines longer than this are not reports: skipped whole, never held in memory.
const MAX_LINE: usize = 1 << 20;
/// How much of a file is read at a time, from its end.
const CHUNK: u64 = 64 << 10;

/// Calls `visit` with each line of `f`, the last one first, until it returns false. Reads
/// `CHUNK` bytes at a time from the end: memory is bounded by `MAX_LINE`, whatever the size.
fn lines_backwards(f: &std::fs::File, mut visit: impl FnMut(&[u8]) -> bool) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut pos = f.metadata()?.len();
    // the part of the line that straddles the chunk boundary (after `pos`)
    let mut carry: Vec<u8> = Vec::new();
    // the line being carried is too long: it is skipped once its start is found
    let mut oversize = false;
    while pos > 0 {
        let start = pos.saturating_sub(CHUNK);
        let mut buf = vec![0u8; (pos - start) as usize];
        f.read_exact_at(&mut buf, start)?;
        pos = start;
        buf.extend_from_slice(&carry);
        let mut end = buf.len();
        while let Some(nl) = memchr::memrchr(b'\n', &buf[..end]) {
            if !std::mem::take(&mut oversize) && !visit(&buf[nl + 1..end]) {
                return Ok(());
            }
            end = nl;
        }
        carry = buf[..end].to_vec();
        if carry.len() > MAX_LINE {
            carry = Vec::new();
            oversize = true;
        }
    }
    if !oversize {
        visit(&carry);
    }
    Ok(())
}

impl Reporter for FileReporter {
    async fn report(&self, report: &Report) -> Result<(), ReportError> {
        let line = serde_json::to_string(report).expect("reports serialize");
        let me = self.clone();
        let id = report.report_id.clone();
        tokio::task::spawn_blocking(move || {
            me.set_aside_if_damaged()?;
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
    // only lines that name the id are parsed (a report id is a deploy id, or starts with one)
    let needle = serde_json::to_string(id).expect("strings serialize");
    let bare = needle.trim_end_matches('"');
    if !contains(&tail, bare.as_bytes()) {
        return Ok(false);
    }
    // a line cut by the look-back window is not a report
    let lines = tail.split(|b| *b == b'\n').skip(usize::from(from > 0));
    Ok(lines
        .filter(|l| contains(l, bare.as_bytes()))
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
    fn lines_are_read_from_the_end_across_chunks_and_overlong_lines_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reports.jsonl");
        let mut text = String::new();
        for i in 0..3000 {
            text.push_str(&format!(
                "{{\"n\":{i},\"pad\":\"{}\"}}\n",
                "p".repeat(i % 97)
            ));
            if i == 1500 {
                text.push_str(&"x".repeat(MAX_LINE + CHUNK as usize + 5));
                text.push('\n');
            }
        }
        text.push_str("{\"torn\":");
        std::fs::write(&path, &text).unwrap();
        let f = std::fs::File::open(&path).unwrap();
        let mut seen = Vec::new();
        lines_backwards(&f, |l| {
            seen.push(l.to_vec());
            true
        })
        .unwrap();
        assert_eq!(seen[0], b"{\"torn\":");
        let ns: Vec<u64> = seen
            .iter()
            .filter_map(|l| serde_json::from_slice::<serde_json::Value>(l).ok())
            .map(|v| v["n"].as_u64().unwrap())
            .collect();
        assert_eq!(ns, (0..3000).rev().collect::<Vec<u64>>());
        assert!(
            seen.iter().all(|l| l.len() < MAX_LINE),
            "the long line is skipped"
        );
        let r = FileReporter::new(path.clone());
        assert_eq!(r.history(None, 2).unwrap().len(), 2);
        assert_eq!(r.history(None, 2).unwrap()[0]["n"], 2999, "newest first");
    }

    #[test]
    fn history_names_a_reports_file_that_is_not_a_file_and_never_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reports.jsonl");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let r = FileReporter::new(path.clone());
        let e = r.history(None, 20).unwrap_err().to_string();
        assert!(
            e.contains("reports.jsonl") && e.contains("not a regular file"),
            "{e}"
        );
        r.set_aside_if_damaged().unwrap();
        assert!(!path.exists(), "moved aside");
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
