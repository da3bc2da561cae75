//! `<app_root>/releases/<id>/` and the `current` symlink, switched atomically (a new link under a
//! temporary name renamed over the old one).

use std::path::{Path, PathBuf};

pub struct Layout {
    pub root: PathBuf,
}

impl Layout {
    pub fn new(root: &Path) -> Layout {
        Layout {
            root: root.to_owned(),
        }
    }

    pub fn releases(&self) -> PathBuf {
        self.root.join("releases")
    }

    pub fn release(&self, id: &str) -> PathBuf {
        self.releases().join(id)
    }

    pub fn current_link(&self) -> PathBuf {
        self.root.join("current")
    }

    /// The release directory `current` points to, if any.
    pub fn current(&self) -> Option<PathBuf> {
        let target = std::fs::read_link(self.current_link()).ok()?;
        Some(if target.is_absolute() {
            target
        } else {
            self.root.join(target)
        })
    }

    /// Points `current` at `release` in one rename.
    pub fn switch(&self, release: &Path) -> std::io::Result<()> {
        let rel = release.strip_prefix(&self.root).unwrap_or(release);
        let tmp = self
            .root
            .join(format!(".current.tmp.{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(rel, &tmp)?;
        std::fs::rename(&tmp, self.current_link())?;
        std::fs::File::open(&self.root)?.sync_all()
    }

    /// Removes release directories other than `keep`.
    pub fn prune(&self, keep: &[&Path]) -> Vec<String> {
        let mut problems = Vec::new();
        let Ok(entries) = std::fs::read_dir(self.releases()) else {
            return problems;
        };
        for e in entries.flatten() {
            let p = e.path();
            if keep.iter().any(|k| *k == p) {
                continue;
            }
            if let Err(err) = std::fs::remove_dir_all(&p) {
                problems.push(format!("removing old release {}: {err}", p.display()));
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switch_points_current_and_prune_keeps_what_it_is_told() {
        let d = tempfile::tempdir().unwrap();
        let l = Layout::new(d.path());
        for id in ["a", "b", "c"] {
            std::fs::create_dir_all(l.release(id)).unwrap();
        }
        l.switch(&l.release("a")).unwrap();
        assert_eq!(l.current(), Some(l.release("a")));
        l.switch(&l.release("b")).unwrap();
        assert_eq!(l.current(), Some(l.release("b")));
        assert_eq!(
            std::fs::read_link(l.current_link()).unwrap(),
            Path::new("releases/b"),
            "relative link"
        );
        assert!(l.prune(&[&l.release("b"), &l.release("a")]).is_empty());
        assert!(!l.release("c").exists() && l.release("a").exists());
    }
}
