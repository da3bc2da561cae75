//! State files another process replaced: hotswapd reads only regular files, and only so much of
//! them. A link to `/dev/zero` or a FIFO in place of the journal, the queue, the reports file,
//! the outbox's entries and sent log, or an env file is named, moved aside where it is hotswapd's
//! own, and never costs the release that serves, nor the daemon's memory or liveness.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::daemon::{Daemon, ServiceOpts};
use support::env::TestEnv;
use support::images::ImageOpts;

fn web(s: &serde_json::Value) -> &serde_json::Value {
    &s["services"][0]
}

/// Replaces `path` by what `kind` says: a link to /dev/zero, a FIFO nobody writes, or bytes.
fn replace(path: &Path, kind: &str) {
    let _ = std::fs::remove_file(path);
    match kind {
        "zero" => std::os::unix::fs::symlink("/dev/zero", path).unwrap(),
        "fifo" => {
            nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap()
        }
        "random" => std::fs::write(path, [0x8b_u8, 0, 0xff, 0x13, b'{', 7, 0, 0x90]).unwrap(),
        "truncated" => std::fs::write(path, b"{\"schema\": 2, \"current\": {\"rel").unwrap(),
        other => panic!("{other}"),
    }
}

/// The daemon's resident memory, in MiB.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib / 1024.0
}

