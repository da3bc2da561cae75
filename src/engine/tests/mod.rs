//! The walker's behaviour with recording fakes of Docker, HAProxy, the health gate and the
//! reporter: what is called, in what order, and what is left, for each phase, a failure there and
//! a daemon restart there. No Docker, HAProxy or network: these run in well under a second each.

use std::path::Path;
use std::sync::Arc;

use tokio::sync::watch;

use super::book::Book;
use super::fakes::{Calls, FakeDocker, FakeGate, FakeHaproxy, FakeReporter};
use super::handle::{ServiceHandle, State};
use super::journal::Journal;
use super::phase::{Release, Swap};
use super::steps::containers::{Containers, Parts};
use super::steps::Steps;
use super::walker::Walker;
use crate::config::{ServiceSettings, Settings};
use crate::runtime::archive::ArchiveFetcher;

pub(super) type W = Walker<Containers<FakeDocker, FakeHaproxy, FakeGate>, FakeReporter>;

/// One service "web" on fakes, with its journal in a temp dir. Walkers made from one rig share
/// the fakes and the journal: a second walker is the daemon started again.
pub(super) struct Rig {
    pub(super) dir: tempfile::TempDir,
    pub(super) calls: Calls,
    pub(super) docker: FakeDocker,
    pub(super) haproxy: FakeHaproxy,
    pub(super) gate: FakeGate,
    pub(super) reporter: FakeReporter,
    pub(super) handle: Arc<ServiceHandle>,
    pub(super) settings: watch::Sender<ServiceSettings>,
}

const BASE: &str = r#"
[daemon]
instance_id = "host-1"
[services.web]
container_port = 8080
{extra}
[services.web.health]
deadline_secs = 2
[services.web.haproxy]
runtime_socket = "/nonexistent/admin.sock"
"#;

fn settings(extra: &str) -> ServiceSettings {
    let text = BASE.replace("{extra}", extra);
    let s = Settings::parse(&text, Path::new("test.toml")).expect("test config parses");
    s.service("web").unwrap().clone()
}

impl Rig {
    pub(super) fn new() -> Rig {
        Rig::with("")
    }

    /// Extra TOML is appended inside `[services.web]` tables (e.g. `replicas`).
    pub(super) fn with(extra: &str) -> Rig {
        let calls = Calls::default();
        let docker = FakeDocker {
            calls: calls.clone(),
            ..Default::default()
        };
        let haproxy = FakeHaproxy {
            calls: calls.clone(),
            ..Default::default()
        };
        let gate = FakeGate {
            calls: calls.clone(),
            ..Default::default()
        };
        let reporter = FakeReporter {
            calls: calls.clone(),
            ..Default::default()
        };
        let (settings, _) = watch::channel(settings(extra));
        Rig {
            dir: tempfile::tempdir().unwrap(),
            calls,
            docker,
            haproxy,
            gate,
            reporter,
            handle: Arc::new(ServiceHandle::new("web")),
            settings,
        }
    }

    /// A walker, as a daemon (re)started on the same host builds it.
    pub(super) fn walker(&self) -> W {
        let haproxy = self.haproxy.clone();
        let steps = Containers::new(
            self.settings.subscribe(),
            Arc::new(move |_| haproxy.clone()),
            Parts {
                instance_id: "host-1".into(),
                runtime: Arc::new(self.docker.clone()),
                archives: Arc::new(ArchiveFetcher::new(self.dir.path(), None)),
                secrets: Arc::new(crate::runtime::secrets::Secrets::new(None)),
                prober: self.gate.clone(),
            },
        );
        Walker::new(steps, book(self.dir.path(), &self.handle, &self.reporter))
    }

    /// A walker that has recovered (an empty journal: nothing to do).
    pub(super) async fn started(&self) -> W {
        let mut w = self.walker();
        start_up(&mut w).await;
        w
    }

    pub(super) fn release(v: &str) -> Release {
        Release {
            service: "web".into(),
            image: format!("web:{v}"),
            version: v.into(),
            deploy_id: format!("d{v}"),
            archive: None,
            code: None,
            no_ramp: false,
            requested_by: None,
        }
    }

