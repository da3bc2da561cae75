//! Faults that must never cost the serving release, against the real daemon, Docker and HAProxy
//! under keep-alive load: a daemon killed at every phase boundary, a full disk under the journal
//! and under the reports file, and Docker's socket gone in the middle of a swap.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use support::daemon::{add_daemon_lines, Daemon, ServiceOpts};
use support::env::TestEnv;
use support::faults::{DockerSocket, Tmpfs};
use support::images::ImageOpts;
use support::load::Load;

/// Waits until `check` holds for the daemon's status (polled every 20 ms).
fn until_status(
    d: &Daemon,
    what: &str,
    limit: Duration,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let started = Instant::now();
    loop {
        if let Ok(s) = d.status_json() {
            if check(&s) {
                return s;
            }
        }
        assert!(
            started.elapsed() < limit,
            "{what}: not within {limit:?}; status {:?}\nlog:\n{}",
            d.status_json(),
            d.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn web(s: &serde_json::Value) -> &serde_json::Value {
    &s["services"][0]
}

fn submit(d: &Daemon, image: &str, deploy_id: &str) {
    let out = d.ctl(&["deploy", "web", "--image", image, "--deploy-id", deploy_id]);
    assert!(out.status.success(), "{}", support::text(&out));
}

/// What a user checks after any fault: one release (`image`) serves, alone in HAProxy, with
/// nothing of ours left beside it, and the service is idle on it.
fn serving_only(env: &TestEnv, d: &Daemon, image: &str) {
    let s = until_status(d, "serving", Duration::from_secs(60), |s| {
        web(s)["state"] == "serving"
    });
    assert_eq!(web(&s)["current"]["release"]["image"], image, "{s}");
    let containers = env.containers();
    assert_eq!(
        containers.len(),
        1,
        "one container, no orphan: {containers:?}"
    );
    assert_eq!(
        (containers[0].1.as_str(), containers[0].2),
        (image, true),
        "{containers:?}"
    );
    assert_eq!(env.haproxy.servers("web").len(), 1, "one server in HAProxy");
}

/// The reports of each deploy id: exactly one per deploy is what a fleet waiting on them needs.
fn reports_by_deploy(d: &Daemon) -> BTreeMap<String, Vec<String>> {
    let mut by: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in d.reports() {
        by.entry(r["deploy_id"].as_str().unwrap().to_string())
            .or_default()
            .push(r["result"].as_str().unwrap().to_string());
    }
    by
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_killed_at_every_phase_boundary_recovers_to_one_serving_release_and_one_report() {
    let mut env = TestEnv::new("crashpoints");
    let a = env.image("a", &ImageOpts::default());
    let b = env.image("b", &ImageOpts::default());
    let never = ImageOpts {
        healthy_never: true,
        ..Default::default()
    };
    let bad1 = env.image("bad1", &never);
    let bad2 = env.image("bad2", &never);
    let opts = ServiceOpts {
        health_deadline_secs: 2,
        drain_budget_secs: 5,
        ..Default::default()
    };
    let config = env.config(&opts);
    let mut daemon = Daemon::start(env.dir.path(), &config);
    daemon.deploy_ok(&a);
    let load = Load::start(env.haproxy.frontend, 4, "/");

    // (where the daemon dies, the release, whether the swap ends in success)
    let cases = [
        ("journaled:accepted", "good", true),
        ("journaled:starting", "good", false),
        ("journaled:health_gate", "good", false),
        ("journaled:switching", "good", true),
        ("journaled:draining", "good", true),
        ("journaled:retiring", "good", true),
        ("journaled:succeeded", "good", true),
        ("reported", "good", true),
        ("journaled:rolling_back", "bad1", false),
        ("journaled:failed", "bad2", false),
    ];
    let mut serving = a.clone();
    for (n, (point, release, succeeds)) in cases.into_iter().enumerate() {
        let image = match release {
            "bad1" => bad1.clone(),
            "bad2" => bad2.clone(),
            _ if serving == a => b.clone(),
            _ => a.clone(),
        };
        let deploy_id = format!("crash-{n}");
        eprintln!("case {point}: deploying {image} over {serving}");
        daemon.kill();
        daemon = Daemon::spawn_env(
            env.dir.path(),
            &config,
            &[("HOTSWAP_CRASH_AT", point.to_string())],
        );
        daemon.wait_idle(Duration::from_secs(60));
        submit(&daemon, &image, &deploy_id);
        let died = daemon.wait_exit(Duration::from_secs(60));
        assert!(
            died.is_some_and(|st| std::os::unix::process::ExitStatusExt::signal(&st) == Some(9)),
            "{point}: the daemon should have killed itself there (HOTSWAP_CRASH_AT works in debug builds only): {died:?}\nlog:\n{}",
            daemon.log()
        );

        daemon = Daemon::start(env.dir.path(), &config);
        if succeeds {
            serving = image.clone();
        }
        serving_only(&env, &daemon, &serving);
        let reports = reports_by_deploy(&daemon);
        let want = if succeeds { "success" } else { "failure" };
        assert_eq!(
            reports.get(&deploy_id).map(Vec::as_slice),
            Some([want.to_string()].as_slice()),
            "{point}: exactly one report of {deploy_id}: {reports:?}"
        );
        let mark = load.mark();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let since = load.releases_since(&mark);
        assert_eq!(
            since.keys().collect::<Vec<_>>(),
            [serving.rsplit(':').next().unwrap()],
            "{point}: traffic on the release status names"
        );
    }
    let stats = load.stop().await;
    assert_eq!(stats.failed, 0, "{stats}");
    assert!(
        reports_by_deploy(&daemon).values().all(|r| r.len() == 1),
        "{:?}",
        reports_by_deploy(&daemon)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_the_swap_where_it_is_safe_and_no_report_is_lost_or_torn() {
    let mut env = TestEnv::new("fulldisk");
    let v1 = env.image("1", &ImageOpts::default());
    let v2 = env.image(
        "2",
        &ImageOpts {
            warmup_ms: 1500,
            ..Default::default()
        },
    );
    let v3 = env.image("3", &ImageOpts::default());
    let state = Tmpfs::mount(&env.dir.path().join("state"), 2048);
    let reports_fs = Tmpfs::mount(&env.dir.path().join("reports"), 512);
    let reports_file = reports_fs.dir.join("reports.jsonl");
    let config = env.config(&ServiceOpts::default());
    add_daemon_lines(
        &config,
        &format!("reports_file = \"{}\"", reports_file.display()),
    );
    let mut daemon = Daemon::start(env.dir.path(), &config);
    daemon.deploy_ok(&v1);
    let load = Load::start(env.haproxy.frontend, 4, "/");

    // 1. The journal cannot be written from the health gate on: nothing acts on a phase the
    //    journal does not hold, so the old release keeps all the traffic until space is back.
    submit(&daemon, &v2, "disk-1");
    until_status(&daemon, "health gate", Duration::from_secs(30), |s| {
        web(s)["swap"]["phase"]["phase"] == "health_gate"
    });
    state.fill();
    let s = until_status(
        &daemon,
        "degraded naming the disk",
        Duration::from_secs(30),
        |s| {
            web(s)["state"] == "degraded"
                && web(s)["reason"]
                    .as_str()
                    .is_some_and(|t| t.contains("No space left"))
        },
    );
    eprintln!("while full: {}", web(&s)["reason"]);
    let mark = load.mark();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        load.releases_since(&mark).keys().collect::<Vec<_>>(),
        ["1"],
        "the old release serves while the switch cannot be journaled"
    );
    assert_eq!(env.haproxy.servers("web").len(), 1);
    state.free();
    serving_only(&env, &daemon, &v2);

    // 2. The reports file cannot be written: the swap is done, its report waits in memory and
    //    is written, whole and once, when space is back. (The file is rotated first, as logrotate
    //    would: appending to a tmpfs file's last page needs no new space.)
    let rotated = reports_fs.dir.join("reports.jsonl.1");
    std::fs::rename(&reports_file, &rotated).unwrap();
    reports_fs.fill();
    submit(&daemon, &v3, "disk-2");
    until_status(
        &daemon,
        "degraded naming the report",
        Duration::from_secs(30),
        |s| {
            web(s)["reason"]
                .as_str()
                .is_some_and(|t| t.contains("report not written"))
        },
    );
    let mark = load.mark();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(load.releases_since(&mark).keys().collect::<Vec<_>>(), ["3"]);
    reports_fs.free();
    serving_only(&env, &daemon, &v3);

    // 3. A daemon started on a full state directory keeps what serves, and writes nothing torn.
    state.fill();
    daemon.kill();
    let daemon = Daemon::spawn_env(env.dir.path(), &config, &[]);
    let s = until_status(&daemon, "status answers", Duration::from_secs(30), |s| {
        web(s)["current"]["release"]["image"] == v3.as_str()
    });
    eprintln!("started on a full disk: {}", web(&s)["state"]);
    let mark = load.mark();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(load.releases_since(&mark).keys().collect::<Vec<_>>(), ["3"]);
    state.free();
    serving_only(&env, &daemon, &v3);

    let stats = load.stop().await;
    assert_eq!(stats.failed, 0, "{stats}");
    // every line whole (`reports_at` parses each), one report per deploy
    let mut reports = daemon.reports_at(&rotated);
    reports.extend(daemon.reports_at(&reports_file));
    let ids: Vec<&str> = reports
        .iter()
        .map(|r| r["deploy_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.iter().filter(|i| **i == "disk-1").count(), 1, "{ids:?}");
    assert_eq!(ids.iter().filter(|i| **i == "disk-2").count(), 1, "{ids:?}");
    assert!(
        reports.iter().all(|r| r["result"] == "success"),
        "{reports:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_lost_mid_swap_is_named_and_what_it_could_not_remove_is_removed_when_it_returns() {
    let mut env = TestEnv::new("dockerlost");
    let v1 = env.image("1", &ImageOpts::default());
    let v2 = env.image("2", &ImageOpts::default());
    let docker = DockerSocket::start(&env.dir.path().join("docker.sock"));
    // requests take 1.2 s, so the old release is still draining when Docker goes (status is
    // polled through hotswapctl, which a loaded host can slow to a few hundred ms a call)
    let opts = ServiceOpts {
        env: vec![("DELAY_MS", "1200".into())],
        drain_budget_secs: 10,
        ..Default::default()
    };
    let config = env.config(&opts);
    add_daemon_lines(
        &config,
        &format!("docker_socket = \"{}\"", docker.path.display()),
    );
    let daemon = Daemon::start(env.dir.path(), &config);
    daemon.deploy_ok(&v1);
    let load = Load::start(env.haproxy.frontend, 4, "/");

    // 1. Docker gone before the swap starts: it fails at once, naming Docker and where it was
    //    looked for; the old release never stops serving.
    docker.cut();
    let (code, out, err) = daemon.deploy(&v2);
    assert_ne!(code, 0, "{out}{err}");
    let want = format!("Docker at unix://{}", docker.path.display());
    assert!(
        err.contains(&want),
        "the reason names Docker's endpoint ({want}): {err}"
    );
    docker.restore();
    serving_only(&env, &daemon, &v1);

    // 2. Docker gone while the old release drains: the swap ends with the new release serving,
    //    the old container it could not remove is remembered, shown, and removed once Docker
    //    answers again.
    submit(&daemon, &v2, "lost-2");
    until_status(&daemon, "draining", Duration::from_secs(30), |s| {
        web(s)["swap"]["phase"]["phase"] == "draining"
    });
    docker.cut();
    let s = until_status(
        &daemon,
        "degraded, naming the container left",
        Duration::from_secs(30),
        |s| {
            web(s)["state"] == "degraded"
                && web(s)["reason"]
                    .as_str()
                    .is_some_and(|t| t.contains("not removed yet"))
        },
    );
    eprintln!("with Docker gone: {}", web(&s)["reason"]);
    assert_eq!(web(&s)["current"]["release"]["image"], v2.as_str());
    assert_eq!(env.containers().len(), 2, "the old one is still there");
    let r = daemon.reports().pop().unwrap();
    assert_eq!(
        (r["deploy_id"].as_str(), r["result"].as_str()),
        (Some("lost-2"), Some("success")),
        "{r}"
    );
    assert!(
        r["warnings"].to_string().contains("Docker at unix://"),
        "{r}"
    );
    docker.restore();
    serving_only(&env, &daemon, &v2);

    let stats = load.stop().await;
    assert_eq!(stats.failed, 0, "{stats}");
}
