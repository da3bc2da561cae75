//! The systemd protocol against the real daemon, listening on our own NOTIFY_SOCKET.

mod support;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use support::daemon::{Daemon, ServiceOpts};
use support::env::TestEnv;
use support::images::ImageOpts;

/// The release that answers `GET /` through HAProxy's frontend.
fn serving(frontend: std::net::SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(frontend).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    conn.write_all(b"GET / HTTP/1.0\r\nHost: test\r\n\r\n")
        .unwrap();
    let mut reply = Vec::new();
    conn.read_to_end(&mut reply).unwrap();
    let text = String::from_utf8_lossy(&reply);
    assert!(
        text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200"),
        "{text}"
    );
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    support::load::parse_release(body.as_bytes()).unwrap_or_else(|| panic!("no release in {text}"))
}

/// Every notify message, in order, with whether the control socket answered when it came.
struct Listener {
    messages: Arc<Mutex<Vec<(Instant, String, bool)>>>,
}

impl Listener {
    fn start(path: &Path, control: std::path::PathBuf) -> Listener {
        let sock = UnixDatagram::bind(path).unwrap();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let m = messages.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = sock.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                let answering = std::os::unix::net::UnixStream::connect(&control).is_ok();
                m.lock().unwrap().push((Instant::now(), text, answering));
            }
        });
        Listener { messages }
    }

    fn all(&self) -> Vec<String> {
        self.messages
            .lock()
            .unwrap()
            .iter()
            .map(|(_, t, _)| t.clone())
            .collect()
    }

    fn wait_for(&self, what: &str, after: usize, limit: Duration) -> usize {
        let started = Instant::now();
        loop {
            if let Some(i) = self.all().iter().skip(after).position(|m| m.contains(what)) {
                return after + i;
            }
            assert!(
                started.elapsed() < limit,
                "no {what:?} after message {after}: {:?}",
                self.all()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Stands in for journald's native socket: every entry, as text.
struct Journal {
    path: std::path::PathBuf,
    entries: Arc<Mutex<Vec<String>>>,
}

impl Journal {
    fn start(path: &Path) -> Journal {
        let sock = UnixDatagram::bind(path).unwrap();
        let entries = Arc::new(Mutex::new(Vec::new()));
        let e = entries.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while let Ok(n) = sock.recv(&mut buf) {
                e.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        });
        Journal {
            path: path.to_owned(),
            entries,
        }
    }

    fn wait_for(&self, what: &str, limit: Duration) -> Vec<String> {
        let started = Instant::now();
        loop {
            let all = self.entries.lock().unwrap().clone();
            if all.iter().any(|e| e.contains(what)) {
                return all;
            }
            assert!(
                started.elapsed() < limit,
                "no journal entry with {what:?}: {all:#?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn ready_status_watchdog_reload_and_stop_follow_the_protocol() {
    let mut env = TestEnv::new("sdnotify");
    let v1 = env.image("1", &ImageOpts::default());
    let v3 = env.image("3", &ImageOpts::default());
    let slow = env.image(
        "2",
        &ImageOpts {
            warmup_ms: 20_000,
            ..Default::default()
        },
    );
    let config = env.config(&ServiceOpts::default());
    let notify = env.dir.path().join("notify.sock");
    let control = env.dir.path().join("hotswapd.sock");
    let l = Listener::start(&notify, control);
    // stderr as the journal's stream: JOURNAL_STREAM names the log file's device and inode
    // (Daemon::start_env appends to this file, so it keeps its inode)
    let log_file = env.dir.path().join("hotswapd.log");
    std::fs::write(&log_file, "").unwrap();
    let journal_stream = {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(&log_file).unwrap();
        format!("{}:{}", m.dev(), m.ino())
    };
    let journal = Journal::start(&env.dir.path().join("journal.sock"));
    let vars = [
        ("NOTIFY_SOCKET", notify.display().to_string()),
        ("WATCHDOG_USEC", "1000000".to_string()),
        ("JOURNAL_STREAM", journal_stream),
        ("HOTSWAP_JOURNAL_SOCKET", journal.path.display().to_string()),
    ];
    let mut daemon = Daemon::start_env(env.dir.path(), &config, &vars);

    // READY only once the control socket answers
    let ready = l.wait_for("READY=1", 0, Duration::from_secs(10));
    assert!(
        l.messages.lock().unwrap()[ready].2,
        "READY=1 came before the control socket answered"
    );

    // STATUS follows a swap
    let before = l.all().len();
    daemon.deploy_ok(&v1);
    let swapping = l.wait_for("swapping", before, Duration::from_secs(5));
    l.wait_for("STATUS=web: serving 1", swapping, Duration::from_secs(5));

    // logs reach the journal as native entries: each tracing field a journal field
    let entries = journal.wait_for("PHASE=", Duration::from_secs(5));
    let phase = entries
        .iter()
        .find(|e| e.contains("PHASE=health_gate\n"))
        .unwrap_or_else(|| panic!("no health_gate entry in {entries:#?}"));
    for field in [
        "PRIORITY=6\n",
        "SYSLOG_IDENTIFIER=hotswapd\n",
        "SERVICE=web\n",
        "DEPLOY_ID=",
        "RELEASE=",
        "MESSAGE=phase ",
    ] {
        assert!(phase.contains(field), "no {field:?} in {phase:?}");
    }

    // the watchdog at half of WatchdogSec (1 s): about two pings a second
    let count = || l.all().iter().filter(|m| m.contains("WATCHDOG=1")).count();
    let (c0, t0) = (count(), Instant::now());
    std::thread::sleep(Duration::from_millis(2100));
    let pings = count() - c0;
    assert!(
        (3..=6).contains(&pings),
        "{pings} watchdog pings in {:?}",
        t0.elapsed()
    );

    // SIGHUP: RELOADING=1, then READY=1
    let before = l.all().len();
    daemon.signal(Signal::SIGHUP);
    let reloading = l.wait_for("RELOADING=1", before, Duration::from_secs(5));
    assert!(
        l.all()[reloading].contains("MONOTONIC_USEC="),
        "{:?}",
        l.all()[reloading]
    );
    l.wait_for("READY=1", reloading, Duration::from_secs(5));

    // SIGHUP with a broken config keeps the old one, says why, and the daemon keeps serving
    let good = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        good.replace("container_port = 8080", "container_port = \"x\""),
    )
    .unwrap();
    let before = l.all().len();
    daemon.signal(Signal::SIGHUP);
    let failed = l.wait_for("config reload failed", before, Duration::from_secs(5));
    assert!(
        l.all()[failed].contains("container_port"),
        "{:?}",
        l.all()[failed]
    );
    let status = daemon.status_json().unwrap();
    assert_eq!(
        status["services"][0]["current"]["release"]["image"],
        v1.as_str()
    );
    // still serving, and still taking releases with the old config
    daemon.deploy_ok(&v3);
    assert_eq!(serving(env.haproxy.frontend), "3");
    std::fs::write(&config, &good).unwrap();

    // SIGTERM mid-swap: STOPPING=1, a prompt exit, and a restart ends with one healthy release
    let out = daemon.ctl(&["deploy", "web", "--image", &slow]);
    assert!(out.status.success());
    let started = Instant::now();
    while daemon.status_json().unwrap()["services"][0]["swap"]["phase"]["phase"] != "health_gate" {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "never reached the health gate"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = l.all().len();
    daemon.signal(Signal::SIGTERM);
    l.wait_for("STOPPING=1", before, Duration::from_secs(5));
    let exit = daemon
        .wait_exit(Duration::from_secs(10))
        .expect("hotswapd exits on SIGTERM");
    assert!(exit.success(), "{exit:?}");
    // the restart finds the swap in the journal: READY=1 once its recovery is decided, with the
    // socket answering, never while a service still shows "recovering"
    let before = l.all().len();
    let mut vars = vars.to_vec();
    vars.retain(|(k, _)| *k != "HOTSWAP_JOURNAL_SOCKET");
    vars.push((
        "HOTSWAP_JOURNAL_SOCKET",
        env.dir.path().join("no-journal.sock").display().to_string(),
    ));
    let daemon = Daemon::start_env(env.dir.path(), &config, &vars);
    let ready = l.wait_for("READY=1", before, Duration::from_secs(10));
    let (_, text, answering) = l.messages.lock().unwrap()[ready].clone();
    assert!(answering, "READY=1 came before the control socket answered");
    assert!(
        !text.contains("recovering"),
        "READY=1 during recovery: {text:?}"
    );
    let containers = env.containers();
    assert_eq!(containers.len(), 1, "{containers:?}");
    assert_eq!(containers[0].1, v3);
    assert_eq!(env.haproxy.servers("web").len(), 1);
    assert_eq!(serving(env.haproxy.frontend), "3");
    let r = daemon.reports().pop().unwrap();
    assert_eq!(r["result"], "failure");
    assert!(r["reason"].as_str().unwrap().contains("restarted"), "{r}");

    // without a journal socket answering, stderr (the journal's stream) gets lines made for
    // the journal: a syslog priority first, no time (journald adds it), no colors, the fields
    let log = daemon.log();
    assert!(!log.contains('\x1b'), "ANSI colors in the journal:\n{log}");
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            [
                "<3>ERROR ",
                "<4>WARN ",
                "<6>INFO ",
                "<7>DEBUG ",
                "<7>TRACE "
            ]
            .iter()
            .any(|p| line.starts_with(p)),
            "a log line without its priority prefix: {line:?}\n{log}"
        );
    }
    assert!(
        log.lines().any(|l| l.starts_with("<6>INFO ")
            && l.contains("service=\"web\"")
            && l.contains("deploy_id=")
            && l.contains("phase=")),
        "no phase line with its fields:\n{log}"
    );
}

#[test]
fn the_unit_file_verifies_without_complaint() {
    let analyze = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("systemd-analyze not found: these tests need systemd's tools (apt-get install systemd); scripts/install-deps installs them");
    // the unit as shipped, with ExecStart pointing at the binary this build made
    let dir = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/hotswapd.service"
    ))
    .unwrap();
    // Documentation= names man pages that only the package installs (scripts/check-packages
    // verifies the installed unit with them); verify names each one it cannot open
    let unit: String = unit
        .replace("/usr/bin/hotswapd", support::daemon::HOTSWAPD)
        .lines()
        .filter(|l| !l.starts_with("Documentation="))
        .map(|l| format!("{l}\n"))
        .collect();
    for line in [
        "Type=notify",
        "WatchdogSec=30s",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "ProtectSystem=strict",
        "KillMode=process",
    ] {
        assert!(unit.lines().any(|l| l == line), "the unit lacks {line}");
    }
    let path = dir.path().join("hotswapd.service");
    std::fs::write(&path, unit).unwrap();
    let out = std::process::Command::new(analyze)
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify: {stderr}"
    );
}
