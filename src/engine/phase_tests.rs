//! The state machine's moves, deadlines and journal form.
use super::*;

fn release(v: &str) -> Release {
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

fn instance(v: &str) -> Instance {
    Instance::containers(
        release(v),
        vec![Replica {
            container_id: format!("c{v}"),
            server: format!("web-d{v}"),
            addr: std::net::Ipv4Addr::LOCALHOST.into(),
            host_port: 30000,
        }],
    )
}

fn budgets() -> Budgets {
    Budgets {
        health_deadline: Duration::from_secs(60),
        drain_budget: Duration::from_secs(60),
        drain_split: None,
        host_budget: Duration::from_secs(180),
        rollback: Duration::from_secs(30),
    }
}

#[test]
fn happy_path_walks_every_phase_with_deadlines_bounded_by_host_budget() {
    let s = Swap::new(release("2"), Some(instance("1")), budgets(), 1_000);
    let s = s.apply(Event::Begin, 1_000).unwrap();
    assert_eq!(s.phase, Phase::Starting { deadline: 181_000 });
    let s = s.apply(Event::Started(instance("2")), 2_000).unwrap();
    assert_eq!(s.phase, Phase::HealthGate { deadline: 62_000 });
    let s = s.apply(Event::GatePassed, 3_000).unwrap();
    let s = s.apply(Event::Switched, 150_000).unwrap();
    // drain budget (60 s) is cut to what is left of the host budget
    assert_eq!(s.phase, Phase::Draining { deadline: 181_000 });
    let s = s.apply(Event::Drained, 151_000).unwrap();
    let s = s.apply(Event::Retired, 152_000).unwrap();
    assert_eq!(s.phase, Phase::Succeeded);
    let names: Vec<_> = s.marks.iter().map(|m| m.phase.as_str()).collect();
    assert_eq!(
        names,
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
    assert_eq!(s.durations()[3], ("switching".to_string(), 147_000));
}

#[test]
fn failure_before_switch_rolls_back_and_keeps_first_reason() {
    let s = Swap::new(release("2"), Some(instance("1")), budgets(), 0)
        .apply(Event::Begin, 0)
        .unwrap()
        .apply(Event::Started(instance("2")), 10)
        .unwrap()
        .apply(
            Event::Fail(Failure::new(
                Cause::HealthGate,
                "health gate deadline passed",
            )),
            60_010,
        )
        .unwrap();
    assert_eq!(s.phase, Phase::RollingBack { deadline: 90_010 });
    let s = s.apply(Event::RolledBack, 60_100).unwrap();
    assert_eq!(s.phase, Phase::Failed);
    assert_eq!(s.reason.as_deref(), Some("health gate deadline passed"));
    assert!(s.phase.is_terminal());
}

#[test]
fn illegal_moves_are_typed_errors() {
    let s = Swap::new(release("2"), None, budgets(), 0);
    let err = s.clone().apply(Event::GatePassed, 1).unwrap_err();
    assert_eq!(
        err,
        IllegalMove {
            deploy_id: "d2".into(),
            event: "gate_passed",
            phase: "accepted"
        }
    );
    // after the switch there is no rolling back by removing the new release
    let s = s
        .apply(Event::Begin, 0)
        .unwrap()
        .apply(Event::Started(instance("2")), 0)
        .unwrap()
        .apply(Event::GatePassed, 0)
        .unwrap()
        .apply(Event::Switched, 0)
        .unwrap();
    assert!(s.phase.is_past_switch());
    assert!(s
        .clone()
        .apply(Event::Fail(Failure::new(Cause::HealthGate, "x")), 0)
        .is_err());
    assert!(s.apply(Event::Retired, 0).is_err());
}

#[test]
fn a_ramp_walks_its_steps_then_the_watch_window_and_may_fail_until_the_drain() {
    let ramp = vec![
        RampStep {
            share_pct: 10,
            hold_ms: 1_000,
        },
        RampStep {
            share_pct: 100,
            hold_ms: 2_000,
        },
    ];
    let s = Swap::new(release("2"), Some(instance("1")), budgets(), 0).with_ramp(ramp, 5_000);
    // the host budget grows by the planned holds and watch
    assert_eq!(s.host_deadline, 180_000 + 8_000);
    let s = s
        .apply(Event::Begin, 0)
        .unwrap()
        .apply(Event::Started(instance("2")), 0)
        .unwrap()
        .apply(Event::GatePassed, 0)
        .unwrap()
        .apply(Event::Switched, 100)
        .unwrap();
    assert_eq!(
        s.phase,
        Phase::Ramping {
            step: 0,
            deadline: 100 + 1_000 + 60_000 + STEP_SLACK_MS
        }
    );
    assert!(!s.phase.is_past_switch(), "a ramp can still turn back");
    let s = s.apply(Event::StepPassed, 1_100).unwrap();
    assert!(matches!(s.phase, Phase::Ramping { step: 1, .. }));
    let watching = s.apply(Event::StepPassed, 3_100).unwrap();
    assert!(matches!(watching.phase, Phase::Watching { .. }));
    // trouble in the watch window: roll back
    let failed = watching
        .clone()
        .apply(Event::Fail(Failure::new(Cause::HealthGate, "5xx")), 4_000)
        .unwrap();
    assert!(matches!(failed.phase, Phase::RollingBack { .. }));
    let s = watching.apply(Event::Watched, 8_100).unwrap();
    assert!(matches!(s.phase, Phase::Draining { .. }));
    assert!(s.clone().apply(Event::StepPassed, 0).is_err());
    assert!(s
        .apply(Event::Fail(Failure::new(Cause::HealthGate, "late")), 0)
        .is_err());
}

#[test]
fn without_a_watch_window_the_last_step_drains_the_old_release() {
    let ramp = vec![RampStep {
        share_pct: 100,
        hold_ms: 0,
    }];
    let s = Swap::new(release("2"), Some(instance("1")), budgets(), 0)
        .with_ramp(ramp, 0)
        .apply(Event::Begin, 0)
        .unwrap()
        .apply(Event::Started(instance("2")), 0)
        .unwrap()
        .apply(Event::GatePassed, 0)
        .unwrap()
        .apply(Event::Switched, 0)
        .unwrap()
        .apply(Event::StepPassed, 0)
        .unwrap();
    assert!(matches!(s.phase, Phase::Draining { .. }));
}

#[test]
fn journal_form_round_trips() {
    let s = Swap::new(release("2"), Some(instance("1")), budgets(), 5)
        .apply(Event::Begin, 6)
        .unwrap();
    let text = serde_json::to_string(&s).unwrap();
    assert!(text.contains(r#""phase":"starting""#), "{text}");
    let back: Swap = serde_json::from_str(&text).unwrap();
    assert_eq!(back, s);
}
