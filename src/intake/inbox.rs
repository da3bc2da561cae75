//! The inbox directory: a release file (JSON or TOML, the fields of a deploy request) written
//! elsewhere and renamed in is picked up at once. Good files move to `accepted/` once their
//! release is journaled; bad ones to `rejected/` with a `.reason` file beside them. Hidden and
//! temporary names are ignored (write `.name.tmp`, then rename); symlinks and anything that is not
//! a regular file directly in the inbox are refused. Files already there at start are processed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::control::api::{DeployRequest, MAX_BODY};
use crate::intake;
use crate::registry::Registry;

pub const ACCEPTED: &str = "accepted";
pub const REJECTED: &str = "rejected";

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

#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Not ours to look at (temporary, hidden, other extension, gone, a directory).
    Ignore,
    Reject(String),
    Read(Format),
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Format {
    Json,
    Toml,
}

pub fn watch(shared: Arc<Registry>, dir: &Path) -> anyhow::Result<Inbox> {
    for d in [dir.to_path_buf(), dir.join(ACCEPTED), dir.join(REJECTED)] {
        std::fs::create_dir_all(&d)?;
    }
    let dir = dir.canonicalize()?;
    tracing::info!(dir = %dir.display(), "watching inbox");
    let (tx, mut rx) = mpsc::unbounded_channel::<PathBuf>();
    let mut watcher =
        notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
            Ok(ev) if is_arrival(&ev.kind) => {
                for p in ev.paths {
                    let _ = tx.send(p);
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "inbox watcher"),
        })?;
    // Watch first, then scan: a file arriving in between is seen twice, never missed.
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    let existing: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    let task = tokio::spawn(async move {
        for path in existing {
            process(&shared, &dir, &path);
        }
        while let Some(path) = rx.recv().await {
            process(&shared, &dir, &path);
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

fn judge(dir: &Path, path: &Path) -> Verdict {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return Verdict::Ignore;
    };
    if name.starts_with('.')
        || name.ends_with('~')
        || [".tmp", ".part", ".swp"].iter().any(|s| name.ends_with(s))
    {
        return Verdict::Ignore;
    }
    if path.parent() != Some(dir) {
        return Verdict::Reject(format!(
            "{} is not directly in the inbox {}",
            path.display(),
            dir.display()
        ));
    }
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(_) => return Verdict::Ignore,
    };
    if meta.file_type().is_symlink() {
        return Verdict::Reject(
            "symlinks are refused: write the release file itself into the inbox".into(),
        );
    }
    if meta.is_dir() {
        return Verdict::Ignore;
    }
    if !meta.is_file() {
        return Verdict::Reject("not a regular file".into());
    }
    let format = match Path::new(name).extension().and_then(|e| e.to_str()) {
        Some("json") => Format::Json,
        Some("toml") => Format::Toml,
        _ => return Verdict::Reject("release files end in .json or .toml".into()),
    };
    if meta.len() > MAX_BODY as u64 {
        return Verdict::Reject(format!(
            "{} bytes: release files are at most {MAX_BODY} bytes",
            meta.len()
        ));
    }
    Verdict::Read(format)
}

fn parse(text: &str, format: Format) -> Result<DeployRequest, String> {
    match format {
        Format::Json => {
            serde_json::from_str(text).map_err(|e| format!("not a valid release (JSON): {e}"))
        }
        Format::Toml => toml::from_str(text)
            .map_err(|e| format!("not a valid release (TOML): {}", e.to_string().trim_end())),
    }
}

fn process(shared: &Registry, dir: &Path, path: &Path) {
    let format = match judge(dir, path) {
        Verdict::Ignore => return,
        Verdict::Reject(why) => return reject(dir, path, &why),
        Verdict::Read(f) => f,
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => return reject(dir, path, &format!("cannot read it: {e}")),
    };
    let req = match parse(&text, format) {
        Ok(r) => r,
        Err(why) => return reject(dir, path, &why),
    };
    match intake::accept(shared, req) {
        Ok(a) => {
            let to = move_into(dir, path, ACCEPTED);
            tracing::info!(file = %path.display(), moved_to = %to.display(), deploy_id = %a.deploy_id, service = %a.service, new = a.accepted, "inbox release accepted");
        }
        Err(refusal) => reject(dir, path, &refusal.to_string()),
    }
}

/// Moves the file into `sub/` under a free name and returns where it went.
fn move_into(dir: &Path, path: &Path, sub: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut to = dir.join(sub).join(&name);
    if to.exists() {
        to = dir
            .join(sub)
            .join(format!("{}.{name}", crate::clock::now_ms()));
    }
    if let Err(e) = std::fs::rename(path, &to) {
        tracing::error!(file = %path.display(), error = %e, "cannot move inbox file");
    }
    to
}

fn reject(dir: &Path, path: &Path, why: &str) {
    let to = move_into(dir, path, REJECTED);
    let reason = to.with_file_name(format!(
        "{}.reason",
        to.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    if let Err(e) = std::fs::write(&reason, format!("{why}\n")) {
        tracing::error!(file = %reason.display(), error = %e, "cannot write reason file");
    }
    tracing::warn!(file = %path.display(), moved_to = %to.display(), reason = why, "inbox release rejected");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_hidden_and_foreign_names_are_judged_before_reading() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for name in [".web.json", "web.json.tmp", "web.json.part", "web.json~"] {
            std::fs::write(d.join(name), "{}").unwrap();
            assert_eq!(judge(d, &d.join(name)), Verdict::Ignore, "{name}");
        }
        std::fs::write(d.join("web.json"), "{}").unwrap();
        assert_eq!(judge(d, &d.join("web.json")), Verdict::Read(Format::Json));
        std::fs::write(d.join("web.yaml"), "{}").unwrap();
        assert!(matches!(judge(d, &d.join("web.yaml")), Verdict::Reject(_)));
        std::os::unix::fs::symlink("/etc/passwd", d.join("evil.json")).unwrap();
        assert!(
            matches!(judge(d, &d.join("evil.json")), Verdict::Reject(r) if r.contains("symlink"))
        );
        assert!(matches!(
            judge(d, Path::new("/tmp/elsewhere.json")),
            Verdict::Reject(_)
        ));
        assert_eq!(judge(d, &d.join("gone.json")), Verdict::Ignore);
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
