//! Unpacking a code bundle (a .tar.gz or a directory) into a fresh release directory, refusing
//! anything that could reach outside it: absolute paths, `..`, links pointing outside, device
//! files and fifos.

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("bundle {bundle}: entry {entry:?} {why}")]
    Unsafe {
        bundle: String,
        entry: String,
        why: String,
    },
    #[error("bundle {bundle}: {source}")]
    Io { bundle: String, source: io::Error },
    #[error("bundle {0} is neither a directory nor a .tar.gz / .tgz / .tar file")]
    Kind(String),
}

/// A relative path with only normal components (no root, no `..`, no `.` tricks).
fn clean_relative(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(out)
}

/// Does a link at `link` (relative to the release root) pointing to `target` stay inside?
fn link_stays_inside(link: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return false;
    }
    let mut depth: i64 = link
        .parent()
        .map(|p| p.components().count() as i64)
        .unwrap_or(0);
    for c in target.components() {
        match c {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            _ => return false,
        }
        if depth < 0 {
            return false;
        }
    }
    true
}

/// Unpacks `bundle` into `dest` (which must not exist yet). On error `dest` is removed.
pub fn unpack(bundle: &Path, dest: &Path) -> Result<(), BundleError> {
    let name = bundle.display().to_string();
    let io_err = |source: io::Error| BundleError::Io {
        bundle: name.clone(),
        source,
    };
    let meta = fs::metadata(bundle).map_err(io_err)?;
    fs::create_dir_all(dest.parent().unwrap_or(Path::new("/"))).map_err(io_err)?;
    fs::create_dir(dest).map_err(io_err)?;
    let result = if meta.is_dir() {
        copy_dir(bundle, dest, Path::new(""), &name)
    } else {
        let lower = name.to_ascii_lowercase();
        if lower.ends_with(".tar.gz") || lower.ends_with(".tgz") {
            let f = crate::fsutil::open_regular(bundle).map_err(io_err)?;
            unpack_tar(
                tar::Archive::new(flate2::read::GzDecoder::new(f)),
                dest,
                &name,
            )
        } else if lower.ends_with(".tar") {
            unpack_tar(
                tar::Archive::new(crate::fsutil::open_regular(bundle).map_err(io_err)?),
                dest,
                &name,
            )
        } else {
            Err(BundleError::Kind(name.clone()))
        }
    };
    let result = result.and_then(|()| links_resolve_inside(dest, Path::new(""), &name));
    if result.is_err() {
        let _ = fs::remove_dir_all(dest);
    }
    result
}

/// Every link in the unpacked release, followed through every link of its chain, must land inside
/// the release directory: each link's own target may look inside (`y -> x/..`, `z -> y/..`) while
/// the chain leaves it. A link that leads nowhere is harmless (the release is not written again).
fn links_resolve_inside(dest: &Path, rel: &Path, name: &str) -> Result<(), BundleError> {
    let io_err = |source: io::Error| BundleError::Io {
        bundle: name.to_string(),
        source,
    };
    let root = fs::canonicalize(dest).map_err(io_err)?;
    for e in fs::read_dir(dest.join(rel)).map_err(io_err)? {
        let e = e.map_err(io_err)?;
        let r = rel.join(e.file_name());
        let ft = e.file_type().map_err(io_err)?;
        if ft.is_dir() {
            links_resolve_inside(dest, &r, name)?;
        } else if ft.is_symlink() {
            let outside = |why: String| BundleError::Unsafe {
                bundle: name.to_string(),
                entry: r.display().to_string(),
                why,
            };
            match fs::canonicalize(e.path()) {
                Ok(real) if real.starts_with(&root) => {}
                Ok(real) => {
                    return Err(outside(format!(
                        "resolves through its links to {} outside the release directory",
                        real.display()
                    )))
                }
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => return Err(outside(format!("cannot be resolved: {err}"))),
            }
        }
    }
    Ok(())
}

