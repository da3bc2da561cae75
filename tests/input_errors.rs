//! Bad input gets a clear error naming what was wrong and where; nothing running is disturbed.

mod support;

use std::process::Command;

use support::daemon::{add_daemon_lines, Daemon, ServiceOpts, HOTSWAPCTL, HOTSWAPD};
use support::env::TestEnv;
use support::images::ImageOpts;

#[test]
fn check_config_names_file_and_key_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[services.web]\ncontainer_port = 8080\nhealth_path = \"/h\"\n[services.web.haproxy]\nruntime_socket = \"/x\"\n").unwrap();
    let out = Command::new(HOTSWAPD)
        .arg("--check-config")
        .arg("--config")
        .arg(&bad)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(9),
        "the same code as hotswapctl check-config: {err}"
    );
    assert!(
        err.contains(&bad.display().to_string())
            && err.contains("health_path")
            && err.contains("line 3"),
        "{err}"
    );

    std::fs::write(&bad, "[services.web]\ncontainer_port = 8080\n[services.web.haproxy]\nruntime_socket = \"/x\"\nswitch = \"sometimes\"\n").unwrap();
    let out = Command::new(HOTSWAPD)
        .arg("--config")
        .arg(&bad)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the daemon refuses to start on a bad config: {err}"
    );
    assert!(
        err.contains("services.web.haproxy.switch") && err.contains("sometimes"),
        "{err}"
    );

    let missing = dir.path().join("missing.toml");
    let out = Command::new(HOTSWAPD)
        .arg("--check-config")
        .arg("--config")
        .arg(&missing)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(9));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.toml"));

    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.toml");
    let out = Command::new(HOTSWAPD)
        .arg("--check-config")
        .arg("--config")
        .arg(example)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `check-config --live` with each binary: (hotswapd's exit code, hotswapctl's, hotswapctl's
/// output).
fn check_live(config: &std::path::Path) -> (Option<i32>, Option<i32>, String) {
    let d = Command::new(HOTSWAPD)
        .args(["--check-config", "--live", "--config"])
        .arg(config)
        .output()
        .unwrap();
    let c = Command::new(HOTSWAPCTL)
        .args(["check-config", "--live"])
        .arg(config)
        .output()
        .unwrap();
    (d.status.code(), c.status.code(), support::text(&c))
}

#[test]
fn check_config_live_names_what_this_host_lacks_with_the_same_code_from_both_binaries() {
    let env = TestEnv::with_balance("live", "uri");
    let config = env.config(&ServiceOpts::default());
    let (d, c, out) = check_live(&config);
    assert_eq!((d, c), (Some(15), Some(15)), "{out}");
    assert!(
        out.contains("ok   Docker engine")
            && out.contains("ok   service web: HAProxy backend \"web\""),
        "{out}"
    );
    assert!(
        out.contains(
            "FAIL service web: balance of backend \"web\": balance uri takes no servers at runtime"
        ),
        "{out}"
    );

    let env = TestEnv::new("live2");
    let config = env.config(&ServiceOpts::default());
    let (d, c, out) = check_live(&config);
    assert_eq!((d, c), (Some(0), Some(0)), "all there: {out}");
    // the backend renamed, Docker's socket elsewhere
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("backend = \"web\"", "backend = \"nope\""),
    )
    .unwrap();
    // and the reports file under a file, where no directory can be
    add_daemon_lines(
        &config,
        &format!(
            "docker_socket = \"/nonexistent/docker.sock\"\nreports_file = \"{}/reports.jsonl\"",
            config.display()
        ),
    );
    let (d, c, out) = check_live(&config);
    assert_eq!((d, c), (Some(15), Some(15)), "{out}");
    assert!(
        out.contains("FAIL Docker engine") && out.contains("/nonexistent/docker.sock"),
        "{out}"
    );
    assert!(
        out.contains("FAIL service web: HAProxy backend \"nope\"")
            && out.contains("Can't find backend"),
        "{out}"
    );
    assert!(
        out.contains(&format!("FAIL directory {}", config.display())),
        "{out}"
    );
    assert!(
        out.contains("ok   directory"),
        "the state directory is fine: {out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_with_the_reason_and_the_release_keeps_serving() {
    let mut env = TestEnv::new("badreq");
    let v1 = env.image("1", &ImageOpts::default());
    let config = env.config(&ServiceOpts::default());
    let daemon = Daemon::start(env.dir.path(), &config);
    daemon.deploy_ok(&v1);

    let cases: [(&[&str], &str); 3] = [
        (
            &["deploy", "nope", "--image", "web:2"],
            "unknown service \"nope\"",
        ),
        (
            &["deploy", "web", "--image", "web 2"],
            "not a valid image reference",
        ),
        (
            &["deploy", "web", "--image", "web:2", "--deploy-id", "../etc"],
            "deploy_id",
        ),
    ];
    for (args, want) in cases {
        let out = daemon.ctl(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    // raw garbage on the socket
    let reply = {
        use std::io::{Read, Write};
        let mut s = std::os::unix::net::UnixStream::connect(&daemon.socket).unwrap();
        s.write_all(b"POST /v1/deploys HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\nConnection: close\r\n\r\n{not json").unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        reply
    };
    assert!(
        reply.starts_with("HTTP/1.1 400") && reply.contains("deploy request is not valid"),
        "{reply}"
    );

    // a missing image is a failed swap with the reason, not a crash
    let (code, _, err) = daemon.deploy("hotswap-no-such-image:7");
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("hotswap-no-such-image:7"), "{err}");

    // the same deploy id twice swaps once
    let v2 = env.image("2", &ImageOpts::default());
    for _ in 0..2 {
        let out = daemon.ctl(&[
            "deploy",
            "web",
            "--image",
            &v2,
            "--deploy-id",
            "same-id-1",
            "--wait",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let reports = daemon.reports();
    assert_eq!(
        reports
            .iter()
            .filter(|r| r["deploy_id"] == "same-id-1")
            .count(),
        1
    );

    let status = daemon.status_json().unwrap();
    assert_eq!(
        status["services"][0]["current"]["release"]["image"],
        v2.as_str()
    );
    assert_eq!(env.containers().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_releases_that_could_block_or_lie_are_refused_and_status_keeps_answering() {
    let env = TestEnv::new("badcode");
    let root = env.dir.path().join("code");
    std::fs::create_dir_all(&root).unwrap();
    let config = env.config_with_code(&ServiceOpts::default(), &root);
    let daemon = Daemon::start(env.dir.path(), &config);
    // a FIFO as the bundle: reading it would block whoever opens it
    let fifo = env.dir.path().join("bundle.tar.gz");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let bad_version = env.dir.path().join("c2");
    std::fs::create_dir_all(&bad_version).unwrap();
    std::fs::write(bad_version.join("VERSION"), "c2\u{1b}[31m\n").unwrap();
    let fifo = fifo.display().to_string();
    let bad_version = bad_version.display().to_string();
    let cases: [(&[&str], &str); 4] = [
        (&["deploy", "web", "--code", &fifo], "not a regular file"),
        (
            &["deploy", "web", "--code", &fifo, "--version", "c1"],
            "not a regular file",
        ),
        (&["deploy", "web", "--code", &bad_version], "printable"),
        (
            &[
                "deploy",
                "web",
                "--code",
                &bad_version,
                "--version",
                "c\u{7}",
            ],
            "printable",
        ),
    ];
    for (args, want) in cases {
        let out = daemon.ctl(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    let status = daemon.status_json().expect("status answers");
    assert!(status["services"][0]["queued"]
        .as_array()
        .unwrap()
        .is_empty());
}

/// Sends one raw request on a fresh connection and reads the reply until the daemon closes.
/// A refused body may be left unread: then writing can fail and reading ends in a reset after
/// the reply, so neither error is the test's concern; the reply is.
fn raw_post(socket: &std::path::Path, path: &str, body: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    let _ = s.write_all(&request);
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n @ 1..) = s.read(&mut buf) {
        reply.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&reply).into_owned()
}

/// Raises this process's soft descriptor limit so it can hold `want` connections.
fn allow_descriptors(want: u64) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    if soft < want {
        assert!(
            hard >= want,
            "the hard descriptor limit {hard} is below {want}"
        );
        setrlimit(Resource::RLIMIT_NOFILE, want.max(soft), hard).unwrap();
    }
}

/// Whether the daemon closed its end of `s` (a read finds end of file, not "would block").
fn closed_by_peer(s: &std::os::unix::net::UnixStream) -> bool {
    use std::io::Read;
    let mut buf = [0u8; 16];
    s.set_nonblocking(true).unwrap();
    let closed = matches!((&*s).read(&mut buf), Ok(0));
    s.set_nonblocking(false).unwrap();
    closed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_do_not_starve_status_or_a_swap_and_bodies_must_be_objects() {
    use std::os::unix::net::UnixStream;
    use std::time::{Duration, Instant};
    const IDLE: usize = 1000;
    allow_descriptors(IDLE as u64 + 256);
    let mut env = TestEnv::new("idleconns");
    let v1 = env.image("1", &ImageOpts::default());
    let v2 = env.image("2", &ImageOpts::default());
    let config = env.config(&ServiceOpts::default());
    let daemon = Daemon::start(env.dir.path(), &config);
    daemon.deploy_ok(&v1);

    let started = Instant::now();
    let out = daemon.ctl(&["status"]);
    let alone = started.elapsed();
    assert_eq!(out.status.code(), Some(0));

    let opened = Instant::now();
    let held: Vec<UnixStream> = (0..IDLE)
        .map(|i| {
            UnixStream::connect(&daemon.socket)
                .unwrap_or_else(|e| panic!("connection {i} of {IDLE}: {e}"))
        })
        .collect();
    let opening = opened.elapsed();

    let started = Instant::now();
    let out = daemon.ctl(&["status"]);
    let crowded = started.elapsed();
    println!(
        "status: {alone:?} alone, {crowded:?} with {IDLE} idle connections opened (in {opening:?})"
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&v1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        crowded < Duration::from_secs(5),
        "status took {crowded:?} beside {IDLE} idle connections"
    );
    // the daemon keeps at most its bound of them: the oldest give way to newer ones as it
    // accepts them (the last few may still wait in the socket's backlog a moment)
    let waited = Instant::now();
    let given_way = loop {
        let n = held.iter().filter(|s| closed_by_peer(s)).count();
        if n >= IDLE - 256 || waited.elapsed() > Duration::from_secs(5) {
            break n;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    println!(
        "the daemon closed {given_way} of the {IDLE} idle connections within {:?}",
        waited.elapsed()
    );
    assert!(given_way >= IDLE - 256, "only {given_way} closed");

    // a swap still completes: its deploy and long poll are new connections, and a long poll is
    // not idle
    daemon.deploy_ok(&v2);

    // bodies that are JSON but not the documented object: 400 naming what was wrong
    let cases: [(&[u8], &str); 7] = [
        (b"[]", "must be a JSON object, not an array"),
        (br#""web:2""#, "must be a JSON object, not a string"),
        (b"42", "must be a JSON object, not a number"),
        (b"null", "must be a JSON object, not null"),
        (
            br#"{"service": "web", "image": "web:3", "force": true}"#,
            "unknown field `force`",
        ),
        (b"{\"service\": \"w\xffb\"}", "not UTF-8"),
        (
            br#"{"service": "web", "image": "Web:3"}"#,
            "path component \\\"Web\\\" has uppercase",
        ),
    ];
    for (body, want) in cases {
        let reply = raw_post(&daemon.socket, "/v1/deploys", body);
        assert!(
            reply.starts_with("HTTP/1.1 400") && reply.contains(want),
            "{}: {reply}",
            String::from_utf8_lossy(body)
        );
    }
    let reply = raw_post(&daemon.socket, "/v1/services/web/rollback", b"[\"x\"]");
    assert!(
        reply.starts_with("HTTP/1.1 400")
            && reply.contains("rollback request is not valid")
            && reply.contains("not an array"),
        "{reply}"
    );
    let big = vec![b' '; 65 * 1024];
    let reply = raw_post(&daemon.socket, "/v1/deploys", &big);
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");

    // the rest are closed once idle for 10 s
    let last = held.last().unwrap();
    last.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(
        std::io::Read::read(&mut &*last, &mut buf).unwrap(),
        0,
        "an idle connection is closed"
    );
    println!(
        "the last idle connection closed {:?} after it opened",
        opened.elapsed()
    );
    drop(held);

    let status = daemon.status_json().expect("status answers");
    assert_eq!(
        status["services"][0]["current"]["release"]["image"],
        v2.as_str()
    );
    assert_eq!(env.containers().len(), 1);
}

/// Paths that would resolve against the working directory (`/` under systemd), env keys Docker
/// would read as something else, names that would go into HAProxy's commands: refused by
/// `check-config`, naming the key, before they can mean something else.
#[test]
fn check_config_refuses_relative_paths_odd_env_keys_and_unsafe_names_by_key() {
    let env = TestEnv::new("cfgpaths");
    let good = env.config(&ServiceOpts::default());
    let text = std::fs::read_to_string(&good).unwrap();
    let cases: Vec<(String, &str)> = vec![
        (
            text.replacen(
                "[daemon]\n",
                "[daemon]\nreports_file = \"reports.jsonl\"\n",
                1,
            ),
            "daemon.reports_file",
        ),
        (
            text.replacen("[daemon]\n", "[daemon]\ninbox_dir = \"inbox\"\n", 1),
            "daemon.inbox_dir",
        ),
        (
            text.replacen("state_dir = \"/", "state_dir = \"./", 1),
            "daemon.state_dir",
        ),
        (
            format!("{text}\n[registry]\nauth_file = \"docker/config.json\"\n"),
            "registry.auth_file",
        ),
        (
            text.replace("env = {  }", "env = { \"\" = \"x\" }"),
            "services.web.container.env",
        ),
        (
            text.replace("env = {  }", "env = { \"A=B\" = \"x\" }"),
            "services.web.container.env",
        ),
        (
            text.replace("backend = \"web\"", "backend = \"web;shutdown sessions\""),
            "services.web.haproxy.backend",
        ),
        (
            text.replace(
                "path = \"/health\"",
                "path = \"/health HTTP/1.1\\r\\nX: y\"",
            ),
            "services.web.health.path",
        ),
        (
            text.replace(
                "server_options = \"check inter 1s\"",
                "server_options = \"check # comment\"",
            ),
            "services.web.haproxy.server_options",
        ),
    ];
    let bad = env.dir.path().join("bad.toml");
    for (config, key) in cases {
        assert_ne!(config, text, "{key}: the case changes the config");
        std::fs::write(&bad, &config).unwrap();
        let out = Command::new(HOTSWAPCTL)
            .arg("check-config")
            .arg(&bad)
            .output()
            .unwrap();
        let err = support::text(&out);
        assert_eq!(out.status.code(), Some(9), "{key}: {err}");
        assert!(err.contains(key), "{key}: {err}");
    }
    let out = Command::new(HOTSWAPCTL)
        .arg("check-config")
        .arg(&good)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", support::text(&out));
}
