//! The walker on fakes: replicas.

use super::Rig;
use crate::balancer::AdminState;
use crate::engine::phase::Phase;

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
