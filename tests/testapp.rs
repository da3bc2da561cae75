//! Self-test of the test workload (testapp/) as a real container: warmup,
//! /health contents, keep-alive load, graceful drain on `docker stop`, and a
//! release that never becomes healthy. Needs a Docker daemon (fails, never
//! skips, without one).

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::images::{build_image, remove_image, ImageOpts};
use support::load::Load;

/// Removes the containers and images it knows of when dropped (also on panic).
#[derive(Default)]
struct Cleanup {
    containers: Vec<String>,
    images: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = Command::new("docker")
                .args(["rm", "-f", c])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        // `--rm` containers may still be being removed by the daemon; wait
        // (bounded) so that `docker rmi` is not refused for an image in use.
        let deadline = Instant::now() + Duration::from_secs(10);
        for c in &self.containers {
            while Instant::now() < deadline {
                let out = Command::new("docker")
                    .args(["ps", "-a", "-q", "--filter", &format!("name=^{c}$")])
                    .output();
                match out {
                    Ok(o)
                        if o.status.success()
                            && !o.stdout.iter().any(|b| !b.is_ascii_whitespace()) =>
                    {
                        break
                    }
                    Ok(_) => std::thread::sleep(Duration::from_millis(50)),
                    Err(_) => break,
                }
            }
        }
        for i in &self.images {
            remove_image(i);
        }
    }
}

fn unique_name(label: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("hotswap-selftest-{label}-{}-{nanos}", std::process::id())
}

fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn docker(args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running docker {args:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "docker {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `docker run -d [--rm] --name NAME -p 127.0.0.1::8080 [-e ..] IMAGE`;
/// registers the container for cleanup and returns the published address.
fn run_container(
    cleanup: &mut Cleanup,
    image: &str,
    label: &str,
    rm: bool,
    env: &[&str],
) -> (String, SocketAddr) {
    let name = unique_name(label);
    cleanup.containers.push(name.clone());
    let mut args = vec!["run", "-d"];
    if rm {
        args.push("--rm");
    }
    args.extend(["--name", &name, "-p", "127.0.0.1::8080"]);
    for e in env {
        args.extend(["-e", e]);
    }
    args.push(image);
    docker(&args).unwrap_or_else(|e| panic!("starting container: {e}"));
    let port = docker(&["port", &name, "8080/tcp"]).unwrap_or_else(|e| panic!("{e}"));
    let first = port.lines().next().unwrap_or("").trim();
    let addr: SocketAddr = first
        .parse()
        .unwrap_or_else(|e| panic!("parsing `docker port` output {port:?}: {e}"));
    (name, addr)
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body {:?} is not JSON: {e}", self.body))
    }
}

/// Reads one HTTP/1.1 response (Content-Length body) from `stream`.
fn read_reply(stream: &mut TcpStream) -> Result<Reply, String> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        match stream.read(&mut tmp) {
            Ok(0) => {
                return Err(format!(
                    "connection closed before a full response ({} bytes read)",
                    buf.len()
                ))
            }
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
            Err(e) => return Err(format!("read error: {e}")),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .ok_or("response without Content-Length")?;
    while buf.len() < head_end + len {
        match stream.read(&mut tmp) {
            Ok(0) => return Err("connection closed inside the body".into()),
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
            Err(e) => return Err(format!("read error in body: {e}")),
        }
    }
    let body = String::from_utf8_lossy(&buf[head_end..head_end + len]).to_string();
    Ok(Reply {
        status,
        headers,
        body,
    })
}

fn send_get(
    stream: &mut TcpStream,
    addr: SocketAddr,
    path: &str,
    close: bool,
) -> Result<(), String> {
    let conn = if close { "close" } else { "keep-alive" };
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: {conn}\r\n\r\n").as_bytes(),
        )
        .map_err(|e| format!("write error: {e}"))
}

/// One blocking `GET path` on a fresh connection.
fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<Reply, String> {
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(timeout)).unwrap();
    send_get(&mut s, addr, path, true)?;
    read_reply(&mut s)
}

