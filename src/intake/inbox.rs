//! The inbox directory: a release file (JSON or TOML, the fields of a deploy request) written
//! elsewhere and renamed in is picked up at once. Good files move to `accepted/` once their
//! release is journaled; bad ones to `rejected/` with a `.reason` file beside them. Hidden and
//! temporary names are ignored (write `.name.tmp`, then rename); anything else that is not a
//! regular file of its own (a link, a FIFO, a directory, a hard link, a name that is not UTF-8) is
//! moved aside to `rejected/` with its reason, as soon as it appears. Files already there at start
//! are processed.
//!
//! Group members write here and root reads: everything goes through descriptors (`dirfd.rs`),
//! never through a link, and `accepted/` and `rejected/` are made again when someone replaces them.

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::intake::{self, Refusal};
use crate::model::api::{DeployRequest, MAX_BODY};
use crate::services::Services;

use super::dirfd::Dir;

pub const ACCEPTED: &str = "accepted";
pub const REJECTED: &str = "rejected";
/// `accepted/` and `rejected/`: root's, readable by all (reasons are the writers' own business).
const SUB_MODE: libc::mode_t = 0o755;

/// Watching stops when this is dropped.
pub struct Inbox {
    _watcher: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Inbox {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How a name showed up: complete (renamed in, closed after writing, there at start) or just
/// created (a regular file may still be written; anything else is judged at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arrival {
    Complete,
    Created,
}

#[derive(Debug, PartialEq)]
enum Examined {
    /// Not ours to look at (temporary, hidden, gone, our own directories, still being written).
    Ignore,
    Reject(String),
    /// The release and the file owner's uid.
    Release(DeployRequest, u32),
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Format {
    Json,
    Toml,
}

pub fn watch(shared: Arc<Services>, dir: &Path) -> anyhow::Result<Inbox> {
    std::fs::create_dir_all(dir)?;
    let dir = dir.canonicalize()?;
    let inbox = Dir::open(&dir)?;
    for sub in [ACCEPTED, REJECTED] {
        inbox.ensure_sub(sub, SUB_MODE)?;
    }
    tracing::info!(dir = %dir.display(), "watching inbox");
    let (tx, mut rx) = mpsc::unbounded_channel::<(PathBuf, Arrival)>();
    let mut watcher =
        notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
            Ok(ev) => {
                let how = match ev.kind {
                    EventKind::Create(_) => Arrival::Created,
                    k if is_arrival(&k) => Arrival::Complete,
                    _ => return,
                };
                for p in ev.paths {
                    let _ = tx.send((p, how));
                }
            }
            Err(e) => tracing::warn!(error = %e, "inbox watcher"),
        })?;
    // Watch first, then scan: a file arriving in between is seen twice, never missed.
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    let existing: Vec<OsString> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    let task = tokio::spawn(async move {
        for name in existing {
            process_when_room(&shared, &inbox, &name, Arrival::Complete).await;
        }
        while let Some((path, how)) = rx.recv().await {
            if path.parent() != Some(dir.as_path()) {
                continue;
            }
            if let Some(name) = path.file_name() {
                process_when_room(&shared, &inbox, name, how).await;
            }
        }
    });
    Ok(Inbox {
        _watcher: watcher,
        task,
    })
}

/// A file is complete when it was renamed in or closed after writing.
fn is_arrival(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Modify(ModifyKind::Name(_))
            | EventKind::Access(AccessKind::Close(AccessMode::Write))
    )
}

