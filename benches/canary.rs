//! `scripts/bench canary [--rate R] [--steps "[5, 25, 50, 100]"] [--hold-secs H] [--fail-pct P]`:
//! under a keep-alive load of R req/s (default 1000) through HAProxy, one bad release (its app
//! fails P % of requests, default 20) and then one good release go through the service's canary
//! ramp. Prints each step's figures, then as its last line
//! `bad_aborted=yes|no bad_client_error_pct=P good_completed=yes|no ramp_steps=K`, where
//! bad_client_error_pct is the share of the clients' requests that failed while the bad release
//! was deployed and K the steps the good release went through.

#[path = "../tests/support/mod.rs"]
#[allow(dead_code)]
mod support;

use std::sync::Arc;
use std::time::Duration;

use support::daemon::{Daemon, ServiceOpts};
use support::env::TestEnv;
use support::images::ImageOpts;
use support::load::Load;

async fn deploy(daemon: &Arc<Daemon>, image: &str) -> (bool, serde_json::Value) {
    let d = daemon.clone();
    let image = image.to_string();
    let code = support::blocking(move || d.deploy(&image).0).await;
    (code == 0, daemon.reports().pop().expect("a report"))
}

fn print_steps(label: &str, report: &serde_json::Value) -> usize {
    let steps = report["canary"]["steps"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for s in &steps {
        let f = |who: &str, k: &str| s[who][k].as_u64().unwrap_or(0);
        println!(
            "{label} {kind} share={share}% ms={ms} new_requests={} new_errors={} new_rtime_ms={} old_requests={} old_errors={} old_rtime_ms={} verdict={:?}",
            f("new", "requests"),
            f("new", "errors"),
            f("new", "rtime_ms"),
            f("old", "requests"),
            f("old", "errors"),
            f("old", "rtime_ms"),
            s["verdict"].as_str().unwrap_or(""),
            kind = s["kind"].as_str().unwrap_or(""),
            share = s["share_pct"],
            ms = s["ended_ms"].as_u64().unwrap_or(0).saturating_sub(s["started_ms"].as_u64().unwrap_or(0)),
        );
    }
    steps.len()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let arg = support::cli_arg;
    let rate: u32 = arg("--rate")
        .map(|v| v.parse().expect("--rate R"))
        .unwrap_or(1000);
    let steps = arg("--steps").unwrap_or_else(|| "[5, 25, 50, 100]".into());
    let hold: f64 = arg("--hold-secs")
        .map(|v| v.parse().expect("--hold-secs H"))
        .unwrap_or(3.0);
    let fail_pct: u32 = arg("--fail-pct")
        .map(|v| v.parse().expect("--fail-pct P"))
        .unwrap_or(20);

    let mut env = TestEnv::new("bcanary");
    let v1 = env.image("1", &ImageOpts::default());
    let bad = env.image(
        "2",
        &ImageOpts {
            fail_pct,
            ..Default::default()
        },
    );
    let good = env.image("3", &ImageOpts::default());
    let config = env.config(&ServiceOpts {
        extra: format!("\n[services.web.ramp]\nsteps = {steps}\nhold_secs = {hold}\n"),
        ..Default::default()
    });
    let daemon = Arc::new(Daemon::start(env.dir.path(), &config));
    daemon.deploy_ok(&v1);
    let load = Load::start_with_rate(env.haproxy.frontend, 16, "/", Some(rate));
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mark = load.mark();
    let (bad_ok, bad_report) = deploy(&daemon, &bad).await;
    let (failed, requests) = (load.failed_since(&mark), load.requests_since(&mark));
    print_steps("bad", &bad_report);
    println!(
        "bad reason={:?}",
        bad_report["reason"].as_str().unwrap_or("")
    );
    let bad_aborted = !bad_ok
        && bad_report["canary"]["steps"]
            .as_array()
            .and_then(|s| s.last())
            .and_then(|s| s["verdict"].as_str())
            .is_some_and(|v| v.starts_with("aborted"));

    let mark = load.mark();
    let (good_ok, good_report) = deploy(&daemon, &good).await;
    let good_failed = load.failed_since(&mark);
    let k = print_steps("good", &good_report);
    let stats = load.stop().await;
    println!("load {stats}; failed during the good release: {good_failed}");
    let pct = if requests > 0 {
        100.0 * failed as f64 / requests as f64
    } else {
        0.0
    };
    let yn = |b: bool| if b { "yes" } else { "no" };
    println!(
        "bad_aborted={} bad_client_error_pct={pct:.3} good_completed={} ramp_steps={k}",
        yn(bad_aborted),
        yn(good_ok && good_report["result"] == "success"),
    );
}
