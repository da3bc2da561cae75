//! `scripts/bench repair [--kills N] [--rate R] [--gap-secs G]`: under a keep-alive load of R req/s
//! (default 1000) through HAProxy, N times (default 20) `docker kill` a serving container of a
//! service and time how long until its replacement serves, first with 1 replica, then with 2.
//! Kills are G s apart (default 11, past the 10 s after which a repair is no longer counted as
//! part of a crash loop, so no backoff is measured). Prints each kill, then as its last line
//! `kills=N repair_ms_p50=A repair_ms_max=B failed_1=F1 failed_2=F2`, where repair_ms runs from
//! the kill to the repair report (written once the replacement passed its gate and is in
//! HAProxy), over both runs, and F1/F2 are the clients' failed requests over each run.

#[path = "../tests/support/mod.rs"]
#[allow(dead_code)]
mod support;

use std::time::{Duration, Instant};

use support::daemon::{Daemon, ServiceOpts};
use support::env::TestEnv;
use support::images::ImageOpts;
use support::load::Load;

use support::cli_num as arg;

fn repairs(d: &Daemon) -> usize {
    d.reports().iter().filter(|r| r["kind"] == "repair").count()
}

/// One run: `kills` kills of a serving container of a service with `replicas`; returns the
/// repair times (ms) and the clients' failed requests.
async fn run(replicas: usize, kills: u64, rate: u32, gap: Duration) -> (Vec<u64>, u64) {
    let mut env = TestEnv::with_redispatch(&format!("benchrepair{replicas}"));
    let v1 = env.image("1", &ImageOpts::default());
    let opts = ServiceOpts {
        top: format!("replicas = {replicas}"),
        ..Default::default()
    };
    let config = env.config(&opts);
    let daemon = Daemon::start(env.dir.path(), &config);
    daemon.deploy_ok(&v1);
    let conns = (rate as usize / 100).clamp(4, 64);
    let load = Load::start_with_rate(env.haproxy.frontend, conns, "/", Some(rate));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut times = Vec::new();
    for n in 1..=kills {
        let victim = env
            .containers()
            .into_iter()
            .find(|c| c.2)
            .expect("a running container")
            .0;
        let before = repairs(&daemon);
        let killed = Instant::now();
        support::docker(&["kill", &victim]);
        while repairs(&daemon) == before {
            assert!(
                killed.elapsed() < Duration::from_secs(60),
                "no repair within 60 s; log:\n{}",
                daemon.log()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let ms = killed.elapsed().as_millis() as u64;
        let report = daemon.reports().pop().unwrap();
        eprintln!(
            "replicas={replicas} kill={n} repair_ms={ms} result={} report_took_ms={} failed_so_far={}",
            report["result"],
            report["repair"]["took_ms"],
            load.snapshot().failed
        );
        times.push(ms);
        tokio::time::sleep(gap.saturating_sub(killed.elapsed())).await;
    }
    let stats = load.stop().await;
    eprintln!("replicas={replicas}: {stats}");
    (times, stats.failed)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let kills = arg("--kills", 20);
    let rate = arg("--rate", 1000) as u32;
    let gap = Duration::from_secs(arg("--gap-secs", 11));
    let (mut times, failed_1) = run(1, kills, rate, gap).await;
    let (times_2, failed_2) = run(2, kills, rate, gap).await;
    times.extend(times_2);
    times.sort_unstable();
    let p50 = times[times.len() / 2];
    let max = *times.last().unwrap();
    println!("kills={kills} repair_ms_p50={p50} repair_ms_max={max} failed_1={failed_1} failed_2={failed_2}");
}
