//! The walker's behaviour with recording fakes of Docker, HAProxy, the health gate and the
//! reporter: what is called, in what order, and what is left, for each phase, a failure there and
//! a daemon restart there. No Docker, HAProxy or network: these run in well under a second each.

use std::path::Path;
use std::sync::Arc;

use tokio::sync::watch;

use super::book::Book;
use super::fakes::{Calls, FakeDocker, FakeGate, FakeHaproxy, FakeReporter};
use super::handle::ServiceHandle;
use super::journal::Journal;
use super::phase::{Phase, Release, Swap};
use super::steps::containers::{Containers, Parts};
use super::steps::Steps;
use super::walker::Walker;
use crate::balancer::AdminState;
use crate::config::{ServiceSettings, Settings};
use crate::runtime::archive::ArchiveFetcher;

type W = Walker<Containers<FakeDocker, FakeHaproxy, FakeGate>, FakeReporter>;

/// One service "web" on fakes, with its journal in a temp dir. Walkers made from one rig share
/// the fakes and the journal: a second walker is the daemon started again.
struct Rig {
    dir: tempfile::TempDir,
    calls: Calls,
    docker: FakeDocker,
    haproxy: FakeHaproxy,
    gate: FakeGate,
    reporter: FakeReporter,
    handle: Arc<ServiceHandle>,
    settings: watch::Sender<ServiceSettings>,
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
    fn new() -> Rig {
        Rig::with("")
    }

