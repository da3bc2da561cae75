//! The operator's view against the real daemon, Docker and HAProxy: history names who asked for
//! each release and how, `rollback --to` goes two versions back under load, and /metrics is
//! also served over TCP; `deploy --wait` shows what a slow health gate last heard.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use support::blocking;
use support::daemon::{add_daemon_lines, Daemon, ServiceOpts};
use support::env::TestEnv;
use support::images::ImageOpts;
use support::load::Load;

/// Waits until the deploy `id` shows in the reports (an inbox release is not followed by a CLI).
fn wait_report(daemon: &Daemon, id: &str) -> serde_json::Value {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(r) = daemon.reports().into_iter().find(|r| r["deploy_id"] == id) {
            return r;
        }
        assert!(
            Instant::now() < until,
            "no report of {id}:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_names_each_requester_and_rollback_to_goes_two_versions_back_under_load() {
    let mut env = TestEnv::new("operator");
    let v1 = env.image("1", &ImageOpts::default());
    let v2 = env.image("2", &ImageOpts::default());
    // 3 warms up for 4 s: its health route answers 503 until then
    let v3 = env.image(
        "3",
        &ImageOpts {
            warmup_ms: 4000,
            ..Default::default()
        },
    );
    let config = env.config(&ServiceOpts {
        keep_images: 2,
        ..Default::default()
    });
    // a free loopback port for the TCP metrics listener
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    add_daemon_lines(&config, &format!("metrics_listen = \"127.0.0.1:{port}\""));
    let daemon = Arc::new(Daemon::start(env.dir.path(), &config));

    // 1 over the socket, 2 through the inbox, 3 over the socket
    daemon.deploy_ok(&v1);
    let inbox = env.dir.path().join("state/inbox");
    std::fs::write(
        inbox.join(".rel-2.tmp"),
        format!(r#"{{"service":"web","image":"{v2}","deploy_id":"by-inbox"}}"#),
    )
    .unwrap();
    std::fs::rename(inbox.join(".rel-2.tmp"), inbox.join("rel-2.json")).unwrap();
    let d = daemon.clone();
    let r2 = blocking(move || wait_report(&d, "by-inbox")).await;
    assert_eq!(r2["result"], "success", "{r2}");
    // no silent wait: deploy --wait says, about once a second, what the gate last heard
    let (code, out, err) = daemon.deploy(&v3);
    assert_eq!(code, 0, "{out}{err}\n{}", daemon.log());
    let gate_lines = err
        .lines()
        .filter(|l| l.contains("health gate: ") && l.contains("last answer: status 503"))
        .count();
    assert!(
        gate_lines >= 2,
        "the gate's wait is shown about once a second:\n{err}"
    );

    let out = daemon.ctl(&["history", "web", "--json"]);
    assert!(out.status.success(), "{}", support::text(&out));
    let h: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let versions: Vec<&str> = h.iter().map(|r| r["version"].as_str().unwrap()).collect();
    assert_eq!(versions, ["3", "2", "1"], "newest first: {h:?}");
    let by = |r: &serde_json::Value| r["requested_by"].clone();
    assert_eq!(by(&h[1])["via"], "inbox", "{}", h[1]);
    assert_eq!(by(&h[1])["source"], "rel-2.json", "{}", h[1]);
    assert_eq!(by(&h[1])["uid"], nix::unistd::getuid().as_raw(), "{}", h[1]);
    for r in [&h[0], &h[2]] {
        assert_eq!(by(r)["via"], "socket", "{r}");
        assert_eq!(by(r)["uid"], nix::unistd::getuid().as_raw(), "{r}");
        let command = by(r)["command"].as_str().unwrap_or_default().to_string();
        assert!(
            command.contains("hotswapctl") && command.contains("deploy web --image"),
            "{r}"
        );
    }
    let table = daemon.ctl(&["history"]);
    let table = support::text(&table);
    assert!(table.contains("inbox uid="), "{table}");
    assert!(table.contains("rel-2.json"), "{table}");
    assert_eq!(
        table.lines().count(),
        4,
        "a heading and three swaps:\n{table}"
    );

    // a version that was never kept is refused, naming what is kept
    let out = daemon.ctl(&["rollback", "web", "--to", "7"]);
    let said = support::text(&out);
    assert_ne!(out.status.code(), Some(0), "{said}");
    assert!(
        said.contains("no kept release \"7\"") && said.contains("2 (") && said.contains("1 ("),
        "{said}"
    );

    // two versions back, under load: nothing fails, 1 serves, the output says where it went
    let load = Load::start_with_rate(env.haproxy.frontend, 4, "/", Some(1000));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let d = daemon.clone();
    let out = blocking(move || {
        d.ctl(&[
            "rollback",
            "web",
            "--to",
            "1",
            "--wait",
            "--timeout-secs",
            "2m",
        ])
    })
    .await;
    let said = support::text(&out);
    assert_eq!(out.status.code(), Some(0), "{said}\n{}", daemon.log());
    assert!(said.contains("back to version 1"), "{said}");
    assert!(
        said.contains("switching") && said.contains("succeeded"),
        "phases shown: {said}"
    );
    let mark = load.mark();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let since = load.releases_since(&mark);
    let stats = load.stop().await;
    assert_eq!(
        stats.failed, 0,
        "requests failed during the rollback: {stats}"
    );
    assert!(stats.requests > 200, "load too light: {stats}");
    assert_eq!(since.keys().collect::<Vec<_>>(), ["1"], "{stats}");
    let back = daemon.reports().pop().unwrap();
    assert_eq!(back["image"], v1.as_str(), "{back}");
    assert_eq!(back["requested_by"]["via"], "socket", "{back}");
    let took = back["finished_ms"].as_u64().unwrap() - back["accepted_ms"].as_u64().unwrap();
    let to_traffic = back["time_to_traffic_ms"].as_u64().unwrap();
    assert!(
        to_traffic > 0 && to_traffic <= took,
        "time to traffic {to_traffic} of {took}: {back}"
    );
    assert!(
        back["requested_by"]["command"]
            .as_str()
            .unwrap()
            .contains("rollback web --to 1"),
        "{back}"
    );

    // /metrics over TCP is the same exposition as on the socket
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    use std::io::{Read, Write};
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let body = answer.split_once("\r\n\r\n").unwrap().1;
    assert!(
        body.contains(r#"hotswap_swaps_total{result="success",service="web"} 4"#),
        "{body}"
    );
    let text = daemon.metrics();
    assert!(
        text.contains(r#"hotswap_swaps_total{result="success",service="web"} 4"#),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_hooks_see_the_swap_and_a_failing_before_switch_hook_leaves_the_old_release_serving() {
    let mut env = TestEnv::new("hooks");
    let v1 = env.image("1", &ImageOpts::default());
    let v2 = env.image("2", &ImageOpts::default());
    let v3 = env.image("3", &ImageOpts::default());
    let log = env.dir.path().join("hooks.log");
    // before_switch: a smoke test that refuses version 3; after_swap: notes every result
    let before = format!(
        r#"echo "smoke $HOTSWAP_VERSION at $HOTSWAP_NEW_ADDRESSES from $HOTSWAP_PREVIOUS_VERSION"; [ "$HOTSWAP_VERSION" != 3 ] || {{ echo "version 3 is refused" >&2; exit 4; }}"#
    );
    let after = format!(
        r#"echo "$HOTSWAP_HOOK $HOTSWAP_VERSION $HOTSWAP_RESULT $HOTSWAP_DEPLOY_ID" >> {}"#,
        log.display()
    );
    let config = env.config(&ServiceOpts {
        extra: format!(
            "[services.web.hooks]\nbefore_switch = [\"/bin/sh\", \"-c\", {before:?}]\nafter_swap = [\"/bin/sh\", \"-c\", {after:?}]\ntimeout_secs = 10\n"
        ),
        // HAProxy and the gate go to the container's own address
        container: "reach = \"direct\"".into(),
        ..Default::default()
    });
    let daemon = Arc::new(Daemon::start(env.dir.path(), &config));
    daemon.deploy_ok(&v1);
    let load = Load::start_with_rate(env.haproxy.frontend, 4, "/", Some(500));
    let d = daemon.clone();
    let img = v2.clone();
    blocking(move || d.deploy_ok(&img)).await;
    let r2 = daemon.reports().pop().unwrap();
    let hooks = r2["hooks"].as_array().unwrap();
    assert_eq!(hooks.len(), 2, "{r2}");
    assert_eq!(hooks[0]["hook"], "before_switch", "{r2}");
    assert_eq!(hooks[0]["exit_code"], 0, "{r2}");
    let said = hooks[0]["output_tail"][0].as_str().unwrap();
    // reach = "direct": the new container's own address on its Docker network, the app's port
    assert!(
        said.starts_with("smoke 2 at ")
            && !said.contains("127.0.0.1")
            && said.contains(":8080 from 1"),
        "{said}"
    );
    assert_eq!(hooks[1]["hook"], "after_swap", "{r2}");

    // version 3 is refused by the hook: the swap rolls back, 2 keeps serving, nothing fails
    let d = daemon.clone();
    let img = v3.clone();
    let (code, out, err) = blocking(move || d.deploy(&img)).await;
    assert_eq!(code, 5, "the deploy fails: {out}{err}");
    assert!(
        err.contains("the before_switch hook") && err.contains("exited with code 4"),
        "{err}"
    );
    let mark = load.mark();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let since = load.releases_since(&mark);
    let stats = load.stop().await;
    assert_eq!(stats.failed, 0, "{stats}");
    assert_eq!(since.keys().collect::<Vec<_>>(), ["2"], "{stats}");
    let containers = env.containers();
    assert_eq!(
        containers.len(),
        1,
        "the refused release's container is gone: {containers:?}"
    );
    assert_eq!(containers[0].1, v2);
    let r3 = daemon.reports().pop().unwrap();
    assert_eq!(r3["result"], "failure", "{r3}");
    assert_eq!(
        r3["hooks"][0]["output_tail"][1], "version 3 is refused",
        "{r3}"
    );
    let notes = std::fs::read_to_string(&log).unwrap();
    let results: Vec<(&str, &str)> = notes
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f[1], f[2])
        })
        .collect();
    assert_eq!(
        results,
        [("1", "success"), ("2", "success"), ("3", "failure")],
        "{notes}"
    );
}

/// One request through HAProxy's frontend: (status, headers lowercased, body).
fn get(frontend: std::net::SocketAddr) -> (u16, String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(frontend).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: web\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head.to_ascii_lowercase(), body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_mode_answers_503_with_retry_after_without_a_reload_and_outlives_restarts() {
    let mut env = TestEnv::new("maint");
    let v1 = env.image("1", &ImageOpts::default());
    let config = env.config(&ServiceOpts::default());
    let mut daemon = Daemon::start(env.dir.path(), &config);
    daemon.deploy_ok(&v1);
    let on = [
        "maintenance",
        "web",
        "on",
        "--message",
        "Back at 14:00 UTC, sorry.",
        "--retry-after",
        "2m",
    ];
    // the HAProxy running since before hotswapd wrote its block has no rule yet: refused, saying why
    let out = daemon.ctl(&on);
    let said = support::text(&out);
    assert_eq!(out.status.code(), Some(4), "{said}");
    assert!(
        said.contains("has not loaded hotswapd's maintenance rule")
            && said.contains("reload HAProxy"),
        "{said}"
    );
    assert_eq!(get(env.haproxy.frontend).0, 200);

    env.haproxy.reload_and_wait();
    let worker = env.haproxy.worker_pid();
    let out = daemon.ctl(&on);
    assert!(out.status.success(), "{}", support::text(&out));
    let (status, head, body) = get(env.haproxy.frontend);
    assert_eq!(status, 503, "{head}{body}");
    assert!(head.contains("retry-after: 120"), "{head}");
    assert_eq!(body, "Back at 14:00 UTC, sorry.");
    assert_eq!(env.haproxy.worker_pid(), worker, "no HAProxy reload");
    let status = daemon.ctl(&["status"]);
    assert!(
        support::text(&status).contains(
            "maintenance: clients get 503 (Retry-After 120 s): Back at 14:00 UTC, sorry."
        ),
        "{}",
        support::text(&status)
    );
    assert_eq!(
        Daemon::metric(&daemon.metrics(), r#"hotswap_maintenance{service="web"}"#),
        Some(1.0)
    );

    // a restart of hotswapd keeps it (journaled); a reload of HAProxy loses the variables, and
    // hotswapd sets them again
    daemon.kill();
    drop(daemon);
    let daemon = Daemon::start(env.dir.path(), &config);
    let view = daemon.status_json().unwrap();
    assert_eq!(
        view["services"][0]["maintenance"]["retry_after_secs"], 120,
        "{view}"
    );
    env.haproxy.reload_and_wait();
    let until = Instant::now() + Duration::from_secs(10);
    while get(env.haproxy.frontend).0 != 503 {
        assert!(
            Instant::now() < until,
            "maintenance not set again after HAProxy reloaded:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let worker = env.haproxy.worker_pid();
    let out = daemon.ctl(&["maintenance", "web", "off"]);
    assert!(out.status.success(), "{}", support::text(&out));
    let (status, _, body) = get(env.haproxy.frontend);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"release\":\"1\""), "{body}");
    assert_eq!(env.haproxy.worker_pid(), worker, "no HAProxy reload");
    let bad = daemon.ctl(&["maintenance", "web", "on", "--message", "100% down; sorry"]);
    assert_eq!(bad.status.code(), Some(4), "{}", support::text(&bad));
    assert!(
        support::text(&bad).contains("cannot be passed"),
        "{}",
        support::text(&bad)
    );
}