fn unpack_tar<R: io::Read>(
    mut archive: tar::Archive<R>,
    dest: &Path,
    name: &str,
) -> Result<(), BundleError> {
    let io_err = |source: io::Error| BundleError::Io {
        bundle: name.to_string(),
        source,
    };
    for entry in archive.entries().map_err(io_err)? {
        let mut entry = entry.map_err(io_err)?;
        let raw = entry.path().map_err(io_err)?.into_owned();
        let unsafe_entry = |why: &str| BundleError::Unsafe {
            bundle: name.to_string(),
            entry: raw.display().to_string(),
            why: why.to_string(),
        };
        let rel = clean_relative(&raw)
            .ok_or_else(|| unsafe_entry("leaves the release directory (absolute or '..')"))?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        let kind = entry.header().entry_type();
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::Directory => {}
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(io_err)?
                    .ok_or_else(|| unsafe_entry("is a link without a target"))?;
                let inside = if kind == tar::EntryType::Link {
                    clean_relative(&target).is_some()
                } else {
                    link_stays_inside(&rel, &target)
                };
                if !inside {
                    return Err(unsafe_entry(&format!(
                        "links to {} outside the release directory",
                        target.display()
                    )));
                }
            }
            tar::EntryType::XGlobalHeader
            | tar::EntryType::XHeader
            | tar::EntryType::GNULongName
            | tar::EntryType::GNULongLink => continue,
            other => {
                return Err(unsafe_entry(&format!(
                    "is a {other:?} (device files, fifos and the like are refused)"
                )))
            }
        }
        // unpack_in refuses paths escaping dest as a second guard
        if !entry.unpack_in(dest).map_err(io_err)? {
            return Err(unsafe_entry("leaves the release directory"));
        }
    }
    Ok(())
}

fn copy_dir(src: &Path, dest: &Path, rel: &Path, name: &str) -> Result<(), BundleError> {
    let io_err = |source: io::Error| BundleError::Io {
        bundle: name.to_string(),
        source,
    };
    for e in fs::read_dir(src.join(rel)).map_err(io_err)? {
        let e = e.map_err(io_err)?;
        let r = rel.join(e.file_name());
        let ft = e.file_type().map_err(io_err)?;
        let unsafe_entry = |why: String| BundleError::Unsafe {
            bundle: name.to_string(),
            entry: r.display().to_string(),
            why,
        };
        if ft.is_symlink() {
            let target = fs::read_link(e.path()).map_err(io_err)?;
            if !link_stays_inside(&r, &target) {
                return Err(unsafe_entry(format!(
                    "links to {} outside the release directory",
                    target.display()
                )));
            }
            std::os::unix::fs::symlink(&target, dest.join(&r)).map_err(io_err)?;
        } else if ft.is_dir() {
            fs::create_dir(dest.join(&r)).map_err(io_err)?;
            copy_dir(src, dest, &r, name)?;
        } else if ft.is_file() {
            fs::copy(e.path(), dest.join(&r)).map_err(io_err)?;
        } else {
            return Err(unsafe_entry("is not a regular file, directory or link (device files, fifos and sockets are refused)".into()));
        }
    }
    Ok(())
}