/// Starts the daemon on damaged state and waits until web has settled; returns its status.
fn start_settled(env: &TestEnv, config: &Path) -> (Daemon, serde_json::Value) {
    let d = Daemon::spawn_env(env.dir.path(), config, &[]);
    let started = Instant::now();
    loop {
        if let Ok(s) = d.status_json() {
            let state = web(&s)["state"].as_str().unwrap_or("").to_string();
            if !matches!(state.as_str(), "recovering" | "repairing" | "") {
                return (d, s);
            }
            // while it recovers, it says why: never an empty reason for long
            if started.elapsed() > Duration::from_secs(5) {
                assert!(
                    web(&s)["reason"].as_str().is_some_and(|r| !r.is_empty()),
                    "recovering without a reason: {s}"
                );
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "not settled: {:?}\n{}",
            d.status_json(),
            d.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What a user checks: `image` still serves, in the same container, alone in HAProxy.
fn still_serving(env: &TestEnv, image: &str, container: &str) {
    let c = env.containers();
    assert_eq!(c.len(), 1, "{c:?}");
    assert_eq!((c[0].1.as_str(), c[0].2), (image, true), "{c:?}");
    assert_eq!(env.haproxy.servers("web").len(), 1);
    let out = std::process::Command::new("docker")
        .args(["inspect", "-f", "{{.Id}}", &c[0].0])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        container,
        "the same container"
    );
}

fn current_container(d: &Daemon) -> String {
    let s = d.status_json().unwrap();
    web(&s)["current"]["runs"]["members"][0]["container_id"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn a_journal_or_queue_replaced_by_a_device_a_fifo_or_garbage_is_set_aside_and_supervision_goes_on()
{
    let mut env = TestEnv::new("statefiles");
    let a = env.image("a", &ImageOpts::default());
    let b = env.image("b", &ImageOpts::default());
    let config = env.config(&ServiceOpts::default());
    let mut d = Daemon::start(env.dir.path(), &config);
    d.deploy_ok(&a);
    let container = current_container(&d);
    let state = env.dir.path().join("state");
    let cases = [
        ("journal/web.json", "zero"),
        ("journal/web.json", "fifo"),
        ("journal/web.json", "random"),
        ("journal/web.json", "truncated"),
        ("queue/web.json", "zero"),
        ("queue/web.json", "fifo"),
        ("queue/web.json", "random"),
    ];
    for (file, kind) in cases {
        d.kill();
        let path = state.join(file);
        replace(&path, kind);
        let (d2, s) = start_settled(&env, &config);
        d = d2;
        let what = format!("{file} as {kind}");
        assert_eq!(web(&s)["state"], "degraded", "{what}: {s}");
        let reason = web(&s)["reason"].as_str().unwrap();
        assert!(
            reason.contains(&path.display().to_string()) && reason.contains("moved to"),
            "{what}: {reason}"
        );
        assert_eq!(web(&s)["current"]["release"]["image"], a.as_str(), "{what}");
        still_serving(&env, &a, &container);
        let rss = rss_mib(d.pid().unwrap());
        assert!(rss < 64.0, "{what}: {rss} MiB resident");
        let aside = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .filter(|e| {
                let n = e.as_ref().unwrap().file_name();
                let n = n.to_string_lossy();
                n.starts_with("web.json.damaged-")
            })
            .count();
        assert!(aside >= 1, "{what}: kept for the operator");
    }
    // it is still supervised: a dead container is repaired, and the next deploy clears the note
    support::docker(&["kill", &container]);
    let started = Instant::now();
    loop {
        let s = d.status_json().unwrap();
        let id = web(&s)["current"]["runs"]["members"][0]["container_id"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if id != container && web(&s)["state"] == "degraded" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "not repaired: {s}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    d.deploy_ok(&b);
    let s = d.status_json().unwrap();
    assert_eq!(web(&s)["state"], "serving", "{s}");
}

#[test]
fn a_reports_file_or_outbox_that_is_not_a_file_never_blocks_history_reports_or_the_sender() {
    let mut env = TestEnv::new("reportfiles");
    let a = env.image("a", &ImageOpts::default());
    let b = env.image("b", &ImageOpts::default());
    let config = env.config(&ServiceOpts::default());
    // an SQS queue nobody answers at: the outbox is read, nothing is delivered
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!("{text}\n[report]\nsqs_queue_url = \"http://127.0.0.1:9/123456789012/reports\"\nregion = \"us-east-1\"\n"),
    )
    .unwrap();
    let aws = [
        ("AWS_ACCESS_KEY_ID", "test".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_string()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
    ];
    let state = env.dir.path().join("state");
    std::fs::create_dir_all(state.join("outbox")).unwrap();
    replace(&state.join("outbox/sent.log"), "zero");
    replace(&state.join("outbox/stuck.json"), "fifo");
    replace(&state.join("outbox/endless.json"), "zero");
    let reports = state.join("reports.jsonl");
    replace(&reports, "fifo");
    let d = Daemon::start_env(env.dir.path(), &config, &aws);
    // history answers at once, naming the file
    let t = Instant::now();
    let out = d.ctl(&["history"]);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let err = support::text(&out);
    assert!(
        !out.status.success()
            && err.contains("reports.jsonl")
            && err.contains("not a regular file"),
        "{err}"
    );
    // a deploy is reported: the FIFO moved aside, a new reports file begun
    d.deploy_ok(&a);
    let r = d.reports();
    assert_eq!(r.len(), 1, "{r:?}");
    assert!(std::fs::symlink_metadata(&reports).unwrap().is_file());
    // the outbox's odd entries were set aside, the real report waits there
    let names: Vec<String> = std::fs::read_dir(state.join("outbox"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().any(|n| n == "stuck.corrupt") && names.iter().any(|n| n == "endless.corrupt"),
        "{names:?}"
    );
    assert!(
        names.iter().any(|n| n.starts_with("sent.log.damaged-")),
        "{names:?}"
    );
    // history over a reports file linked to /dev/zero: named, quickly, memory bounded
    replace(&reports, "zero");
    let t = Instant::now();
    let out = d.ctl(&["history"]);
    assert!(
        t.elapsed() < Duration::from_secs(5) && !out.status.success(),
        "{}",
        support::text(&out)
    );
    assert!(rss_mib(d.pid().unwrap()) < 64.0);
    std::fs::remove_file(&reports).unwrap();
    // a large reports file: history reads only its end
    let line = format!(
        "{{\"service\":\"web\",\"kind\":\"swap\",\"deploy_id\":\"old\",\"pad\":\"{}\"}}\n",
        "p".repeat(900)
    );
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&reports).unwrap());
        for _ in 0..150_000 {
            f.write_all(line.as_bytes()).unwrap();
        }
    }
    d.deploy_ok(&b);
    let before = rss_mib(d.pid().unwrap());
    let out = d.ctl(&["history", "--json"]);
    assert!(out.status.success(), "{}", support::text(&out));
    let grew = rss_mib(d.pid().unwrap()) - before;
    assert!(
        grew < 16.0,
        "history over 135 MB grew the daemon by {grew} MiB"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap()[0]["image"], b.as_str(), "{v}");
}

#[test]
fn an_env_file_that_is_a_device_or_a_fifo_fails_the_swap_by_name_and_the_old_release_serves() {
    let mut env = TestEnv::new("envfiles");
    let a = env.image("a", &ImageOpts::default());
    // a failed release's image is removed: one image per attempt
    let bs = [
        env.image("b1", &ImageOpts::default()),
        env.image("b2", &ImageOpts::default()),
    ];
    let envfile = env.dir.path().join("web.env");
    std::fs::write(&envfile, "GREETING=hi\n").unwrap();
    std::fs::set_permissions(
        &envfile,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let opts = ServiceOpts {
        container: format!("env_files = [\"{}\"]", envfile.display()),
        ..Default::default()
    };
    let config = env.config(&opts);
    let d = Daemon::start(env.dir.path(), &config);
    d.deploy_ok(&a);
    for (kind, b) in ["zero", "fifo"].into_iter().zip(&bs) {
        replace(&envfile, kind);
        let t = Instant::now();
        let (code, _, err) = d.deploy(b);
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "{kind}: {:?}",
            t.elapsed()
        );
        assert_ne!(code, 0, "{kind}");
        assert!(
            err.contains("web.env") && err.contains("not a regular file"),
            "{kind}: {err}"
        );
        let s = d.status_json().unwrap();
        assert_eq!(web(&s)["current"]["release"]["image"], a.as_str());
    }
}
