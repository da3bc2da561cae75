//! A directory held open by descriptor, for directories that someone other than root may write
//! (the inbox): every name is resolved relative to the descriptor and never through a link, files
//! are opened without blocking and checked by descriptor, and nothing is written over an
//! existing name. So a name swapped for a link, a FIFO or another directory between a check and
//! its use cannot redirect what the daemon reads or writes.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

fn c_name(name: &OsStr) -> io::Result<CString> {
    if name.as_bytes().contains(&b'/') || name.is_empty() || name == "." || name == ".." {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a plain file name"),
        ));
    }
    CString::new(name.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a name with a NUL byte"))
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

impl Dir {
    /// Opens the directory at `path` (trusted: its parents are root's).
    pub fn open(path: &Path) -> io::Result<Dir> {
        let c = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path with a NUL byte"))?;
        // SAFETY: a valid C string; the descriptor returned is owned below.
        let fd = check(unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        })?;
        Ok(Dir {
            // SAFETY: `fd` was just opened and is owned by nothing else.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn openat(&self, name: &OsStr, flags: libc::c_int, mode: libc::c_uint) -> io::Result<OwnedFd> {
        let c = c_name(name)?;
        // SAFETY: a valid descriptor and C string; the descriptor returned is owned below.
        let fd = check(unsafe {
            libc::openat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                flags | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                mode,
            )
        })?;
        // SAFETY: just opened, owned by nothing else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// The subdirectory `name`, only if it is a real directory (not a link) owned by this process's
    /// user: a directory planted or replaced by someone else is not ours to write into.
    pub fn sub(&self, name: &str) -> io::Result<Dir> {
        let fd = self.openat(OsStr::new(name), libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
        let file = File::from(fd);
        // SAFETY: geteuid cannot fail.
        let me = unsafe { libc::geteuid() };
        if file.metadata()?.uid() != me {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{} is not owned by uid {me}",
                    self.path.join(name).display()
                ),
            ));
        }
        Ok(Dir {
            fd: OwnedFd::from(file),
            path: self.path.join(name),
        })
    }

    /// The subdirectory `name`, made again when it is missing or not ours (a link, a file, a
    /// directory of someone else's): what was there is renamed aside, never followed.
    pub fn ensure_sub(&self, name: &str, mode: libc::mode_t) -> io::Result<Dir> {
        match self.sub(name) {
            Ok(d) => return Ok(d),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                let aside = format!(".{name}.replaced-{}", crate::clock::now_ms());
                tracing::warn!(dir = %self.path.join(name).display(), error = %e, aside, "inbox directory replaced by someone else: moved aside, made again");
                self.rename(OsStr::new(name), self, OsStr::new(&aside))?;
            }
        }
        let c = c_name(OsStr::new(name))?;
        // SAFETY: a valid descriptor and C string.
        match check(unsafe { libc::mkdirat(self.fd.as_raw_fd(), c.as_ptr(), mode) }) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        self.sub(name)
    }

    /// Opens `name` for reading without following a link and without blocking (a FIFO opens at
    /// once); the caller checks what it is by the descriptor.
    pub fn open_read(&self, name: &OsStr) -> io::Result<File> {
        self.openat(name, libc::O_RDONLY | libc::O_NONBLOCK, 0)
            .map(File::from)
    }

    /// Creates `name`, failing if anything (a link included) already has that name.
    pub fn create_new(&self, name: &OsStr, mode: libc::c_uint) -> io::Result<File> {
        self.openat(name, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL, mode)
            .map(File::from)
    }

    /// Whether anything has `name` here (a dangling link too).
    pub fn has(&self, name: &OsStr) -> bool {
        let Ok(c) = c_name(name) else { return false };
        // SAFETY: a zeroed stat is a valid out-parameter; valid descriptor and C string.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        unsafe {
            libc::fstatat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            ) == 0
        }
    }

    /// Renames `name` here to `new` in `to` (the entry itself: a link is moved, not followed).
    pub fn rename(&self, name: &OsStr, to: &Dir, new: &OsStr) -> io::Result<()> {
        let (a, b) = (c_name(name)?, c_name(new)?);
        // SAFETY: valid descriptors and C strings.
        check(unsafe {
            libc::renameat(
                self.fd.as_raw_fd(),
                a.as_ptr(),
                to.fd.as_raw_fd(),
                b.as_ptr(),
            )
        })
        .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::fs::{symlink, FileTypeExt};

    fn setup() -> (tempfile::TempDir, Dir, std::path::PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let inbox = t.path().join("inbox");
        std::fs::create_dir(&inbox).unwrap();
        let outside = t.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("secret"), "root only").unwrap();
        (t, Dir::open(&inbox).unwrap(), outside)
    }

    #[test]
    fn a_link_is_never_opened_through() {
        let (_t, dir, outside) = setup();
        symlink(outside.join("secret"), dir.path().join("release.json")).unwrap();
        let e = dir.open_read(OsStr::new("release.json")).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ELOOP), "{e}");
        assert!(
            dir.has(OsStr::new("release.json")),
            "the link itself is seen"
        );
    }

    #[test]
    fn a_fifo_opens_at_once_and_is_told_apart_by_its_descriptor() {
        let (_t, dir, _) = setup();
        nix::unistd::mkfifo(&dir.path().join("pipe"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let f = dir.open_read(OsStr::new("pipe")).unwrap();
        assert!(f.metadata().unwrap().file_type().is_fifo());
    }

    #[test]
    fn create_new_refuses_a_planted_link_and_writes_nothing_through_it() {
        let (_t, dir, outside) = setup();
        symlink(outside.join("secret"), dir.path().join("x.reason")).unwrap();
        let e = dir.create_new(OsStr::new("x.reason"), 0o644).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists, "{e}");
        assert_eq!(
            std::fs::read_to_string(outside.join("secret")).unwrap(),
            "root only"
        );
        let mut f = dir.create_new(OsStr::new("y.reason"), 0o644).unwrap();
        f.write_all(b"why").unwrap();
        let mut back = String::new();
        dir.open_read(OsStr::new("y.reason"))
            .unwrap()
            .read_to_string(&mut back)
            .unwrap();
        assert_eq!(back, "why");
    }

    #[test]
    fn a_subdirectory_replaced_by_a_link_is_moved_aside_and_made_again() {
        let (_t, dir, outside) = setup();
        symlink(&outside, dir.path().join("rejected")).unwrap();
        assert!(dir.sub("rejected").is_err(), "a link is not our directory");
        let sub = dir.ensure_sub("rejected", 0o750).unwrap();
        let meta = std::fs::symlink_metadata(dir.path().join("rejected")).unwrap();
        assert!(meta.is_dir(), "a real directory now");
        sub.create_new(OsStr::new("f"), 0o644).unwrap();
        assert!(
            !outside.join("f").exists(),
            "nothing written into the link's target"
        );
        let aside: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with(".rejected.replaced-"))
            .collect();
        assert_eq!(aside.len(), 1, "the link kept aside for the operator");
    }

    #[test]
    fn rename_moves_a_link_itself() {
        let (_t, dir, outside) = setup();
        let to = dir.ensure_sub("rejected", 0o750).unwrap();
        symlink(outside.join("secret"), dir.path().join("l")).unwrap();
        dir.rename(OsStr::new("l"), &to, OsStr::new("l")).unwrap();
        let moved = std::fs::symlink_metadata(to.path().join("l")).unwrap();
        assert!(moved.file_type().is_symlink());
        assert!(outside.join("secret").exists());
    }
}
