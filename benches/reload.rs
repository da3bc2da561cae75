//! `scripts/bench reload [--reloads N] [--strategy hup|usr2]`: N hot code reloads of a real
//! gunicorn through hotswapd under a polling load whose requests count as failed after 0.1 s.
//! Prints as its last line `reloads=N requests=M failed=F new_code_ms_p50=A strategy=S`, where
//! new_code_ms is from the signal to the master to the first response from the new code.

#[path = "../tests/support/mod.rs"]
#[allow(dead_code)]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use support::blocking;
use support::gunicorn::{bundle, daemon_for, Gunicorn};
use support::load::Load;

fn p50(mut v: Vec<u64>) -> u64 {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    // every helper (gunicorn, HAProxy, hotswapd, temp dir) is dropped inside `run`, before exit
    let failed_reloads = rt.block_on(run());
    drop(rt);
    if failed_reloads > 0 {
        std::process::exit(1);
    }
}

/// The bench; the number of reloads that failed.
async fn run() -> usize {
    let arg = support::cli_arg;
    let n: usize = arg("--reloads")
        .map(|v| v.parse().expect("--reloads N"))
        .unwrap_or(100);
    let strategy = arg("--strategy").unwrap_or_else(|| "hup".into());
    assert!(
        strategy == "hup" || strategy == "usr2",
        "--strategy hup|usr2"
    );
    let dir = tempfile::tempdir().unwrap();
    let g = Gunicorn::start(dir.path(), strategy == "usr2");
    let instance = format!("b-reload-{}", std::process::id());
    let daemon = Arc::new(daemon_for(dir.path(), &g, &instance, &strategy, 30));
    let load = Load::start_with(g.addr(), 4, "/", None, Duration::from_millis(100));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let mut new_code_ms = Vec::new();
    let mut failed_reloads = 0;
    for i in 1..=n {
        let version = format!("{i}");
        let code = bundle(dir.path(), &version, true);
        let d = daemon.clone();
        let out =
            blocking(move || d.ctl(&["deploy", "app", "--code", code.to_str().unwrap(), "--wait"]))
                .await;
        if !out.status.success() {
            failed_reloads += 1;
            eprintln!(
                "reload {i} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            continue;
        }
        let report = daemon.reports().pop().unwrap();
        let signalled = report["signalled_ms"].as_u64().unwrap_or(0);
        // the client may see the new code a moment after the swap ended: wait for it
        let mut seen = None;
        for _ in 0..100 {
            if let Some(t) = load.snapshot().first_seen_ms.get(&version) {
                seen = Some(*t);
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let ms = seen
            .map(|t| t.saturating_sub(signalled))
            .unwrap_or(u64::MAX);
        new_code_ms.push(ms);
        eprintln!(
            "reload {i}: new code after {ms} ms; swap {} ms",
            report["finished_ms"].as_u64().unwrap_or(0)
                - report["accepted_ms"].as_u64().unwrap_or(0)
        );
    }
    let stats = load.stop().await;
    eprintln!("{stats}");
    eprintln!(
        "wall time {:.1} s; reloads that failed: {failed_reloads}",
        started.elapsed().as_secs_f64()
    );
    println!(
        "reloads={n} requests={} failed={} new_code_ms_p50={} strategy={strategy}",
        stats.requests,
        stats.failed,
        p50(new_code_ms)
    );
    failed_reloads
}