/// What `name` in the inbox is, read through a descriptor (never through a link, never blocking).
fn examine(inbox: &Dir, name: &OsStr, how: Arrival) -> Examined {
    let Some(text_name) = name.to_str() else {
        return Examined::Reject("its name is not UTF-8: name release files plainly".into());
    };
    if text_name == ACCEPTED
        || text_name == REJECTED
        || text_name.starts_with('.')
        || text_name.ends_with('~')
        || [".tmp", ".part", ".swp"]
            .iter()
            .any(|s| text_name.ends_with(s))
    {
        return Examined::Ignore;
    }
    let mut file = match inbox.open_read(name) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Examined::Ignore,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Examined::Reject(
                "symlinks are refused: write the release file itself into the inbox".into(),
            )
        }
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
            return Examined::Reject("not a regular file (a socket)".into())
        }
        Err(e) => return Examined::Reject(format!("cannot open it: {e}")),
    };
    let meta = match file.metadata() {
        Ok(m) => m,
        Err(e) => return Examined::Reject(format!("cannot read its metadata: {e}")),
    };
    if meta.nlink() > 1 && !meta.is_dir() {
        return Examined::Reject(
            "hard links are refused: write the release file itself into the inbox".into(),
        );
    }
    if meta.is_file() && how == Arrival::Created {
        return Examined::Ignore; // still being written: judged when closed or renamed in
    }
    if meta.is_dir() {
        return Examined::Reject("a directory: release files are regular files".into());
    }
    if !meta.is_file() {
        return Examined::Reject("not a regular file (a FIFO, socket or device)".into());
    }
    let format = match Path::new(text_name).extension().and_then(|e| e.to_str()) {
        Some("json") => Format::Json,
        Some("toml") => Format::Toml,
        _ => return Examined::Reject("release files end in .json or .toml".into()),
    };
    if meta.len() > MAX_BODY as u64 {
        return Examined::Reject(format!(
            "{} bytes: release files are at most {MAX_BODY} bytes",
            meta.len()
        ));
    }
    let mut text = String::new();
    if let Err(e) = (&mut file)
        .take(MAX_BODY as u64 + 1)
        .read_to_string(&mut text)
    {
        return Examined::Reject(format!("cannot read it: {e}"));
    }
    match parse(&text, format) {
        Ok(req) => Examined::Release(req, std::os::unix::fs::MetadataExt::uid(&meta)),
        Err(why) => Examined::Reject(why),
    }
}

fn parse(text: &str, format: Format) -> Result<DeployRequest, String> {
    match format {
        Format::Json => crate::model::api::parse_body(text.as_bytes())
            .map_err(|e| format!("not a valid release (JSON): {e}")),
        Format::Toml => toml::from_str(text)
            .map_err(|e| format!("not a valid release (TOML): {}", e.to_string().trim_end())),
    }
}

/// How long a release file waits in the inbox, at most, while its service is too busy to take
/// it (superseded deploys waiting for their reports); then it is rejected with the reason.
const BUSY_PATIENCE: std::time::Duration = std::time::Duration::from_secs(300);

/// Processes `name`; while its service is busy the file stays in the inbox and is tried again
/// (the inbox waits: releases arriving meanwhile queue behind it, in order).
async fn process_when_room(shared: &Services, inbox: &Dir, name: &OsStr, how: Arrival) {
    let started = std::time::Instant::now();
    let mut wait = std::time::Duration::from_millis(10);
    loop {
        let busy = started.elapsed() < BUSY_PATIENCE;
        match process(shared, inbox, name, how, busy) {
            None => return,
            Some(Processed::Busy(why)) => {
                tracing::debug!(file = ?name, reason = %why, "inbox waits: the service is busy");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(std::time::Duration::from_millis(500));
            }
        }
    }
}

enum Processed {
    /// Left in the inbox: its service cannot take it yet.
    Busy(String),
}

