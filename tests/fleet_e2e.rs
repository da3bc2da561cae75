//! The whole fleet flow on this machine, against moto (tests/support/fleet.rs): a stack whose
//! Auto Scaling group has 4 instances; 4 simulated hosts, each its own HAProxy and hotswapd
//! (instance id = one of the group's), sharing the Docker engine and a private registry on
//! loopback the releases are pulled from, each under keep-alive load.
//! `hotswapctl stack-update` with a new release → three hosts' metadata watchers and one host's
//! cfn-hup hook see it → each swaps and reports to SQS → `stack-update` exits 0 having counted 4.
//! Then one host cannot pass its gate: `stack-update` fails naming that instance, the others
//! swap, and that host still serves the old release. 0 failed requests on every host throughout.

mod support;

use std::time::Duration;

use support::fleet::Fleet;
use support::load::Load;
use support::text;

/// Waits (up to 60 s) until `status` on `h` names `image` as current.
async fn serves(h: &support::fleet::Host, image: &str) {
    let started = std::time::Instant::now();
    while h.current().as_deref() != Some(image) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{} does not serve {image}: {}",
            h.instance_id,
            h.daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stack_update_swaps_every_host_and_counts_them_and_a_failing_host_is_named() {
    let fleet = Fleet::start(4, Some(3), &["1", "2", "3"]).await;
    let loads: Vec<Load> = fleet
        .hosts
        .iter()
        .map(|h| Load::start(h.env.haproxy.frontend, 2, "/"))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // 1. every host swaps, the build box counts them all
    let (out, _) = fleet.stack_update("2", false).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("4/4 instances reported success"),
        "{}",
        text(&out)
    );
    // a host's report may reach SQS a moment before its status shows the swap's end
    for h in &fleet.hosts {
        serves(h, &fleet.image("2")).await;
    }

    // 2. one watching host cannot pass its gate (its health check now wants a status nobody
    // answers): named by stack-update; the others swap; it keeps serving release 2
    let bad = &fleet.hosts[1];
    let cfg = std::fs::read_to_string(&bad.config).unwrap();
    std::fs::write(
        &bad.config,
        cfg.replace(
            "path = \"/health\"",
            "path = \"/health\"\nexpect_status = 299",
        ),
    )
    .unwrap();
    let reloaded = bad.daemon.ctl(&["reload"]);
    assert!(reloaded.status.success(), "{}", text(&reloaded));
    let (out, _) = fleet.stack_update("3", false).await;
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains(&bad.instance_id),
        "names the failing instance: {}",
        text(&out)
    );
    // the others finish on their own time: wait for them, not for the build box
    for (i, h) in fleet.hosts.iter().enumerate() {
        serves(h, &fleet.image(if i == 1 { "2" } else { "3" })).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (i, load) in loads.into_iter().enumerate() {
        let stats = load.stop().await;
        assert_eq!(stats.failed, 0, "host {i}: {stats}");
        assert!(stats.requests > 50, "host {i}: {stats}");
    }
    // the watcher's state is in status
    let s = fleet.hosts[0].daemon.status_json().unwrap();
    assert_eq!(s["cloudformation"]["stack"], "shop", "{s}");
    assert!(s["cloudformation"]["error"].is_null(), "{s}");
}
