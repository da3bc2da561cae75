//! The canary ramp with the real daemon, Docker and HAProxy, under load: a release that fails
//! 20 % of its requests is turned back at its first step, a good one ramps to all traffic, one that
//! turns bad in the watch window is flipped back, and four replicas swapped in batches of one never
//! leave fewer than four serving.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::daemon::{Daemon, ServiceOpts};
use support::env::TestEnv;
use support::images::ImageOpts;
use support::load::Load;
use support::{blocking, text};

fn ramp(steps: &str, hold: &str, watch: &str) -> String {
    format!(
        "\n[services.web.ramp]\nsteps = {steps}\nhold_secs = {hold}\nwatch_secs = {watch}\n\
         check_interval_ms = 100\nmin_requests = 20\n"
    )
}

/// Deploys on a blocking thread (the load runs on this runtime) with `--wait`.
async fn deploy(daemon: &Arc<Daemon>, args: &[&str]) -> (i32, String) {
    let d = daemon.clone();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    blocking(move || {
        let mut all = vec!["deploy".to_string(), "web".into()];
        all.extend(args);
        all.extend(["--wait".into(), "--timeout-secs".into(), "120".into()]);
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let out = d.ctl(&refs);
        (out.status.code().unwrap_or(-1), text(&out))
    })
    .await
}

/// The releases that answered the load over the next `ms` milliseconds, and the requests that
/// failed meanwhile.
async fn answering_for(load: &Load, ms: u64) -> (Vec<String>, u64) {
    let mark = load.mark();
    tokio::time::sleep(Duration::from_millis(ms)).await;
    let releases = load.releases_since(&mark).into_keys().collect();
    (releases, load.failed_since(&mark))
}

fn last_report(daemon: &Daemon) -> serde_json::Value {
    daemon.reports().pop().expect("a report")
}