/// Accepts or rejects `name`; `Busy` when its service cannot take it yet and `wait_if_busy`.
fn process(
    shared: &Services,
    inbox: &Dir,
    name: &OsStr,
    how: Arrival,
    wait_if_busy: bool,
) -> Option<Processed> {
    let (req, uid) = match examine(inbox, name, how) {
        Examined::Ignore => return None,
        Examined::Reject(why) => {
            reject(inbox, name, &why);
            return None;
        }
        Examined::Release(req, uid) => (req, uid),
    };
    let by = crate::engine::phase::Requester {
        via: "inbox".into(),
        uid: Some(uid),
        source: Some(name.to_string_lossy().into_owned()),
        ..Default::default()
    };
    match intake::accept(shared, req, by) {
        Ok(a) => match move_into(inbox, name, ACCEPTED) {
            Ok((to, new)) => {
                tracing::info!(file = ?name, moved_to = %to.path().join(&new).display(), deploy_id = %a.deploy_id, service = %a.service, new = a.accepted, "inbox release accepted")
            }
            Err(e) => {
                tracing::error!(file = ?name, error = %e, deploy_id = %a.deploy_id, "inbox release accepted; the file could not be moved to accepted/")
            }
        },
        Err(Refusal::Busy(why)) if wait_if_busy => return Some(Processed::Busy(why)),
        Err(refusal) => reject(inbox, name, &refusal.to_string()),
    }
    None
}

/// A name for a moved file: the original made plain (not UTF-8 or control characters replaced).
fn plain_name(name: &OsStr) -> String {
    name.to_string_lossy()
        .chars()
        .map(|c| if c.is_control() { '_' } else { c })
        .collect()
}

/// Moves `name` into `sub/` under a free name (its reason's name free too): the directory and
/// where it goes are our own, whatever was put in their place.
fn move_into(inbox: &Dir, name: &OsStr, sub: &str) -> std::io::Result<(Dir, String)> {
    let to = inbox.ensure_sub(sub, SUB_MODE)?;
    let plain = plain_name(name);
    let taken = |n: &str| to.has(OsStr::new(n)) || to.has(OsStr::new(&format!("{n}.reason")));
    let new = if taken(&plain) {
        format!("{}.{plain}", crate::clock::now_ms())
    } else {
        plain
    };
    inbox.rename(name, &to, OsStr::new(&new))?;
    Ok((to, new))
}

