//! The gunicorn-style kind on the walker, with a fake gunicorn (fakes/gunicorn.rs), the fake
//! gate and reporter, and real code directories in a temp dir: each phase of a `hup` and a `usr2`
//! reload, a gate that fails there, a daemon killed mid-drain, and a master that dies between
//! reloads.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::watch;

use super::super::fakes::{Calls, FakeGate, FakeGunicorn, FakeReporter};
use super::super::handle::{ServiceHandle, State};
use super::super::journal::Journal;
use super::super::phase::{Release, Swap};
use super::super::steps::process::Processes;
use super::super::steps::Steps;
use super::super::walker::Walker;
use super::{book, walk_to_end};
use crate::code::layout::Layout;
use crate::config::{ProcessSettings, Settings};
use crate::runtime::process::Server;

type PW = Walker<Processes<FakeGate, FakeGunicorn>, FakeReporter>;

/// One local server "app" on fakes: its app root (with release r1 current) and journal in a
/// temp dir, a master already running.
struct Rig {
    dir: tempfile::TempDir,
    calls: Calls,
    server: FakeGunicorn,
    gate: FakeGate,
    reporter: FakeReporter,
    handle: Arc<ServiceHandle>,
    settings: watch::Sender<ProcessSettings>,
}

impl Rig {
    fn new(strategy: &str) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("app");
        std::fs::create_dir_all(root.join("releases/r1")).unwrap();
        std::fs::write(root.join("releases/r1/VERSION"), "1").unwrap();
        Layout::new(&root)
            .switch(&root.join("releases/r1"))
            .unwrap();
        let pidfile = dir.path().join("app.pid");
        let text = format!(
            r#"
[daemon]
instance_id = "host-1"
[processes.app]
pidfile = "{pid}"
port = 8000
app_root = "{root}"
strategy = "{strategy}"
stop_old_signal = "SIGTERM"
drain_budget_secs = 2
start_command = ["gunicorn", "--daemon", "--pid", "{pid}", "app:app"]
[processes.app.health]
deadline_secs = 2
"#,
            pid = pidfile.display(),
            root = root.display(),
        );
        let s = Settings::parse(&text, Path::new("test.toml")).expect("test config parses");
        let calls = Calls::default();
        let (settings, _) = watch::channel(s.processes["app"].clone());
        Rig {
            server: FakeGunicorn::running(&pidfile, calls.clone()),
            gate: FakeGate {
                calls: calls.clone(),
                ..Default::default()
            },
            reporter: FakeReporter {
                calls: calls.clone(),
                ..Default::default()
            },
            calls,
            handle: Arc::new(ServiceHandle::new("app")),
            settings,
            dir,
        }
    }

    fn pidfile(&self) -> PathBuf {
        self.dir.path().join("app.pid")
    }

    fn layout(&self) -> Layout {
        Layout::new(&self.dir.path().join("app"))
    }

    fn master(&self) -> i32 {
        self.server.master(&self.pidfile()).expect("a master runs")
    }

    /// A walker, as a daemon (re)started on the same host builds it.
    fn walker(&self) -> PW {
        let steps = Processes::on(
            self.settings.subscribe(),
            self.gate.clone(),
            None,
            self.server.clone(),
        );
        Walker::new(steps, book(self.dir.path(), &self.handle, &self.reporter))
    }

    async fn started(&self) -> PW {
        let mut w = self.walker();
        start_up(&mut w).await;
        w
    }

    /// A code bundle of version `v` (a directory).
    fn bundle(&self, v: &str) -> PathBuf {
        let b = self.dir.path().join(format!("bundle-{v}"));
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(b.join("VERSION"), v).unwrap();
        b
    }

    fn release(&self, v: &str) -> Release {
        Release {
            service: "app".into(),
            image: String::new(),
            version: v.into(),
            deploy_id: format!("d{v}"),
            archive: None,
            code: Some(self.bundle(v)),
            no_ramp: false,
            requested_by: None,
        }
    }

    async fn take(&self, w: &mut PW, v: &str) -> Swap {
        self.handle.submit(self.release(v)).unwrap();
        let budgets = w.steps.budgets();
        let swap = w.book.next_swap(|| budgets).await.expect("a new release");
        w.accept(swap).await
    }

    async fn deploy(&self, w: &mut PW, v: &str) -> Swap {
        let swap = self.take(w, v).await;
        walk_to_end(w, swap).await
    }

    /// The version `current` names.
    fn current_version(&self) -> String {
        let dir = self.layout().current().expect("current names a release");
        std::fs::read_to_string(dir.join("VERSION")).unwrap()
    }

    fn results(&self) -> Vec<(String, &'static str)> {
        self.reporter
            .all()
            .into_iter()
            .map(|r| (r.deploy_id, r.result.as_str()))
            .collect()
    }
}

async fn start_up(w: &mut PW) -> State {
    w.recover().await.expect("recovery on fakes");
    w.supervise().await;
    w.health.0
}

#[tokio::test]
async fn a_hup_reload_signals_the_master_gates_the_new_code_and_waits_for_the_old_workers() {
    let r = Rig::new("hup");
    let mut w = r.started().await;
    let master = r.master();
    let old_workers = r.server.children(master);
    let swap = r.deploy(&mut w, "2").await;
    assert_eq!(swap.phase.name(), "succeeded", "{swap:?}");
    assert_eq!(r.current_version(), "2");
    assert_eq!(r.master(), master, "a hup reload keeps the master");
    for p in &old_workers {
        assert!(!r.server.alive(*p), "old worker {p} is gone");
    }
    let calls = r.calls.all();
    let hup = r
        .calls
        .index(&format!("server signal {master} SIGHUP"))
        .unwrap();
    let gate = r.calls.index("gate 8000 2").unwrap();
    assert!(hup < gate, "signalled, then gated: {calls:?}");
    assert_eq!(r.results(), [("d2".to_string(), "success")]);
    let current = r.journal().current.unwrap();
    assert_eq!(current.master(), Some(master));
    assert_eq!(current.release.version, "2");
}

