//! Supervision between swaps, against the real daemon, Docker and HAProxy under keep-alive load:
//! what the journal holds as current serves again by itself after a container dies, a reboot,
//! or HAProxy's config being re-rendered; a release that keeps dying is retried with backoff.

mod support;

use std::time::{Duration, Instant};

use support::daemon::{Daemon, ServiceOpts};
use support::docker;
use support::env::TestEnv;
use support::images::ImageOpts;
use support::load::Load;

fn web(s: &serde_json::Value) -> &serde_json::Value {
    &s["services"][0]
}

/// Waits until `check` holds (polled every 20 ms); returns how long it took.
fn until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    started.elapsed()
}

/// One GET through HAProxy answered 200.
fn answers_200(addr: std::net::SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET / HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.ends_with(b"200")
}

fn repairs(d: &Daemon) -> Vec<serde_json::Value> {
    d.reports()
        .into_iter()
        .filter(|r| r["kind"] == "repair")
        .collect()
}

fn serving(d: &Daemon) -> bool {
    d.status_json().is_ok_and(|s| web(&s)["state"] == "serving")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_container_is_replaced_and_with_two_replicas_no_request_fails() {
    let mut env = TestEnv::with_redispatch("repair2");
    let v1 = env.image("1", &ImageOpts::default());
    let opts = ServiceOpts {
        top: "replicas = 2".into(),
        ..Default::default()
    };
    let config = env.config(&opts);
    let daemon = Daemon::start(env.dir.path(), &config);
    daemon.deploy_ok(&v1);
    let load = Load::start(env.haproxy.frontend, 4, "/");
    tokio::time::sleep(Duration::from_millis(300)).await;

    for (n, signal) in [(1, "KILL"), (2, "TERM")] {
        let (victim, _, _) = env.containers()[0].clone();
        docker(&["kill", "--signal", signal, &victim]);
        let took = until("repaired", Duration::from_secs(30), || {
            repairs(&daemon).len() == n && serving(&daemon)
        });
        eprintln!(
            "SIG{signal}: serving again, whole, {} ms after the kill",
            took.as_millis()
        );
        let r = repairs(&daemon).pop().unwrap();
        assert_eq!(r["result"], "success", "{r}");
        assert_eq!(r["image"], v1.as_str());
        let exit = r["repair"]["exit_code"].as_i64();
        assert!(exit.is_some(), "the exit code is reported: {r}");
        assert!(r["repair"]["replacement"].is_string(), "{r}");
        let running: Vec<_> = env.containers().into_iter().filter(|c| c.2).collect();
        assert_eq!(running.len(), 2, "{running:?}");
        assert_eq!(env.containers().len(), 2, "the dead one is removed");
        assert_eq!(env.haproxy.servers("web").len(), 2);
    }
    let mark = load.mark();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(load.requests_since(&mark) > 0);
    let stats = load.stop().await;
    assert_eq!(stats.failed, 0, "the survivor serves meanwhile: {stats}");
    let s = daemon.status_json().unwrap();
    assert_eq!(web(&s)["state"], "serving", "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reboot_and_a_re_rendered_haproxy_config_bring_the_service_back_by_themselves() {
    let mut env = TestEnv::new("reboot");
    let v1 = env.image("1", &ImageOpts::default());
    let config = env.config(&ServiceOpts::default());
    let mut daemon = Daemon::start(env.dir.path(), &config);
    daemon.deploy_ok(&v1);

    // 1. A reboot: hotswapd gone, our containers stopped, HAProxy started again from its file.
    daemon.kill();
    let names: Vec<String> = env.containers().into_iter().map(|c| c.0).collect();
    let mut stop = vec!["stop", "--time", "1"];
    stop.extend(names.iter().map(String::as_str));
    docker(&stop);
    // on a host, HAProxy is up before hotswapd starts (the unit's After=)
    env.haproxy.reload_and_wait();
    // `start` returns once every service settled: what READY waits for
    let daemon = Daemon::start(env.dir.path(), &config);
    let s = daemon.status_json().unwrap();
    assert_eq!(web(&s)["state"], "serving", "{s}");
    let load = Load::start(env.haproxy.frontend, 2, "/");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stats = load.stop().await;
    assert_eq!(stats.failed, 0, "serving as soon as it is started: {stats}");
    assert!(stats.by_release.contains_key("1"), "{stats}");
    let r = repairs(&daemon).pop().expect("the boot repair is reported");
    assert_eq!(
        r["repair"]["container"].as_str().map(|c| c.len() > 0),
        Some(true)
    );

    // 2. Config management re-renders haproxy.cfg without hotswapd's block and reloads HAProxy.
    let text = std::fs::read_to_string(&env.haproxy.config).unwrap();
    assert!(text.contains("# hotswap:begin web"), "{text}");
    let bare: String = {
        let mut inside = false;
        text.lines()
            .filter(|l| {
                if l.contains("# hotswap:begin") {
                    inside = true;
                }
                let keep = !inside;
                if l.contains("# hotswap:end") {
                    inside = false;
                }
                keep
            })
            .map(|l| format!("{l}\n"))
            .collect()
    };
    std::fs::write(&env.haproxy.config, &bare).unwrap();
    env.haproxy.reload_and_wait();
    let took = until("traffic answered again", Duration::from_secs(15), || {
        env.haproxy.servers("web").len() == 1 && answers_200(env.haproxy.frontend)
    });
    eprintln!("serving again {} ms after the reload", took.as_millis());
    let load = Load::start(env.haproxy.frontend, 2, "/");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stats = load.stop().await;
    assert_eq!(stats.failed, 0, "{stats}");
    until("the block written back", Duration::from_secs(10), || {
        std::fs::read_to_string(&env.haproxy.config)
            .is_ok_and(|t| t.contains("# hotswap:begin web"))
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_looping_release_is_retried_with_backoff_and_the_daemon_stays_responsive() {
    let mut env = TestEnv::new("crashloop");
    let v1 = env.image("1", &ImageOpts::default());
    let opts = ServiceOpts {
        env: vec![("EXIT_AFTER_MS", "1500".into())],
        top: "repair_backoff_max_secs = 4".into(),
        ..Default::default()
    };
    let config = env.config(&opts);
    let daemon = Daemon::start(env.dir.path(), &config);
    daemon.deploy_ok(&v1);
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut waits_seen = Vec::new();
    while started.elapsed() < Duration::from_secs(16) {
        let asked = Instant::now();
        let s = daemon.status_json().expect("status answers");
        slowest = slowest.max(asked.elapsed());
        if let Some(why) = web(&s)["reason"].as_str() {
            if let Some(at) = why.find("repair attempt ") {
                let said = why[at..].split(';').next().unwrap().to_string();
                if waits_seen.last() != Some(&said) {
                    waits_seen.push(said);
                }
                assert!(
                    why.contains("exited with code 3") || why.contains("gone"),
                    "the reason says how it died: {why}"
                );
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let reports = repairs(&daemon);
    eprintln!(
        "in 16 s: {} repairs, status answered within {} ms, waits shown {waits_seen:?}",
        reports.len(),
        slowest.as_millis()
    );
    let attempts: Vec<i64> = reports
        .iter()
        .map(|r| r["repair"]["attempt"].as_i64().unwrap())
        .collect();
    assert!(
        attempts.len() >= 3 && attempts.windows(2).all(|w| w[1] == w[0] + 1),
        "attempts counted in a row, one report each: {attempts:?}\nlog:\n{}",
        daemon.log()
    );
    // dying every ~1.8 s, it would be repaired 8 times in 16 s without backoff
    assert!(
        attempts.len() <= 7,
        "backoff slows the retries: {attempts:?}"
    );
    assert!(!waits_seen.is_empty(), "the wait is shown in status");
    let starts: Vec<u64> = reports
        .iter()
        .map(|r| r["accepted_ms"].as_u64().unwrap())
        .collect();
    let gaps: Vec<u64> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    eprintln!("gaps between repairs (ms): {gaps:?}");
    assert!(
        gaps.last().is_some_and(|g| *g >= 3_900) && gaps.iter().all(|g| *g < 4_000 + 2_500),
        "the waits grow to the configured max (4 s) and no further: {gaps:?}"
    );
    assert!(
        slowest < Duration::from_secs(2),
        "status kept answering: {slowest:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_backend_is_named_a_deploy_fails_fast_and_the_service_comes_back_with_it() {
    let mut env = TestEnv::new("nobackend");
    let v1 = env.image("1", &ImageOpts::default());
    let v2 = env.image("2", &ImageOpts::default());
    let config = env.config(&ServiceOpts::default());
    let daemon = Daemon::start(env.dir.path(), &config);
    daemon.deploy_ok(&v1);
    let original = std::fs::read_to_string(&env.haproxy.config).unwrap();

    // config management renders a haproxy.cfg without the service's backend
    let without: String = original
        .replace("default_backend web", "default_backend other")
        .replace("backend web", "backend other");
    std::fs::write(&env.haproxy.config, without).unwrap();
    env.haproxy.reload_and_wait();
    let mut reason = String::new();
    until(
        "degraded naming the backend",
        Duration::from_secs(15),
        || {
            let s = daemon.status_json().unwrap();
            reason = web(&s)["reason"].as_str().unwrap_or("").to_string();
            web(&s)["state"] == "degraded" && reason.contains("web")
        },
    );
    eprintln!("backend gone: {reason}");
    let asked = Instant::now();
    let (code, out, err) = daemon.deploy(&v2);
    let took = asked.elapsed();
    assert_eq!(code, 5, "{out}{err}");
    eprintln!("deploy refused: {err}");
    assert!(
        err.contains("backend") && err.contains("web"),
        "the reason names it: {err}"
    );
    assert!(took < Duration::from_secs(2), "fails fast: {took:?}");
    assert_eq!(env.containers().len(), 1, "nothing started");

    // the backend is back: the service serves again by itself
    std::fs::write(&env.haproxy.config, &original).unwrap();
    env.haproxy.reload_and_wait();
    let took = until("serving again", Duration::from_secs(15), || {
        serving(&daemon) && answers_200(env.haproxy.frontend)
    });
    eprintln!(
        "serving again {} ms after the backend came back",
        took.as_millis()
    );
    let s = daemon.status_json().unwrap();
    assert_eq!(web(&s)["current"]["release"]["image"], v1.as_str());
}

/// The container options a Kamal or porter user sets reach Docker (read back with `docker
/// inspect`), json-file logs are bounded by default, and an app over its memory limit is
/// OOM-killed, replaced, and reported with the OOM flag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_options_reach_docker_and_an_oom_kill_is_reported_as_one() {
    let mut env = TestEnv::new("options");
    let v1 = env.image("1", &ImageOpts::default());
    let opts = ServiceOpts {
        container: r#"memory = "32m"
cpus = 0.5
user = "1000:1000"
read_only = true
tmpfs = ["/tmp"]
cap_drop = ["ALL"]
ulimits = { nofile = "1024:2048" }
extra_hosts = ["db.internal:10.1.2.3"]
"#
        .into(),
        ..Default::default()
    };
    let config = env.config(&opts);
    let daemon = Daemon::start(env.dir.path(), &config);
    daemon.deploy_ok(&v1);
    let (id, _, _) = env.containers()[0].clone();
    let out = std::process::Command::new("docker")
        .args(["inspect", &id])
        .output()
        .unwrap();
    let inspect: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let host = &inspect[0]["HostConfig"];
    assert_eq!(host["Memory"], 32 << 20, "{host}");
    assert_eq!(host["MemorySwap"], 32 << 20, "no swap beyond the limit");
    assert_eq!(host["NanoCpus"], 500_000_000i64);
    assert_eq!(host["ReadonlyRootfs"], true);
    assert_eq!(host["CapDrop"], serde_json::json!(["ALL"]));
    assert_eq!(
        host["Ulimits"],
        serde_json::json!([{"Name": "nofile", "Soft": 1024, "Hard": 2048}])
    );
    assert_eq!(
        host["ExtraHosts"],
        serde_json::json!(["db.internal:10.1.2.3"])
    );
    assert_eq!(host["Tmpfs"], serde_json::json!({"/tmp": ""}));
    assert_eq!(
        host["LogConfig"],
        serde_json::json!({"Type": "json-file", "Config": {"max-size": "10m", "max-file": "3"}}),
        "bounded logs by default"
    );
    assert_eq!(inspect[0]["Config"]["User"], "1000:1000");

    // over its limit: killed by the OOM killer, replaced, reported with the flag
    let addr = env.haproxy.frontend;
    std::thread::spawn(move || {
        use std::io::Write;
        if let Ok(mut s) = std::net::TcpStream::connect(addr) {
            let _ = s.write_all(b"GET /alloc/128 HTTP/1.0\r\n\r\n");
            std::thread::sleep(Duration::from_secs(2));
        }
    });
    until("the OOM repair", Duration::from_secs(30), || {
        !repairs(&daemon).is_empty() && serving(&daemon)
    });
    let r = repairs(&daemon).pop().unwrap();
    assert_eq!(r["result"], "success", "{r}");
    assert_eq!(r["repair"]["oom_killed"], true, "{r}");
    assert_eq!(r["repair"]["why"], "killed by the OOM killer", "{r}");
    assert!(answers_200(env.haproxy.frontend));
}