fn reject(inbox: &Dir, name: &OsStr, why: &str) {
    let (to, new) = match move_into(inbox, name, REJECTED) {
        Ok(moved) => moved,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => {
            tracing::error!(file = ?name, error = %e, reason = why, "inbox file rejected but could not be moved aside");
            return;
        }
    };
    // a new file, never one already there (a planted link included)
    let reason = format!("{new}.reason");
    let written = to
        .create_new(OsStr::new(&reason), 0o644)
        .and_then(|mut f| std::io::Write::write_all(&mut f, format!("{why}\n").as_bytes()));
    if let Err(e) = written {
        tracing::error!(file = %to.path().join(&reason).display(), error = %e, "cannot write reason file");
    }
    tracing::warn!(file = ?name, moved_to = %to.path().join(&new).display(), reason = why, "inbox release rejected");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    fn inbox() -> (tempfile::TempDir, Dir) {
        let d = tempfile::tempdir().unwrap();
        let inbox = Dir::open(d.path()).unwrap();
        for sub in [ACCEPTED, REJECTED] {
            inbox.ensure_sub(sub, SUB_MODE).unwrap();
        }
        (d, inbox)
    }

    fn reason(d: &Path, name: &str) -> String {
        std::fs::read_to_string(d.join(REJECTED).join(format!("{name}.reason"))).unwrap()
    }

    #[test]
    fn temp_hidden_and_foreign_names_are_judged_before_reading() {
        let (dir, inbox) = inbox();
        let d = dir.path();
        for name in [
            ".web.json",
            "web.json.tmp",
            "web.json.part",
            "web.json~",
            "accepted",
        ] {
            let _ = std::fs::write(d.join(name), "{}");
            let e = examine(&inbox, OsStr::new(name), Arrival::Complete);
            assert_eq!(e, Examined::Ignore, "{name}");
        }
        std::fs::write(d.join("web.json"), r#"{"service":"web","image":"web:2"}"#).unwrap();
        assert!(matches!(
            examine(&inbox, OsStr::new("web.json"), Arrival::Complete),
            Examined::Release(r, _) if r.image == "web:2"
        ));
        // just created: a regular file may still be written
        let e = examine(&inbox, OsStr::new("web.json"), Arrival::Created);
        assert_eq!(e, Examined::Ignore);
        std::fs::write(d.join("web.yaml"), "{}").unwrap();
        let e = examine(&inbox, OsStr::new("web.yaml"), Arrival::Complete);
        assert!(matches!(e, Examined::Reject(_)));
        let e = examine(&inbox, OsStr::new("gone.json"), Arrival::Complete);
        assert_eq!(e, Examined::Ignore);
    }

    #[test]
    fn links_fifos_directories_hard_links_and_odd_names_are_moved_aside_with_a_reason() {
        let (dir, inbox) = inbox();
        let d = dir.path();
        let secret = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(secret.path(), "root only").unwrap();
        std::os::unix::fs::symlink(secret.path(), d.join("evil.json")).unwrap();
        nix::unistd::mkfifo(
            &d.join("pipe.json"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        std::fs::create_dir(d.join("adir.json")).unwrap();
        std::fs::write(d.join("one.json"), "{}").unwrap();
        std::fs::hard_link(d.join("one.json"), d.join("two.json")).unwrap();
        let odd = OsStr::from_bytes(b"bad\xffname.json");
        std::fs::write(d.join(odd), "{}").unwrap();
        for (name, why) in [
            (OsStr::new("evil.json"), "symlink"),
            (OsStr::new("pipe.json"), "not a regular file"),
            (OsStr::new("adir.json"), "a directory"),
            (OsStr::new("two.json"), "hard links"),
            (odd, "not UTF-8"),
        ] {
            for how in [Arrival::Created, Arrival::Complete] {
                match examine(&inbox, name, how) {
                    Examined::Reject(r) => assert!(r.contains(why), "{name:?}: {r}"),
                    other => panic!("{name:?} {how:?}: {other:?}"),
                }
            }
            reject(&inbox, name, why);
            assert!(!inbox.has(name), "{name:?} left in the inbox");
        }
        assert!(reason(d, "evil.json").contains("symlink"));
        assert!(reason(d, "bad\u{fffd}name.json").contains("not UTF-8"));
        assert_eq!(std::fs::read_to_string(secret.path()).unwrap(), "root only");
    }

    #[test]
    fn replaced_or_planted_entries_in_rejected_are_never_written_through() {
        let (dir, inbox) = inbox();
        let d = dir.path();
        let secret = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(secret.path(), "root only").unwrap();
        // a reason file planted as a link to a root-only file
        std::os::unix::fs::symlink(secret.path(), d.join(REJECTED).join("x.json.reason")).unwrap();
        std::fs::write(d.join("x.json"), "not json").unwrap();
        reject(&inbox, OsStr::new("x.json"), "not a valid release");
        assert_eq!(std::fs::read_to_string(secret.path()).unwrap(), "root only");
        // rejected/ replaced by a link to a directory elsewhere
        let outside = tempfile::tempdir().unwrap();
        std::fs::remove_dir_all(d.join(REJECTED)).unwrap();
        std::os::unix::fs::symlink(outside.path(), d.join(REJECTED)).unwrap();
        std::fs::write(d.join("y.json"), "not json").unwrap();
        reject(&inbox, OsStr::new("y.json"), "not a valid release");
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
        let rejected = std::fs::symlink_metadata(d.join(REJECTED)).unwrap();
        assert!(rejected.is_dir(), "made again as a real directory");
        assert!(reason(d, "y.json").contains("not a valid release"));
    }

    #[test]
    fn both_formats_parse_and_unknown_fields_are_named() {
        let r = parse(r#"{"service":"web","image":"web:2"}"#, Format::Json).unwrap();
        assert_eq!(r.image, "web:2");
        let r = parse("service = \"web\"\nimage = \"web:3\"\n", Format::Toml).unwrap();
        assert_eq!(r.image, "web:3");
        let err = parse(
            r#"{"service":"web","image":"web:2","colour":"red"}"#,
            Format::Json,
        )
        .unwrap_err();
        assert!(err.contains("colour"), "{err}");
    }
}
