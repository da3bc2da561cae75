//! Atomic file writes: temp file, fsync, rename, fsync of the directory. A reader sees the old
//! content or the new, never a torn one, even across a crash.

use std::io::Write;
use std::path::Path;

pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Appends one whole line and fsyncs it: for the reports file, where a line once written must
/// stay and a reader must never see two lines run together. One writer at a time; a write that
/// fails part way (a full disk) is taken back, and a line left unterminated by an older writer is
/// ended before the new one.
pub fn append_line(path: &Path, line: &str) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = f.metadata()?;
    if !meta.file_type().is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} is not a regular file", path.display()),
        ));
    }
    let before = meta.len();
    let mut buf = Vec::with_capacity(line.len() + 2);
    if before > 0 {
        let mut last = [0u8; 1];
        f.read_exact_at(&mut last, before - 1)?;
        if last[0] != b'\n' {
            buf.push(b'\n');
        }
    }
    buf.extend_from_slice(line.as_bytes());
    buf.push(b'\n');
    if let Err(e) = f.write_all(&buf).and_then(|()| f.sync_data()) {
        let _ = f.set_len(before);
        return Err(e);
    }
    Ok(())
}

/// Opens a file for reading only if it is a regular file, without ever blocking on a FIFO (it is
/// opened non-blocking, then checked by descriptor, so a swap after a check cannot fool it).
pub fn open_regular(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let kind = f.metadata()?.file_type();
    if !kind.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} is not a regular file", path.display()),
        ));
    }
    Ok(f)
}

/// The largest pidfile read: a pid and a newline.
pub const PIDFILE_MAX_BYTES: u64 = 4096;
/// The largest config file read (hotswap's, HAProxy's, Docker's config.json).
pub const CONFIG_MAX_BYTES: u64 = 16 << 20;

/// Reads a whole state file that another process could have replaced: only a regular file
/// (never blocking on a FIFO, never reading a device such as `/dev/zero`), and at most `limit`
/// bytes. A larger file is an `InvalidData` error naming the limit: nothing is read past it.
pub fn read_bounded(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let f = open_regular(path)?;
    let len = f.metadata()?.len();
    if len > limit {
        return Err(too_large(path, limit));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    f.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        // it grew while being read
        return Err(too_large(path, limit));
    }
    Ok(bytes)
}

/// `read_bounded` as UTF-8 text.
pub fn read_bounded_string(path: &Path, limit: u64) -> std::io::Result<String> {
    String::from_utf8(read_bounded(path, limit)?).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} is not UTF-8 text", path.display()),
        )
    })
}

fn too_large(path: &Path, limit: u64) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!(
            "{} is larger than {} bytes, more than this file can hold",
            path.display(),
            limit
        ),
    )
}

/// Whether an error from `read_bounded` says the file itself is wrong (not a regular file, too
/// large, not text), as opposed to one that may pass (a permission, an I/O error).
pub fn is_damaged(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData
    ) || e.raw_os_error() == Some(libc::ELOOP)
}

/// Moves a damaged state file aside (`<name>.damaged-<unix ms>`), keeping it for the operator;
/// returns where it went.
pub fn move_aside(path: &Path) -> std::io::Result<std::path::PathBuf> {
    let stamp = crate::clock::now_ms();
    // two files damaged within one millisecond keep a name each: a rename would replace
    let to = (0u32..)
        .map(|n| {
            let mut name = path.as_os_str().to_owned();
            match n {
                0 => name.push(format!(".damaged-{stamp}")),
                n => name.push(format!(".damaged-{stamp}-{n}")),
            }
            std::path::PathBuf::from(name)
        })
        .find(|to| std::fs::symlink_metadata(to).is_err())
        .expect("a free name");
    std::fs::rename(path, &to)?;
    if let Some(dir) = path.parent() {
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(to)
}

/// Hex sha256 of a file, read in chunks off the async runtime.
pub async fn sha256_file(path: &Path) -> std::io::Result<String> {
    use sha2::Digest;
    use std::io::Read;
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut f = open_regular(&path)?;
        let mut hasher = sha2::Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        Ok(hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect())
    })
    .await
    .expect("hashing task")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_regular_refuses_a_fifo_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("bundle.tar");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let err = open_regular(&fifo).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
        assert!(open_regular(dir.path()).is_err());
        let file = dir.path().join("ok");
        std::fs::write(&file, b"x").unwrap();
        assert!(open_regular(&file).is_ok());
    }

    #[test]
    fn read_bounded_refuses_devices_fifos_and_files_past_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let zero = dir.path().join("journal.json");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        let e = read_bounded(&zero, 1 << 20).unwrap_err();
        assert!(
            is_damaged(&e) && e.to_string().contains("not a regular file"),
            "{e}"
        );
        let fifo = dir.path().join("queue.json");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(is_damaged(&read_bounded(&fifo, 10).unwrap_err()));
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'x'; 11]).unwrap();
        let e = read_bounded(&big, 10).unwrap_err();
        assert!(
            is_damaged(&e) && e.to_string().contains("larger than 10 bytes"),
            "{e}"
        );
        assert_eq!(read_bounded(&big, 11).unwrap().len(), 11);
        let missing = read_bounded(&dir.path().join("missing"), 10).unwrap_err();
        assert_eq!(missing.kind(), std::io::ErrorKind::NotFound);
        assert!(!is_damaged(&missing));
        let aside = move_aside(&fifo).unwrap();
        assert!(!fifo.exists() && aside.to_string_lossy().contains("queue.json.damaged-"));
        // damaged again at once: both kept, whatever the clock says
        let journal = dir.path().join("web.json");
        let mut kept = std::collections::BTreeSet::new();
        for _ in 0..5 {
            std::fs::write(&journal, b"{").unwrap();
            kept.insert(move_aside(&journal).unwrap());
        }
        assert_eq!(kept.len(), 5, "{kept:?}");
        assert!(kept.iter().all(|p| p.exists()));
    }

    #[test]
    fn append_line_ends_a_torn_line_before_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("reports.jsonl");
        append_line(&p, "{\"a\":1}").unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .unwrap()
            .write_all(b"{\"torn\":")
            .unwrap();
        append_line(&p, "{\"b\":2}").unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines, ["{\"a\":1}", "{\"torn\":", "{\"b\":2}"]);
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn write_atomic_replaces_content_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
    }
}
