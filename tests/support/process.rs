//! Child processes of tests and benches that never outlive them.
//!
//! - [`Guarded::spawn`] (HAProxy, hotswapd, moto, a waiting hotswapctl): the child leads its own
//!   process group, and dropping the guard (end of the test, or a panic unwinding) SIGKILLs the
//!   whole group (the other members first, for the leader to reap) and reaps the leader. The child also gets `PR_SET_PDEATHSIG` = SIGKILL, so the
//!   kernel kills it when the test process dies without unwinding (SIGKILL, abort, `exit`).
//!   PDEATHSIG fires when the *thread* that forked the child exits, not the process: guarded
//!   children are therefore forked by one spawner thread that lives as long as the process, so a
//!   child started from a short-lived thread (a tokio blocking-pool thread, a shared server
//!   started from a `OnceLock` by whichever test came first) is not killed when that thread ends.
//! - [`die_with_caller`] for a command run to completion (`output()`, `status()`): the calling
//!   thread is blocked in it, so tying the child to that thread is right.
//! - [`Watchdog`] for what PDEATHSIG cannot reach: processes that daemonize (gunicorn forks twice
//!   and calls setsid; PDEATHSIG is cleared on fork) and containers, which dockerd runs. A small
//!   shell in its own process group waits on a pipe from this process; if the pipe closes
//!   without the guard having said "done" (the process died), it runs its clean-up script.
#![allow(dead_code)]

use std::io::Write;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

/// Makes the child get SIGKILL when the thread that forks it exits (see the module docs).
pub fn die_with_caller(cmd: &mut Command) -> &mut Command {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: prctl and getppid are async-signal-safe; nothing is allocated.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            // our parent died between fork and prctl: nobody would kill us any more
            if libc::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        })
    }
}

type Job = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Forks `cmd` on the spawner thread, which never exits before the process does.
fn spawn_on_long_lived_thread(cmd: Command) -> std::io::Result<Child> {
    static SPAWNER: OnceLock<mpsc::Sender<Job>> = OnceLock::new();
    let jobs = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("support-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("starting the spawner thread");
        tx
    });
    let (tx, rx) = mpsc::channel();
    jobs.send((cmd, tx)).expect("spawner thread gone");
    rx.recv().expect("spawner thread gone")
}

/// A child process (and its process group) killed when dropped; see the module docs.
pub struct Guarded {
    child: Option<Child>,
    pid: u32,
    status: Option<ExitStatus>,
}

impl Guarded {
    /// Spawns `cmd` as the leader of a new process group, with PDEATHSIG.
    pub fn spawn(mut cmd: Command) -> std::io::Result<Guarded> {
        cmd.process_group(0);
        die_with_caller(&mut cmd);
        let child = spawn_on_long_lived_thread(cmd)?;
        Ok(Guarded {
            pid: child.id(),
            child: Some(child),
            status: None,
        })
    }

    pub fn id(&self) -> u32 {
        self.pid
    }

    /// Sends `sig` to the leader only.
    pub fn signal(&self, sig: Signal) -> nix::Result<()> {
        if self.status.is_some() {
            return Err(nix::errno::Errno::ESRCH);
        }
        kill(Pid::from_raw(self.pid as i32), sig)
    }

