//! Hot code reload of a real gunicorn through the real daemon: 20 `hup` reloads and 20 `usr2`
//! reloads (with --preload) under a polling client that counts 0.1 s as down, with only the new
//! code answering after each; broken code rolled back and reported; unsafe bundles refused.

mod support;

use std::sync::Arc;
use std::time::Duration;

use support::blocking;
use support::daemon::Daemon;
use support::gunicorn::{bundle, Gunicorn};
use support::load::Load;

/// One gunicorn test at a time: the 0.1 s client measures reload latency, which two gunicorns
/// and two daemons reloading at once on a 2-core machine would measure instead.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn daemon_for(
    dir: &std::path::Path,
    g: &Gunicorn,
    strategy: &str,
    health_deadline_secs: u64,
) -> Daemon {
    let instance = format!("t-reload-{}", std::process::id());
    support::gunicorn::daemon_for(dir, g, &instance, strategy, health_deadline_secs)
}

async fn reloads_under_load(strategy: &str, preload: bool, n: usize) {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let g = Gunicorn::start(dir.path(), preload);
    let daemon = Arc::new(daemon_for(dir.path(), &g, strategy, 20));
    let load = Load::start_with(g.addr(), 4, "/", None, Duration::from_millis(100));
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 1..=n {
        let version = format!("{i}");
        let code = bundle(dir.path(), &version, i % 2 == 0);
        let d = daemon.clone();
        let code_s = code.display().to_string();
        let out = blocking(move || d.ctl(&["deploy", "app", "--code", &code_s, "--wait"])).await;
        assert!(
            out.status.success(),
            "reload {i}: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            daemon.log()
        );
        let mark = load.mark();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let since = load.releases_since(&mark);
        assert_eq!(
            since.keys().collect::<Vec<_>>(),
            [&version],
            "reload {i} ({strategy}): only the new code answers after it"
        );
    }
    let stats = load.stop().await;
    assert_eq!(stats.failed, 0, "{strategy}: {stats}\n{}", g.log());
    assert!(stats.requests > 100, "{stats}");
    let reports = daemon.reports();
    assert_eq!(reports.len(), n);
    assert!(
        reports.iter().all(|r| r["result"] == "success"),
        "{reports:?}"
    );
    // previous release kept for rollback, older ones pruned
    let kept = std::fs::read_dir(g.app_root.join("releases"))
        .unwrap()
        .count();
    assert_eq!(kept, 2, "current + one previous release kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_hup_reloads_drop_nothing_and_only_the_new_code_answers() {
    reloads_under_load("hup", false, 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_usr2_reloads_of_a_preloading_app_drop_nothing() {
    reloads_under_load("usr2", true, 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_code_is_rolled_back_and_unsafe_bundles_are_refused() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let g = Gunicorn::start(dir.path(), false);
    let daemon = Arc::new(daemon_for(dir.path(), &g, "hup", 3));
    let good = bundle(dir.path(), "1", true);
    let out = daemon.ctl(&["deploy", "app", "--code", good.to_str().unwrap(), "--wait"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let load = Load::start_with(g.addr(), 2, "/", None, Duration::from_millis(100));
    let broken = bundle(dir.path(), "BROKEN-2", false);
    let d = daemon.clone();
    let b = broken.display().to_string();
    let out = blocking(move || d.ctl(&["deploy", "app", "--code", &b, "--wait"])).await;
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(
        err.contains("health gate") && err.contains("status 500"),
        "{err}"
    );
    let mark = load.mark();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let since = load.releases_since(&mark);
    assert_eq!(
        since.keys().collect::<Vec<_>>(),
        ["1"],
        "after the rollback the previous code serves alone"
    );
    let stats = load.stop().await;
    assert_eq!(stats.failed, 0, "{stats}");
    let current = std::fs::read_link(g.app_root.join("current")).unwrap();
    assert!(
        current.to_string_lossy().ends_with(
            &daemon.reports()[0]["deploy_id"]
                .as_str()
                .unwrap()
                .to_string()
        ),
        "{current:?}"
    );
    let r = daemon.reports().pop().unwrap();
    assert_eq!(r["result"], "failure");

    // a bundle reaching outside its release directory is refused before anything changes
    let evil_src = dir.path().join("evil");
    std::fs::create_dir_all(&evil_src).unwrap();
    std::fs::write(evil_src.join("VERSION"), "3\n").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", evil_src.join("app.py")).unwrap();
    let out = daemon.ctl(&[
        "deploy",
        "app",
        "--code",
        evil_src.to_str().unwrap(),
        "--wait",
    ]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(err.contains("outside the release directory"), "{err}");
    let evil_tgz = dir.path().join("dotdot.tar.gz");
    let ok = std::process::Command::new("tar")
        .args([
            "-czf",
            evil_tgz.to_str().unwrap(),
            "-P",
            "--transform",
            "s,^,../,",
            "-C",
            evil_src.to_str().unwrap(),
            "VERSION",
        ])
        .status()
        .unwrap();
    assert!(ok.success());
    let out = daemon.ctl(&[
        "deploy",
        "app",
        "--code",
        evil_tgz.to_str().unwrap(),
        "--version",
        "4",
        "--wait",
    ]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(err.contains("leaves the release directory"), "{err}");
    assert!(!dir.path().join("app/VERSION").exists());
    assert_eq!(
        std::fs::read_link(g.app_root.join("current")).unwrap(),
        current,
        "current never moved"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_that_fails_to_import_is_rolled_back_and_the_server_started_again() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let g = Gunicorn::start(dir.path(), false);
    let daemon = daemon_for(dir.path(), &g, "hup", 5);
    let good = bundle(dir.path(), "1", false);
    let out = daemon.ctl(&["deploy", "app", "--code", good.to_str().unwrap(), "--wait"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // with HUP, workers that cannot import the app make gunicorn's master halt
    let bad = dir.path().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("VERSION"), "2\n").unwrap();
    std::fs::write(
        bad.join("app.py"),
        "raise RuntimeError('this release cannot start')\n",
    )
    .unwrap();
    let out = daemon.ctl(&["deploy", "app", "--code", bad.to_str().unwrap(), "--wait"]);
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = daemon.reports().pop().unwrap();
    assert_eq!(r["result"], "failure");
    assert!(r["warnings"].to_string().contains("started again"), "{r}");
    // the previous code serves again
    let load = Load::start_with(g.addr(), 1, "/", None, Duration::from_millis(500));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stats = load.stop().await;
    assert_eq!(
        stats.by_release.keys().collect::<Vec<_>>(),
        ["1"],
        "{stats}"
    );
    assert_eq!(stats.failed, 0, "{stats}");
}

/// Supervision of a local server: its master and workers SIGKILLed (what the OOM killer or an
/// operator's mistake does), hotswapd notices at once (a pidfd), starts the server again with
/// `start_command` on the current code, gates it, and writes a repair report; `status` says
/// serving again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_is_started_again_on_the_current_code_and_reported() {
    use support::process::{group_members, wait_until};
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let g = Gunicorn::start(dir.path(), false);
    let daemon = daemon_for(dir.path(), &g, "hup", 10);
    let code = bundle(dir.path(), "7", false);
    let out = daemon.ctl(&["deploy", "app", "--code", code.to_str().unwrap(), "--wait"]);
    assert!(out.status.success(), "{}", support::text(&out));
    let master = g.master().expect("gunicorn's pidfile");
    let stat = std::fs::read_to_string(format!("/proc/{master}/stat")).unwrap();
    let group: i32 = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(2)?.parse().ok())
        .unwrap();
    for pid in group_members(group) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let repaired = || {
        daemon
            .reports()
            .into_iter()
            .find(|r| r["kind"] == "repair" && r["result"] == "success")
    };
    assert!(
        wait_until(Duration::from_secs(60), || repaired().is_some()),
        "no repair report\n{}\n{}",
        daemon.log(),
        g.log()
    );
    let r = repaired().unwrap();
    assert_eq!(r["repair"]["master_pid"], master, "{r}");
    let new: i32 = r["repair"]["replacement"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(new, master);
    assert_eq!(g.master(), Some(new), "the pidfile names the new master");
    assert_eq!(r["version"], "7", "{r}");
    // the current code serves, and status says so
    let load = Load::start_with(g.addr(), 1, "/", None, Duration::from_millis(100));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stats = load.stop().await;
    assert_eq!(
        stats.by_release.keys().collect::<Vec<_>>(),
        ["7"],
        "{stats}"
    );
    assert_eq!(stats.failed, 0, "{stats}");
    let s = daemon.status_json().unwrap();
    assert_eq!(s["services"][0]["state"], "serving", "{s}");
}
