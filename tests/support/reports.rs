//! Host reports as hotswapd builds them, for the build box's tests and benchmarks that play a fleet.
#![allow(dead_code)]

use std::time::Duration;

use hotswap::engine::phase::{Budgets, Event, Instance, Release, Replica, Swap};

/// A host's report, built the way hotswapd builds it.
pub fn host_report(deploy_id: &str, instance: &str, ok: bool) -> String {
    let release = Release {
        service: "web".into(),
        image: "web:2".into(),
        version: "2".into(),
        deploy_id: deploy_id.into(),
        archive: None,
        code: None,
        no_ramp: false,
        requested_by: None,
    };
    let budgets = Budgets {
        health_deadline: Duration::from_secs(60),
        drain_budget: Duration::from_secs(60),
        drain_split: None,
        host_budget: Duration::from_secs(180),
        rollback: Duration::from_secs(60),
    };
    let mut s = Swap::new(release.clone(), None, budgets, 1)
        .apply(Event::Begin, 2)
        .unwrap();
    if ok {
        let inst = Instance::containers(
            release,
            vec![Replica {
                container_id: "c".into(),
                server: "hs-x".into(),
                addr: std::net::Ipv4Addr::LOCALHOST.into(),
                host_port: 1,
            }],
        );
        for e in [
            Event::Started(inst),
            Event::GatePassed,
            Event::Switched,
            Event::Drained,
            Event::Retired,
        ] {
            s = s.apply(e, 3).unwrap();
        }
    } else {
        s = s
            .apply(
                Event::Fail(hotswap::engine::phase::Failure::new(
                    hotswap::model::Cause::HealthGate,
                    "health gate on http://127.0.0.1:1/health did not pass",
                )),
                3,
            )
            .unwrap()
            .apply(Event::RolledBack, 4)
            .unwrap();
    }
    serde_json::to_string(&hotswap::engine::book::swap_report(
        instance,
        Some("shop"),
        &s,
    ))
    .unwrap()
}