    /// Submits release `v` and takes it from the queue as the walker's loop does: the swap,
    /// planned and journaled as accepted.
    pub(super) async fn take(&self, w: &mut W, v: &str) -> Swap {
        self.handle.submit(Rig::release(v)).unwrap();
        let budgets = w.steps.budgets();
        let swap = w.book.next_swap(|| budgets).await.expect("a new release");
        w.accept(swap).await
    }

    /// Deploys release `v` to its end; returns the finished swap.
    pub(super) async fn deploy(&self, w: &mut W, v: &str) -> Swap {
        let swap = self.take(w, v).await;
        walk_to_end(w, swap).await
    }

    /// Walks release `v` until the journal shows `phase`, then stops there: the daemon is
    /// killed as that phase begins.
    pub(super) async fn until(&self, w: &mut W, v: &str, phase: &str) -> Swap {
        let mut swap = self.take(w, v).await;
        while swap.phase.name() != phase {
            assert!(!swap.phase.is_terminal(), "never reached {phase}: {swap:?}");
            swap = w.step(swap).await;
        }
        swap
    }

    /// The daemon killed and started again: `w` dropped, a new walker recovered. Returns it and
    /// the state recovery showed.
    pub(super) async fn restart(&self, w: W) -> (W, State) {
        drop(w);
        let mut w = self.walker();
        let state = start_up(&mut w).await;
        (w, state)
    }

    /// Requests in flight on `server`, drained away one per reading.
    pub(super) fn in_flight(&self, server: &str, n: u64) {
        let mut s = self.haproxy.state.lock().unwrap();
        s.in_flight.insert(server.into(), n);
    }

    /// The current release's first container, as journaled.
    pub(super) fn current_container(&self) -> String {
        self.journal().current.unwrap().members()[0]
            .container_id
            .clone()
    }

    pub(super) fn fail_gate(&self, v: &str) {
        self.gate.failing_versions.lock().unwrap().insert(v.into());
    }

    pub(super) fn running_images(&self) -> Vec<String> {
        let mut v: Vec<String> = self.docker.running().into_iter().map(|c| c.image).collect();
        v.sort();
        v
    }

    pub(super) fn journal(&self) -> super::journal::ServiceRecord {
        Journal::open(&self.dir.path().join("journal"))
            .unwrap()
            .load("web")
            .unwrap()
    }
}

/// Walks an accepted swap to its end; returns it as the journal's history keeps it.
pub(super) async fn walk_to_end<S: Steps, P: crate::report::Reporter>(
    w: &mut Walker<S, P>,
    swap: Swap,
) -> Swap {
    w.walk(swap).await;
    w.book
        .record
        .history
        .last()
        .cloned()
        .expect("a finished swap")
}

/// The book of a test service (its name the handle's), its journal under `dir`.
pub(super) fn book(
    dir: &Path,
    handle: &Arc<ServiceHandle>,
    reporter: &FakeReporter,
) -> Book<FakeReporter> {
    let journal = Journal::open(&dir.join("journal")).unwrap();
    let identity = Arc::new(crate::report::Identity {
        instance_id: "i-test".into(),
        stack: None,
    });
    Book::new(
        &handle.name,
        journal,
        handle.clone(),
        Arc::new(reporter.clone()),
        identity,
    )
}

pub(super) fn results(r: &Rig) -> Vec<(String, &'static str)> {
    r.reporter
        .all()
        .into_iter()
        .map(|r| (r.deploy_id, r.result.as_str()))
        .collect()
}

mod canary;
mod failure;
mod process;
mod recovery;
mod replicas;
mod restart;
mod swap;

/// What `Walker::run` does before it takes releases: recovery, then a look at what runs (repairs
/// included). Returns the state shown after.
pub(super) async fn start_up(w: &mut W) -> State {
    w.recover().await.expect("recovery on fakes");
    w.supervise().await;
    w.health.0
}
