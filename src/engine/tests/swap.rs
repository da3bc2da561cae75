//! The walker on fakes: a swap that goes well.

use super::{results, Rig};
use crate::engine::phase::Phase;

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
    r.in_flight("hs-d1", 3);
    let s = r.deploy(&mut w, "2").await;
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    assert_eq!(r.haproxy.state.lock().unwrap().in_flight["hs-d1"], 0);
}

#[tokio::test]
async fn a_drain_budget_that_ends_is_a_warning_not_a_failure() {
    let r = Rig::with("drain_budget_secs = 0\n");
    let mut w = r.started().await;
    r.deploy(&mut w, "1").await;
    r.in_flight("hs-d1", 1_000_000);
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
    assert!(matches!(again, crate::engine::Submitted::Existing { .. }));
    assert_eq!(r.calls.count("docker start"), 1);
}

/// A stream on `server` that ends by itself after `readings` readings of the sessions (None:
/// until closed).
fn stream(r: &Rig, id: &str, server: &str, readings: Option<u32>) {
    let session = crate::balancer::Session {
        id: id.into(),
        server: server.into(),
        streaming: true,
    };
    r.haproxy
        .state
        .lock()
        .unwrap()
        .sessions
        .push((session, readings));
}

#[tokio::test]
async fn streams_are_told_given_their_budget_then_closed_and_counted() {
    let r =
        Rig::with("stream_budget_secs = 1\nclose_spread_secs = 1\ndrain_notice = \"SIGUSR1\"\n");
    let mut w = r.started().await;
    r.deploy(&mut w, "1").await;
    let old = r.current_container();
    stream(&r, "0x1", "hs-d1", Some(2));
    stream(&r, "0x2", "hs-d1", None);
    stream(&r, "0x3", "hs-d1", None);
    let began = std::time::Instant::now();
    let s = r.deploy(&mut w, "2").await;
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    assert_eq!(r.calls.count(&format!("docker signal {old} SIGUSR1")), 1);
    let counts = s.streams.expect("streams counted");
    assert_eq!(
        (counts.open, counts.ended, counts.closed),
        (3, 1, 2),
        "{counts:?}"
    );
    assert!(r.haproxy.state.lock().unwrap().sessions.is_empty());
    // the budget (1 s) passed before anything was closed
    assert!(began.elapsed() >= std::time::Duration::from_secs(1));
    let report = r.reporter.all().pop().unwrap();
    assert_eq!(report.streams, Some(counts));
}

#[tokio::test]
async fn a_swap_restarted_mid_drain_keeps_the_budgets_it_began_with() {
    let r = Rig::with("stream_budget_secs = 1\nclose_spread_secs = 1\n");
    let mut w = r.started().await;
    r.deploy(&mut w, "1").await;
    stream(&r, "0x1", "hs-d1", None);
    r.until(&mut w, "2", "draining").await;
    // hotswapd stopped mid-drain and started on a config that gives streams 2 minutes; the
    // swap journaled 1 s (and the drain phase 60 s)
    r.settings
        .send(super::settings(
            "stream_budget_secs = 120\nclose_spread_secs = 1\n",
        ))
        .unwrap();
    let began = std::time::Instant::now();
    let (w, _) = r.restart(w).await;
    assert_eq!(results(&r).last().unwrap(), &("d2".into(), "success"));
    assert_eq!(
        r.reporter.all().pop().unwrap().streams.map(|c| c.closed),
        Some(1)
    );
    assert!(
        began.elapsed() < std::time::Duration::from_secs(30),
        "drained by the new config's budget: {:?}",
        began.elapsed()
    );
    drop(w);
}

#[tokio::test]
async fn a_drain_with_no_stream_reports_none_and_sends_an_http_notice() {
    let r = Rig::with("drain_notice = \"POST /drain\"\n");
    let mut w = r.started().await;
    r.deploy(&mut w, "1").await;
    r.in_flight("hs-d1", 2);
    let s = r.deploy(&mut w, "2").await;
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    assert_eq!(s.streams, None);
    let notices: Vec<String> = r
        .calls
        .all()
        .into_iter()
        .filter(|c| c.starts_with("notify ") && c.ends_with(" POST /drain"))
        .collect();
    assert_eq!(notices.len(), 1, "{:?}", r.calls.all());
}

#[tokio::test]
async fn sessions_that_cannot_be_read_leave_the_drain_budget_and_one_warning() {
    let r = Rig::new();
    let mut w = r.started().await;
    r.deploy(&mut w, "1").await;
    r.in_flight("hs-d1", 30);
    r.haproxy.state.lock().unwrap().failing.insert("sessions");
    let s = r.deploy(&mut w, "2").await;
    assert_eq!(s.phase, Phase::Succeeded);
    let said: Vec<_> = s
        .warnings
        .iter()
        .filter(|w| w.contains("reading HAProxy's sessions"))
        .collect();
    assert_eq!(said.len(), 1, "{:?}", s.warnings);
    assert_eq!(s.streams, None);
}
