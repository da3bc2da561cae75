//! Floods and hostile clients against the real daemon: a storm of releases (10,000 inbox files at
//! once, 300 deploys at once over the socket) where every accepted deploy ends with an answer
//! (done, failed, or superseded by a named later one) in `deploy` status and in a report, with
//! memory bounded; and a metrics listener that still answers its scraper while thousands of
//! idle connections and hundreds of slow ones are held open.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use hotswap::control::api::DeployRequest;
use hotswap::control::client::{Client, ClientError};
use support::daemon::{Daemon, ServiceOpts};
use support::env::TestEnv;
use support::images::ImageOpts;

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap()
        / 1024.0
}

/// Waits until the daemon has answered every deploy in `ids`: each has exactly one report.
/// Returns each id's report result and, for a superseded one, who superseded it.
fn answers(
    d: &Daemon,
    ids: &BTreeSet<String>,
    limit: Duration,
) -> BTreeMap<String, (String, Option<String>)> {
    let started = Instant::now();
    loop {
        let mut by: BTreeMap<String, Vec<(String, Option<String>)>> = BTreeMap::new();
        for r in d.reports() {
            if r["kind"] != "swap" {
                continue;
            }
            by.entry(r["deploy_id"].as_str().unwrap().to_string())
                .or_default()
                .push((
                    r["result"].as_str().unwrap().to_string(),
                    r["superseded_by"].as_str().map(String::from),
                ));
        }
        let missing = ids.iter().filter(|id| !by.contains_key(*id)).count();
        if missing == 0 {
            let twice: Vec<_> = by.iter().filter(|(_, v)| v.len() > 1).collect();
            assert!(twice.is_empty(), "reported more than once: {twice:?}");
            return by.into_iter().map(|(k, mut v)| (k, v.remove(0))).collect();
        }
        assert!(
            started.elapsed() < limit,
            "{missing} of {} deploys have no report after {limit:?}; status {:?}",
            ids.len(),
            d.status_json()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Every id answers on the socket as its report says: finished, or superseded by an accepted id.
async fn every_deploy_answers(
    client: &Client,
    reported: &BTreeMap<String, (String, Option<String>)>,
    accepted: &BTreeSet<String>,
) {
    for (id, (result, by)) in reported {
        if !accepted.contains(id) {
            continue;
        }
        let s = client
            .deploy_status(id, None)
            .await
            .unwrap_or_else(|e| panic!("deploy {id}: {e}"));
        assert!(s.finished, "{id}: {s:?}");
        match result.as_str() {
            "superseded" => {
                let by = by.as_deref().expect("a superseded report names who");
                assert_eq!(s.status(), "superseded", "{id}");
                assert_eq!(s.superseded_by(), Some(by), "{id}");
                assert!(
                    accepted.contains(by),
                    "{id} superseded by {by}, never accepted"
                );
            }
            // a swap the service's recent history still holds, or one known from its report
            "success" => assert!(
                s.phase() == Some("succeeded") || s.result() == Some("success"),
                "{id}: {s:?}"
            ),
            other => panic!("{id}: {other}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_inbox_files_at_once_each_end_with_an_answer() {
    let mut env = TestEnv::new("inboxstorm");
    let image = env.image("a", &ImageOpts::default());
    let config = env.config(&ServiceOpts::default());
    let d = Daemon::start(env.dir.path(), &config);
    let inbox = env.dir.path().join("state/inbox");
    let staging = env.dir.path().join("staging");
    std::fs::create_dir_all(&staging).unwrap();
    let mut good = BTreeSet::new();
    for i in 0..10_000 {
        let name = format!("r{i:05}.json");
        let body = match i % 10 {
            // one in ten is bad: a service this host does not have, or not JSON
            3 => format!("{{\"service\":\"nope\",\"image\":\"{image}\"}}"),
            7 => "{\"service\": \"web\", \"ima".to_string(),
            _ => {
                good.insert(format!("storm-{i:05}"));
                format!(
                    "{{\"service\":\"web\",\"image\":\"{image}\",\"deploy_id\":\"storm-{i:05}\"}}"
                )
            }
        };
        std::fs::write(staging.join(&name), body).unwrap();
    }
    assert_eq!(good.len(), 8_000);
    for i in 0..10_000 {
        let name = format!("r{i:05}.json");
        std::fs::rename(staging.join(&name), inbox.join(&name)).unwrap();
    }
    let reported = answers(&d, &good, Duration::from_secs(300));
    let client = Client::new(&d.socket);
    every_deploy_answers(&client, &reported, &good).await;
    let rejected = std::fs::read_dir(inbox.join("rejected"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "reason")
        })
        .count();
    assert_eq!(rejected, 2_000, "each bad file rejected with its reason");
    let superseded = reported.values().filter(|(r, _)| r == "superseded").count();
    eprintln!("of 8000: {superseded} superseded, the rest swapped");
    let rss = rss_mib(d.pid().unwrap());
    assert!(rss < 64.0, "{rss} MiB resident after the storm");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_deploys_over_the_socket_is_answered_or_refused_with_a_reason_never_lost() {
    let mut env = TestEnv::new("sockstorm");
    let image = env.image("a", &ImageOpts::default());
    let config = env.config(&ServiceOpts::default());
    let d = Daemon::start(env.dir.path(), &config);
    let client = Client::new(&d.socket);
    let mut tasks = Vec::new();
    for i in 0..300 {
        let client = client.clone();
        let image = image.clone();
        tasks.push(tokio::spawn(async move {
            let id = format!("sock-{i:03}");
            let req = DeployRequest {
                service: "web".into(),
                image,
                deploy_id: Some(id.clone()),
                ..Default::default()
            };
            (id, client.deploy(&req).await)
        }));
    }
    let mut accepted = BTreeSet::new();
    let mut refused = 0;
    for t in tasks {
        let (id, result) = t.await.unwrap();
        match result {
            Ok(a) => {
                assert_eq!(a.deploy_id, id);
                accepted.insert(id);
            }
            // refused, saying why, rather than accepted and dropped
            Err(ClientError::Rejected {
                status: 503,
                message,
            }) => {
                assert!(message.contains("try again"), "{message}");
                refused += 1;
            }
            Err(e) => panic!("{id}: {e}"),
        }
    }
    eprintln!("{} accepted, {refused} refused as busy", accepted.len());
    let reported = answers(&d, &accepted, Duration::from_secs(120));
    every_deploy_answers(&client, &reported, &accepted).await;
    // an id never accepted is unknown, as it should be
    let unknown = client.deploy_status("sock-never", None).await;
    assert!(
        matches!(unknown, Err(ClientError::Rejected { status: 404, .. })),
        "{unknown:?}"
    );
}

/// One scrape of `GET /metrics` at `addr` on a new connection, within `limit`.
async fn scrape(addr: std::net::SocketAddr, limit: Duration) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let work = async {
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .map_err(|e| e.to_string())?;
        let mut reply = Vec::new();
        s.read_to_end(&mut reply).await.map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&reply);
        if text.starts_with("HTTP/1.1 200") && text.contains("hotswap_") {
            Ok(())
        } else {
            Err(format!("answered {:?}", text.lines().next()))
        }
    };
    tokio::time::timeout(limit, work)
        .await
        .map_err(|_| format!("no answer within {limit:?}"))?
}

/// Holds a connection to `addr` open forever, sending `trickle` one byte a second (nothing
/// when empty); when the daemon closes it, connects again a second later. Ends with `stop`.
async fn hold(
    addr: std::net::SocketAddr,
    trickle: &'static [u8],
    stop: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    while !*stop.borrow() {
        if let Ok(mut s) = tokio::net::TcpStream::connect(addr).await {
            let mut buf = [0u8; 512];
            let mut at = 0;
            loop {
                if *stop.borrow() {
                    return;
                }
                if !trickle.is_empty() {
                    if s.write_all(&trickle[at % trickle.len()..][..1])
                        .await
                        .is_err()
                    {
                        break;
                    }
                    at += 1;
                }
                match tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => break, // closed by the daemon
                    _ => {}
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_listener_answers_its_scraper_through_thousands_of_idle_and_slow_connections() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    assert!(
        hard >= 8192,
        "this test holds 3,300 connections: raise the hard descriptor limit ({hard})"
    );
    setrlimit(Resource::RLIMIT_NOFILE, hard.min(65536).max(soft), hard).unwrap();
    let env = TestEnv::new("metricsflood");
    let port = support::haproxy::free_port();
    let config = env.config(&ServiceOpts::default());
    support::daemon::add_daemon_lines(&config, &format!("metrics_listen = \"127.0.0.1:{port}\""));
    let d = Daemon::start(env.dir.path(), &config);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    scrape(addr, Duration::from_secs(2)).await.unwrap();
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let mut attackers = Vec::new();
    for _ in 0..3_000 {
        attackers.push(tokio::spawn(hold(addr, b"", stop.clone())));
    }
    for _ in 0..300 {
        attackers.push(tokio::spawn(hold(
            addr,
            b"GET /metrics HTTP/1.1\r\nhost: slow\r\nx-pad: ",
            stop.clone(),
        )));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    // a scraper every half second for 20 s, each with Prometheus' patience cut to 3 s
    let (mut ok, mut failed) = (0, Vec::new());
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        match scrape(addr, Duration::from_secs(3)).await {
            Ok(()) => ok += 1,
            Err(e) => failed.push(e),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stop_tx.send(true).unwrap();
    for a in attackers {
        a.abort();
    }
    eprintln!(
        "scrapes answered: {ok}, failed: {}: {failed:?}",
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "{} of {} scrapes failed: {failed:?}",
        failed.len(),
        ok + failed.len()
    );
    assert!(d.status_json().is_ok(), "the control socket still answers");
}
