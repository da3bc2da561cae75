//! The walker on fakes: failures before the switch: the old release keeps serving.

use super::{results, Rig};
use crate::engine::phase::{Phase, Release};
use crate::engine::steps::Steps;
use crate::engine::State;
use crate::model::Cause;

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
    assert_eq!(
        r.reporter.all().pop().unwrap().cause,
        Some(Cause::HealthGate)
    );
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
    assert_eq!(s.cause, Some(Cause::Docker));
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
    r.restart(w).await;
    assert_eq!(r.running_images(), vec!["web:1"]);
}

#[tokio::test]
async fn a_phase_that_cannot_be_journaled_does_not_act_until_it_can() {
    let r = Rig::new();
    let mut w = r.started().await;
    r.deploy(&mut w, "1").await;
    let swap = r.take(&mut w, "2").await;
    // the journal's directory becomes unwritable (here: a file in its place)
    let journal = r.dir.path().join("journal");
    let away = r.dir.path().join("journal.away");
    std::fs::rename(&journal, &away).unwrap();
    std::fs::write(&journal, "not a directory").unwrap();
    let task = tokio::spawn(async move {
        w.walk(swap).await;
        w
    });
    let handle = r.handle.clone();
    let shown = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while handle.view().state != State::Degraded {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(shown.is_ok(), "state: {}", handle.view().state);
    let reason = handle.view().reason.unwrap_or_default();
    assert!(reason.contains("journal"), "{reason}");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // nothing acted on the phase the journal does not hold
    assert_eq!(r.calls.count("docker start"), 1);
    assert_eq!(r.haproxy.serving(), vec!["hs-d1"]);
    std::fs::remove_file(&journal).unwrap();
    std::fs::rename(&away, &journal).unwrap();
    let w = tokio::time::timeout(std::time::Duration::from_secs(10), task)
        .await
        .expect("the swap goes on once the journal is written")
        .unwrap();
    assert_eq!(
        w.book.record.history.last().unwrap().phase,
        Phase::Succeeded
    );
    assert_eq!(r.haproxy.serving(), vec!["hs-d2"]);
    assert_eq!(results(&r).last().unwrap(), &("d2".into(), "success"));
}

#[tokio::test]
async fn an_old_container_docker_could_not_remove_is_removed_when_it_answers() {
    let r = Rig::new();
    let mut w = r.started().await;
    r.deploy(&mut w, "1").await;
    r.docker.state.lock().unwrap().failing.insert("remove");
    let s = r.deploy(&mut w, "2").await;
    assert_eq!(s.phase, Phase::Succeeded);
    assert!(
        s.warnings
            .iter()
            .any(|w| w.contains("removing old container")),
        "{:?}",
        s.warnings
    );
    assert_eq!(r.running_images(), vec!["web:1", "web:2"]);
    // remembered in the journal: a restart would know it too
    assert_eq!(r.journal().leftovers.len(), 1);
    // Docker still failing: kept
    assert!(!w.steps.tidy(&mut w.book).await);
    r.docker.state.lock().unwrap().failing.clear();
    assert!(w.steps.tidy(&mut w.book).await);
    assert_eq!(r.running_images(), vec!["web:2"]);
    assert!(r.journal().leftovers.is_empty());
}
