//! A daemon killed in the middle of a swap finds, on restart, exactly what to finish or undo.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use support::blocking;
use support::daemon::{Daemon, ServiceOpts};
use support::env::TestEnv;
use support::images::ImageOpts;
use support::load::Load;

/// Waits until the service's swap shows `phase`.
fn wait_phase(d: &Daemon, phase: &str) {
    let started = Instant::now();
    loop {
        if let Ok(s) = d.status_json() {
            if s["services"][0]["swap"]["phase"]["phase"] == phase {
                return;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "never reached {phase}; log:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn submit(d: &Daemon, image: &str) {
    let out = d.ctl(&["deploy", "web", "--image", image]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_during_the_health_gate_the_restarted_daemon_rolls_back() {
    let mut env = TestEnv::new("crashgate");
    let v1 = env.image("1", &ImageOpts::default());
    let slow = env.image(
        "2",
        &ImageOpts {
            warmup_ms: 20_000,
            ..Default::default()
        },
    );
    let config = env.config(&ServiceOpts::default());
    let mut daemon = Daemon::start(env.dir.path(), &config);
    daemon.deploy_ok(&v1);

    let load = Load::start(env.haproxy.frontend, 4, "/");
    submit(&daemon, &slow);
    wait_phase(&daemon, "health_gate");
    assert_eq!(
        env.containers().len(),
        2,
        "new container started beside the old"
    );
    daemon.kill();

    let daemon = Daemon::start(env.dir.path(), &config);
    let stats = load.stop().await;
    assert_eq!(stats.failed, 0, "{stats}");
    assert_eq!(
        stats.by_release.keys().collect::<Vec<_>>(),
        ["1"],
        "{stats}"
    );
    let containers = env.containers();
    assert_eq!(containers.len(), 1, "no orphan left: {containers:?}");
    assert_eq!(containers[0].1, v1);
    assert_eq!(env.haproxy.servers("web").len(), 1);
    let r = daemon.reports().pop().unwrap();
    assert_eq!(r["result"], "failure");
    assert!(
        r["reason"]
            .as_str()
            .unwrap()
            .contains("restarted during phase health_gate"),
        "{r}"
    );
    // and the service still swaps afterwards (the daemon goes before `env`: dropped in reverse
    // order, it cannot repair what `env` removes)
    let v3 = env.image("3", &ImageOpts::default());
    daemon.deploy_ok(&v3);
    assert_eq!(env.containers().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_while_draining_the_restarted_daemon_finishes_the_swap_and_requests_complete() {
    let mut env = TestEnv::new("crashdrain");
    let v1 = env.image("1", &ImageOpts::default());
    let v2 = env.image("2", &ImageOpts::default());
    // every request takes 1.5 s: the old server has requests in flight when it drains
    let opts = ServiceOpts {
        env: vec![("DELAY_MS", "1500".into())],
        drain_budget_secs: 20,
        ..Default::default()
    };
    let config = env.config(&opts);
    let mut daemon = Daemon::start(env.dir.path(), &config);
    daemon.deploy_ok(&v1);

    let load = Load::start(env.haproxy.frontend, 4, "/");
    tokio::time::sleep(Duration::from_millis(300)).await;
    submit(&daemon, &v2);
    wait_phase(&daemon, "draining");
    daemon.kill();

    let daemon = Daemon::start(env.dir.path(), &config);
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let mark = load.mark();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let since = load.releases_since(&mark);
    let stats = load.stop().await;
    assert_eq!(
        stats.failed, 0,
        "in-flight requests of the draining release complete: {stats}"
    );
    assert_eq!(since.keys().collect::<Vec<_>>(), ["2"], "{since:?}");
    let containers = env.containers();
    assert_eq!(containers.len(), 1, "{containers:?}");
    assert_eq!(containers[0].1, v2);
    let r = daemon.reports().pop().unwrap();
    assert_eq!(r["result"], "success", "{r}");
    assert_eq!(r["image"], v2.as_str());
    let status = daemon.status_json().unwrap();
    assert_eq!(
        status["services"][0]["current"]["release"]["image"],
        v2.as_str()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_reload_keeps_the_current_server() {
    let mut env = TestEnv::new("hareload");
    let v1 = env.image("1", &ImageOpts::default());
    let config = env.config(&ServiceOpts::default());
    let daemon = Daemon::start(env.dir.path(), &config);
    daemon.deploy_ok(&v1);
    let server = env.haproxy.servers("web");
    env.haproxy.reload();
    let started = Instant::now();
    // the new worker comes up with the servers from the config file hotswapd kept in step
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let load = Load::start(env.haproxy.frontend, 1, "/");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let stats = load.stop().await;
        if stats.failed == 0
            && stats.by_release.contains_key("1")
            && env.haproxy.servers("web") == server
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "after reload: {stats} servers {:?}",
            env.haproxy.servers("web")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_takes_no_dynamic_servers_is_switched_by_a_hitless_reload() {
    let mut env = TestEnv::with_balance("static", "uri");
    let v1 = env.image("1", &ImageOpts::default());
    let v2 = env.image("2", &ImageOpts::default());
    let config = env.config(&ServiceOpts::default());
    let daemon = Arc::new(Daemon::start(env.dir.path(), &config));
    daemon.deploy_ok(&v1);
    let load = Load::start(env.haproxy.frontend, 4, "/");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let d = daemon.clone();
    let img = v2.clone();
    blocking(move || d.deploy_ok(&img)).await;
    let mark = load.mark();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let since = load.releases_since(&mark);
    let stats = load.stop().await;
    assert_eq!(since.keys().collect::<Vec<_>>(), ["2"], "{stats}");
    let r = daemon.reports().pop().unwrap();
    assert_eq!(r["result"], "success");
    let warnings = r["warnings"].to_string();
    assert!(
        warnings.contains("switched by rewriting the config and reloading"),
        "{r}"
    );
    assert_eq!(env.containers().len(), 1);
    // A reload closes the old worker's keep-alive connections: a client can lose the one request
    // it sent at that instant, on each connection, once. Counted, never hidden; the default
    // runtime switch never reloads.
    eprintln!("reload fallback under load: {stats}");
    assert!(
        stats.failed <= 4,
        "at most one lost request per connection at the reload: {stats}"
    );
}