fn steps(report: &serde_json::Value) -> Vec<serde_json::Value> {
    report["canary"]["steps"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("no canary steps in {report}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_canary_turns_back_at_its_first_step_and_a_good_one_ramps_to_all_traffic() {
    let mut env = TestEnv::new("canary");
    let v1 = env.image("1", &ImageOpts::default());
    let bad = env.image(
        "2",
        &ImageOpts {
            fail_pct: 20,
            ..Default::default()
        },
    );
    let good = env.image("3", &ImageOpts::default());
    let config = env.config(&ServiceOpts {
        extra: ramp("[10, 50, 100]", "2", "0"),
        ..Default::default()
    });
    let daemon = Arc::new(Daemon::start(env.dir.path(), &config));
    // a first deploy has nothing to compare with: it switches at once
    daemon.deploy_ok(&v1);
    assert!(last_report(&daemon).get("canary").is_none());

    // the bad release: turned back at 10 %
    let load = Load::start_with_rate(env.haproxy.frontend, 8, "/", Some(600));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mark = load.mark();
    let (code, out) = deploy(&daemon, &["--image", &bad]).await;
    let (failed, requests) = (load.failed_since(&mark), load.requests_since(&mark));
    assert_ne!(code, 0, "the bad release was not turned back:\n{out}");
    assert!(
        out.contains("ramping: step 1 of 3, 10 % of traffic"),
        "{out}"
    );
    assert!(out.contains("aborted"), "{out}");
    let r = last_report(&daemon);
    assert_eq!(r["result"], "failure", "{r}");
    assert!(
        r["reason"].as_str().unwrap().contains("canary step 1 of 3"),
        "{r}"
    );
    let s = steps(&r);
    assert_eq!(s.len(), 1, "aborted at the first step: {s:?}");
    assert_eq!(s[0]["share_pct"], 10);
    assert!(s[0]["verdict"].as_str().unwrap().starts_with("aborted"));
    assert!(s[0]["new"]["errors"].as_u64().unwrap() > 0, "{s:?}");
    // what the clients saw stays within the first step's share of the bad release's failures
    // (10 % of traffic x 20 % failing = 2 %)
    assert!(requests > 300, "the load kept flowing: {requests}");
    let pct = 100.0 * failed as f64 / requests as f64;
    assert!(
        pct <= 2.0,
        "{failed} of {requests} requests failed ({pct:.2} %) during the bad canary"
    );
    eprintln!("bad canary: {failed} of {requests} client requests failed ({pct:.2} %)");

    // the old release serves everything afterwards, alone
    assert_eq!(answering_for(&load, 500).await, (vec!["1".to_string()], 0));
    let containers = env.containers();
    assert_eq!(containers.len(), 1, "{containers:?}");
    assert_eq!(containers[0].1, v1);
    assert_eq!(env.haproxy.servers("web").len(), 1);

    // the good release ramps 10 % -> 50 % -> 100 % with no failed request
    let mark = load.mark();
    let (code, out) = deploy(&daemon, &["--image", &good]).await;
    assert_eq!(code, 0, "{out}\n{}", daemon.log());
    assert_eq!(load.failed_since(&mark), 0);
    for want in [
        "step 1 of 3, 10 %",
        "step 2 of 3, 50 %",
        "step 3 of 3, 100 %",
        "step at 10 % for",
        "step at 100 % for",
    ] {
        assert!(out.contains(want), "no {want:?} in the live output:\n{out}");
    }
    let r = last_report(&daemon);
    assert_eq!(r["result"], "success", "{r}");
    let s = steps(&r);
    let shares: Vec<u64> = s.iter().map(|x| x["share_pct"].as_u64().unwrap()).collect();
    assert_eq!(shares, [10, 50, 100]);
    for x in &s {
        assert_eq!(x["verdict"], "passed", "{x}");
        assert!(x["new"]["requests"].as_u64().unwrap() > 0, "{x}");
    }
    // HAProxy's weights gave the canary about its share: 10 % of the step's requests
    let share = |x: &serde_json::Value| {
        let n = x["new"]["requests"].as_f64().unwrap();
        n / (n + x["old"]["requests"].as_f64().unwrap())
    };
    assert!((0.04..0.2).contains(&share(&s[0])), "step 1: {s:?}");
    assert!((0.35..0.65).contains(&share(&s[1])), "step 2: {s:?}");
    // at 100 % the old release rests: it finishes at most the requests already sent to it when
    // its weight went to 0 (one per client connection)
    assert!(
        s[2]["old"]["requests"].as_u64().unwrap() <= 8,
        "at 100 % the old release rests: {:?}",
        s[2]
    );
    assert_eq!(answering_for(&load, 300).await.0, ["3"]);
    let stats = load.stop().await;
    eprintln!("{stats}");
    assert_eq!(env.containers().len(), 1);
    assert_eq!(env.haproxy.servers("web").len(), 1);

    // --no-ramp: straight through, and the report says the operator skipped the ramp
    let (code, out) = deploy(&daemon, &["--image", &v1, "--no-ramp"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("ramping"), "{out}");
    let r = last_report(&daemon);
    assert_eq!(r["canary"]["skipped"], true, "{r}");
    assert!(
        r["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().contains("--no-ramp")),
        "{r}"
    );

    // what an operator graphs: three swaps succeeded, the bad canary failed at its first step
    let text = daemon.metrics();
    let m = |series: &str| {
        Daemon::metric(&text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"))
    };
    for (series, want) in [
        (
            r#"hotswap_swaps_total{result="success",service="web"}"#,
            3.0,
        ),
        (
            r#"hotswap_swaps_total{result="failure",service="web"}"#,
            1.0,
        ),
        (
            r#"hotswap_canary_steps_total{service="web",verdict="aborted"}"#,
            1.0,
        ),
        (
            r#"hotswap_canary_steps_total{service="web",verdict="passed"}"#,
            3.0,
        ),
        (
            r#"hotswap_swap_duration_seconds_count{result="success",service="web"}"#,
            3.0,
        ),
        (
            r#"hotswap_service_state{service="web",state="serving"}"#,
            1.0,
        ),
        (r#"hotswap_queued_releases{service="web"}"#, 0.0),
    ] {
        assert_eq!(m(series), want, "{series}");
    }
    assert!(
        m(r#"hotswap_swap_failed_requests_total{service="web"}"#) >= 1.0,
        "the bad canary's failures are counted"
    );
    let last = m(r#"hotswap_last_success_timestamp_seconds{service="web"}"#);
    assert!(
        (last - r["finished_ms"].as_f64().unwrap() / 1000.0).abs() < 0.001,
        "{last} vs {r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_that_turns_bad_in_the_watch_window_is_flipped_back() {
    let mut env = TestEnv::new("canarywatch");
    let v1 = env.image("1", &ImageOpts::default());
    // fails half of its requests from 5 s after it starts: after the ramp (two 1 s steps), well
    // inside the 15 s watch window
    let turns = env.image(
        "2",
        &ImageOpts {
            fail_pct: 50,
            ..Default::default()
        },
    );
    let config = env.config(&ServiceOpts {
        env: vec![("FAIL_AFTER_MS", "5000".into())],
        extra: ramp("[50, 100]", "1", "15"),
        ..Default::default()
    });
    let daemon = Arc::new(Daemon::start(env.dir.path(), &config));
    daemon.deploy_ok(&v1);
    let load = Load::start_with_rate(env.haproxy.frontend, 4, "/", Some(300));
    let (code, out) = deploy(&daemon, &["--image", &turns]).await;
    assert_ne!(code, 0, "not flipped back:\n{out}");
    assert!(out.contains("watching"), "{out}");
    let r = last_report(&daemon);
    let s = steps(&r);
    assert_eq!(s.len(), 3, "{s:?}");
    assert_eq!(s[0]["verdict"], "passed");
    assert_eq!(s[1]["verdict"], "passed");
    assert_eq!(s[2]["kind"], "watch");
    assert!(
        s[2]["verdict"].as_str().unwrap().starts_with("aborted"),
        "{s:?}"
    );
    assert!(
        r["reason"].as_str().unwrap().contains("watch window"),
        "{r}"
    );
    // flipped back: the old release alone serves, with no failure
    assert_eq!(answering_for(&load, 500).await, (vec!["1".to_string()], 0));
    let stats = load.stop().await;
    eprintln!("watch window: {stats}");
    let containers = env.containers();
    assert_eq!(containers.len(), 1, "{containers:?}");
    assert_eq!(containers[0].1, v1);
}

fn serving(env: &TestEnv) -> usize {
    serving_at(&env.haproxy.admin_socket)
}

/// Servers of `web` that take traffic now: up, ready (not drain or maint) and weighted.
fn serving_at(admin: &std::path::Path) -> usize {
    let Ok(stat) = support::haproxy::command_at(admin, "show stat web 4 -1") else {
        return usize::MAX; // unreadable: not a capacity drop
    };
    let mut lines = stat.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or("")
        .trim_start_matches("# ")
        .split(',')
        .collect();
    let col = |name: &str| header.iter().position(|c| *c == name).unwrap();
    let (status, weight, sv) = (col("status"), col("weight"), col("svname"));
    lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|f| f.len() > status && f[sv] != "BACKEND" && f[sv] != "FRONTEND")
        .filter(|f| f[status].starts_with("UP") && f[weight].parse::<u64>().unwrap_or(0) > 0)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_replicas_swap_in_batches_of_one_and_never_serve_on_fewer_than_four() {
    let mut env = TestEnv::new("replicas");
    let v1 = env.image("1", &ImageOpts::default());
    let v2 = env.image("2", &ImageOpts::default());
    let config = env.config(&ServiceOpts {
        top: "replicas = 4\nbatch = 1\n".into(),
        extra: ramp("[25, 50, 100]", "1", "0"),
        ..Default::default()
    });
    let daemon = Arc::new(Daemon::start(env.dir.path(), &config));
    daemon.deploy_ok(&v1);
    assert_eq!(env.containers().len(), 4);
    assert_eq!(serving(&env), 4);

    // a watcher samples HAProxy every 20 ms through both swaps
    let stop = Arc::new(AtomicBool::new(false));
    let min_seen = Arc::new(AtomicUsize::new(usize::MAX));
    let samples = Arc::new(AtomicUsize::new(0));
    let watcher = {
        let (stop, min_seen, samples) = (stop.clone(), min_seen.clone(), samples.clone());
        let admin = env.haproxy.admin_socket.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let n = serving_at(&admin);
                min_seen.fetch_min(n, Ordering::SeqCst);
                samples.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let load = Load::start_with_rate(env.haproxy.frontend, 8, "/", Some(500));

    // with the ramp: 1 new at 25 %, 2 at 50 %, 4 at 100 %
    let (code, out) = deploy(&daemon, &["--image", &v2]).await;
    assert_eq!(code, 0, "{out}\n{}", daemon.log());
    let r = last_report(&daemon);
    assert_eq!(steps(&r).len(), 3, "{r}");
    let containers = env.containers();
    assert_eq!(containers.len(), 4, "{containers:?}");
    assert!(containers.iter().all(|c| c.1 == v2), "{containers:?}");
    assert_eq!(env.haproxy.servers("web").len(), 4);

    // without it: batch by batch, each new container in before an old one drains
    let (code, out) = deploy(&daemon, &["--image", &v1, "--no-ramp"]).await;
    assert_eq!(code, 0, "{out}\n{}", daemon.log());
    let containers = env.containers();
    assert_eq!(containers.len(), 4, "{containers:?}");
    assert!(containers.iter().all(|c| c.1 == v1), "{containers:?}");

    let stats = load.stop().await;
    stop.store(true, Ordering::SeqCst);
    watcher.join().unwrap();
    let (min, n) = (
        min_seen.load(Ordering::SeqCst),
        samples.load(Ordering::SeqCst),
    );
    eprintln!("replicas: {stats}; fewest serving servers in {n} samples: {min}");
    assert!(n > 50, "{n} samples");
    assert!(min >= 4, "only {min} servers served at one point");
    assert_eq!(stats.failed, 0, "{stats}");
    assert_eq!(serving(&env), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_canary_is_turned_back_on_response_time() {
    let mut env = TestEnv::new("canaryslow");
    let v1 = env.image("1", &ImageOpts::default());
    let slow = env.image("2", &ImageOpts::default());
    // the new release answers in 80 ms where the old one takes about 1: above 2 x the 20 ms floor
    let config = env.config(&ServiceOpts {
        extra: ramp("[20, 100]", "3", "0"),
        ..Default::default()
    });
    let daemon = Arc::new(Daemon::start(env.dir.path(), &config));
    daemon.deploy_ok(&v1);
    let with_delay = config.with_file_name("slow.toml");
    std::fs::write(
        &with_delay,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace("env = {  }", "env = { DELAY_MS = \"80\" }"),
    )
    .unwrap();
    std::fs::copy(&with_delay, &config).unwrap();
    let out = daemon.ctl(&["reload"]);
    assert!(out.status.success(), "{out:?}");
    let load = Load::start_with_rate(env.haproxy.frontend, 8, "/", Some(400));
    let (code, out) = deploy(&daemon, &["--image", &slow]).await;
    let stats = load.stop().await;
    assert_ne!(code, 0, "the slow release was not turned back:\n{out}");
    let r = last_report(&daemon);
    let s = steps(&r);
    assert_eq!(s.len(), 1, "{s:?}");
    assert!(
        s[0]["verdict"].as_str().unwrap().contains("response time"),
        "{s:?}"
    );
    assert!(s[0]["new"]["rtime_ms"].as_u64().unwrap() >= 40, "{s:?}");
    // slow is not failed: no client request failed
    assert_eq!(stats.failed, 0, "{stats}");
    let containers = env.containers();
    assert_eq!(containers.len(), 1, "{containers:?}");
    assert_eq!(containers[0].1, v1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_killed_mid_ramp_turns_back_when_it_starts_again() {
    let mut env = TestEnv::new("canarykill");
    let v1 = env.image("1", &ImageOpts::default());
    let v2 = env.image("2", &ImageOpts::default());
    let config = env.config(&ServiceOpts {
        extra: ramp("[50, 100]", "20", "0"),
        ..Default::default()
    });
    let mut daemon = Daemon::start(env.dir.path(), &config);
    daemon.deploy_ok(&v1);
    let load = Load::start_with_rate(env.haproxy.frontend, 4, "/", Some(300));
    let out = daemon.ctl(&["deploy", "web", "--image", &v2]);
    assert!(out.status.success(), "{out:?}");
    let started = std::time::Instant::now();
    while daemon.status_json().unwrap()["services"][0]["swap"]["phase"]["phase"] != "ramping" {
        assert!(started.elapsed() < Duration::from_secs(30), "never ramped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // a crash mid-ramp: HAProxy keeps serving both releases at their weights meanwhile
    daemon.kill();
    assert_eq!(answering_for(&load, 500).await.0, ["1", "2"]);
    let daemon = Daemon::start(env.dir.path(), &config);
    let r = last_report(&daemon);
    assert_eq!(r["result"], "failure", "{r}");
    assert!(r["reason"].as_str().unwrap().contains("restarted"), "{r}");
    assert_eq!(answering_for(&load, 500).await.0, ["1"]);
    let stats = load.stop().await;
    assert_eq!(stats.failed, 0, "{stats}");
    let containers = env.containers();
    assert_eq!(containers.len(), 1, "{containers:?}");
    assert_eq!(containers[0].1, v1);
    assert_eq!(env.haproxy.servers("web").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_killed_between_batches_finishes_the_swap_when_it_starts_again() {
    let mut env = TestEnv::new("batchkill");
    let v1 = env.image("1", &ImageOpts::default());
    // each new container takes 1.5 s to get ready: time to kill the daemon between batches
    let v2 = env.image(
        "2",
        &ImageOpts {
            warmup_ms: 1500,
            ..Default::default()
        },
    );
    let config = env.config(&ServiceOpts {
        top: "replicas = 3\nbatch = 1\n".into(),
        ..Default::default()
    });
    let mut daemon = Daemon::start(env.dir.path(), &config);
    daemon.deploy_ok(&v1);
    let load = Load::start_with_rate(env.haproxy.frontend, 4, "/", Some(300));
    let out = daemon.ctl(&["deploy", "web", "--image", &v2]);
    assert!(out.status.success(), "{out:?}");
    let started = std::time::Instant::now();
    loop {
        let s = daemon.status_json().unwrap();
        let containers = s["services"][0]["swap"]["new"]["runs"]["members"]
            .as_array()
            .map(Vec::len)
            .unwrap_or(0);
        if containers >= 2 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no second batch: {s}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    daemon.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let daemon = Daemon::start(env.dir.path(), &config);
    let r = last_report(&daemon);
    assert_eq!(r["result"], "success", "{r}\n{}", daemon.log());
    let stats = load.stop().await;
    assert_eq!(stats.failed, 0, "{stats}");
    let containers = env.containers();
    assert_eq!(containers.len(), 3, "{containers:?}");
    assert!(containers.iter().all(|c| c.1 == v2), "{containers:?}");
    assert_eq!(env.haproxy.servers("web").len(), 3);
    assert_eq!(serving(&env), 3);
}
