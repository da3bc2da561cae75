//! `scripts/bench idle [--secs S]`: hotswapd (release build) with one service deployed, left
//! alone; prints as its last line `idle_rss_mib=R wakeups=W secs=S`: R its resident memory, W the
//! context switches of all its threads over S idle seconds (0 = it never woke up).

#[path = "../tests/support/mod.rs"]
#[allow(dead_code)]
mod support;

use std::time::Duration;

use support::daemon::{Daemon, ServiceOpts};
use support::env::TestEnv;
use support::images::ImageOpts;

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// Context switches (voluntary + involuntary) per thread id.
fn switches(pid: u32) -> std::collections::BTreeMap<String, u64> {
    let mut out = std::collections::BTreeMap::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let t = t.unwrap();
        let s = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        let n: u64 = s
            .lines()
            .filter_map(|l| {
                l.strip_prefix("voluntary_ctxt_switches:")
                    .or_else(|| l.strip_prefix("nonvoluntary_ctxt_switches:"))
            })
            .map(|v| v.trim().parse::<u64>().unwrap_or(0))
            .sum();
        out.insert(t.file_name().to_string_lossy().into_owned(), n);
    }
    out
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let secs: u64 = args
        .iter()
        .position(|a| a == "--secs")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("--secs S"))
        .unwrap_or(10);
    let mut env = TestEnv::new("idle");
    let v1 = env.image("1", &ImageOpts::default());
    let config = env.config(&ServiceOpts::default());
    let daemon = Daemon::start(env.dir.path(), &config);
    daemon.deploy_ok(&v1);
    let pid = daemon.pid().expect("hotswapd runs");
    // tokio retires idle blocking-pool threads after 10 s: let that happen before measuring
    std::thread::sleep(Duration::from_secs(12));
    let before = switches(pid);
    std::thread::sleep(Duration::from_secs(secs));
    let after = switches(pid);
    // a thread that came or went counts as one wake-up
    let mut wakeups = 0;
    for (tid, n) in &after {
        wakeups += before.get(tid).map(|b| n.saturating_sub(*b)).unwrap_or(1);
    }
    wakeups += before.keys().filter(|t| !after.contains_key(*t)).count() as u64;
    let rss = rss_kib(pid) as f64 / 1024.0;
    eprintln!("threads: {}", after.len());
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    for l in status.lines().filter(|l| l.starts_with("Rss")) {
        eprintln!("{l}");
    }
    println!("idle_rss_mib={rss:.1} wakeups={wakeups} secs={secs}");
}
