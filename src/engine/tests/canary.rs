//! The walker on fakes: the canary ramp, judged on HAProxy's figures.

use super::{results, Rig};
use crate::engine::phase::Phase;

const RAMP: &str = r#"
[services.web.ramp]
steps = [50, 100]
hold_secs = 0.05
watch_secs = 0.05
check_interval_ms = 10
min_requests = 10
"#;

/// Traffic per reading of HAProxy's figures: (responses, errors) for each server.
fn traffic(r: &Rig, per_server: &[(&str, u64, u64)]) {
    let mut s = r.haproxy.state.lock().unwrap();
    for (name, responses, errors) in per_server {
        s.growth.insert(name.to_string(), (*responses, *errors));
    }
}

#[tokio::test]
async fn a_good_canary_walks_its_steps_then_the_watch_window() {
    let r = Rig::with(RAMP);
    let mut w = r.started().await;
    r.deploy(&mut w, "1").await;
    traffic(&r, &[("hs-d1", 100, 0), ("hs-d2", 100, 0)]);
    let s = r.deploy(&mut w, "2").await;
    assert_eq!(s.phase, Phase::Succeeded, "{:?}", s.reason);
    let kinds: Vec<(&str, u8, &str)> = s
        .steps
        .iter()
        .map(|st| (st.kind.as_str(), st.share_pct, st.verdict.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("ramp", 50, "passed"),
            ("ramp", 100, "passed"),
            ("watch", 100, "passed")
        ]
    );
    // the new server joined at weight 0; traffic moved by weights in one call per step
    assert!(r.calls.any("haproxy put_in hs-d2 weight Some(0)"));
    assert_eq!(r.calls.count("haproxy set_weights hs-d2="), 2);
    assert_eq!(r.haproxy.serving(), vec!["hs-d2"]);
    assert_eq!(r.running_images(), vec!["web:2"]);
}

#[tokio::test]
async fn a_canary_with_errors_turns_traffic_back_in_one_call_and_goes() {
    let r = Rig::with(RAMP);
    let mut w = r.started().await;
    r.deploy(&mut w, "1").await;
    traffic(&r, &[("hs-d1", 100, 0), ("hs-d2", 100, 40)]);
    let s = r.deploy(&mut w, "2").await;
    assert_eq!(s.phase, Phase::Failed);
    let reason = s.reason.clone().unwrap();
    assert!(reason.contains("canary step 1 of 2"), "{reason}");
    assert!(
        reason.contains("turned back to the old release"),
        "{reason}"
    );
    assert!(s.steps[0].verdict.starts_with("aborted"), "{:?}", s.steps);
    // all weight back to the old release in one call, before the canary leaves HAProxy
    let back = r
        .calls
        .index("haproxy set_weights hs-d2=0,")
        .expect("weights turned back");
    let out = r.calls.index("haproxy take_out hs-d2").unwrap();
    assert!(back < out);
    assert_eq!(r.haproxy.serving(), vec!["hs-d1"]);
    assert_eq!(r.running_images(), vec!["web:1"]);
    assert_eq!(results(&r).last().unwrap(), &("d2".into(), "failure"));
    let report = r.reporter.all().pop().unwrap();
    assert_eq!(report.cause, Some(crate::model::Cause::Canary));
}

#[tokio::test]
async fn no_ramp_switches_at_once_and_says_so() {
    let r = Rig::with(RAMP);
    let mut w = r.started().await;
    r.deploy(&mut w, "1").await;
    r.handle
        .submit(crate::engine::phase::Release {
            no_ramp: true,
            requested_by: None,
            ..Rig::release("2")
        })
        .unwrap();
    let budgets = crate::engine::steps::Steps::budgets(&w.steps);
    let swap = w.book.next_swap(|| budgets).await.unwrap();
    let swap = w.accept(swap).await;
    w.walk(swap).await;
    let s = w.book.record.history.last().unwrap();
    assert_eq!(s.phase, Phase::Succeeded);
    assert!(s.ramp_skipped && s.steps.is_empty());
    assert!(!r.calls.any("haproxy set_weights"));
    assert!(s.warnings.iter().any(|w| w.contains("--no-ramp")));
}

#[tokio::test]
async fn a_first_deploy_has_nothing_to_compare_with_and_switches_at_once() {
    let r = Rig::with(RAMP);
    let mut w = r.started().await;
    let s = r.deploy(&mut w, "1").await;
    assert!(s.ramp.is_empty() && s.steps.is_empty());
    assert_eq!(r.haproxy.serving(), vec!["hs-d1"]);
}

#[tokio::test]
async fn killed_mid_ramp_the_old_release_gets_all_traffic_back() {
    let r = Rig::with(RAMP);
    let mut w = r.started().await;
    r.deploy(&mut w, "1").await;
    traffic(&r, &[("hs-d1", 100, 0), ("hs-d2", 100, 0)]);
    let mut swap = r.until(&mut w, "2", "ramping").await;
    // the first step ran (traffic shared), then the daemon died as the second began
    swap = w.step(swap).await;
    assert_eq!(
        swap.phase,
        Phase::Ramping {
            step: 1,
            deadline: swap.phase.deadline().unwrap()
        }
    );
    r.restart(w).await;
    assert_eq!(r.haproxy.serving(), vec!["hs-d1"]);
    assert_eq!(r.running_images(), vec!["web:1"]);
    let last = r.reporter.all().pop().unwrap();
    assert!(last
        .reason
        .unwrap()
        .contains("restarted during phase ramping"));
}
