//! The walker on fakes: recovery of what runs.

use std::sync::Arc;

use super::{start_up, Rig};
use crate::balancer::AdminState;
use crate::engine::handle::ServiceHandle;
use crate::engine::steps::Steps;
use crate::engine::State;

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
        options: Default::default(),
    };
    crate::runtime::Runtime::start(&r.docker, &spec)
        .await
        .unwrap();
    r.haproxy.state.lock().unwrap().servers.insert(
        "hs-stray".into(),
        crate::engine::fakes::FakeServer {
            addr: std::net::Ipv4Addr::LOCALHOST.into(),
            port: 1,
            admin: AdminState::Ready,
            weight: 1,
        },
    );
    let (_, state) = r.restart(w).await;
    assert_eq!(state, State::Serving);
    assert_eq!(r.running_images(), vec!["web:1"]);
    assert_eq!(r.haproxy.serving(), vec!["hs-d1"]);
}

#[tokio::test]
async fn recovery_puts_the_current_release_back_after_haproxy_lost_it() {
    let r = Rig::new();
    let mut w = r.started().await;
    r.deploy(&mut w, "1").await;
    r.haproxy.state.lock().unwrap().servers.clear();
    r.restart(w).await;
    assert_eq!(r.haproxy.serving(), vec!["hs-d1"]);
}

#[tokio::test]
async fn recovery_follows_a_current_container_to_its_new_address() {
    let r = Rig::new();
    let mut w = r.started().await;
    r.deploy(&mut w, "1").await;
    let id = r.current_container();
    r.docker
        .state
        .lock()
        .unwrap()
        .containers
        .get_mut(&id)
        .unwrap()
        .ip = "10.9.9.9".parse().unwrap();
    r.restart(w).await;
    let server = r.haproxy.server("hs-d1").unwrap();
    assert_eq!(
        (server.addr.to_string().as_str(), server.port),
        ("10.9.9.9", 8080)
    );
    let member = r.journal().current.unwrap().members()[0].clone();
    assert_eq!(
        (member.addr.to_string().as_str(), member.host_port),
        ("10.9.9.9", 8080)
    );
}

#[tokio::test]
async fn recovery_follows_a_published_container_to_its_new_host_port() {
    let r = Rig::with("container = { reach = \"published\" }");
    let mut w = r.started().await;
    r.deploy(&mut w, "1").await;
    let id = r.current_container();
    r.docker
        .state
        .lock()
        .unwrap()
        .containers
        .get_mut(&id)
        .unwrap()
        .host_port = 31_000;
    r.restart(w).await;
    let server = r.haproxy.server("hs-d1").unwrap();
    assert_eq!(
        (server.addr.to_string().as_str(), server.port),
        ("127.0.0.1", 31_000)
    );
    assert_eq!(r.journal().current.unwrap().members()[0].host_port, 31_000);
}

#[tokio::test]
async fn a_dead_current_container_is_replaced_at_start_up_and_the_repair_reported() {
    let r = Rig::new();
    let mut w = r.started().await;
    r.deploy(&mut w, "1").await;
    let dead = r.current_container();
    r.docker.kill(&dead);
    let (w, state) = r.restart(w).await;
    assert_eq!(state, State::Serving);
    let new = r.current_container();
    assert_ne!(new, dead, "a fresh container of the same release");
    assert_eq!(r.running_images(), vec!["web:1"]);
    assert!(
        !r.docker
            .state
            .lock()
            .unwrap()
            .containers
            .contains_key(&dead),
        "the dead one is removed"
    );
    let ip = r.docker.state.lock().unwrap().containers[&new].ip.clone();
    assert_eq!(
        r.haproxy.server("hs-d1").unwrap().addr,
        ip,
        "HAProxy follows it"
    );
    assert_eq!(r.haproxy.serving(), vec!["hs-d1"]);
    // gated before it took traffic
    let calls = r.calls.all();
    let after = |from: usize, prefix: &str| {
        from + calls[from..]
            .iter()
            .position(|c| c.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} after {from}: {calls:?}"))
    };
    let death = after(0, "docker death");
    let started = after(death, "docker start");
    let gated = after(started, "gate");
    assert!(after(gated, "haproxy put_in hs-d1") > gated, "{calls:?}");
    let report = r.reporter.all().pop().unwrap();
    assert_eq!(
        (
            report.kind.as_str(),
            report.result.as_str(),
            report.deploy_id.as_str()
        ),
        ("repair", "success", "d1")
    );
    let repair = report.repair.unwrap();
    assert_eq!(
        (&repair.part, repair.exit_code, repair.attempt),
        (
            &crate::report::RepairedPart::Container {
                container: dead.clone(),
                server: "hs-d1".into()
            },
            Some(137),
            1
        )
    );
    assert_eq!(repair.replacement.as_deref(), Some(new.as_str()));
    assert!(!repair.log_tail.is_empty());
    assert_eq!(
        w.book.record.current.as_ref().unwrap().members()[0].container_id,
        new
    );
}

