//! Hot code reload of a local pre-fork server (gunicorn-style), walking the same phases as a
//! container swap: the bundle is unpacked and `current` switched (starting), the master signalled,
//! the new code proven by the health gate, the old workers (hup) or the old master (usr2) let go
//! (switching, draining), old releases pruned (retiring). A failure before the switch points
//! `current` back and reloads again (hup) or stops the new master (usr2): the old code serves.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::book::Book;
use super::driver::now_ms;
use super::handle::ServiceHandle;
use super::journal::Journal;
use super::phase::{Budgets, Event, Instance, Phase, Release, Swap, UnixMs};
use crate::code::bundle;
use crate::code::layout::Layout;
use crate::config::{ProcessSettings, ReloadStrategy};
use crate::health;
use crate::report::{Identity, Reporter};
use crate::runtime::process;

const POLL: Duration = Duration::from_millis(10);

fn instant_of(deadline: UnixMs) -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_millis(deadline.saturating_sub(now_ms()))
}

fn budgets_of(s: &ProcessSettings) -> Budgets {
    Budgets {
        health_deadline: s.health.deadline,
        drain_budget: s.drain_budget,
        host_budget: s.host_budget,
        rollback: Duration::from_secs(60),
    }
}

/// `<pidfile>.2`: where gunicorn's new master writes its pid during a USR2 handover.
fn handover_pidfile(pidfile: &Path) -> PathBuf {
    let mut name = pidfile.as_os_str().to_owned();
    name.push(".2");
    PathBuf::from(name)
}

pub struct ProcessDriver<P> {
    settings: ProcessSettings,
    updates: watch::Receiver<ProcessSettings>,
    book: Book<P>,
}

impl<P: Reporter> ProcessDriver<P> {
    pub fn new(
        updates: watch::Receiver<ProcessSettings>,
        identity: Arc<Identity>,
        reporter: Arc<P>,
        journal: Journal,
        handle: Arc<ServiceHandle>,
    ) -> Self {
        let settings = updates.borrow().clone();
        ProcessDriver {
            book: Book::new(&settings.name, journal, handle, reporter, identity),
            settings,
            updates,
        }
    }

