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
    #[error("sending {signal} to pid {pid}: {source}")]
    Signal {
        signal: Signal,
        pid: i32,
        source: nix::errno::Errno,
    },
}

pub fn read_pid(pidfile: &Path) -> Result<i32, ProcessError> {
    let text = std::fs::read_to_string(pidfile).map_err(|source| ProcessError::Pidfile {
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
}