/// The bundle's `VERSION` file (at its top), trimmed: what the new code should report.
pub fn read_version(bundle: &Path) -> Option<String> {
    let read = |mut r: Box<dyn io::Read>| {
        let mut s = String::new();
        io::Read::read_to_string(&mut r, &mut s).ok()?;
        Some(s.trim().to_string()).filter(|s| !s.is_empty())
    };
    if bundle.is_dir() {
        return read(Box::new(
            crate::fsutil::open_regular(&bundle.join("VERSION")).ok()?,
        ));
    }
    let f = crate::fsutil::open_regular(bundle).ok()?;
    let lower = bundle.to_string_lossy().to_ascii_lowercase();
    let reader: Box<dyn io::Read> = if lower.ends_with(".tar") {
        Box::new(f)
    } else {
        Box::new(flate2::read::GzDecoder::new(f))
    };
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().ok()? {
        let entry = entry.ok()?;
        let path = entry.path().ok()?.into_owned();
        if clean_relative(&path).as_deref() == Some(Path::new("VERSION")) {
            return read(Box::new(entry));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tgz(
        dir: &Path,
        name: &str,
        build: impl FnOnce(&mut tar::Builder<flate2::write::GzEncoder<fs::File>>),
    ) -> PathBuf {
        let p = dir.join(name);
        let f = fs::File::create(&p).unwrap();
        let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
            f,
            flate2::Compression::fast(),
        ));
        build(&mut b);
        b.into_inner().unwrap().finish().unwrap();
        p
    }

    fn file(b: &mut tar::Builder<flate2::write::GzEncoder<fs::File>>, path: &str, body: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        // set_path refuses '..', so write the name bytes directly, as a hostile tool would
        let name = &mut h.as_old_mut().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_cksum();
        b.append(&h, body).unwrap();
    }

    fn link(b: &mut tar::Builder<flate2::write::GzEncoder<fs::File>>, path: &str, target: &str) {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, path, target).unwrap();
    }

    #[test]
    fn a_chain_of_links_that_each_look_inside_but_lead_outside_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let b = tgz(d.path(), "chain.tar.gz", |b| {
            file(b, "x/app.py", b"print(1)");
            link(b, "y", "x/..");
            link(b, "z", "y/..");
        });
        let dest = d.path().join("releases/r1");
        let err = unpack(&b, &dest).unwrap_err().to_string();
        assert!(err.contains("\"z\"") && err.contains("outside"), "{err}");
        assert!(!dest.exists(), "nothing is left of a refused release");
        // the same as a directory bundle
        let src = d.path().join("dir");
        fs::create_dir_all(src.join("x")).unwrap();
        std::os::unix::fs::symlink("x/..", src.join("y")).unwrap();
        std::os::unix::fs::symlink("y/..", src.join("z")).unwrap();
        let dest = d.path().join("releases/r2");
        assert!(unpack(&src, &dest).is_err());
        assert!(!dest.exists());
    }

    #[test]
    fn a_good_bundle_unpacks_with_inside_links() {
        let d = tempfile::tempdir().unwrap();
        let b = tgz(d.path(), "ok.tar.gz", |b| {
            file(b, "app.py", b"print(1)");
            file(b, "lib/util.py", b"x = 1");
            link(b, "lib/app.py", "../app.py");
        });
        let dest = d.path().join("releases/r1");
        unpack(&b, &dest).unwrap();
        assert_eq!(
            fs::read_to_string(dest.join("lib/util.py")).unwrap(),
            "x = 1"
        );
        assert_eq!(read_version(&b), None);
        let v = tgz(d.path(), "v.tgz", |b| file(b, "./VERSION", b"7\n"));
        assert_eq!(read_version(&v).as_deref(), Some("7"));
        assert_eq!(
            fs::read_to_string(dest.join("lib/app.py")).unwrap(),
            "print(1)"
        );
    }

    #[test]
    fn escaping_paths_links_and_devices_are_refused_and_leave_nothing() {
        let d = tempfile::tempdir().unwrap();
        let cases: Vec<(
            &str,
            Box<dyn FnOnce(&mut tar::Builder<flate2::write::GzEncoder<fs::File>>)>,
            &str,
        )> = vec![
            (
                "dotdot.tgz",
                Box::new(|b| file(b, "../evil.py", b"x")),
                "leaves the release directory",
            ),
            (
                "abslink.tgz",
                Box::new(|b| link(b, "etc", "/etc")),
                "outside the release directory",
            ),
            (
                "uplink.tgz",
                Box::new(|b| link(b, "a/b", "../../x")),
                "outside the release directory",
            ),
            (
                "dev.tgz",
                Box::new(|b| {
                    let mut h = tar::Header::new_gnu();
                    h.set_entry_type(tar::EntryType::Char);
                    h.set_path("null").unwrap();
                    h.set_size(0);
                    h.set_cksum();
                    b.append(&h, &[][..]).unwrap();
                }),
                "device files",
            ),
        ];
        for (name, build, why) in cases {
            let b = tgz(d.path(), name, build);
            let dest = d.path().join("releases").join(name);
            let err = unpack(&b, &dest).unwrap_err().to_string();
            assert!(err.contains(why), "{name}: {err}");
            assert!(!dest.exists(), "{name}: nothing left behind");
        }
        assert!(!d.path().join("evil.py").exists());
    }

    #[test]
    fn directory_bundles_are_copied_with_the_same_rules() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        fs::create_dir_all(src.join("pkg")).unwrap();
        fs::write(src.join("pkg/a.py"), "a").unwrap();
        std::os::unix::fs::symlink("pkg/a.py", src.join("a.py")).unwrap();
        unpack(&src, &d.path().join("r1")).unwrap();
        assert_eq!(fs::read_to_string(d.path().join("r1/a.py")).unwrap(), "a");
        std::os::unix::fs::symlink("/etc/passwd", src.join("evil")).unwrap();
        let err = unpack(&src, &d.path().join("r2")).unwrap_err().to_string();
        assert!(err.contains("outside"), "{err}");
    }
}
