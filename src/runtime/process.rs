//! Local pre-fork servers (gunicorn, unicorn): the master found by its pidfile, signals, and the
//! processes around it, read from /proc.

use std::path::Path;

use std::path::PathBuf;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("reading pidfile {}: {source}", path.display())]
    Pidfile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("pidfile {} holds no pid", path.display())]
    NoPid { path: PathBuf },
    #[error("master pid {pid} from {} is not running", pidfile.display())]
    NotRunning { pid: i32, pidfile: PathBuf },
    #[error("no master runs (pidfile {}) and no start_command is configured", pidfile.display())]
    NoStartCommand { pidfile: PathBuf },
    #[error("start_command {program:?}: {why}")]
    StartCommand { program: String, why: String },
    #[error("sending {signal} to pid {pid}: {source}")]
    Signal {
        signal: Signal,
        pid: i32,
        source: nix::errno::Errno,
    },
}

pub fn read_pid(pidfile: &Path) -> Result<i32, ProcessError> {
    let text = crate::fsutil::read_bounded_string(pidfile, crate::fsutil::PIDFILE_MAX_BYTES)
        .map_err(|source| ProcessError::Pidfile {
            path: pidfile.to_owned(),
            source,
        })?;
    text.split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| ProcessError::NoPid {
            path: pidfile.to_owned(),
        })
}

/// Running and not a zombie.
pub fn alive(pid: i32) -> bool {
    if kill(Pid::from_raw(pid), None).is_err() {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            stat.rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next())
                != Some("Z")
        }
        Err(_) => false,
    }
}

pub fn signal(pid: i32, signal: Signal) -> Result<(), ProcessError> {
    kill(Pid::from_raw(pid), signal).map_err(|source| ProcessError::Signal {
        signal,
        pid,
        source,
    })
}

/// Direct children of `pid` (the workers of a pre-fork master).
pub fn children(pid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit(')')
                        .next()
                        .and_then(|r| r.split_whitespace().nth(1))
                        .and_then(|pp| pp.parse::<i32>().ok())
                })
                == Some(pid)
        })
        .collect()
}

/// Waits until `pid` exits, whoever its parent is (its pidfd turns readable); at once when it is
/// not running.
pub async fn exited(pid: i32) -> std::io::Result<()> {
    use std::os::fd::{FromRawFd, OwnedFd};
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ESRCH) => Ok(()),
            _ => Err(e),
        };
    }
    // SAFETY: `fd` was just opened and is owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // SAFETY: the descriptor is owned by the AsyncFd, which deregisters it before closing it.
    let fd = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
    }?;
    let _ready = fd.readable().await?;
    Ok(())
}

/// Waits until none of `pids` runs, or `until` (unix ms) passes; returns those still running.
pub async fn wait_gone(pids: &[i32], until: u64) -> Vec<i32> {
    loop {
        let left: Vec<i32> = pids.iter().copied().filter(|p| alive(*p)).collect();
        if left.is_empty() || crate::clock::now_ms() >= until {
            return left;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// A pre-fork server's world as its steps see it: pidfiles, processes, signals, the start
/// command. `Os` is the real one; the engine's unit tests run the steps on a fake gunicorn.
pub trait Server: Send + Sync + 'static {
    fn read_pid(&self, pidfile: &Path) -> Result<i32, ProcessError>;
    fn alive(&self, pid: i32) -> bool;
    fn signal(&self, pid: i32, signal: Signal) -> Result<(), ProcessError>;
    /// The workers of a master.
    fn children(&self, pid: i32) -> Vec<i32>;
    /// A stale pidfile removed (gunicorn refuses to start over one).
    fn remove_pidfile(&self, pidfile: &Path);
    /// Runs `start_command` to its end (the server daemonizes); why it failed.
    fn run(&self, argv: &[String]) -> impl std::future::Future<Output = Result<(), String>> + Send;
    /// Resolves when `pid` exits (at once when it does not run).
    fn exited(
        &self,
        pid: i32,
    ) -> impl std::future::Future<Output = std::io::Result<()>> + Send + 'static;

    /// Waits until none of `pids` runs, or `until` (unix ms) passes; returns those still running.
    fn wait_gone(
        &self,
        pids: &[i32],
        until: u64,
    ) -> impl std::future::Future<Output = Vec<i32>> + Send {
        let pids = pids.to_vec();
        async move {
            loop {
                let left: Vec<i32> = pids.iter().copied().filter(|p| self.alive(*p)).collect();
                if left.is_empty() || crate::clock::now_ms() >= until {
                    return left;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}

/// This host's processes, through /proc, signals and pidfds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Os;

impl Server for Os {
    fn read_pid(&self, pidfile: &Path) -> Result<i32, ProcessError> {
        read_pid(pidfile)
    }
    fn alive(&self, pid: i32) -> bool {
        alive(pid)
    }
    fn signal(&self, pid: i32, sig: Signal) -> Result<(), ProcessError> {
        signal(pid, sig)
    }
    fn children(&self, pid: i32) -> Vec<i32> {
        children(pid)
    }
    fn remove_pidfile(&self, pidfile: &Path) {
        let _ = std::fs::remove_file(pidfile);
    }
    async fn run(&self, argv: &[String]) -> Result<(), String> {
        let Some((program, args)) = argv.split_first() else {
            return Err("no command".into());
        };
        let status = tokio::process::Command::new(program)
            .args(args)
            .stdin(std::process::Stdio::null())
            .status()
            .await
            .map_err(|e| e.to_string())?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("exited with {status}"))
        }
    }
    fn exited(
        &self,
        pid: i32,
    ) -> impl std::future::Future<Output = std::io::Result<()>> + Send + 'static {
        exited(pid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_itself_alive_and_its_children() {
        let me = std::process::id() as i32;
        assert!(alive(me));
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        assert!(children(me).contains(&(child.id() as i32)));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!alive(child.id() as i32));
    }

    #[tokio::test]
    async fn notices_a_process_exit_that_is_not_its_child() {
        // `sh` starts `sleep` and waits for it: `sleep` is the sh's child, not ours
        let mut sh = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & echo $!; wait"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(sh.stdout.as_mut().unwrap()),
            &mut line,
        )
        .unwrap();
        let sleep: i32 = line.trim().parse().unwrap();
        let waiting = tokio::spawn(exited(sleep));
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(!waiting.is_finished(), "sleep still runs");
        signal(sleep, Signal::SIGKILL).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("the exit is noticed")
            .unwrap()
            .unwrap();
        sh.wait().unwrap();
        exited(sleep).await.unwrap();
    }
}
