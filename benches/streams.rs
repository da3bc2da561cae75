//! `scripts/bench streams [--ws N] [--sse M] [--swaps K] [--budget-secs B] [--spread-secs S]
//! [--rate R]`: long-lived connections across swaps. N WebSockets (default 200) and M event
//! streams (default 50) held open through HAProxy beside keep-alive HTTP load at R req/s
//! (default 200), across K swaps (default 3) between two releases; the app ends its event
//! streams itself when told (SIGUSR1), hotswapd closes the WebSockets after B s (default 3)
//! spread over S s (default 2). Prints each swap's figures, then as its last line
//! `streams=N closed_early=C closed_by_us=U reconnected_new=R http_failed=F`: N streams open at
//! the swaps' drains, C of them that ended abruptly before the budget, U closed by hotswapd,
//! R reconnected to the new release, F failed HTTP requests.

#[path = "../tests/support/mod.rs"]
#[allow(dead_code)]
mod support;

use std::sync::Arc;
use std::time::Duration;

use support::daemon::Daemon;
use support::env::TestEnv;
use support::images::ImageOpts;
use support::load::Load;
use support::streams::{Life, StreamClients};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let arg = support::cli_num;
    let (ws, sse, swaps) = (
        arg("--ws", 200) as usize,
        arg("--sse", 50) as usize,
        arg("--swaps", 3),
    );
    let (budget_ms, spread_ms, rate) = (
        arg("--budget-secs", 3) * 1000,
        arg("--spread-secs", 2) * 1000,
        arg("--rate", 200) as u32,
    );
    let mut env = TestEnv::new("bench-streams");
    let images = [
        env.image("1", &ImageOpts::default()),
        env.image("2", &ImageOpts::default()),
    ];
    let config = env.config(&support::streams::service_opts(budget_ms, spread_ms));
    let daemon = Arc::new(Daemon::start(env.dir.path(), &config));
    daemon.deploy_ok(&images[0]);
    let addr = env.haproxy.frontends["web"];
    let load = Load::start_with_rate(addr, 4, "/", Some(rate));
    let clients = StreamClients::start(addr, ws, sse);
    clients
        .wait_open("1", ws + sse, Duration::from_secs(30))
        .await;
    eprintln!("bench streams: {ws} WebSockets and {sse} event streams open on 1, HTTP at {rate} req/s; budget {budget_ms} ms, spread {spread_ms} ms");

    let marker = load.mark();
    let mut drains = Vec::new();
    for k in 0..swaps {
        let (old, new) = (((k % 2) + 1).to_string(), (((k + 1) % 2) + 1).to_string());
        let d = daemon.clone();
        let image = images[((k + 1) % 2) as usize].clone();
        support::blocking(move || d.deploy_ok(&image)).await;
        clients
            .wait_open(&new, ws + sse, Duration::from_secs(30))
            .await;
        let report = daemon
            .reports()
            .into_iter()
            .filter(|r| r["version"] == new.as_str())
            .last()
            .expect("a report");
        let drain_at = report["phases"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["phase"] == "draining"))
            .and_then(|p| p["started_ms"].as_u64())
            .expect("a draining phase");
        eprintln!(
            "bench streams: swap {} ({old} -> {new}): streams {}",
            k + 1,
            report["streams"]
        );
        drains.push((old, new, drain_at, report["streams"].clone()));
    }
    let http_failed = load.failed_since(&marker);
    let stats = load.stop().await;
    let failures = clients.failures();
    let lives = clients.stop().await;

    let (mut streams, mut closed_early, mut closed_by_us, mut reconnected) = (0, 0, 0, 0);
    let mut close_ms = Vec::new();
    for (old, new, drain_at, counts) in &drains {
        // the streams on the old release that ended in this swap's drain
        let ended: Vec<&Life> = lives
            .iter()
            .filter(|l| &l.release == old && l.ended_ms.is_some_and(|e| e >= *drain_at))
            .filter(|l| l.opened_ms < *drain_at)
            .collect();
        streams += ended.len();
        closed_early += ended
            .iter()
            .filter(|l| !l.graceful && l.ended_ms.unwrap() < drain_at + budget_ms)
            .count();
        close_ms.extend(
            ended
                .iter()
                .filter(|l| !l.graceful)
                .map(|l| l.ended_ms.unwrap() - drain_at),
        );
        closed_by_us += counts["closed"].as_u64().unwrap_or(0);
        reconnected += lives
            .iter()
            .filter(|l| &l.release == new && l.opened_ms >= *drain_at)
            .filter(|l| l.opened_ms <= drain_at + budget_ms + spread_ms + 5000)
            .count();
    }
    close_ms.sort_unstable();
    if let (Some(first), Some(last)) = (close_ms.first(), close_ms.last()) {
        eprintln!(
            "bench streams: closed by hotswapd from {first} to {last} ms into the drain (budget {budget_ms}, spread {spread_ms})"
        );
    }
    eprintln!("bench streams: HTTP {stats}");
    if !failures.is_empty() {
        eprintln!("bench streams: streams that failed to open: {failures:?}");
    }
    drop(daemon);
    drop(env);
    println!(
        "streams={streams} closed_early={closed_early} closed_by_us={closed_by_us} reconnected_new={reconnected} http_failed={http_failed}"
    );
}
