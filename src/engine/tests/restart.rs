//! The walker on fakes: a daemon killed in each phase, then started again.

use super::{results, start_up, Rig, W};
use crate::engine::State;

async fn killed_in(phase: &str) -> (Rig, W) {
    let r = Rig::new();
    let mut w = r.started().await;
    r.deploy(&mut w, "1").await;
    r.until(&mut w, "2", phase).await;
    drop(w);
    let mut w = r.walker();
    let state = start_up(&mut w).await;
    assert_eq!(state, State::Serving);
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
    assert_eq!(last.result, crate::model::Outcome::Failure);
    assert!(last
        .reason
        .unwrap()
        .contains("restarted during phase starting"));
    assert_eq!(last.cause, Some(crate::model::Cause::Restarted));
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
    r.restart(w).await;
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