#[tokio::test]
async fn a_repair_that_fails_shows_down_and_waits_before_trying_again() {
    let r = Rig::new();
    let mut w = r.started().await;
    r.deploy(&mut w, "1").await;
    let dead = r.current_container();
    r.docker.kill(&dead);
    r.docker.state.lock().unwrap().failing.insert("start");
    let (mut w, state) = r.restart(w).await;
    assert_eq!(state, State::Down);
    let reason = w.health.1.clone().unwrap();
    assert!(
        reason.contains("repair attempt 2 in 1 s")
            && reason.contains("the last repair failed: starting container 1"),
        "{reason}"
    );
    assert!(w.repairs.next_try.is_some(), "it looks again by itself");
    let repairs = |r: &Rig| {
        r.reporter
            .all()
            .iter()
            .filter(|x| x.kind == crate::model::ReportKind::Repair)
            .map(|x| x.result.as_str())
            .collect::<Vec<_>>()
    };
    assert_eq!(repairs(&r), ["failure"]);
    // woken again before the wait is over: no new attempt, no new report
    w.supervise().await;
    assert_eq!(repairs(&r), ["failure"]);
    r.docker.state.lock().unwrap().failing.clear();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    w.supervise().await;
    assert_eq!(w.health.0, State::Serving);
    assert_eq!(repairs(&r), ["failure", "success"]);
    assert_eq!(r.running_images(), vec!["web:1"]);
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
    w.book.store().unwrap();
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
            if v.state == State::Serving
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
        include_str!("../../../tests/fixtures/journal-v1-web.json"),
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
        let c = crate::engine::fakes::FakeContainer {
            name: format!("hotswap-host-1-web-{deploy}-{port}"),
            image: image.into(),
            labels,
            running: true,
            host_port: port,
            ip: std::net::Ipv4Addr::new(10, 1, 0, (port % 250) as u8).into(),
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
    assert_eq!(start_up(&mut w).await, State::Serving);
    assert_eq!(r.running_images(), vec!["web:1", "web:1"]);
    assert_eq!(r.haproxy.serving(), vec!["hs-d1", "hs-d1-2"]);
    let last = r.reporter.all().pop().unwrap();
    assert_eq!(
        (last.deploy_id.as_str(), last.result.as_str()),
        ("d2", "failure")
    );
    let journal = r.journal();
    assert_eq!(journal.schema, crate::engine::journal::JOURNAL_SCHEMA);
    assert_eq!(journal.current.unwrap().members().len(), 2);
    assert_eq!(journal.history.len(), 2);
}

#[tokio::test]
async fn a_container_docker_said_died_is_repaired_while_its_list_still_shows_it_running() {
    let r = Rig::new();
    let mut w = r.started().await;
    r.deploy(&mut w, "1").await;
    let dead = r.current_container();
    // the list says running (Docker's lag after `die`); a look without the event sees nothing
    w.supervise().await;
    assert_eq!(r.current_container(), dead);
    r.handle.died(&dead);
    w.supervise().await;
    assert_eq!(w.health.0, State::Serving);
    assert_ne!(r.current_container(), dead, "replaced on the event alone");
    let report = r.reporter.all().pop().unwrap();
    assert_eq!(
        (report.kind.as_str(), report.result.as_str()),
        ("repair", "success")
    );
    // the event is taken once: the replacement is left alone
    let now = r.current_container();
    w.supervise().await;
    assert_eq!(r.current_container(), now);
}

#[tokio::test]
async fn a_damaged_journal_is_moved_aside_and_rebuilt_from_what_serves() {
    let r = Rig::with("replicas = 2");
    let mut w = r.started().await;
    r.deploy(&mut w, "1").await;
    r.deploy(&mut w, "2").await;
    let before = r.journal().current.unwrap();
    let journal = r.dir.path().join("journal/web.json");
    for damage in [&b"{\"schema\": 2, \"curr"[..], &[0xff, 0, 3][..]] {
        std::fs::write(&journal, damage).unwrap();
        let (w2, state) = r.restart(w).await;
        w = w2;
        assert_eq!(state, State::Degraded, "named, not hidden");
        let reason = w.health.1.clone().unwrap();
        assert!(
            reason.contains("web.json")
                && reason.contains("moved to")
                && reason.contains("web:2 (d2) serves"),
            "{reason}"
        );
        let rebuilt = r.journal().current.unwrap();
        assert_eq!(rebuilt.release.image, "web:2");
        assert_eq!(rebuilt.release.deploy_id, "d2");
        assert_eq!(
            rebuilt.members(),
            before.members(),
            "the same containers and servers"
        );
        // nothing serving was touched
        assert_eq!(r.running_images(), vec!["web:2", "web:2"]);
        assert_eq!(r.haproxy.serving(), vec!["hs-d2", "hs-d2-2"]);
    }
    let aside = std::fs::read_dir(r.dir.path().join("journal"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains(".damaged-")
        })
        .count();
    assert_eq!(aside, 2, "each damaged journal kept for the operator");
    // the next good swap clears the note
    r.deploy(&mut w, "3").await;
    w.supervise().await;
    assert_eq!(w.health.0, State::Serving);
    assert!(r.journal().damaged.is_empty());
}

#[tokio::test]
async fn a_journal_that_is_a_fifo_or_a_device_does_not_hang_recovery() {
    let r = Rig::new();
    let mut w = r.started().await;
    r.deploy(&mut w, "1").await;
    let journal = r.dir.path().join("journal/web.json");
    std::fs::remove_file(&journal).unwrap();
    nix::unistd::mkfifo(&journal, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let (w, state) = tokio::time::timeout(std::time::Duration::from_secs(5), r.restart(w))
        .await
        .expect("recovery returns");
    assert_eq!(state, State::Degraded);
    assert!(w
        .health
        .1
        .as_deref()
        .unwrap()
        .contains("not a regular file"));
    assert_eq!(r.journal().current.unwrap().release.image, "web:1");
    std::fs::remove_file(&journal).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &journal).unwrap();
    let (_, state) = r.restart(w).await;
    assert_eq!(state, State::Degraded);
    assert_eq!(r.journal().current.unwrap().release.image, "web:1");
    assert_eq!(r.running_images(), vec!["web:1"]);
}
