//! `scripts/bench fleet-e2e [--hosts N]` (default 8), and `scripts/demo fleet` (3 hosts, with the
//! build box's progress on the terminal): the whole fleet flow of tests/support/fleet.rs. A stack
//! of N instances and N simulated hosts (own HAProxy and hotswapd each, their metadata watchers
//! on, a keep-alive client each); `hotswapctl stack-update` to release 2; every host swaps and
//! reports to SQS. Prints a line per host, then as its last line
//! `hosts=N succeeded=S failed_requests=F deploy_ms=D detect_ms=E`: D from UpdateStack being
//! sent to `stack-update` exiting, E from the last host's report to `stack-update` exiting.

#[path = "../tests/support/mod.rs"]
#[allow(dead_code)]
mod support;

use std::time::Duration;

use hotswap::clock::now_ms;

use support::fleet::Fleet;
use support::load::Load;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let hosts: usize = support::cli_arg("--hosts")
        .map(|v| v.parse().expect("--hosts N"))
        .unwrap_or(8);
    assert!(
        (1..=16).contains(&hosts),
        "--hosts: 1 to 16 (the template's MaxSize)"
    );
    let demo = std::env::args().any(|a| a == "--demo");
    eprintln!(
        "starting moto, a stack of {hosts} instances and {hosts} hosts (HAProxy + hotswapd each)"
    );
    let fleet = Fleet::start(hosts, None, &["1", "2"]).await;
    eprintln!(
        "every host serves release 1; a client per host; now the build box deploys release 2"
    );
    let loads: Vec<Load> = fleet
        .hosts
        .iter()
        .map(|h| Load::start(h.env.haproxy.frontend, 1, "/"))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (out, took) = fleet.stack_update("2", demo).await;
    let exited_ms = now_ms();
    if !demo {
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    }
    eprintln!("{}", String::from_utf8_lossy(&out.stdout).trim());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let want = fleet.image("2");
    let mut succeeded = 0;
    let mut failed = 0;
    let mut last_report_ms = 0;
    eprintln!(
        "{:<22} {:<10} {:>9} {:>9} {:>8}",
        "INSTANCE", "RESULT", "SWAP MS", "REQUESTS", "FAILED"
    );
    for (h, load) in fleet.hosts.iter().zip(loads) {
        let stats = load.stop().await;
        let report = h
            .daemon
            .reports()
            .into_iter()
            .rev()
            .find(|r| r["image"] == want.as_str());
        let (result, swap_ms) = match &report {
            Some(r) => {
                let (a, f) = (
                    r["accepted_ms"].as_u64().unwrap_or(0),
                    r["finished_ms"].as_u64().unwrap_or(0),
                );
                last_report_ms = last_report_ms.max(f);
                (
                    r["result"].as_str().unwrap_or("?").to_string(),
                    f.saturating_sub(a),
                )
            }
            None => ("no report".into(), 0),
        };
        if h.current().as_deref() == Some(want.as_str()) && result == "success" {
            succeeded += 1;
        }
        failed += stats.failed;
        eprintln!(
            "{:<22} {:<10} {:>9} {:>9} {:>8}",
            h.instance_id, result, swap_ms, stats.requests, stats.failed
        );
    }
    let deploy_ms = took.as_millis();
    let detect_ms = exited_ms.saturating_sub(last_report_ms);
    eprintln!("stack-update exited with {}", out.status);
    drop(fleet);
    println!("hosts={hosts} succeeded={succeeded} failed_requests={failed} deploy_ms={deploy_ms} detect_ms={detect_ms}");
}