#[tokio::test]
async fn a_hup_reload_whose_gate_fails_puts_current_back_and_reloads_the_old_code() {
    let r = Rig::new("hup");
    let mut w = r.started().await;
    let master = r.master();
    r.gate.failing_versions.lock().unwrap().insert("2".into());
    let swap = r.deploy(&mut w, "2").await;
    assert_eq!(swap.phase.name(), "failed");
    assert_eq!(
        r.current_version(),
        "1",
        "current points back at the old code"
    );
    assert_eq!(
        r.calls.count(&format!("server signal {master} SIGHUP")),
        2,
        "reloaded onto the new code, then back: {:?}",
        r.calls.all()
    );
    assert!(
        !r.layout().release("d2").exists(),
        "the failed release's directory is removed"
    );
    assert_eq!(r.results(), [("d2".to_string(), "failure")]);
    assert_eq!(r.master(), master, "the same master serves the old code");
}

#[tokio::test]
async fn code_that_halts_the_master_is_rolled_back_and_the_server_started_again() {
    let r = Rig::new("hup");
    let mut w = r.started().await;
    let master = r.master();
    r.server.state.lock().unwrap().halts_on_reload = true;
    // with its master gone, the new code never answers
    r.gate.failing_versions.lock().unwrap().insert("2".into());
    let swap = r.deploy(&mut w, "2").await;
    assert_eq!(swap.phase.name(), "failed", "{swap:?}");
    assert!(!r.server.alive(master));
    assert!(r.calls.any("server run gunicorn"), "{:?}", r.calls.all());
    let new = r.master();
    assert_ne!(new, master, "a new master runs on the previous code");
    assert_eq!(r.current_version(), "1");
    assert!(
        swap.warnings.iter().any(|w| w.contains("started again")),
        "{:?}",
        swap.warnings
    );
}

#[tokio::test]
async fn a_usr2_reload_starts_a_new_master_stops_the_old_one_and_hands_over_the_pidfile() {
    let r = Rig::new("usr2");
    let mut w = r.started().await;
    let old = r.master();
    let swap = r.deploy(&mut w, "2").await;
    assert_eq!(swap.phase.name(), "succeeded", "{swap:?}");
    let new = r.master();
    assert_ne!(new, old, "the pidfile names the new master");
    assert!(!r.server.alive(old), "the old master is gone");
    let usr2 = r
        .calls
        .index(&format!("server signal {old} SIGUSR2"))
        .unwrap();
    let gate = r.calls.index("gate 8000 2").unwrap();
    let term = r
        .calls
        .index(&format!("server signal {old} SIGTERM"))
        .unwrap();
    assert!(usr2 < gate && gate < term, "{:?}", r.calls.all());
    assert_eq!(r.journal().current.unwrap().master(), Some(new));
    assert_eq!(r.results(), [("d2".to_string(), "success")]);
}

#[tokio::test]
async fn a_usr2_reload_whose_gate_fails_stops_the_new_master_and_keeps_the_old() {
    let r = Rig::new("usr2");
    let mut w = r.started().await;
    let old = r.master();
    r.gate.failing_versions.lock().unwrap().insert("2".into());
    let swap = r.deploy(&mut w, "2").await;
    assert_eq!(swap.phase.name(), "failed");
    let new = swap
        .new
        .as_ref()
        .and_then(|n| n.master())
        .expect("a new master was started");
    assert!(!r.server.alive(new), "the new master is stopped");
    assert_eq!(
        r.master(),
        old,
        "the old master serves, named by the pidfile"
    );
    assert_eq!(r.current_version(), "1");
}

#[tokio::test]
async fn a_daemon_killed_while_draining_finishes_the_reload_when_it_starts_again() {
    let r = Rig::new("usr2");
    let mut w = r.started().await;
    let old = r.master();
    let mut swap = r.take(&mut w, "2").await;
    while swap.phase.name() != "draining" {
        assert!(!swap.phase.is_terminal(), "{swap:?}");
        swap = w.step(swap).await;
    }
    drop(w);
    let mut w = r.walker();
    start_up(&mut w).await;
    assert_eq!(
        r.results(),
        [("d2".to_string(), "success")],
        "reported once"
    );
    assert!(!r.server.alive(old));
    assert_eq!(r.journal().current.unwrap().release.version, "2");
    assert_eq!(r.current_version(), "2");
}

#[tokio::test]
async fn a_master_that_dies_between_reloads_is_started_again_and_reported() {
    let r = Rig::new("hup");
    let mut w = r.started().await;
    r.deploy(&mut w, "2").await;
    let master = r.master();
    r.server.kill(master);
    w.supervise().await;
    let new = r.master();
    assert_ne!(new, master);
    assert_eq!(r.journal().current.unwrap().master(), Some(new));
    let repairs: Vec<_> = r
        .reporter
        .all()
        .into_iter()
        .filter(|x| x.kind == crate::model::ReportKind::Repair)
        .map(|x| x.result.as_str())
        .collect();
    assert_eq!(repairs, ["success"]);
    assert_eq!(w.health.0, State::Serving);
}

impl Rig {
    fn journal(&self) -> super::super::journal::ServiceRecord {
        Journal::open(&self.dir.path().join("journal"))
            .unwrap()
            .load("app")
            .unwrap()
    }
}