    fn layout(&self) -> Layout {
        Layout::new(&self.settings.app_root)
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.settings.port))
    }

    pub async fn run(mut self) {
        match self.book.journal.load(&self.settings.name) {
            Ok(r) => self.book.record = r,
            Err(e) => {
                tracing::error!(service = %self.settings.name, error = %e, "journal unreadable; starting empty");
            }
        }
        if let Some(swap) = self.book.record.swap.clone() {
            let resumed = match swap.phase {
                Phase::Accepted
                | Phase::Draining { .. }
                | Phase::Retiring { .. }
                | Phase::RollingBack { .. } => swap,
                _ if swap.phase.is_terminal() => swap,
                _ => {
                    let why = format!(
                        "hotswapd restarted during phase {}; rolled back",
                        swap.phase
                    );
                    self.book.advance(swap, Event::Fail(why))
                }
            };
            self.reload(resumed).await;
        }
        self.book.publish("idle");
        loop {
            let updates = self.updates.clone();
            let next = self.book.next_swap(|| budgets_of(&updates.borrow())).await;
            if self.updates.has_changed().unwrap_or(false) {
                self.settings = self.updates.borrow_and_update().clone();
            }
            if let Some(swap) = next {
                self.reload(swap).await;
                self.book.publish("idle");
            }
        }
    }

    async fn reload(&mut self, mut swap: Swap) {
        if swap.phase == Phase::Accepted {
            self.book.begin(&swap);
        }
        loop {
            swap = match swap.phase.clone() {
                Phase::Accepted => self.book.advance(swap, Event::Begin),
                Phase::Starting { deadline } => {
                    let started =
                        tokio::time::timeout_at(instant_of(deadline), self.start_new(&mut swap))
                            .await;
                    match started.unwrap_or_else(|_| {
                        Err("starting the new code did not finish before its deadline".into())
                    }) {
                        Ok(instance) => self.book.advance(swap, Event::Started(instance)),
                        Err(reason) => self.book.advance(swap, Event::Fail(reason)),
                    }
                }
                Phase::HealthGate { deadline } => match self.health_gate(&swap, deadline).await {
                    Ok(passed) => {
                        swap.health_response = Some(passed.body);
                        self.book.advance(swap, Event::GatePassed)
                    }
                    Err(reason) => self.book.advance(swap, Event::Fail(reason)),
                },
                Phase::Switching { .. } => match self.switch(&swap) {
                    Ok(()) => self.book.advance(swap, Event::Switched),
                    Err(reason) => self.book.advance(swap, Event::Fail(reason)),
                },
                Phase::Draining { deadline } => {
                    self.drain(&mut swap, deadline).await;
                    self.book.advance(swap, Event::Drained)
                }
                Phase::Retiring { .. } => {
                    self.retire(&mut swap);
                    self.book.advance(swap, Event::Retired)
                }
                Phase::RollingBack { deadline } => {
                    if tokio::time::timeout_at(instant_of(deadline), self.roll_back(&mut swap))
                        .await
                        .is_err()
                    {
                        swap.warnings
                            .push("rolling back did not finish in time".into());
                    }
                    self.book.advance(swap, Event::RolledBack)
                }
                // a code reload has no canary ramp (its swaps never plan one)
                Phase::Ramping { .. } | Phase::Watching { .. } => self
                    .book
                    .advance(swap, Event::Fail("a code reload has no canary ramp".into())),
                Phase::Succeeded | Phase::Failed => break,
            };
        }
        self.book.settle(swap).await;
    }

    /// Unpacks the bundle, switches `current`, and signals the master.
    async fn start_new(&self, swap: &mut Swap) -> Result<Instance, String> {
        let s = &self.settings;
        let release = swap.release.clone();
        let code = release
            .code
            .clone()
            .ok_or("the release carries no code bundle")?;
        let master = process::read_pid(&s.pidfile)?;
        if !process::alive(master) {
            return Err(format!(
                "master pid {master} from {} is not running",
                s.pidfile.display()
            ));
        }
        let layout = self.layout();
        let old_dir = layout.current();
        if swap.old.is_none() {
            // the first release hotswapd deploys: what serves now is whatever `current` is
            swap.old = Some(Instance {
                release: Release {
                    service: s.name.clone(),
                    image: String::new(),
                    version: String::new(),
                    deploy_id: String::new(),
                    archive: None,
                    code: None,
                    no_ramp: false,
                },
                container_id: master.to_string(),
                server: old_dir
                    .as_ref()
                    .map(|d| d.display().to_string())
                    .unwrap_or_default(),
                host_port: s.port,
                pids: vec![],
                code_dir: None,
                replicas: vec![],
            });
        }
        if let Some(old) = swap.old.as_mut() {
            old.container_id = master.to_string();
            old.pids = process::children(master);
        }
        let dir = layout.release(&release.deploy_id);
        let _ = std::fs::remove_dir_all(&dir);
        let (src, dest) = (code.clone(), dir.clone());
        tokio::task::spawn_blocking(move || bundle::unpack(&src, &dest))
            .await
            .expect("unpack task")
            .map_err(|e| e.to_string())?;
        layout.switch(&dir).map_err(|e| {
            format!(
                "switching {} to {}: {e}",
                layout.current_link().display(),
                dir.display()
            )
        })?;
        let new_master = match s.strategy {
            ReloadStrategy::Hup => {
                swap.signalled_ms = Some(now_ms());
                process::signal(master, s.reload_signal)?;
                master
            }
            ReloadStrategy::Usr2 => {
                let _ = std::fs::remove_file(handover_pidfile(&s.pidfile));
                swap.signalled_ms = Some(now_ms());
                process::signal(master, s.upgrade_signal)?;
                let waited = tokio::time::Instant::now();
                loop {
                    // the new master writes <pidfile>.2; a fast handover may already have renamed it
                    let candidate = process::read_pid(&handover_pidfile(&s.pidfile))
                        .or_else(|_| process::read_pid(&s.pidfile));
                    if let Ok(pid) = candidate {
                        if pid != master && process::alive(pid) {
                            break pid;
                        }
                    }
                    if waited.elapsed() > Duration::from_secs(30) {
                        return Err(format!(
                            "no new master appeared within 30 s of {} to pid {master}",
                            s.upgrade_signal
                        ));
                    }
                    tokio::time::sleep(POLL).await;
                }
            }
        };
        Ok(Instance {
            release,
            container_id: new_master.to_string(),
            server: dir.display().to_string(),
            host_port: s.port,
            pids: vec![],
            code_dir: None,
            replicas: vec![],
        })
    }

    async fn health_gate(&self, swap: &Swap, deadline: UnixMs) -> Result<health::Passed, String> {
        let new = swap.new.as_ref().ok_or("no new code to check")?;
        let master: i32 = new.container_id.parse().map_err(|_| "no master pid")?;
        let gate = health::gate(
            self.addr(),
            &self.settings.health,
            &swap.release.version,
            instant_of(deadline),
        );
        let died = async {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if !process::alive(master) {
                    return;
                }
            }
        };
        tokio::select! {
            r = gate => r.map_err(|e| e.to_string()),
            () = died => Err(format!("master pid {master} exited before the new code passed its health gate")),
        }
    }

    /// usr2: the old master is told to stop gracefully (its workers finish their requests).
    fn switch(&self, swap: &Swap) -> Result<(), String> {
        if self.settings.strategy == ReloadStrategy::Usr2 {
            if let Some(old) = &swap.old {
                let pid: i32 = old.container_id.parse().map_err(|_| "no old master pid")?;
                process::signal(pid, self.settings.stop_old_signal)?;
            }
        }
        Ok(())
    }

    /// Waits until the old code's processes are gone (old workers for hup, the old master for usr2).
    async fn drain(&self, swap: &mut Swap, deadline: UnixMs) {
        let Some(old) = swap.old.clone() else { return };
        let waiting: Vec<i32> = match self.settings.strategy {
            ReloadStrategy::Hup => old.pids.clone(),
            ReloadStrategy::Usr2 => old.container_id.parse().into_iter().collect(),
        };
        loop {
            let left: Vec<i32> = waiting
                .iter()
                .copied()
                .filter(|p| process::alive(*p))
                .collect();
            if left.is_empty() {
                break;
            }
            if now_ms() >= deadline {
                swap.warnings.push(format!(
                    "drain budget ended with old processes {left:?} still running"
                ));
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        // usr2: the old master removes the pidfile as it exits; the new one renames <pidfile>.2
        // in its place a moment later. The handover is done when the pidfile names the new master.
        if self.settings.strategy == ReloadStrategy::Usr2 {
            let new_master: Option<i32> =
                swap.new.as_ref().and_then(|n| n.container_id.parse().ok());
            while process::read_pid(&self.settings.pidfile).ok() != new_master {
                if now_ms() >= deadline {
                    swap.warnings.push(format!(
                        "{} does not name the new master {new_master:?} yet",
                        self.settings.pidfile.display()
                    ));
                    break;
                }
                tokio::time::sleep(POLL).await;
            }
        }
    }

    fn retire(&mut self, swap: &mut Swap) {
        let layout = self.layout();
        let mut keep: Vec<PathBuf> = swap.new.iter().map(|n| PathBuf::from(&n.server)).collect();
        keep.extend(
            swap.old
                .iter()
                .filter(|o| !o.server.is_empty())
                .map(|o| PathBuf::from(&o.server)),
        );
        for h in self.book.record.history.iter().rev() {
            if keep.len() >= 1 + self.settings.keep_releases {
                break;
            }
            if let Some(n) = &h.new {
                let p = PathBuf::from(&n.server);
                if !keep.contains(&p) {
                    keep.push(p);
                }
            }
        }
        keep.truncate(1 + self.settings.keep_releases);
        let keep: Vec<&Path> = keep.iter().map(|p| p.as_path()).collect();
        swap.warnings.extend(layout.prune(&keep));
    }

    /// `current` back to the old release; hup: reload again; usr2: stop the new master.
    async fn roll_back(&self, swap: &mut Swap) {
        let layout = self.layout();
        if let Some(old) = swap.old.as_ref().filter(|o| !o.server.is_empty()) {
            if let Err(e) = layout.switch(Path::new(&old.server)) {
                swap.warnings
                    .push(format!("switching current back to {}: {e}", old.server));
            }
        }
        if let Some(new) = &swap.new {
            let master: Option<i32> = new.container_id.parse().ok();
            match (self.settings.strategy, master) {
                (ReloadStrategy::Hup, Some(m)) if process::alive(m) => {
                    // the workers running the failed code leave only after the reload: wait for them
                    let doomed = process::children(m);
                    if let Err(e) = process::signal(m, self.settings.reload_signal) {
                        swap.warnings.push(e);
                    }
                    while doomed.iter().any(|p| process::alive(*p)) {
                        tokio::time::sleep(POLL).await;
                    }
                }
                (ReloadStrategy::Usr2, Some(m))
                    if process::alive(m)
                        && swap
                            .old
                            .as_ref()
                            .and_then(|o| o.container_id.parse::<i32>().ok())
                            != Some(m) =>
                {
                    if let Err(e) = process::signal(m, self.settings.stop_old_signal) {
                        swap.warnings.push(e);
                    }
                    while process::alive(m) {
                        tokio::time::sleep(POLL).await;
                    }
                }
                _ => {}
            }
        }
        self.restart_if_gone(swap).await;
        let dir = layout.release(&swap.release.deploy_id);
        if layout.current().as_deref() != Some(dir.as_path()) {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    /// If no master runs any more (code that fails to load can halt it), starts the server again
    /// with `start_command` on the code `current` names now, and waits until its pidfile names
    /// a live master.
    async fn restart_if_gone(&self, swap: &mut Swap) {
        let s = &self.settings;
        if process::read_pid(&s.pidfile)
            .map(process::alive)
            .unwrap_or(false)
        {
            return;
        }
        let Some((program, args)) = s.start_command.split_first() else {
            swap.warnings.push(format!(
                "no master runs (pidfile {}) and no start_command is configured: the service is down",
                s.pidfile.display()
            ));
            return;
        };
        // A pidfile naming a dead master (or a zombie nobody reaped) makes gunicorn refuse to
        // start ("Already running on PID"): it is stale, remove it.
        let _ = std::fs::remove_file(&s.pidfile);
        let status = tokio::process::Command::new(program)
            .args(args)
            .stdin(std::process::Stdio::null())
            .status()
            .await;
        match status {
            Ok(st) if st.success() => {}
            Ok(st) => {
                return swap
                    .warnings
                    .push(format!("start_command {program:?} exited with {st}"))
            }
            Err(e) => {
                return swap
                    .warnings
                    .push(format!("start_command {program:?}: {e}"))
            }
        }
        let waited = tokio::time::Instant::now();
        while !process::read_pid(&s.pidfile)
            .map(process::alive)
            .unwrap_or(false)
        {
            if waited.elapsed() > Duration::from_secs(30) {
                return swap.warnings.push(format!(
                    "start_command ran but no master appeared in {} within 30 s",
                    s.pidfile.display()
                ));
            }
            tokio::time::sleep(POLL).await;
        }
        swap.warnings.push(
            "the master had died; it was started again with start_command on the previous code"
                .into(),
        );
    }
}
