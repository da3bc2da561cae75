//! Faults made for real: a full file system (a small tmpfs filled up) and a Docker socket that
//! goes away (a forwarding socket in front of the engine's, cut and restored).
#![allow(dead_code)]

use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::process::Watchdog;

/// A tmpfs of `size_kib` mounted at `dir` (needs root, as hotswapd has on a host), unmounted when
/// dropped, or by a watchdog if the test process dies first.
pub struct Tmpfs {
    pub dir: PathBuf,
    watchdog: Watchdog,
}

impl Tmpfs {
    pub fn mount(dir: &Path, size_kib: u64) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_kib}k,mode=0755")])
            .arg("tmpfs")
            .arg(dir)
            .output()
            .expect("running mount");
        assert!(
            out.status.success(),
            "this test needs to mount a small tmpfs to fill it up (root, or CAP_SYS_ADMIN): mount said {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs {
            dir: dir.to_owned(),
            watchdog: Watchdog::start("umount -l \"$1\"", &[dir.to_str().unwrap()]),
        }
    }

    /// Fills the file system to the last byte with a file `fill`.
    pub fn fill(&self) {
        use std::io::Write;
        let mut f = std::fs::File::create(self.dir.join("fill")).unwrap();
        let block = vec![0u8; 4096];
        loop {
            match f.write(&block) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling {}: {e}", self.dir.display()),
            }
        }
        // the last partial block
        while let Ok(n) = f.write(&block[..1]) {
            if n == 0 {
                break;
            }
        }
        let _ = f.sync_all();
    }

    pub fn free(&self) {
        std::fs::remove_file(self.dir.join("fill")).unwrap();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// A Unix socket that forwards to Docker's, which a test can cut (the socket file gone, every
/// open connection closed, as when dockerd stops) and restore.
pub struct DockerSocket {
    pub path: PathBuf,
    upstream: PathBuf,
    state: Arc<Shared>,
}

struct Shared {
    cut: AtomicBool,
    open: Mutex<Vec<UnixStream>>,
}

impl DockerSocket {
    pub fn start(path: &Path) -> DockerSocket {
        let upstream = std::env::var("DOCKER_HOST")
            .ok()
            .and_then(|h| h.strip_prefix("unix://").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("/var/run/docker.sock"));
        let s = DockerSocket {
            path: path.to_owned(),
            upstream,
            state: Arc::new(Shared {
                cut: AtomicBool::new(false),
                open: Mutex::new(Vec::new()),
            }),
        };
        s.listen();
        s
    }

    fn listen(&self) {
        let _ = std::fs::remove_file(&self.path);
        let listener = UnixListener::bind(&self.path).expect("binding the Docker socket stand-in");
        let (state, upstream) = (self.state.clone(), self.upstream.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if state.cut.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = UnixStream::connect(&upstream) else {
                    continue;
                };
                let mut open = state.open.lock().unwrap();
                open.push(client.try_clone().unwrap());
                open.push(server.try_clone().unwrap());
                pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                pipe(server, client);
            }
        });
    }

    /// Docker is gone: connecting fails, and what was open is closed.
    pub fn cut(&self) {
        self.state.cut.store(true, Ordering::SeqCst);
        // wakes the accept loop so it sees `cut`
        let _ = UnixStream::connect(&self.path);
        let _ = std::fs::remove_file(&self.path);
        for s in self.state.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    pub fn restore(&self) {
        self.state.cut.store(false, Ordering::SeqCst);
        self.listen();
    }
}

impl Drop for DockerSocket {
    fn drop(&mut self) {
        self.cut();
    }
}

fn pipe(mut from: UnixStream, mut to: UnixStream) {
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(std::net::Shutdown::Write);
    });
}