    /// Extra TOML is appended inside `[services.web]` tables (e.g. `replicas`).
    fn with(extra: &str) -> Rig {
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
    fn walker(&self) -> W {
        let haproxy = self.haproxy.clone();
        let steps = Containers::new(
            self.settings.subscribe(),
            Arc::new(move |_| haproxy.clone()),
            Parts {
                instance_id: "host-1".into(),
                runtime: Arc::new(self.docker.clone()),
                archives: Arc::new(ArchiveFetcher::new(self.dir.path(), None)),
                prober: self.gate.clone(),
            },
        );
        let journal = Journal::open(&self.dir.path().join("journal")).unwrap();
        let identity = Arc::new(crate::report::Identity {
            instance_id: "i-test".into(),
            stack: None,
        });
        let book = Book::new(
            "web",
            journal,
            self.handle.clone(),
            Arc::new(self.reporter.clone()),
            identity,
        );
        Walker::new(steps, book)
    }

    /// A walker that has recovered (an empty journal: nothing to do).
    async fn started(&self) -> W {
        let mut w = self.walker();
        w.recover().await.expect("recovery on fakes");
        w
    }

    fn release(v: &str) -> Release {
        Release {
            service: "web".into(),
            image: format!("web:{v}"),
            version: v.into(),
            deploy_id: format!("d{v}"),
            archive: None,
            code: None,
            no_ramp: false,
        }
    }

    /// Submits release `v` and takes it from the queue as the walker's loop does: the swap,
    /// planned and journaled as accepted.
    async fn take(&self, w: &mut W, v: &str) -> Swap {
        self.handle.submit(Rig::release(v)).unwrap();
        let budgets = w.steps.budgets();
        let swap = w.book.next_swap(|| budgets).await.expect("a new release");
        w.accept(swap).await
    }

    /// Deploys release `v` to its end; returns the finished swap.
    async fn deploy(&self, w: &mut W, v: &str) -> Swap {
        let swap = self.take(w, v).await;
        w.walk(swap).await;
        w.book
            .record
            .history
            .last()
            .cloned()
            .expect("a finished swap")
    }

    /// Walks release `v` until the journal shows `phase`, then stops there: the daemon is
    /// killed as that phase begins.
    async fn until(&self, w: &mut W, v: &str, phase: &str) -> Swap {
        let mut swap = self.take(w, v).await;
        while swap.phase.name() != phase {
            assert!(!swap.phase.is_terminal(), "never reached {phase}: {swap:?}");
            swap = w.step(swap).await;
        }
        swap
    }

    fn fail_gate(&self, v: &str) {
        self.gate.failing_versions.lock().unwrap().insert(v.into());
    }

    fn running_images(&self) -> Vec<String> {
        let mut v: Vec<String> = self.docker.running().into_iter().map(|c| c.image).collect();
        v.sort();
        v
    }

    fn journal(&self) -> super::journal::ServiceRecord {
        Journal::open(&self.dir.path().join("journal"))
            .unwrap()
            .load("web")
            .unwrap()
    }
}

fn results(r: &Rig) -> Vec<(String, &'static str)> {
    r.reporter
        .all()
        .into_iter()
        .map(|r| (r.deploy_id, r.result))
        .collect()
}

// ---- a swap that goes well ----

#[tokio::test]
async fn a_first_deploy_starts_gates_and_puts_the_container_in() {
    let r = Rig::new();
    let mut w = r.started().await;
    let s = r.deploy(&mut w, "1").await;
    assert_eq!(s.phase, Phase::Succeeded);
    assert_eq!(r.running_images(), vec!["web:1"]);
    assert_eq!(r.haproxy.serving(), vec!["hs-d1"]);
    assert_eq!(r.haproxy.state.lock().unwrap().persisted, vec!["hs-d1"]);
    assert_eq!(results(&r), vec![("d1".into(), "success")]);
    assert_eq!(r.journal().current.unwrap().release.version, "1");
}

#[tokio::test]
async fn a_swap_gates_before_put_in_and_drains_only_after_it() {
    let r = Rig::new();
    let mut w = r.started().await;
    r.deploy(&mut w, "1").await;
    let before = r.calls.all().len();
    r.deploy(&mut w, "2").await;
    let calls = r.calls.all()[before..].to_vec();
    let at = |p: &str| {
        calls
            .iter()
            .position(|c| c.starts_with(p))
            .unwrap_or_else(|| panic!("no {p} in {calls:?}"))
    };
    assert!(at("docker start") < at("gate"));
    assert!(at("gate") < at("haproxy put_in hs-d2"));
    assert!(at("haproxy put_in hs-d2") < at("haproxy drain hs-d1"));
    assert!(at("haproxy drain hs-d1") < at("haproxy take_out hs-d1"));
    assert!(at("haproxy take_out hs-d1") < at("docker remove"));
    assert!(at("docker remove") < at("report d2"));
    assert_eq!(r.running_images(), vec!["web:2"]);
    assert_eq!(r.haproxy.serving(), vec!["hs-d2"]);
}

#[tokio::test]
async fn the_previous_image_is_kept_and_older_ones_removed() {
    let r = Rig::new();
    let mut w = r.started().await;
    for v in ["1", "2", "3"] {
        r.deploy(&mut w, v).await;
    }
    assert_eq!(w.book.record.kept_images, vec!["web:2"]);
    assert!(r.calls.any("docker remove_image web:1"));
    assert!(!r.calls.any("docker remove_image web:2"));
    assert_eq!(w.book.record.previous.as_ref().unwrap().version, "2");
}

#[tokio::test]
async fn every_phase_is_journaled_in_order_and_reported_with_durations() {
    let r = Rig::new();
    let mut w = r.started().await;
    r.deploy(&mut w, "1").await;
    let s = r.deploy(&mut w, "2").await;
    let phases: Vec<&str> = s.marks.iter().map(|m| m.phase.as_str()).collect();
    assert_eq!(
        phases,
        [
            "accepted",
            "starting",
            "health_gate",
            "switching",
            "draining",
            "retiring",
            "succeeded"
        ]
    );
    let rep = r.reporter.all().pop().unwrap();
    assert_eq!(rep.phases.len(), 6);
    assert_eq!(rep.previous_image.as_deref(), Some("web:1"));
    assert!(rep.health_response.unwrap().contains("\"2\""));
    let journal = r.journal();
    assert!(
        journal.swap.is_none(),
        "the swap left the journal once reported"
    );
    assert_eq!(journal.history.len(), 2);
}

#[tokio::test]
async fn the_failed_requests_haproxy_counted_during_the_swap_are_reported() {
    let r = Rig::new();
    let mut w = r.started().await;
    r.deploy(&mut w, "1").await;
    let swap = r.take(&mut w, "2").await;
    r.haproxy.state.lock().unwrap().backend_failures += 3;
    w.walk(swap).await;
    assert_eq!(r.reporter.all().pop().unwrap().failed_requests, Some(3));
}

#[tokio::test]
async fn draining_waits_for_requests_in_flight_on_the_old_server() {
    let r = Rig::new();
    let mut w = r.started().await;
    r.deploy(&mut w, "1").await;
    r.haproxy
        .state
        .lock()
        .unwrap()
        .in_flight
        .insert("hs-d1".into(), 3);
    let s = r.deploy(&mut w, "2").await;
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    assert_eq!(r.haproxy.state.lock().unwrap().in_flight["hs-d1"], 0);
}

#[tokio::test]
async fn a_drain_budget_that_ends_is_a_warning_not_a_failure() {
    let r = Rig::with("drain_budget_secs = 0\n");
    let mut w = r.started().await;
    r.deploy(&mut w, "1").await;
    r.haproxy
        .state
        .lock()
        .unwrap()
        .in_flight
        .insert("hs-d1".into(), 1_000_000);
    let s = r.deploy(&mut w, "2").await;
    assert_eq!(s.phase, Phase::Succeeded);
    assert!(
        s.warnings.iter().any(|w| w.contains("drain budget ended")),
        "{:?}",
        s.warnings
    );
    assert_eq!(r.running_images(), vec!["web:2"]);
}

#[tokio::test]
async fn the_same_deploy_id_never_swaps_twice() {
    let r = Rig::new();
    let mut w = r.started().await;
    r.deploy(&mut w, "1").await;
    let again = r.handle.submit(Rig::release("1")).unwrap();
    assert!(matches!(again, super::Submitted::Existing { .. }));
    assert_eq!(r.calls.count("docker start"), 1);
}

// ---- failures before the switch: the old release keeps serving ----

#[tokio::test]
async fn a_failed_gate_never_puts_the_new_server_in_and_removes_its_container() {
    let r = Rig::new();
    let mut w = r.started().await;
    r.deploy(&mut w, "1").await;
    r.fail_gate("2");
    let s = r.deploy(&mut w, "2").await;
    assert_eq!(s.phase, Phase::Failed);
    assert!(
        s.reason.as_deref().unwrap().contains("health gate"),
        "{s:?}"
    );
    assert!(!r.calls.any("haproxy put_in hs-d2"));
    assert_eq!(r.running_images(), vec!["web:1"]);
    assert_eq!(r.haproxy.serving(), vec!["hs-d1"]);
    assert!(r.calls.any("docker remove_image web:2"));
    assert_eq!(results(&r).last().unwrap(), &("d2".into(), "failure"));
    assert_eq!(r.journal().current.unwrap().release.version, "1");
}

#[tokio::test]
async fn a_pull_that_fails_starts_nothing_and_names_the_service() {
    let r = Rig::new();
    let mut w = r.started().await;
    r.deploy(&mut w, "1").await;
    r.docker
        .state
        .lock()
        .unwrap()
        .failing
        .insert("ensure_image");
    let s = r.deploy(&mut w, "2").await;
    assert_eq!(s.phase, Phase::Failed);
    let reason = s.reason.unwrap();
    assert!(
        reason.contains("preparing image for service \"web\""),
        "{reason}"
    );
    assert_eq!(r.calls.count("docker start"), 1);
    assert_eq!(r.haproxy.serving(), vec!["hs-d1"]);
}

#[tokio::test]
async fn a_container_that_cannot_start_fails_the_swap_naming_it() {
    let r = Rig::new();
    let mut w = r.started().await;
    r.deploy(&mut w, "1").await;
    r.docker.state.lock().unwrap().starts_left = Some(0);
    let s = r.deploy(&mut w, "2").await;
    let reason = s.reason.unwrap();
    assert!(
        reason.contains("starting container 1 of service \"web\" (image web:2)"),
        "{reason}"
    );
    assert_eq!(r.running_images(), vec!["web:1"]);
}

#[tokio::test]
async fn a_container_that_exits_during_its_gate_fails_it() {
    let r = Rig::new();
    let mut w = r.started().await;
    r.deploy(&mut w, "1").await;
    r.docker.state.lock().unwrap().dies.insert("web:2".into());
    // the fake gate passes at once; a dead container is seen by its liveness check only when the
    // gate is slower, so make the gate wait for its deadline
    r.fail_gate("2");
    let s = r.deploy(&mut w, "2").await;
    assert_eq!(s.phase, Phase::Failed);
    assert_eq!(r.running_images(), vec!["web:1"]);
    assert!(r
        .docker
        .state
        .lock()
        .unwrap()
        .containers
        .values()
        .all(|c| c.image == "web:1"));
}

#[tokio::test]
async fn a_switch_haproxy_refuses_rolls_back_and_puts_the_old_server_back() {
    let r = Rig::new();
    let mut w = r.started().await;
    r.deploy(&mut w, "1").await;
    r.haproxy.state.lock().unwrap().failing.insert("put_in");
    let swap = r.until(&mut w, "2", "switching").await;
    let swap = w.step(swap).await;
    assert_eq!(swap.phase.name(), "rolling_back");
    assert!(
        swap.reason
            .as_deref()
            .unwrap()
            .contains("putting hs-d2 in HAProxy"),
        "{swap:?}"
    );
    r.haproxy.state.lock().unwrap().failing.clear();
    w.walk(swap).await;
    assert_eq!(r.haproxy.serving(), vec!["hs-d1"]);
    assert_eq!(r.running_images(), vec!["web:1"]);
    assert_eq!(results(&r).last().unwrap().1, "failure");
}

#[tokio::test]
async fn a_first_deploy_that_fails_leaves_nothing_behind() {
    let r = Rig::new();
    let mut w = r.started().await;
    r.fail_gate("1");
    let s = r.deploy(&mut w, "1").await;
    assert_eq!(s.phase, Phase::Failed);
    assert!(r.docker.state.lock().unwrap().containers.is_empty());
    assert!(r.haproxy.state.lock().unwrap().servers.is_empty());
    assert!(r.journal().current.is_none());
}

#[tokio::test]
async fn a_rollback_keeps_an_image_kept_for_rollback() {
    let r = Rig::new();
    let mut w = r.started().await;
    r.deploy(&mut w, "1").await;
    r.deploy(&mut w, "2").await;
    // going back to 1 (kept) fails: its image must stay
    r.fail_gate("1");
    r.handle
        .submit(Release {
            deploy_id: "back".into(),
            ..Rig::release("1")
        })
        .unwrap();
    let budgets = w.steps.budgets();
    let swap = w.book.next_swap(|| budgets).await.unwrap();
    let swap = w.accept(swap).await;
    w.walk(swap).await;
    assert!(!r.calls.any("docker remove_image web:1"));
    assert_eq!(w.book.record.kept_images, vec!["web:1"]);
}

#[tokio::test]
async fn removing_the_new_container_also_finds_one_never_journaled() {
    let r = Rig::new();
    let mut w = r.started().await;
    r.deploy(&mut w, "1").await;
    let swap = r.until(&mut w, "2", "starting").await;
    // a container of the deploy started, then the daemon died before journaling it
    w.steps.start(&mut w.book, &mut swap.clone()).await.unwrap();
    assert_eq!(r.running_images(), vec!["web:1", "web:2"]);
    drop(w);
    let mut w = r.walker();
    w.recover().await.unwrap();
    assert_eq!(r.running_images(), vec!["web:1"]);
}

// ---- replicas ----

#[tokio::test]
async fn replicas_start_in_batches_and_capacity_never_drops() {
    let r = Rig::with("replicas = 3\nbatch = 1\n");
    let mut w = r.started().await;
    r.deploy(&mut w, "1").await;
    assert_eq!(r.haproxy.serving().len(), 3);
    r.deploy(&mut w, "2").await;
    assert_eq!(r.haproxy.serving(), vec!["hs-d2", "hs-d2-2", "hs-d2-3"]);
    assert_eq!(r.running_images(), vec!["web:2", "web:2", "web:2"]);
    // each old server drained only after a new one was put in: never fewer than 3 ready
    let calls = r.calls.all();
    let puts: Vec<usize> = calls
        .iter()
        .enumerate()
        .filter(|(_, c)| c.starts_with("haproxy put_in hs-d2"))
        .map(|(i, _)| i)
        .collect();
    // the first time each old server was set to drain
    let mut drains: Vec<usize> = ["hs-d1", "hs-d1-2", "hs-d1-3"]
        .iter()
        .map(|s| {
            calls
                .iter()
                .position(|c| c == &format!("haproxy drain {s}"))
                .unwrap()
        })
        .collect();
    drains.sort();
    for (k, d) in drains.iter().enumerate() {
        assert!(
            puts[k] < *d,
            "old server {k} drained before its replacement: {calls:?}"
        );
    }
}

#[tokio::test]
async fn a_replica_that_fails_its_gate_rolls_back_the_whole_release() {
    let r = Rig::with("replicas = 2\nbatch = 1\n");
    let mut w = r.started().await;
    r.deploy(&mut w, "1").await;
    r.docker.state.lock().unwrap().starts_left = Some(1);
    let s = r.deploy(&mut w, "2").await;
    assert_eq!(s.phase, Phase::Failed);
    assert_eq!(r.running_images(), vec!["web:1", "web:1"]);
    let serving = r.haproxy.serving();
    assert_eq!(serving, vec!["hs-d1", "hs-d1-2"]);
    assert_eq!(r.haproxy.server("hs-d1").unwrap().admin, AdminState::Ready);
}

// ---- a daemon killed in each phase, then started again ----

async fn killed_in(phase: &str) -> (Rig, W) {
    let r = Rig::new();
    let mut w = r.started().await;
    r.deploy(&mut w, "1").await;
    r.until(&mut w, "2", phase).await;
    drop(w);
    let mut w = r.walker();
    let state = w.recover().await.expect("recovery");
    assert_eq!(state, "idle");
    (r, w)
}

#[tokio::test]
async fn killed_when_accepted_the_swap_runs_on_restart() {
    let (r, w) = killed_in("accepted").await;
    assert_eq!(r.running_images(), vec!["web:2"]);
    assert_eq!(w.book.record.current.as_ref().unwrap().release.version, "2");
    assert_eq!(
        results(&r),
        vec![("d1".into(), "success"), ("d2".into(), "success")]
    );
}

#[tokio::test]
async fn killed_while_starting_the_swap_rolls_back() {
    let (r, w) = killed_in("starting").await;
    assert_eq!(r.running_images(), vec!["web:1"]);
    assert_eq!(r.haproxy.serving(), vec!["hs-d1"]);
    let last = r.reporter.all().pop().unwrap();
    assert_eq!(last.result, "failure");
    assert!(last
        .reason
        .unwrap()
        .contains("restarted during phase starting"));
    assert_eq!(w.book.record.current.as_ref().unwrap().release.version, "1");
}

#[tokio::test]
async fn killed_in_the_health_gate_the_new_container_is_removed() {
    let (r, _) = killed_in("health_gate").await;
    assert_eq!(r.running_images(), vec!["web:1"]);
    assert_eq!(r.haproxy.serving(), vec!["hs-d1"]);
    assert_eq!(results(&r).last().unwrap(), &("d2".into(), "failure"));
}

#[tokio::test]
async fn killed_while_switching_with_a_healthy_new_release_finishes() {
    let (r, w) = killed_in("switching").await;
    assert_eq!(r.running_images(), vec!["web:2"]);
    assert_eq!(r.haproxy.serving(), vec!["hs-d2"]);
    assert_eq!(results(&r).last().unwrap(), &("d2".into(), "success"));
    assert_eq!(w.book.record.current.as_ref().unwrap().release.version, "2");
}

#[tokio::test]
async fn killed_while_switching_with_a_dead_replica_rolls_back() {
    let r = Rig::with("replicas = 2\nbatch = 2\n");
    let mut w = r.started().await;
    r.deploy(&mut w, "1").await;
    let swap = r.until(&mut w, "2", "switching").await;
    drop(w);
    let dead = swap.new.as_ref().unwrap().members()[1].container_id.clone();
    r.docker.kill(&dead);
    let mut w = r.walker();
    w.recover().await.unwrap();
    assert_eq!(r.running_images(), vec!["web:1", "web:1"]);
    assert_eq!(r.haproxy.serving(), vec!["hs-d1", "hs-d1-2"]);
    let last = r.reporter.all().pop().unwrap();
    assert!(
        last.reason.unwrap().contains("while switching"),
        "{:?}",
        last.deploy_id
    );
}

#[tokio::test]
async fn killed_while_draining_the_swap_finishes() {
    let (r, _) = killed_in("draining").await;
    assert_eq!(r.running_images(), vec!["web:2"]);
    assert_eq!(r.haproxy.serving(), vec!["hs-d2"]);
    assert_eq!(results(&r).last().unwrap(), &("d2".into(), "success"));
}

#[tokio::test]
async fn killed_while_retiring_the_old_container_is_still_removed() {
    let (r, _) = killed_in("retiring").await;
    assert_eq!(r.running_images(), vec!["web:2"]);
    assert!(r.haproxy.server("hs-d1").is_none());
    assert_eq!(results(&r).last().unwrap(), &("d2".into(), "success"));
}

#[tokio::test]
async fn killed_while_rolling_back_the_rollback_finishes() {
    let r = Rig::new();
    let mut w = r.started().await;
    r.deploy(&mut w, "1").await;
    r.fail_gate("2");
    r.until(&mut w, "2", "rolling_back").await;
    drop(w);
    let mut w = r.walker();
    w.recover().await.unwrap();
    assert_eq!(r.running_images(), vec!["web:1"]);
    assert_eq!(r.haproxy.serving(), vec!["hs-d1"]);
    assert_eq!(results(&r).last().unwrap(), &("d2".into(), "failure"));
    assert_eq!(
        r.reporter
            .all()
            .iter()
            .filter(|x| x.deploy_id == "d2")
            .count(),
        1
    );
}

#[tokio::test]
async fn a_swap_finished_but_not_reported_is_reported_on_restart() {
    let r = Rig::new();
    let mut w = r.started().await;
    let mut swap = r.take(&mut w, "1").await;
    while !swap.phase.is_terminal() {
        swap = w.step(swap).await;
    }
    drop(w); // killed between the journaled end and the report
    assert!(r.reporter.all().is_empty());
    let mut w = r.walker();
    w.recover().await.unwrap();
    assert_eq!(results(&r), vec![("d1".into(), "success")]);
    assert!(w.book.record.swap.is_none());
}

// ---- recovery of what runs ----

#[tokio::test]
async fn recovery_removes_orphans_and_stray_servers() {
    let r = Rig::new();
    let mut w = r.started().await;
    r.deploy(&mut w, "1").await;
    // a container and a server of ours that nothing refers to
    let spec = crate::runtime::ContainerSpec {
        name: "hotswap-host-1-web-old".into(),
        image: "web:0".into(),
        env: vec![],
        command: vec![],
        volumes: vec![],
        labels: [
            ("hotswap.instance".to_string(), "host-1".to_string()),
            ("hotswap.service".to_string(), "web".to_string()),
        ]
        .into(),
        container_port: 8080,
        stop_signal: "SIGTERM".into(),
        stop_grace: std::time::Duration::from_secs(1),
    };
    crate::runtime::Runtime::start(&r.docker, &spec)
        .await
        .unwrap();
    r.haproxy.state.lock().unwrap().servers.insert(
        "hs-stray".into(),
        super::fakes::FakeServer {
            port: 1,
            admin: AdminState::Ready,
            weight: 1,
        },
    );
    drop(w);
    let mut w = r.walker();
    assert_eq!(w.recover().await.unwrap(), "idle");
    assert_eq!(r.running_images(), vec!["web:1"]);
    assert_eq!(r.haproxy.serving(), vec!["hs-d1"]);
}

#[tokio::test]
async fn recovery_puts_the_current_release_back_after_haproxy_lost_it() {
    let r = Rig::new();
    let mut w = r.started().await;
    r.deploy(&mut w, "1").await;
    r.haproxy.state.lock().unwrap().servers.clear();
    drop(w);
    let mut w = r.walker();
    w.recover().await.unwrap();
    assert_eq!(r.haproxy.serving(), vec!["hs-d1"]);
}

#[tokio::test]
async fn recovery_follows_a_current_container_to_its_new_host_port() {
    let r = Rig::new();
    let mut w = r.started().await;
    r.deploy(&mut w, "1").await;
    let id = r.journal().current.unwrap().members()[0]
        .container_id
        .clone();
    r.docker
        .state
        .lock()
        .unwrap()
        .containers
        .get_mut(&id)
        .unwrap()
        .host_port = 31_000;
    drop(w);
    let mut w = r.walker();
    w.recover().await.unwrap();
    assert_eq!(r.haproxy.server("hs-d1").unwrap().port, 31_000);
    assert_eq!(r.journal().current.unwrap().members()[0].host_port, 31_000);
}

#[tokio::test]
async fn recovery_says_degraded_when_the_current_container_is_not_running() {
    let r = Rig::new();
    let mut w = r.started().await;
    r.deploy(&mut w, "1").await;
    let id = r.journal().current.unwrap().members()[0]
        .container_id
        .clone();
    r.docker.kill(&id);
    drop(w);
    let mut w = r.walker();
    let state = w.recover().await.unwrap();
    assert!(
        state.starts_with("degraded:") && state.contains(&id),
        "{state}"
    );
}

#[tokio::test]
async fn recovery_fails_while_docker_does_not_answer_and_changes_nothing() {
    let r = Rig::new();
    let mut w = r.started().await;
    r.deploy(&mut w, "1").await;
    r.until(&mut w, "2", "health_gate").await;
    drop(w);
    r.docker.state.lock().unwrap().failing.insert("list");
    let mut w = r.walker();
    let err = w.recover().await.unwrap_err().to_string();
    assert!(
        err.contains("listing the containers of service \"web\""),
        "{err}"
    );
    assert_eq!(r.journal().swap.unwrap().phase.name(), "health_gate");
    r.docker.state.lock().unwrap().failing.clear();
    w.recover().await.unwrap();
    assert_eq!(r.running_images(), vec!["web:1"]);
}

#[tokio::test]
async fn the_walker_loop_shows_idle_after_a_release_that_recovery_already_ran() {
    // killed right after the swap was journaled as accepted, before the queue file dropped it:
    // recovery runs the swap, then the loop finds the same release queued again
    let r = Rig::new();
    let mut w = r.started().await;
    r.deploy(&mut w, "1").await;
    r.handle.submit(Rig::release("2")).unwrap();
    let budgets = w.steps.budgets();
    let swap = w.book.next_swap(|| budgets).await.unwrap();
    w.book.record.swap = Some(swap);
    w.book.store();
    drop(w);
    let handle = Arc::new(ServiceHandle::open("web", None).unwrap());
    handle.submit(Rig::release("2")).unwrap();
    let r2 = Rig {
        handle: handle.clone(),
        ..r
    };
    let task = tokio::spawn(r2.walker().run());
    let idle = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        loop {
            let v = handle.view();
            if v.state == "idle"
                && v.queued.is_empty()
                && v.current.as_ref().map(|c| c.release.version.as_str()) == Some("2")
            {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await;
    task.abort();
    assert!(idle.is_ok(), "status stuck at {:?}", handle.view().state);
    assert_eq!(
        r2.reporter
            .all()
            .iter()
            .filter(|x| x.deploy_id == "d2")
            .count(),
        1
    );
}

#[tokio::test]
async fn a_journal_written_by_hotswap_0_1_is_recovered() {
    // tests/fixtures/journal-v1-web.json: two replicas of d1 serving, d2 in its health gate
    let r = Rig::with("replicas = 2\nbatch = 2\n");
    let dir = r.dir.path().join("journal");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("web.json"),
        include_str!("../../tests/fixtures/journal-v1-web.json"),
    )
    .unwrap();
    let container = |id: &str, image: &str, deploy: &str, port: u16| {
        let labels = [
            ("hotswap.instance", "host-1"),
            ("hotswap.service", "web"),
            ("hotswap.deploy_id", deploy),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let c = super::fakes::FakeContainer {
            name: format!("hotswap-host-1-web-{deploy}-{port}"),
            image: image.into(),
            labels,
            running: true,
            host_port: port,
        };
        r.docker
            .state
            .lock()
            .unwrap()
            .containers
            .insert(id.repeat(32), c);
    };
    container("a1", "web:1", "d1", 32768);
    container("b1", "web:1", "d1", 32769);
    container("c2", "web:2", "d2", 32770);
    container("d2", "web:2", "d2", 32771);
    let mut w = r.walker();
    assert_eq!(w.recover().await.unwrap(), "idle");
    assert_eq!(r.running_images(), vec!["web:1", "web:1"]);
    assert_eq!(r.haproxy.serving(), vec!["hs-d1", "hs-d1-2"]);
    let last = r.reporter.all().pop().unwrap();
    assert_eq!((last.deploy_id.as_str(), last.result), ("d2", "failure"));
    let journal = r.journal();
    assert_eq!(journal.schema, super::journal::JOURNAL_SCHEMA);
    assert_eq!(journal.current.unwrap().members().len(), 2);
    assert_eq!(journal.history.len(), 2);
}