    /// Whether the leader exited; if it did, whatever is left of its group is killed before the
    /// leader is reaped (while its pid, hence the group id, cannot be reused).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_some() {
            return self.status;
        }
        // SAFETY: plain syscall on a zeroed out-parameter.
        let exited = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            libc::waitid(
                libc::P_PID,
                self.pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            ) == 0
                && info.si_pid() != 0
        };
        if exited {
            self.reap();
        }
        self.status
    }

    /// Waits up to `limit` for the leader to exit.
    pub fn wait_timeout(&mut self, limit: Duration) -> Option<ExitStatus> {
        let started = Instant::now();
        loop {
            if let Some(st) = self.try_wait() {
                return Some(st);
            }
            if started.elapsed() >= limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL to the whole group, then reaps the leader.
    pub fn kill(&mut self) {
        self.reap();
    }

    fn reap(&mut self) {
        if let Some(mut child) = self.child.take() {
            let group = self.pid as i32;
            // The rest of the group first, while the leader lives to reap them (HAProxy's master
            // its workers): orphaned, they would wait as zombies for init to get round to them.
            let members: Vec<i32> = group_members(group)
                .into_iter()
                .filter(|&p| p != group)
                .collect();
            for &m in &members {
                let _ = kill(Pid::from_raw(m), Signal::SIGKILL);
            }
            wait_until(Duration::from_secs(1), || {
                members
                    .iter()
                    .all(|m| !std::path::Path::new(&format!("/proc/{m}")).exists())
            });
            let _ = killpg(Pid::from_raw(group), Signal::SIGKILL);
            self.status = child.wait().ok();
        }
    }

    /// Waits for the leader to exit by itself and collects its piped stdout and stderr.
    pub fn wait_with_output(mut self) -> std::io::Result<Output> {
        // a CLI with no children of its own: once reaped its group is gone
        self.child
            .take()
            .expect("not reaped yet")
            .wait_with_output()
    }

    /// Waits for the leader to exit by itself; its exit status and resource usage (wait4).
    pub fn wait_rusage(mut self) -> (ExitStatus, libc::rusage) {
        let child = self.child.take().expect("not reaped yet");
        // SAFETY: plain syscalls on zeroed out-parameters; the child is ours and not reaped.
        unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            libc::waitid(
                libc::P_PID,
                self.pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            );
            let _ = killpg(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
            let mut status = 0;
            let mut usage: libc::rusage = std::mem::zeroed();
            let r = libc::wait4(self.pid as libc::pid_t, &mut status, 0, &mut usage);
            assert_eq!(r, self.pid as libc::pid_t, "wait4");
            drop(child); // closes its pipes; dropping a Child never waits
            (ExitStatus::from_raw(status), usage)
        }
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        self.reap();
    }
}

/// Pids of the processes in process group `group` (from /proc/PID/stat).
pub fn group_members(group: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(2)?.parse::<i32>().ok())
                == Some(group)
        })
        .collect()
}

/// Polls `ready` every 20 ms until it holds (true) or `limit` passed (false).
pub fn wait_until(limit: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    loop {
        if ready() {
            return true;
        }
        if started.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether something accepts TCP connections at `addr`.
pub fn listening(addr: std::net::SocketAddr) -> bool {
    std::net::TcpStream::connect(addr).is_ok()
}

/// Whether live process `pid` names `needle` in its command line or working directory.
pub fn mentions(pid: i32, needle: &str) -> bool {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_default();
    String::from_utf8_lossy(&cmdline)
        .replace('\0', " ")
        .contains(needle)
        || cwd.to_string_lossy().contains(needle)
}

/// Live processes (zombies have neither command line nor working directory) other than this one
/// that name `needle` (a test's own temp dir) in their command line or working directory.
pub fn processes_mentioning(needle: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me && mentions(pid, needle))
        .collect()
}

/// SIGKILLs every process naming `needle` (see `processes_mentioning`) until none is left.
pub fn kill_mentioning(needle: &str) {
    for _ in 0..100 {
        let pids = processes_mentioning(needle);
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A shell that runs a clean-up script if this process dies before the watchdog is dropped.
///
/// It reads lines from a pipe only this process holds (std's pipes are close-on-exec, so no
/// child inherits the write end): each line is appended to the script's arguments (`note`),
/// "done" (written on drop) makes it exit quietly, and end-of-file without "done" means this
/// process is gone: it runs the script. It leads its own process group, so a Ctrl-C at the
/// terminal reaches the tests, not it.
pub struct Watchdog {
    stdin: Option<ChildStdin>,
    child: Child,
}

impl Watchdog {
    /// `script` is POSIX sh, run with `args` then every noted line as "$@".
    pub fn start(script: &str, args: &[&str]) -> Watchdog {
        let wrapper = format!(
            "trap '' HUP INT\n\
             while IFS= read -r line; do\n\
             \x20   [ \"$line\" = done ] && exit 0\n\
             \x20   set -- \"$@\" \"$line\"\n\
             done\n\
             {script}\n"
        );
        let child = Command::new("sh")
            .arg("-c")
            .arg(wrapper)
            .arg("hotswap-test-watchdog")
            .args(args)
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("starting a watchdog shell (sh)");
        let mut child = child;
        Watchdog {
            stdin: child.stdin.take(),
            child,
        }
    }

    /// Adds one argument (one line, no newline) for the clean-up script.
    pub fn note(&mut self, arg: &str) {
        assert!(!arg.contains('\n') && arg != "done", "{arg:?}");
        if let Some(s) = self.stdin.as_mut() {
            let _ = writeln!(s, "{arg}");
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Some(mut s) = self.stdin.take() {
            let _ = writeln!(s, "done");
        }
        let _ = self.child.wait();
    }
}