/// Polls until the app answers anything at all (through docker-proxy a
/// connection may be accepted and closed before the app listens).
fn first_health_reply(addr: SocketAddr, within: Duration) -> (Reply, Instant) {
    let deadline = Instant::now() + within;
    let mut last_err = String::new();
    while Instant::now() < deadline {
        match http_get(addr, "/health", Duration::from_secs(1)) {
            Ok(r) => return (r, Instant::now()),
            Err(e) => last_err = e,
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("no answer on {addr}/health within {within:?}: {last_err}");
}

fn wait_healthy(addr: SocketAddr, within: Duration) -> Reply {
    let deadline = Instant::now() + within;
    let mut last = String::new();
    while Instant::now() < deadline {
        match http_get(addr, "/health", Duration::from_secs(1)) {
            Ok(r) if r.status == 200 => return r,
            Ok(r) => last = format!("{} {}", r.status, r.body),
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("{addr}/health not 200 within {within:?}; last: {last}");
}

#[test]
fn testapp_warms_up_serves_load_and_drains_on_stop() {
    let mut cleanup = Cleanup::default();
    let image = "hotswap-testapp-selftest:1";
    cleanup.images.push(image.to_string());
    let t = Instant::now();
    build_image(
        image,
        "1",
        &ImageOpts {
            warmup_ms: 300,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("building {image}: {e}"));
    eprintln!("built {image} in {:?}", t.elapsed());

    // --- warmup: 503 first, then 200 with release and ready_at_ms ---------
    let run_ms = epoch_ms();
    let (_c1, addr) = run_container(&mut cleanup, image, "warm", true, &[]);
    let (first, _) = first_health_reply(addr, Duration::from_secs(10));
    assert_eq!(
        first.status,
        503,
        "expected 503 during the 300 ms warmup, got {} {} ({} ms after docker run)",
        first.status,
        first.body,
        epoch_ms() - run_ms
    );
    let v = first.json();
    assert_eq!(v["release"], "1", "503 body: {}", first.body);
    assert_eq!(v["ready"], false, "503 body: {}", first.body);

    let ok = wait_healthy(addr, Duration::from_secs(10));
    let got_ms = epoch_ms();
    assert_eq!(ok.header("content-type"), Some("application/json"));
    let v = ok.json();
    assert_eq!(v["release"], "1", "health body: {}", ok.body);
    let ready_at = v["ready_at_ms"]
        .as_u64()
        .unwrap_or_else(|| panic!("ready_at_ms missing or not a number: {}", ok.body));
    assert!(
        ready_at >= run_ms + 300,
        "ready_at_ms {ready_at} is less than 300 ms after docker run ({run_ms})"
    );
    assert!(
        ready_at <= got_ms + 5,
        "ready_at_ms {ready_at} is in the future (now {got_ms})"
    );
    eprintln!(
        "warmup: first answer 503, healthy after {} ms, ready_at_ms - docker_run = {} ms",
        got_ms - run_ms,
        ready_at - run_ms
    );

    // --- keep-alive load for ~1 s: no failures, only release 1 ------------
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let stats = rt.block_on(async {
        let load = Load::start(addr, 4, "/");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mark = load.mark();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let since = load.releases_since(&mark);
        assert_eq!(since.keys().collect::<Vec<_>>(), vec!["1"], "{since:?}");
        load.stop().await
    });
    eprintln!("load: {stats}");
    assert!(stats.requests > 50, "suspiciously few requests: {stats}");
    assert_eq!(stats.failed, 0, "{stats}");
    assert_eq!(stats.ok, stats.requests, "{stats}");
    assert_eq!(
        stats.by_release,
        [("1".to_string(), stats.ok)].into_iter().collect(),
        "{stats}"
    );
    assert_eq!(stats.last_release_seen.as_deref(), Some("1"));

    // --- drain: docker stop while a 500 ms request is in flight -----------
    // Not --rm, so the exit code and logs can be read after the stop.
    let (c2, addr2) = run_container(
        &mut cleanup,
        image,
        "drain",
        false,
        &["DELAY_MS=500", "WARMUP_MS=0"],
    );
    wait_healthy(addr2, Duration::from_secs(10));

    // An idle keep-alive connection: must be closed by the app at shutdown
    // (otherwise the drain would wait for it).
    let mut idle = TcpStream::connect(addr2).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    send_get(&mut idle, addr2, "/health", false).unwrap();
    let r = read_reply(&mut idle).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("keep-alive"));

    let inflight = std::thread::spawn(move || {
        let start = Instant::now();
        let r = http_get(addr2, "/slow", Duration::from_secs(5));
        (r, start.elapsed(), Instant::now())
    });
    std::thread::sleep(Duration::from_millis(150));
    let stop_sent = Instant::now();
    docker(&["stop", &c2]).unwrap_or_else(|e| panic!("{e}"));
    let stop_took = stop_sent.elapsed();
    let (reply, req_took, answered_at) = inflight.join().unwrap();
    let reply = reply.unwrap_or_else(|e| panic!("in-flight request was dropped at stop: {e}"));
    assert!(
        answered_at > stop_sent,
        "request answered before docker stop was sent; nothing was in flight"
    );
    assert_eq!(reply.status, 200, "in-flight request: {}", reply.body);
    assert_eq!(reply.json()["release"], "1");
    assert_eq!(reply.header("connection"), Some("close"));
    assert!(req_took >= Duration::from_millis(500), "{req_took:?}");
    assert!(
        stop_took < Duration::from_secs(5),
        "docker stop took {stop_took:?}: SIGTERM not handled or drain stuck"
    );
    let mut tmp = [0u8; 64];
    match idle.read(&mut tmp) {
        Ok(0) => {}
        Ok(n) => panic!("idle keep-alive connection got {n} unexpected bytes"),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("idle keep-alive connection was not closed at shutdown: {e}"),
    }
    let code = docker(&["inspect", "-f", "{{.State.ExitCode}}", &c2]).unwrap();
    assert_eq!(code, "0", "exit code after docker stop");
    let logs = docker(&["logs", &c2]).unwrap();
    eprintln!("drain: docker stop took {stop_took:?}, in-flight request took {req_took:?}\n{logs}");
    assert!(logs.contains("listening"), "start line missing: {logs}");
    assert!(logs.contains("exiting"), "exit line missing: {logs}");
}

#[test]
fn testapp_healthy_never_stays_unavailable() {
    let mut cleanup = Cleanup::default();
    let image = "hotswap-testapp-selftest:never";
    cleanup.images.push(image.to_string());
    build_image(
        image,
        "never-1",
        &ImageOpts {
            healthy_never: true,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("building {image}: {e}"));

    let (_c, addr) = run_container(&mut cleanup, image, "never", true, &[]);
    let (first, _) = first_health_reply(addr, Duration::from_secs(10));
    let until = Instant::now() + Duration::from_millis(700);
    let mut checks = 0;
    let mut r = first;
    loop {
        assert_eq!(
            r.status, 503,
            "HEALTHY=never answered {} {}",
            r.status, r.body
        );
        let v = r.json();
        assert_eq!(v["release"], "never-1");
        assert_eq!(v["ready"], false);
        checks += 1;
        if Instant::now() >= until {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        r = http_get(addr, "/health", Duration::from_secs(2)).unwrap();
    }
    assert!(checks >= 5);
    // The app itself still answers: only health is held down.
    let r = http_get(addr, "/", Duration::from_secs(2)).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["release"], "never-1");
}

/// A local TCP server for the load client's failure paths: each accepted
/// connection reads one request and then either never answers (`hang`) or
/// closes at once. Stops accepting after `for_how_long`.
fn misbehaving_server(hang: bool, for_how_long: Duration) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let deadline = Instant::now() + for_how_long;
        let mut held = Vec::new();
        while Instant::now() < deadline {
            match listener.accept() {
                Ok((mut s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    s.set_read_timeout(Some(Duration::from_millis(500)))
                        .unwrap();
                    let mut tmp = [0u8; 1024];
                    let _ = s.read(&mut tmp);
                    if hang {
                        held.push(s);
                    }
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    addr
}

#[test]
fn load_client_counts_every_failure() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    // Nothing listening: every attempt is a counted connect failure.
    let closed_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    // Server closes after reading the request / never answers.
    let closer = misbehaving_server(false, Duration::from_secs(3));
    let hanger = misbehaving_server(true, Duration::from_secs(5));

    let (refused, closed, hung) = rt.block_on(async {
        let a = Load::start(closed_port, 2, "/");
        let b = Load::start(closer, 2, "/");
        let c = Load::start(hanger, 1, "/");
        tokio::time::sleep(Duration::from_millis(2300)).await;
        let a = a.stop().await;
        let b = b.stop().await;
        let t = Instant::now();
        let c = c.stop().await;
        assert!(t.elapsed() < Duration::from_secs(4), "stop() not bounded");
        (a, b, c)
    });
    eprintln!("refused: {refused}\nclosed: {closed}\nhung: {hung}");
    for s in [&refused, &closed] {
        assert!(s.requests > 10, "{s}");
        assert_eq!(s.failed, s.requests, "{s}");
        assert_eq!(s.ok, 0, "{s}");
        assert_eq!(s.failures.len(), 20, "{s}");
        assert!(
            s.by_release.is_empty() && s.last_release_seen.is_none(),
            "{s}"
        );
    }
    assert!(refused.failures[0].contains("connect error"), "{refused}");
    assert!(
        closed
            .failures
            .iter()
            .all(|f| f.contains("closed") || f.contains("connection")),
        "{closed}"
    );
    assert!(hung.failed >= 1 && hung.ok == 0, "{hung}");
    assert!(hung.failures[0].contains("timeout"), "{hung}");
}

#[test]
fn load_client_counts_http_errors_against_testapp() {
    let mut cleanup = Cleanup::default();
    let image = "hotswap-testapp-selftest:failpct";
    cleanup.images.push(image.to_string());
    build_image(
        image,
        "f",
        &ImageOpts {
            fail_pct: 20,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("building {image}: {e}"));
    let (_c, addr) = run_container(&mut cleanup, image, "failpct", true, &[]);
    wait_healthy(addr, Duration::from_secs(10));

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let stats = rt.block_on(async {
        // Rate-limited: about 400 req/s for 1 s.
        let load = Load::start_with_rate(addr, 4, "/", Some(400));
        tokio::time::sleep(Duration::from_secs(1)).await;
        load.stop().await
    });
    eprintln!("fail_pct=20 at 400 req/s: {stats}");
    assert!(
        (300..=450).contains(&stats.requests),
        "rate limit not applied: {stats}"
    );
    assert_eq!(stats.ok + stats.failed, stats.requests);
    let pct = stats.failed as f64 * 100.0 / stats.requests as f64;
    assert!(
        (15.0..=25.0).contains(&pct),
        "failure rate {pct:.1}%: {stats}"
    );
    assert!(stats.failures[0].contains("status 500"), "{stats}");
    assert_eq!(
        stats.by_release.get("f").copied(),
        Some(stats.ok),
        "{stats}"
    );
}
