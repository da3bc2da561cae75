//! A fake gunicorn: a master named by its pidfile, its workers, and what the signals do to them,
//! as gunicorn does it. HUP replaces the workers; USR2 starts a new master beside the old one,
//! which writes `<pidfile>.2`; TERM (or QUIT, INT, KILL) ends a master and its workers, and when
//! the old master ends during a handover the new one takes the pidfile. `start_command` starts a
//! master that writes the pidfile. Each call is recorded in the shared log.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use nix::sys::signal::Signal;
use tokio::sync::Notify;

use super::Calls;
use crate::runtime::process::{ProcessError, Server};

/// Workers each master runs.
const WORKERS: usize = 2;

#[derive(Default)]
pub struct GunicornState {
    next_pid: i32,
    live: BTreeSet<i32>,
    workers: BTreeMap<i32, Vec<i32>>,
    /// The pidfile each master writes.
    pidfile_of: BTreeMap<i32, PathBuf>,
    pub pidfiles: BTreeMap<PathBuf, i32>,
    /// A reload makes the master halt (code that fails to import, with `preload`).
    pub halts_on_reload: bool,
    /// `start_command` fails.
    pub start_fails: bool,
}

#[derive(Clone, Default)]
pub struct FakeGunicorn {
    pub state: Arc<Mutex<GunicornState>>,
    exits: Arc<Notify>,
    pub calls: Calls,
}

fn handover(pidfile: &Path) -> PathBuf {
    let mut name = pidfile.as_os_str().to_owned();
    name.push(".2");
    PathBuf::from(name)
}

impl GunicornState {
    fn spawn(&mut self) -> i32 {
        self.next_pid = self.next_pid.max(1000) + 1;
        self.live.insert(self.next_pid);
        self.next_pid
    }

    /// A master with its workers; it writes `pidfile`.
    fn start_master(&mut self, pidfile: &Path) -> i32 {
        let master = self.spawn();
        let workers = (0..WORKERS).map(|_| self.spawn()).collect();
        self.workers.insert(master, workers);
        self.pidfile_of.insert(master, pidfile.to_owned());
        self.pidfiles.insert(pidfile.to_owned(), master);
        master
    }

    fn end(&mut self, master: i32) {
        self.live.remove(&master);
        for w in self.workers.remove(&master).unwrap_or_default() {
            self.live.remove(&w);
        }
        let Some(pidfile) = self.pidfile_of.remove(&master) else {
            return;
        };
        if self.pidfiles.get(&handover(&pidfile)) == Some(&master) {
            // a new master that ends before the handover takes its <pidfile>.2 with it
            self.pidfiles.remove(&handover(&pidfile));
        }
        if self.pidfiles.get(&pidfile) == Some(&master) {
            self.pidfiles.remove(&pidfile);
            // the new master of a handover renames <pidfile>.2 in its place
            if let Some(new) = self.pidfiles.remove(&handover(&pidfile)) {
                self.pidfiles.insert(pidfile.clone(), new);
                self.pidfile_of.insert(new, pidfile);
            }
        }
    }
}

impl FakeGunicorn {
    /// A server already running (started outside hotswapd), writing `pidfile`.
    pub fn running(pidfile: &Path, calls: Calls) -> FakeGunicorn {
        let g = FakeGunicorn {
            calls,
            ..Default::default()
        };
        g.state.lock().unwrap().start_master(pidfile);
        g
    }

    /// The master `pidfile` names, if it runs.
    pub fn master(&self, pidfile: &Path) -> Option<i32> {
        let s = self.state.lock().unwrap();
        s.pidfiles
            .get(pidfile)
            .copied()
            .filter(|p| s.live.contains(p))
    }

    /// The master and its workers killed (SIGKILL from outside); the pidfile stays.
    pub fn kill(&self, master: i32) {
        let mut s = self.state.lock().unwrap();
        s.live.remove(&master);
        for w in s.workers.remove(&master).unwrap_or_default() {
            s.live.remove(&w);
        }
        drop(s);
        self.exits.notify_waiters();
    }
}

impl Server for FakeGunicorn {
    fn read_pid(&self, pidfile: &Path) -> Result<i32, ProcessError> {
        self.state
            .lock()
            .unwrap()
            .pidfiles
            .get(pidfile)
            .copied()
            .ok_or_else(|| ProcessError::Pidfile {
                path: pidfile.to_owned(),
                source: std::io::ErrorKind::NotFound.into(),
            })
    }

    fn alive(&self, pid: i32) -> bool {
        self.state.lock().unwrap().live.contains(&pid)
    }

    fn signal(&self, pid: i32, signal: Signal) -> Result<(), ProcessError> {
        self.calls.push(format!("server signal {pid} {signal}"));
        let mut s = self.state.lock().unwrap();
        if !s.live.contains(&pid) {
            return Err(ProcessError::Signal {
                signal,
                pid,
                source: nix::errno::Errno::ESRCH,
            });
        }
        match signal {
            Signal::SIGHUP if s.halts_on_reload => s.end(pid),
            Signal::SIGHUP => {
                for w in s.workers.remove(&pid).unwrap_or_default() {
                    s.live.remove(&w);
                }
                let workers = (0..WORKERS).map(|_| s.spawn()).collect();
                s.workers.insert(pid, workers);
            }
            Signal::SIGUSR2 => {
                let pidfile = s.pidfile_of.get(&pid).cloned().unwrap_or_default();
                let new = s.start_master(&handover(&pidfile));
                // it writes <pidfile>.2 until the old master is gone
                s.pidfile_of.insert(new, pidfile);
            }
            Signal::SIGTERM | Signal::SIGQUIT | Signal::SIGINT | Signal::SIGKILL => s.end(pid),
            _ => {}
        }
        drop(s);
        self.exits.notify_waiters();
        Ok(())
    }

    fn children(&self, pid: i32) -> Vec<i32> {
        let s = self.state.lock().unwrap();
        s.workers.get(&pid).cloned().unwrap_or_default()
    }

    fn remove_pidfile(&self, pidfile: &Path) {
        self.state.lock().unwrap().pidfiles.remove(pidfile);
    }

    async fn run(&self, argv: &[String]) -> Result<(), String> {
        self.calls.push(format!("server run {}", argv.join(" ")));
        let mut s = self.state.lock().unwrap();
        if s.start_fails {
            return Err("exited with exit status: 1".into());
        }
        // the fake's start command is `gunicorn --pid PIDFILE ...`
        let pidfile = argv
            .iter()
            .skip_while(|a| *a != "--pid")
            .nth(1)
            .ok_or("the fake start command needs --pid PIDFILE")?;
        s.start_master(Path::new(pidfile));
        Ok(())
    }

    fn exited(
        &self,
        pid: i32,
    ) -> impl std::future::Future<Output = std::io::Result<()>> + Send + 'static {
        let (state, exits) = (self.state.clone(), self.exits.clone());
        async move {
            loop {
                let told = exits.notified();
                if !state.lock().unwrap().live.contains(&pid) {
                    return Ok(());
                }
                told.await;
            }
        }
    }
}
