//! The swap engine against the real daemon process, real Docker and real HAProxy.

mod support;

use std::time::Duration;

use support::blocking;
use support::daemon::{Daemon, ServiceOpts};
use support::env::TestEnv;
use support::images::ImageOpts;
use support::load::Load;

fn current_image(d: &Daemon) -> Option<String> {
    let s = d.status_json().ok()?;
    s["services"][0]["current"]["release"]["image"]
        .as_str()
        .map(String::from)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swap_under_keep_alive_load_drops_nothing_and_retires_the_old_release() {
    let mut env = TestEnv::new("swap");
    let v1 = env.image("1", &ImageOpts::default());
    let v2 = env.image("2", &ImageOpts::default());
    let config = env.config(&ServiceOpts::default());
    let daemon = std::sync::Arc::new(Daemon::start(env.dir.path(), &config));
    daemon.deploy_ok(&v1);

    let load = Load::start(env.haproxy.frontend, 8, "/");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = load.snapshot();
    assert_eq!(
        before.by_release.keys().collect::<Vec<_>>(),
        ["1"],
        "{before}"
    );

    let d = daemon.clone();
    let img = v2.clone();
    blocking(move || d.deploy_ok(&img)).await;
    let after_swap = load.mark();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let since = load.releases_since(&after_swap);
    let stats = load.stop().await;

    assert_eq!(stats.failed, 0, "requests failed during the swap: {stats}");
    assert!(
        stats.requests > 200,
        "load too light to prove anything: {stats}"
    );
    assert_eq!(
        since.keys().collect::<Vec<_>>(),
        ["2"],
        "after the swap only release 2 answers"
    );

    // the old container is gone, the new one runs; HAProxy has exactly the new server
    let containers = env.containers();
    assert_eq!(containers.len(), 1, "{containers:?}");
    assert_eq!(containers[0].1, v2);
    assert!(containers[0].2);
    let servers = env.haproxy.servers("web");
    assert_eq!(servers.len(), 1, "{servers:?}");
    let cfg = std::fs::read_to_string(&env.haproxy.config).unwrap();
    assert!(
        cfg.contains(&format!("server {} ", servers[0])),
        "config file in step: {cfg}"
    );
    // web:1 is kept for rollback (keep_images = 1)
    assert!(env.image_exists(&v1), "previous image kept for rollback");

    let reports = daemon.reports();
    assert_eq!(reports.len(), 2, "{reports:?}");
    let r = &reports[1];
    assert_eq!(r["result"], "success");
    assert_eq!(r["image"], v2.as_str());
    assert_eq!(r["previous_image"], v1.as_str());
    let phases: Vec<&str> = r["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["phase"].as_str().unwrap())
        .collect();
    assert_eq!(
        phases,
        [
            "accepted",
            "starting",
            "health_gate",
            "switching",
            "draining",
            "retiring"
        ]
    );
    assert!(r["health_response"]
        .as_str()
        .unwrap()
        .contains(r#""release":"2""#));

    let status = daemon.status_json().unwrap();
    assert_eq!(status["services"][0]["previous"]["image"], v1.as_str());
    assert_eq!(current_image(&daemon).as_deref(), Some(v2.as_str()));

    // one more: web:1 goes (web:2 is now the rollback image), and the report says what it freed
    let v3 = env.image("3", &ImageOpts::default());
    daemon.deploy_ok(&v3);
    assert!(!env.image_exists(&v1) && env.image_exists(&v2));
    let r = daemon.reports().pop().unwrap();
    assert!(r["images_reclaimed_bytes"].is_u64(), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_that_never_gets_healthy_is_removed_and_the_old_keeps_serving() {
    let mut env = TestEnv::new("unhealthy");
    let v1 = env.image("1", &ImageOpts::default());
    let bad = env.image(
        "bad",
        &ImageOpts {
            healthy_never: true,
            ..Default::default()
        },
    );
    let opts = ServiceOpts {
        health_deadline_secs: 3,
        ..Default::default()
    };
    let config = env.config(&opts);
    let daemon = std::sync::Arc::new(Daemon::start(env.dir.path(), &config));
    daemon.deploy_ok(&v1);

    let load = Load::start(env.haproxy.frontend, 4, "/");
    let d = daemon.clone();
    let img = bad.clone();
    let (code, _out, err) = blocking(move || d.deploy(&img)).await;
    let stats = load.stop().await;

    assert_eq!(code, 5, "deploy of a never-healthy release exits 5: {err}");
    assert!(
        err.contains("health gate") && err.contains("status 503"),
        "the reason is shown: {err}"
    );
    assert_eq!(stats.failed, 0, "{stats}");
    assert_eq!(
        stats.by_release.keys().collect::<Vec<_>>(),
        ["1"],
        "{stats}"
    );

    let containers = env.containers();
    assert_eq!(
        containers.len(),
        1,
        "the new container is removed: {containers:?}"
    );
    assert_eq!(containers[0].1, v1);
    assert_eq!(env.haproxy.servers("web").len(), 1);
    assert_eq!(current_image(&daemon).as_deref(), Some(v1.as_str()));

    let reports = daemon.reports();
    let r = reports.last().unwrap();
    assert_eq!(r["result"], "failure");
    assert_eq!(r["phase_reached"], "health_gate");
    assert!(
        r["reason"]
            .as_str()
            .unwrap()
            .contains("did not pass within"),
        "{r}"
    );
}
