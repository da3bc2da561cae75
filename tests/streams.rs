//! Long-lived connections across a swap, against the real daemon, Docker and HAProxy: 200
//! WebSockets and 50 event streams open through HAProxy, keep-alive HTTP load beside them. The
//! old app is told (SIGUSR1) and ends its event streams itself; the WebSockets are closed by
//! hotswapd only after the stream budget, spread over the close window; every client comes back
//! on the new release, no HTTP request fails, and the report counts what the clients saw.

mod support;

use std::time::Duration;

use support::env::TestEnv;
use support::images::ImageOpts;
use support::load::Load;
use support::streams::{Kind, StreamClients};

const WS: usize = 200;
const SSE: usize = 50;
const BUDGET_MS: u64 = 3000;
const SPREAD_MS: u64 = 2000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_outlive_the_budget_then_come_back_on_the_new_release_without_a_failed_request() {
    let mut env = TestEnv::new("streams");
    let v1 = env.image("1", &ImageOpts::default());
    let v2 = env.image("2", &ImageOpts::default());
    let config = env.config(&support::streams::service_opts(BUDGET_MS, SPREAD_MS));
    let daemon = support::daemon::Daemon::start(env.dir.path(), &config);
    daemon.deploy_ok(&v1);

    let addr = env.haproxy.frontends["web"];
    let load = Load::start_with_rate(addr, 4, "/", Some(200));
    let clients = StreamClients::start(addr, WS, SSE);
    clients
        .wait_open("1", WS + SSE, Duration::from_secs(20))
        .await;
    let marker = load.mark();

    let d = std::sync::Arc::new(daemon);
    let dd = d.clone();
    let v = v2.clone();
    support::blocking(move || dd.deploy_ok(&v)).await;
    // every client back on 2
    clients
        .wait_open("2", WS + SSE, Duration::from_secs(10))
        .await;
    let failed = load.failed_since(&marker);
    let requests = load.requests_since(&marker);
    let stats = load.stop().await;
    let failures = clients.failures();
    let lives = clients.stop().await;

    let report = d
        .reports()
        .into_iter()
        .find(|r| r["version"] == "2")
        .expect("a report of 2");
    assert_eq!(report["result"], "success", "{report}");
    let drain_at = report["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["phase"] == "draining")
        .and_then(|p| p["started_ms"].as_u64())
        .expect("a draining phase");

    assert_eq!(failed, 0, "HTTP requests failed across the swap: {stats}");
    assert!(requests > 0, "the HTTP load ran: {stats}");
    assert!(
        failures.is_empty(),
        "streams that failed to open: {failures:?}"
    );

    let old: Vec<_> = lives.iter().filter(|l| l.release == "1").collect();
    let new: Vec<_> = lives.iter().filter(|l| l.release == "2").collect();
    assert_eq!(old.len(), WS + SSE, "one stream per client on 1");
    assert_eq!(new.len(), WS + SSE, "one stream per client back on 2");
    assert!(
        new.iter().all(|l| l.ended_ms.is_none()),
        "no stream on 2 ended"
    );
    // the event streams were ended by the app itself, when told, before the budget
    let sse: Vec<_> = old.iter().filter(|l| l.kind == Kind::Sse).collect();
    assert!(sse.iter().all(|l| l.graceful), "{sse:?}");
    // the WebSockets: none closed before the budget, all by budget + spread
    let ws_ends: Vec<u64> = old
        .iter()
        .filter(|l| l.kind == Kind::Ws)
        .map(|l| l.ended_ms.expect("every stream on 1 ended"))
        .collect();
    let first = *ws_ends.iter().min().unwrap();
    let last = *ws_ends.iter().max().unwrap();
    assert!(
        first >= drain_at + BUDGET_MS,
        "a WebSocket closed {} ms into the drain, before the {BUDGET_MS} ms budget",
        first.saturating_sub(drain_at)
    );
    assert!(
        last <= drain_at + BUDGET_MS + SPREAD_MS + 500,
        "a WebSocket closed {} ms into the drain, after budget + spread",
        last - drain_at
    );
    assert!(
        last - first >= SPREAD_MS / 2,
        "closes spread over {} ms only",
        last - first
    );
    assert!(
        old.iter()
            .filter(|l| l.kind == Kind::Ws)
            .all(|l| !l.graceful),
        "the app left its WebSockets to hotswapd"
    );
    // the report counts what the clients saw
    let streams = &report["streams"];
    assert_eq!(streams["open"], (WS + SSE) as u64, "{report}");
    assert_eq!(streams["ended"], SSE as u64, "{report}");
    assert_eq!(streams["closed"], WS as u64, "{report}");
    drop(d);
}
