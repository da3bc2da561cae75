//! `scripts/bench path [--secs S] [--conns C] [--rate R] [--reach direct|published]`: the
//! request path. One release
//! deployed by hotswapd (release build), reached as `--reach` says (default: direct, as
//! hotswapd's default); the same keep-alive
//! client (C connections, default 10) runs S seconds (default 10) against the container itself
//! (the address HAProxy has for it) and then through HAProxy's frontend, flat out and then paced
//! at R req/s (default 1000). Prints a table, then as its last line
//! `direct_rps=A haproxy_rps=B ratio=B/A added_p50_us=D`: A and B flat out, D the median
//! latency HAProxy adds at R req/s.

#[path = "../tests/support/mod.rs"]
#[allow(dead_code)]
mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::daemon::{Daemon, ServiceOpts};
use support::env::TestEnv;
use support::images::ImageOpts;

/// One run: requests answered, failures, latencies (µs) of the answered ones.
struct Run {
    ok: u64,
    failed: u64,
    secs: f64,
    latencies_us: Vec<u64>,
}

impl Run {
    fn rps(&self) -> f64 {
        self.ok as f64 / self.secs
    }

    fn pct(&self, p: f64) -> u64 {
        let mut v = self.latencies_us.clone();
        v.sort_unstable();
        v.get(((v.len() as f64 * p / 100.0) as usize).min(v.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    }
}

/// One keep-alive connection sending `GET /` back to back (or every `gap`) until `until`.
async fn connection(
    addr: SocketAddr,
    until: Instant,
    gap: Option<Duration>,
) -> (u64, u64, Vec<u64>) {
    let (mut ok, mut failed, mut lat) = (0, 0, Vec::new());
    let mut next = Instant::now();
    'reconnect: while Instant::now() < until {
        let Ok(mut s) = TcpStream::connect(addr).await else {
            failed += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        s.set_nodelay(true).ok();
        let mut buf = vec![0u8; 16 * 1024];
        while Instant::now() < until {
            if let Some(gap) = gap {
                next += gap;
                if let Some(wait) = next.checked_duration_since(Instant::now()) {
                    tokio::time::sleep(wait).await;
                }
            }
            let t = Instant::now();
            if s.write_all(b"GET / HTTP/1.1\r\nhost: bench\r\n\r\n")
                .await
                .is_err()
            {
                failed += 1;
                continue 'reconnect;
            }
            // headers, then Content-Length bytes of body
            let mut have = 0;
            let answered = loop {
                match s.read(&mut buf[have..]).await {
                    Ok(0) | Err(_) => break false,
                    Ok(n) => have += n,
                }
                let Some(end) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") else {
                    if have == buf.len() {
                        break false;
                    }
                    continue;
                };
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if have >= end + 4 + len {
                    break head.starts_with("http/1.1 200");
                }
            };
            if !answered {
                failed += 1;
                continue 'reconnect;
            }
            ok += 1;
            lat.push(t.elapsed().as_micros() as u64);
        }
    }
    (ok, failed, lat)
}

async fn run(addr: SocketAddr, secs: u64, conns: usize, rate: Option<u32>) -> Run {
    let until = Instant::now() + Duration::from_secs(secs);
    let gap = rate.map(|r| Duration::from_secs_f64(conns as f64 / f64::from(r.max(1))));
    let started = Instant::now();
    let tasks: Vec<_> = (0..conns)
        .map(|_| tokio::spawn(connection(addr, until, gap)))
        .collect();
    let mut out = Run {
        ok: 0,
        failed: 0,
        secs: 0.0,
        latencies_us: Vec::new(),
    };
    for t in tasks {
        let (ok, failed, lat) = t.await.expect("load task");
        out.ok += ok;
        out.failed += failed;
        out.latencies_us.extend(lat);
    }
    out.secs = started.elapsed().as_secs_f64();
    out
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let arg = support::cli_num;
    let (secs, conns, rate) = (
        arg("--secs", 10),
        arg("--conns", 10) as usize,
        arg("--rate", 1000) as u32,
    );
    let mut env = TestEnv::new("path");
    let v1 = env.image("1", &ImageOpts::default());
    // --reach direct (the default): HAProxy reaches the container at its address on its network;
    // published: through a port Docker publishes on 127.0.0.1 (docker-proxy)
    let reach = support::cli_arg("--reach").unwrap_or_else(|| "direct".into());
    let config = env.config(&ServiceOpts {
        container: format!("reach = \"{reach}\""),
        ..Default::default()
    });
    let daemon = Daemon::start(env.dir.path(), &config);
    daemon.deploy_ok(&v1);
    let status = daemon.status_json().expect("status");
    let member = &status["services"][0]["current"]["runs"]["members"][0];
    let direct: SocketAddr = format!(
        "{}:{}",
        member["addr"].as_str().unwrap_or("127.0.0.1"),
        member["host_port"].as_u64().expect("the container's port")
    )
    .parse()
    .expect("an address");
    let frontend = env.haproxy.frontend;
    eprintln!("bench path: container at {direct} (reach = {reach}), HAProxy's frontend at {frontend}; {conns} connections, {secs} s a run");
    // warm both paths (HAProxy's idle connection pool, the app)
    run(direct, 1, conns, None).await;
    run(frontend, 1, conns, None).await;
    let direct_flat = run(direct, secs, conns, None).await;
    let haproxy_flat = run(frontend, secs, conns, None).await;
    let direct_paced = run(direct, secs, conns, Some(rate)).await;
    let haproxy_paced = run(frontend, secs, conns, Some(rate)).await;
    println!(
        "{:<28} {:>9} {:>7} {:>9} {:>9} {:>9}",
        "run", "req/s", "failed", "p50 µs", "p90 µs", "p99 µs"
    );
    for (name, r) in [
        ("direct, flat out", &direct_flat),
        ("through HAProxy, flat out", &haproxy_flat),
        (&*format!("direct, {rate} req/s"), &direct_paced),
        (&*format!("through HAProxy, {rate} req/s"), &haproxy_paced),
    ] {
        println!(
            "{name:<28} {:>9.0} {:>7} {:>9} {:>9} {:>9}",
            r.rps(),
            r.failed,
            r.pct(50.0),
            r.pct(90.0),
            r.pct(99.0)
        );
    }
    drop(daemon);
    drop(env);
    println!(
        "direct_rps={:.0} haproxy_rps={:.0} ratio={:.2} added_p50_us={}",
        direct_flat.rps(),
        haproxy_flat.rps(),
        haproxy_flat.rps() / direct_flat.rps().max(1.0),
        haproxy_paced.pct(50.0) as i64 - direct_paced.pct(50.0) as i64
    );
}
