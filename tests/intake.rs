//! Release intake against the real daemon over its real socket: the control API round trip,
//! who may connect, the queue policy, the inbox, the cfn-hup hook, image archives, config reload.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::daemon::{service_toml, write_config_services, Daemon, ServiceOpts, HOTSWAPCTL};
use support::env::TestEnv;
use support::images::{save_and_remove, ImageOpts};
use support::load::Load;
use support::{blocking, text};

fn services(d: &Daemon) -> Vec<serde_json::Value> {
    let out = d.ctl(&["services", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn current_of(d: &Daemon, service: &str) -> Option<String> {
    services(d).into_iter().find(|s| s["service"] == service)?["current"]
        .as_str()
        .map(String::from)
}

#[test]
fn submit_follow_list_and_roll_back_over_the_socket() {
    let mut env = TestEnv::new("roundtrip");
    let v1 = env.image("1", &ImageOpts::default());
    let v2 = env.image("2", &ImageOpts::default());
    let config = env.config(&ServiceOpts::default());
    let daemon = Daemon::start(env.dir.path(), &config);
    daemon.deploy_ok(&v1);

    let out = daemon.ctl(&["deploy", "web", "--image", &v2, "--deploy-id", "r2"]);
    assert!(
        out.status.success() && text(&out).contains("deploy r2") && text(&out).contains("accepted"),
        "{}",
        text(&out)
    );
    // the same id again follows the existing deploy instead of starting another
    let out = daemon.ctl(&[
        "deploy",
        "web",
        "--image",
        &v2,
        "--deploy-id",
        "r2",
        "--wait",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("submitted before") && text(&out).contains("succeeded"),
        "{}",
        text(&out)
    );

    let s = &services(&daemon)[0];
    assert_eq!(
        (
            s["current"].as_str(),
            s["previous"].as_str(),
            s["state"].as_str()
        ),
        (Some(v2.as_str()), Some(v1.as_str()), Some("serving"))
    );
    let table = text(&daemon.ctl(&["services"]));
    assert!(table.contains("SERVICE") && table.contains(&v2), "{table}");

    let out = daemon.ctl(&["rollback", "web", "--wait"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(current_of(&daemon, "web").as_deref(), Some(v1.as_str()));
    let r = daemon.reports().pop().unwrap();
    assert!(
        r["deploy_id"].as_str().unwrap().starts_with("rollback-"),
        "{r}"
    );
    assert_eq!(r["result"], "success");

    // the daemon's own health
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(&daemon.socket).unwrap();
    s.write_all(b"GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    assert!(
        reply.starts_with("HTTP/1.1 200")
            && reply.contains(r#""services":{"web":"serving"}"#)
            && reply.contains(&env.instance),
        "{reply}"
    );

    // an unknown deploy id is a clear refusal, not a hang
    let out = daemon.ctl(&["rollback", "nope"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(
        text(&out).contains("unknown service \"nope\""),
        "{}",
        text(&out)
    );
}

#[test]
fn a_peer_that_is_not_allowed_is_refused_and_logged() {
    let mut env = TestEnv::new("peercred");
    let v1 = env.image("1", &ImageOpts::default());
    let config = env.config(&ServiceOpts::default());
    let daemon = Daemon::start(env.dir.path(), &config);
    daemon.deploy_ok(&v1);
    let mode = std::fs::metadata(&daemon.socket)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o660, "the socket is created mode 0660");

    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let as_nobody = |args: &[&str]| {
        Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                HOTSWAPCTL,
                "--socket",
            ])
            .arg(&daemon.socket)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("setpriv (util-linux) runs the client as nobody")
    };
    // the file mode keeps nobody out
    let out = as_nobody(&["status"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("Permission denied"), "{}", text(&out));
    // and with the file opened up by mistake, the peer check still refuses
    std::fs::set_permissions(&daemon.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = as_nobody(&["deploy", "web", "--image", &v1]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(
        text(&out).contains("uid 65534")
            && text(&out).contains("may not use hotswapd's control socket"),
        "{}",
        text(&out)
    );
    assert!(
        daemon.log().contains("refused a control connection"),
        "{}",
        daemon.log()
    );
    assert_eq!(daemon.reports().len(), 1, "nothing was deployed");
}

#[test]
fn services_swap_in_parallel_and_the_latest_queued_release_wins() {
    let mut env =
        TestEnv::with_backends("parallel", &[("web", "roundrobin"), ("api", "roundrobin")]);
    let slow = ImageOpts {
        warmup_ms: 2000,
        ..Default::default()
    };
    let w1 = env.image_for("web", "1", &ImageOpts::default());
    let w2 = env.image_for("web", "2", &slow);
    let w3 = env.image_for("web", "3", &ImageOpts::default());
    let w4 = env.image_for("web", "4", &ImageOpts::default());
    let a1 = env.image_for("api", "1", &ImageOpts::default());
    let a2 = env.image_for("api", "2", &slow);
    let opts = ServiceOpts::default();
    let config = write_config_services(
        env.dir.path(),
        &env.instance,
        &env.haproxy,
        &[("web", &opts), ("api", &opts)],
    );
    let daemon = Daemon::start(env.dir.path(), &config);
    daemon.deploy_ok_to("web", &w1);
    daemon.deploy_ok_to("api", &a1);

    let submit = |service: &str, image: &str, id: &str| {
        let out = daemon.ctl(&["deploy", service, "--image", image, "--deploy-id", id]);
        assert!(out.status.success(), "{}", text(&out));
        text(&out)
    };
    submit("web", &w2, "w2");
    submit("api", &a2, "a2");
    let said = submit("web", &w3, "w3");
    assert!(said.contains("queued behind deploy w2"), "{said}");
    let said = submit("web", &w4, "w4");
    assert!(said.contains("replaces queued deploy(s) w3"), "{said}");

    let wait = |id: &str| {
        daemon.ctl(&[
            "deploy",
            "web",
            "--image",
            "x:1",
            "--deploy-id",
            id,
            "--wait",
        ])
    };
    assert_eq!(wait("w4").status.code(), Some(0));
    assert_eq!(wait("a2").status.code(), Some(0));
    let out = wait("w3");
    assert_eq!(out.status.code(), Some(8), "{}", text(&out));
    assert!(
        text(&out).contains("superseded by deploy w4"),
        "{}",
        text(&out)
    );

    let reports = daemon.reports();
    let find = |id: &str| {
        reports
            .iter()
            .find(|r| r["deploy_id"] == id)
            .unwrap_or_else(|| panic!("no report for {id}: {reports:?}"))
    };
    let (w, a) = (find("w2"), find("a2"));
    let overlap = w["accepted_ms"].as_u64() < a["finished_ms"].as_u64()
        && a["accepted_ms"].as_u64() < w["finished_ms"].as_u64();
    assert!(overlap, "web and api swapped at the same time: {w} {a}");
    assert!(
        find("w4")["accepted_ms"].as_u64() >= w["finished_ms"].as_u64(),
        "w4 ran after w2"
    );
    // w3 never ran: its one report says it was superseded, and by whom
    let w3: Vec<_> = reports.iter().filter(|r| r["deploy_id"] == "w3").collect();
    assert_eq!(w3.len(), 1, "{w3:?}");
    assert_eq!(
        (&w3[0]["result"], &w3[0]["superseded_by"]),
        (&serde_json::json!("superseded"), &serde_json::json!("w4")),
        "w3 never ran"
    );
    assert_eq!(current_of(&daemon, "web").as_deref(), Some(w4.as_str()));
    assert_eq!(current_of(&daemon, "api").as_deref(), Some(a2.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_inbox_files_at_once_are_each_accepted_or_rejected_with_a_reason() {
    let mut env = TestEnv::new("inbox");
    let v1 = env.image("1", &ImageOpts::default());
    let v2 = env.image("2", &ImageOpts::default());
    let config = env.config(&ServiceOpts::default());
    let daemon = Arc::new(Daemon::start(env.dir.path(), &config));
    daemon.deploy_ok(&v1);
    let load = Load::start(env.haproxy.frontend, 4, "/");

    let inbox = env.dir.path().join("state/inbox");
    let outside = env.dir.path().join("outside.json");
    std::fs::write(&outside, format!(r#"{{"service":"web","image":"{v2}"}}"#)).unwrap();
    let mut good = Vec::new();
    let mut staged = Vec::new();
    for i in 0..44 {
        let image = if i % 2 == 0 { &v2 } else { &v1 };
        let (name, body) = if i % 3 == 0 {
            (
                format!("rel-{i:02}.toml"),
                format!("service = \"web\"\nimage = \"{image}\"\ndeploy_id = \"inbox-{i}\"\n"),
            )
        } else {
            (
                format!("rel-{i:02}.json"),
                format!(r#"{{"service":"web","image":"{image}","deploy_id":"inbox-{i}"}}"#),
            )
        };
        good.push(format!("inbox-{i}"));
        staged.push((name, body));
    }
    let bad = [
        (
            "bad-malformed.json",
            "{\"service\": \"web\", \"image\":".to_string(),
            "not a valid release",
        ),
        (
            "bad-service.json",
            format!(r#"{{"service":"nope","image":"{v2}"}}"#),
            "unknown service",
        ),
        (
            "bad-image.json",
            r#"{"service":"web","image":"no such image!"}"#.to_string(),
            "not a valid image reference",
        ),
        (
            "bad-field.toml",
            format!("service = \"web\"\nimage = \"{v2}\"\ncolour = \"red\"\n"),
            "colour",
        ),
        ("bad-ext.yaml", "service: web".to_string(), ".json or .toml"),
    ];
    for (name, body, _) in &bad {
        staged.push((name.to_string(), body.clone()));
    }
    // write elsewhere (hidden temp names), then rename all in at once
    for (name, body) in &staged {
        std::fs::write(inbox.join(format!(".{name}.tmp")), body).unwrap();
    }
    std::os::unix::fs::symlink(&outside, inbox.join(".link.tmp")).unwrap();
    for (name, _) in &staged {
        std::fs::rename(inbox.join(format!(".{name}.tmp")), inbox.join(name)).unwrap();
    }
    std::fs::rename(inbox.join(".link.tmp"), inbox.join("bad-symlink.json")).unwrap();

    let count = |sub: &str, suffix: &str| {
        std::fs::read_dir(inbox.join(sub))
            .map(|d| {
                d.filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .ends_with(suffix)
                })
                .count()
            })
            .unwrap_or(0)
    };
    let started = Instant::now();
    while count("accepted", "") + count("rejected", ".reason") < 50 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "accepted {} rejected {}",
            count("accepted", ""),
            count("rejected", ".reason")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(count("accepted", ""), 44);
    assert_eq!(count("rejected", ".reason"), 6);
    let leftover: Vec<_> = std::fs::read_dir(&inbox)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != "accepted" && n != "rejected")
        .collect();
    assert!(leftover.is_empty(), "{leftover:?}");
    for (name, _, why) in &bad {
        let reason =
            std::fs::read_to_string(inbox.join("rejected").join(format!("{name}.reason"))).unwrap();
        assert!(reason.contains(why), "{name}: {reason}");
    }
    let reason = std::fs::read_to_string(inbox.join("rejected/bad-symlink.json.reason")).unwrap();
    assert!(reason.contains("symlink"), "{reason}");

    // every good release is accounted for: swapped or superseded by a later one, none lost
    let d = daemon.clone();
    blocking(move || d.wait_idle(Duration::from_secs(90))).await;
    for id in &good {
        let out = daemon.ctl(&[
            "deploy",
            "web",
            "--image",
            "x:1",
            "--deploy-id",
            id,
            "--wait",
            "--json",
        ]);
        let code = out.status.code();
        assert!(code == Some(0) || code == Some(8), "{id}: {}", text(&out));
    }
    let stats = load.stop().await;
    assert_eq!(stats.failed, 0, "bad files disturbed nothing: {stats}");
    assert_eq!(env.containers().len(), 1);
}

#[test]
fn the_cfn_hup_hook_succeeds_on_a_good_release_and_fails_loudly_on_a_bad_one() {
    let mut env = TestEnv::new("cfnhup");
    let v1 = env.image("1", &ImageOpts::default());
    let v2 = env.image("2", &ImageOpts::default());
    let bad = env.image(
        "bad",
        &ImageOpts {
            healthy_never: true,
            ..Default::default()
        },
    );
    let opts = ServiceOpts {
        health_deadline_secs: 3,
        ..Default::default()
    };
    let config = env.config(&opts);
    let daemon = Daemon::start(env.dir.path(), &config);
    daemon.deploy_ok(&v1);

    // cfn-get-metadata cannot run here: a stand-in prints the metadata the stack would carry
    let bin = env.dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let metadata = env.dir.path().join("metadata.json");
    std::fs::write(
        bin.join("cfn-get-metadata"),
        format!(
            "#!/bin/sh\necho \"$@\" >> {dir}/cfn-get-metadata.args\ncat {meta}\n",
            dir = env.dir.path().display(),
            meta = metadata.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        bin.join("cfn-get-metadata"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::os::unix::fs::symlink(HOTSWAPCTL, bin.join("hotswapctl")).unwrap();
    let run_hook = || support::fleet::run_cfn_hook(&bin, &daemon.socket);
    std::fs::write(
        &metadata,
        format!(r#"{{"services":{{"web":{{"image":"{v2}"}}}}}}"#),
    )
    .unwrap();
    let out = run_hook();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(current_of(&daemon, "web").as_deref(), Some(v2.as_str()));
    let args = std::fs::read_to_string(env.dir.path().join("cfn-get-metadata.args")).unwrap();
    assert_eq!(
        args.trim(),
        "-s shop -r AppGroup --region us-east-1 -k hotswap"
    );
    // cfn-hup may run the hook again for the same metadata: nothing swaps twice
    let out = run_hook();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(daemon.reports().len(), 2);

    std::fs::write(
        &metadata,
        format!(r#"{{"hotswap":{{"services":{{"web":{{"image":"{bad}"}}}}}}}}"#),
    )
    .unwrap();
    let out = run_hook();
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("failed") && err.contains("health gate"),
        "{err}"
    );
    assert_eq!(
        current_of(&daemon, "web").as_deref(),
        Some(v2.as_str()),
        "the running release keeps serving"
    );
}

#[test]
fn an_image_archive_is_loaded_after_its_digest_is_checked() {
    let mut env = TestEnv::new("archive");
    let v1 = env.image("1", &ImageOpts::default());
    let arch = env.image("arch", &ImageOpts::default());
    let config = env.config(&ServiceOpts::default());
    let archives = env.dir.path().join("archives");
    std::fs::create_dir(&archives).unwrap();
    support::daemon::add_daemon_lines(
        &config,
        &format!("archive_dirs = [{:?}]", archives.display().to_string()),
    );
    let daemon = Daemon::start(env.dir.path(), &config);
    daemon.deploy_ok(&v1);

    let tar = archives.join("web-arch.tar");
    let sha = save_and_remove(&arch, &tar);
    // the daemon reads only archives in its archive directories, links resolved
    let outside = env.dir.path().join("elsewhere.tar");
    std::fs::copy(&tar, &outside).unwrap();
    std::os::unix::fs::symlink(&outside, archives.join("link.tar")).unwrap();
    for path in [
        outside.clone(),
        archives.join("link.tar"),
        archives.join("../elsewhere.tar"),
    ] {
        let out = daemon.ctl(&[
            "deploy",
            "web",
            "--image",
            &arch,
            "--archive",
            path.to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(4), "{}", text(&out));
        assert!(
            text(&out).contains("outside the archive directories"),
            "{}",
            text(&out)
        );
    }
    assert!(!env.image_exists(&arch));

    let wrong = "0".repeat(64);
    let tar_s = tar.to_str().unwrap();
    let out = daemon.ctl(&[
        "deploy",
        "web",
        "--image",
        &arch,
        "--archive",
        tar_s,
        "--archive-sha256",
        &wrong,
        "--wait",
    ]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    assert!(
        text(&out).contains(&sha) && text(&out).contains("nothing started"),
        "{}",
        text(&out)
    );
    assert!(!env.image_exists(&arch), "a wrong digest loads nothing");
    assert_eq!(env.containers().len(), 1);

    let out = daemon.ctl(&[
        "deploy",
        "web",
        "--image",
        &arch,
        "--archive",
        tar_s,
        "--archive-sha256",
        &sha,
        "--wait",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        current_of(&daemon, "web").as_deref(),
        Some(arch.as_str()),
        "{}\n{:?}",
        text(&out),
        daemon.reports()
    );

    let out = daemon.ctl(&[
        "deploy",
        "web",
        "--image",
        &arch,
        "--archive",
        "relative.tar",
    ]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(text(&out).contains("absolute path"), "{}", text(&out));
}

#[test]
fn a_config_reload_adds_a_service_and_a_broken_one_changes_nothing() {
    let mut env =
        TestEnv::with_backends("reloadcfg", &[("web", "roundrobin"), ("api", "roundrobin")]);
    let v1 = env.image("1", &ImageOpts::default());
    let a1 = env.image_for("api", "1", &ImageOpts::default());
    let opts = ServiceOpts::default();
    let config = env.config(&opts);
    let daemon = Daemon::start(env.dir.path(), &config);
    daemon.deploy_ok(&v1);

    let mut text_cfg = std::fs::read_to_string(&config).unwrap();
    text_cfg.push_str(&service_toml("api", &env.haproxy, &opts));
    std::fs::write(&config, &text_cfg).unwrap();
    let out = daemon.ctl(&["reload"]);
    assert!(
        out.status.success() && text(&out).contains("added [api]"),
        "{}",
        text(&out)
    );
    daemon.wait_idle(Duration::from_secs(30));
    daemon.deploy_ok_to("api", &a1);

    std::fs::write(
        &config,
        text_cfg.replace("keep_images = 1", "keep_images = \"one\""),
    )
    .unwrap();
    let out = daemon.ctl(&["reload"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(
        text(&out).contains("keep_images") && text(&out).contains(&config.display().to_string()),
        "{}",
        text(&out)
    );
    let names: Vec<String> = services(&daemon)
        .iter()
        .map(|s| s["service"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["api", "web"]);
    assert_eq!(current_of(&daemon, "web").as_deref(), Some(v1.as_str()));
    let out = Command::new(HOTSWAPCTL)
        .arg("check-config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(9), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_entries_made_in_place_are_moved_aside_and_nothing_is_written_through_a_link() {
    use std::os::unix::ffi::OsStrExt;
    let env = TestEnv::new("inboxodd");
    let config = env.config(&ServiceOpts::default());
    let _daemon = Daemon::start(env.dir.path(), &config);
    let inbox = env.dir.path().join("state/inbox");
    let secret = env.dir.path().join("root-only.txt");
    std::fs::write(&secret, "root only").unwrap();
    // rejected/ replaced by a link to a directory elsewhere, a reason planted as a link
    let outside = env.dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::remove_dir_all(inbox.join("rejected")).unwrap();
    std::os::unix::fs::symlink(&outside, inbox.join("rejected")).unwrap();
    // made in place, never renamed in or closed after writing
    std::os::unix::fs::symlink(&secret, inbox.join("evil.json")).unwrap();
    nix::unistd::mkfifo(
        &inbox.join("pipe.json"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    std::fs::create_dir(inbox.join("adir.json")).unwrap();
    std::fs::write(
        inbox.join(std::ffi::OsStr::from_bytes(b"bad\xffname.json")),
        "{}",
    )
    .unwrap();
    let started = std::time::Instant::now();
    let left = || -> Vec<std::ffi::OsString> {
        std::fs::read_dir(&inbox)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n != "accepted" && n != "rejected" && !n.to_string_lossy().starts_with('.'))
            .collect()
    };
    while !left().is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "still in the inbox: {:?}",
            left()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rejected = inbox.join("rejected");
    assert!(std::fs::symlink_metadata(&rejected).unwrap().is_dir());
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    for (name, why) in [
        ("evil.json", "symlink"),
        ("pipe.json", "not a regular file"),
        ("adir.json", "a directory"),
        ("bad\u{fffd}name.json", "not UTF-8"),
    ] {
        let reason = std::fs::read_to_string(rejected.join(format!("{name}.reason"))).unwrap();
        assert!(reason.contains(why), "{name}: {reason}");
    }
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "root only");
}
