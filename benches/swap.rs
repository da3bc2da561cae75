//! The swap benchmark: N swaps between two releases under a keep-alive load through a real
//! HAProxy, with the real hotswapd (release build) and real Docker. Run it with
//! `scripts/bench swap [--swaps N] [--rate R] [--mode runtime|reload]`.
//!
//! Figures, per swap, from the daemon's report (`<state_dir>/reports.jsonl`):
//! - switch_ms: `took_ms` of the "switching" phase (gate passed -> old server draining; in
//!   reload mode: config rewritten and HAProxy reloaded until the new worker shows the server);
//! - swap_ms: `finished_ms - accepted_ms`;
//! - ready_detect_ms: "switching" `started_ms` minus the `ready_at_ms` the test app put in the
//!   health response the gate accepted.
//!
//! `requests`/`failed` come from the load client over the whole run (every failure counts). After
//! each swap the bench watches the load for `--dwell-ms` and counts a violation when anything but
//! the release that should now serve answers (or nothing answers at all); violations and failed
//! swaps make the bench exit 1. The first deploy (no old release) is printed apart and not counted.
//! The last line printed is exactly
//! `swaps=N requests=M failed=F switch_ms_p50=A swap_ms_p50=B time_to_traffic_ms_p50=T ready_detect_ms_p50=C mode=MODE`.

#[path = "../tests/support/mod.rs"]
mod support;

#[path = "swap/many.rs"]
mod many;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hotswap::control::api::DeployRequest;
use hotswap::control::client::Client;
use serde_json::Value;
use support::daemon::{Daemon, ServiceOpts};
use support::env::TestEnv;
use support::images::{repo_root, ImageOpts};
use support::load::Load;

const USAGE: &str = "usage: scripts/bench swap [--swaps N] [--rate R] [--mode runtime|reload] [--conns C] [--dwell-ms D]
  --swaps N      swaps between releases, after a first deploy that is not counted (default 100)
  --rate R       keep-alive load through HAProxy, requests per second (default 1000)
  --mode M       runtime (HAProxy runtime API) or reload (config file + HAProxy reload); default runtime
  --conns C      keep-alive connections of the load (default: R/100, at least 4, at most 64)
  --dwell-ms D   after each swap, how long to watch that only the new release answers (default 200)
  --server-options S
                 replace the HAProxy server_options of the test config (default \"check inter 1s\")
  --services K   K services, each behind its own HAProxy backend, swapped all at once in each of
                 the N rounds; R is then split among them (default 1)";

/// Longest a single deploy may take before the bench gives up on it.
const DEPLOY_TIMEOUT: Duration = Duration::from_secs(180);

#[derive(Debug, Clone)]
struct Args {
    swaps: usize,
    rate: u32,
    mode: &'static str,
    conns: Option<usize>,
    dwell: Duration,
    server_options: Option<String>,
    services: usize,
}

fn parse_args(raw: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut args = Args {
        swaps: 100,
        rate: 1000,
        mode: "runtime",
        conns: None,
        dwell: Duration::from_millis(200),
        server_options: None,
        services: 1,
    };
    let mut raw = raw.peekable();
    while let Some(a) = raw.next() {
        // `cargo bench` adds --bench; harness-less benches just ignore it.
        if a == "--bench" {
            continue;
        }
        if a == "-h" || a == "--help" {
            return Err(String::new());
        }
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (a.clone(), None),
        };
        let mut value = || -> Result<String, String> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => raw.next().ok_or_else(|| format!("{flag} needs a value")),
            }
        };
        fn num<T: std::str::FromStr>(flag: &str, v: String) -> Result<T, String> {
            v.parse()
                .map_err(|_| format!("{flag}: not a number: {v:?}"))
        }
        match flag.as_str() {
            "--swaps" => args.swaps = num("--swaps", value()?)?,
            "--rate" => args.rate = num("--rate", value()?)?,
            "--conns" => args.conns = Some(num("--conns", value()?)?),
            "--dwell-ms" => args.dwell = Duration::from_millis(num("--dwell-ms", value()?)?),
            "--server-options" => args.server_options = Some(value()?),
            "--services" => args.services = num("--services", value()?)?,
            "--mode" => {
                args.mode = match value()?.as_str() {
                    "runtime" => "runtime",
                    "reload" => "reload",
                    other => {
                        return Err(format!("--mode: expected runtime or reload, got {other:?}"))
                    }
                }
            }
            _ => return Err(format!("unknown argument {a:?}")),
        }
    }
    if args.swaps == 0 {
        return Err("--swaps must be at least 1".into());
    }
    if args.rate == 0 {
        return Err("--rate must be at least 1".into());
    }
    if args.services == 0 {
        return Err("--services must be at least 1".into());
    }
    if args.conns == Some(0) {
        return Err("--conns must be at least 1".into());
    }
    Ok(args)
}

fn main() {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("bench swap: {e}");
            }
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = rt.block_on(run(args));
    drop(rt);
    std::process::exit(code);
}

/// What one deploy's report says, plus what the bench saw from outside.
#[derive(Debug, Clone)]
struct Figures {
    deploy_id: String,
    success: bool,
    reason: Option<String>,
    warnings: Vec<String>,
    switch_ms: Option<i64>,
    swap_ms: i64,
    /// Accepted to the new release taking all traffic (the report's time_to_traffic_ms).
    time_to_traffic_ms: Option<i64>,
    ready_detect_ms: Option<i64>,
    /// took_ms of each phase, in order.
    phases: Vec<(String, i64)>,
    /// From sending the deploy request to `wait` returning, measured by the bench.
    client_ms: i64,
}

impl Figures {
    fn phase(&self, name: &str) -> Option<i64> {
        self.phases.iter().find(|(p, _)| p == name).map(|(_, t)| *t)
    }

    fn from_report(r: &Value, client_ms: i64) -> Result<Figures, String> {
        let int = |v: &Value, what: &str| {
            v.as_i64()
                .ok_or_else(|| format!("report field {what} missing or not a number: {r}"))
        };
        let phases_json = r["phases"]
            .as_array()
            .ok_or_else(|| format!("report without phases: {r}"))?;
        let mut phases = Vec::new();
        let mut switching_started = None;
        for p in phases_json {
            let name = p["phase"].as_str().unwrap_or("?").to_string();
            if name == "switching" {
                switching_started = Some(int(&p["started_ms"], "phases[].started_ms")?);
            }
            phases.push((name, int(&p["took_ms"], "phases[].took_ms")?));
        }
        let ready_at = r["health_response"]
            .as_str()
            .and_then(|body| serde_json::from_str::<Value>(body).ok())
            .and_then(|v| v["ready_at_ms"].as_i64());
        let fig = Figures {
            deploy_id: r["deploy_id"].as_str().unwrap_or("?").to_string(),
            success: r["result"] == "success",
            reason: r["reason"].as_str().map(String::from),
            warnings: r["warnings"]
                .as_array()
                .map(|w| {
                    w.iter()
                        .map(|x| x.as_str().unwrap_or("?").to_string())
                        .collect()
                })
                .unwrap_or_default(),
            switch_ms: None,
            swap_ms: int(&r["finished_ms"], "finished_ms")?
                - int(&r["accepted_ms"], "accepted_ms")?,
            time_to_traffic_ms: r["time_to_traffic_ms"].as_i64(),
            ready_detect_ms: match (switching_started, ready_at) {
                (Some(s), Some(r)) => Some(s - r),
                _ => None,
            },
            phases,
            client_ms,
        };
        Ok(Figures {
            switch_ms: fig.phase("switching"),
            ..fig
        })
    }

    fn line(&self) -> String {
        let opt = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
        let phases: Vec<String> = self
            .phases
            .iter()
            .map(|(p, t)| format!("{p}={t}"))
            .collect();
        format!(
            "switch_ms={} swap_ms={} ready_detect_ms={} client_ms={} [{}]",
            opt(self.switch_ms),
            self.swap_ms,
            opt(self.ready_detect_ms),
            self.client_ms,
            phases.join(" ")
        )
    }
}

async fn read_report(path: &Path, deploy_id: &str) -> Result<Value, String> {
    // The deploy shows as finished as soon as its phase is terminal; the report follows shortly.
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let text = tokio::fs::read_to_string(path).await.unwrap_or_default();
        for line in text.lines().rev() {
            if let Ok(v) = serde_json::from_str::<Value>(line) {
                if v["deploy_id"] == deploy_id {
                    return Ok(v);
                }
            }
        }
        if Instant::now() > until {
            return Err(format!(
                "no report for deploy {deploy_id} in {} after 10 s",
                path.display()
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Deploys `image` through the control API, waits for the end, and reads its report.
async fn deploy(client: &Client, reports: &Path, image: &str) -> Result<Figures, String> {
    deploy_to(client, reports, "web", image).await
}

/// Deploys `image` to `service`, as `deploy`.
async fn deploy_to(
    client: &Client,
    reports: &Path,
    service: &str,
    image: &str,
) -> Result<Figures, String> {
    let t0 = Instant::now();
    // From JSON so that optional fields added to the API later keep their defaults.
    let req: DeployRequest =
        serde_json::from_value(serde_json::json!({ "service": service, "image": image }))
            .map_err(|e| format!("deploy request: {e}"))?;
    let accepted = client
        .deploy(&req)
        .await
        .map_err(|e| format!("deploy {image}: {e}"))?;
    let status = client
        .wait(&accepted.deploy_id, DEPLOY_TIMEOUT)
        .await
        .map_err(|e| format!("following deploy {}: {e}", accepted.deploy_id))?;
    let client_ms = t0.elapsed().as_millis() as i64;
    if !status.finished {
        return Err(format!(
            "deploy {} of {image} not finished after {DEPLOY_TIMEOUT:?} (status {}, phase {:?})",
            accepted.deploy_id,
            status.status(),
            status.phase()
        ));
    }
    let report = read_report(reports, &accepted.deploy_id).await?;
    Figures::from_report(&report, client_ms)
}

/// Nearest-rank percentile of a sorted slice.
fn pct(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

struct Summary {
    p50: i64,
    p90: i64,
    max: i64,
    n: usize,
}

fn summarize(values: impl Iterator<Item = i64>) -> Summary {
    let mut v: Vec<i64> = values.collect();
    v.sort_unstable();
    Summary {
        p50: pct(&v, 50.0),
        p90: pct(&v, 90.0),
        max: v.last().copied().unwrap_or(0),
        n: v.len(),
    }
}

/// Copies the daemon's and HAProxy's files out of the temp dir before it goes, so a run can be
/// looked at afterwards. Declared after the env and before the daemon: dropped after the daemon
/// stopped and before the temp dir is removed.
struct KeepArtifacts {
    from: PathBuf,
    to: PathBuf,
}

impl Drop for KeepArtifacts {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.to);
        if std::fs::create_dir_all(&self.to).is_err() {
            return;
        }
        for f in [
            "hotswapd.log",
            "haproxy.log",
            "haproxy.cfg",
            "hotswap.toml",
            "state/reports.jsonl",
        ] {
            let src = self.from.join(f);
            if src.exists() {
                let _ = std::fs::copy(&src, self.to.join(Path::new(f).file_name().unwrap()));
            }
        }
        eprintln!("bench swap: logs and reports kept in {}", self.to.display());
    }
}

/// Replaces the `server_options` line of the config the test support wrote.
fn set_server_options(config: &Path, options: &str) -> Result<(), String> {
    let text = std::fs::read_to_string(config)
        .map_err(|e| format!("reading {}: {e}", config.display()))?;
    let mut found = false;
    let quoted = serde_json::to_string(options).expect("strings serialize");
    let lines: Vec<String> = text
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("server_options") {
                found = true;
                format!("server_options = {quoted}")
            } else {
                l.to_string()
            }
        })
        .collect();
    if !found {
        return Err(format!("no server_options line in {}", config.display()));
    }
    std::fs::write(config, lines.join("\n") + "\n")
        .map_err(|e| format!("writing {}: {e}", config.display()))
}

async fn run(args: Args) -> i32 {
    if args.services > 1 {
        return many::run(args).await;
    }
    let wall = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("bench swap: interrupted; finishing the current swap and cleaning up");
                stop.store(true, Ordering::SeqCst);
            }
        });
    }
    let conns = args
        .conns
        .unwrap_or(((args.rate as usize) / 100).clamp(4, 64));
    println!(
        "bench swap: mode={} swaps={} rate={} req/s conns={} dwell={} ms{}",
        args.mode,
        args.swaps,
        args.rate,
        conns,
        args.dwell.as_millis(),
        args.server_options
            .as_ref()
            .map(|o| format!(" server_options={o:?}"))
            .unwrap_or_default()
    );

    // Set-up before any load runs, so the blocking calls (docker build, hotswapctl) stall nothing.
    let mut env = TestEnv::new("bench");
    let images = [
        env.image("1", &ImageOpts::default()),
        env.image("2", &ImageOpts::default()),
    ];
    let opts = ServiceOpts {
        switch: args.mode,
        ..Default::default()
    };
    let config = env.config(&opts);
    if let Some(options) = &args.server_options {
        if let Err(e) = set_server_options(&config, options) {
            eprintln!("bench swap: {e}");
            return 2;
        }
    }
    let _keep = KeepArtifacts {
        from: env.dir.path().to_owned(),
        to: repo_root()
            .join("target/bench")
            .join(format!("swap-{}", args.mode)),
    };
    let daemon = Daemon::start(env.dir.path(), &config);
    let client = Client::new(&daemon.socket);
    let reports = daemon.dir.join("state/reports.jsonl");
    println!(
        "bench swap: set-up took {:.1} s (images {} and {})",
        wall.elapsed().as_secs_f64(),
        images[0],
        images[1]
    );

    let first = match deploy(&client, &reports, &images[0]).await {
        Ok(f) if f.success => f,
        Ok(f) => {
            eprintln!(
                "bench swap: first deploy failed: {:?}\nhotswapd log:\n{}",
                f.reason,
                daemon.log()
            );
            return 1;
        }
        Err(e) => {
            eprintln!(
                "bench swap: first deploy: {e}\nhotswapd log:\n{}",
                daemon.log()
            );
            return 1;
        }
    };
    println!(
        "first deploy (release 1, no old release; not counted): {}",
        first.line()
    );

    let load = Load::start_with_rate(env.haproxy.frontend, conns, "/", Some(args.rate));
    let start_mark = load.mark();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut violations: Vec<String> = Vec::new();
    let warm = load.releases_since(&start_mark);
    if warm.keys().collect::<Vec<_>>() != ["1"] {
        violations.push(format!(
            "before the first swap: expected only release 1 to answer, saw {warm:?}"
        ));
    }

    let mut figures: Vec<Figures> = Vec::new();
    let mut failed_swaps: Vec<String> = Vec::new();
    let mut aborted: Option<String> = None;
    // which of `images` serves now
    let mut current = 0usize;
    for i in 1..=args.swaps {
        if stop.load(Ordering::SeqCst) {
            aborted = Some("interrupted".into());
            break;
        }
        let next = 1 - current;
        let before = load.mark();
        let fig = match deploy(&client, &reports, &images[next]).await {
            Ok(f) => f,
            Err(e) => {
                aborted = Some(format!("swap {i}: {e}"));
                break;
            }
        };
        if fig.success {
            current = next;
        } else {
            failed_swaps.push(format!(
                "swap {i} ({}): {} (warnings: {:?})",
                fig.deploy_id,
                fig.reason.as_deref().unwrap_or("no reason"),
                fig.warnings
            ));
        }
        let during_failed = load.failed_since(&before);
        let during_requests = load.requests_since(&before);
        let after = load.mark();
        tokio::time::sleep(args.dwell).await;
        let seen = load.releases_since(&after);
        let want = (current + 1).to_string();
        let after_failed = load.failed_since(&after);
        let mut verdict = "ok";
        if seen.is_empty() || seen.keys().any(|r| *r != want) {
            verdict = "VIOLATION";
            violations.push(format!(
                "swap {i} ({}): after the swap expected only release {want} to answer, saw {seen:?}",
                fig.deploy_id
            ));
        }
        if !fig.success {
            verdict = "SWAP FAILED";
        }
        println!(
            "swap {i:>3}/{} -> release {} {verdict}: {} | load {during_requests} req {during_failed} failed during, after {seen:?} {after_failed} failed{}",
            args.swaps,
            next + 1,
            fig.line(),
            if fig.warnings.is_empty() { String::new() } else { format!(" | warnings {:?}", fig.warnings) }
        );
        figures.push(fig);
    }
    let load_secs = load.elapsed().as_secs_f64();
    let stats = load.stop().await;

    let ok: Vec<&Figures> = figures.iter().filter(|f| f.success).collect();
    let switch = summarize(ok.iter().filter_map(|f| f.switch_ms));
    let swap = summarize(ok.iter().map(|f| f.swap_ms));
    let to_traffic = summarize(ok.iter().filter_map(|f| f.time_to_traffic_ms));
    let ready = summarize(ok.iter().filter_map(|f| f.ready_detect_ms));
    let client_ms = summarize(ok.iter().map(|f| f.client_ms));
    let mut by_phase: BTreeMap<usize, (String, Vec<i64>)> = BTreeMap::new();
    for f in &ok {
        for (idx, (p, t)) in f.phases.iter().enumerate() {
            by_phase
                .entry(idx)
                .or_insert_with(|| (p.clone(), Vec::new()))
                .1
                .push(*t);
        }
    }

    println!();
    println!("first deploy (not counted): {}", first.line());
    println!(
        "{} of {} swaps succeeded (mode={})",
        ok.len(),
        figures.len(),
        args.mode
    );
    println!(
        "{:<22} {:>7} {:>7} {:>7} {:>5}",
        "figure (ms)", "p50", "p90", "max", "n"
    );
    for (name, s) in [
        ("switch_ms", &switch),
        ("swap_ms", &swap),
        ("time_to_traffic_ms", &to_traffic),
        ("ready_detect_ms", &ready),
        ("client_ms (bench)", &client_ms),
    ] {
        println!(
            "{name:<22} {:>7} {:>7} {:>7} {:>5}",
            s.p50, s.p90, s.max, s.n
        );
    }
    for (_, (p, v)) in by_phase {
        let s = summarize(v.into_iter());
        println!(
            "{:<22} {:>7} {:>7} {:>7} {:>5}",
            format!("  phase {p}"),
            s.p50,
            s.p90,
            s.max,
            s.n
        );
    }
    let achieved = stats.requests as f64 / load_secs.max(0.001);
    println!(
        "load: {} requests in {load_secs:.1} s = {achieved:.0} req/s (target {} over {conns} keep-alive connections), {} failed, by release {:?}",
        stats.requests, args.rate, stats.failed, stats.by_release
    );
    if achieved < f64::from(args.rate) * 0.97 {
        println!(
            "WARNING: the load reached only {achieved:.0} req/s of the {} asked for",
            args.rate
        );
    }
    if !stats.failures.is_empty() {
        println!("first failed requests (of {}):", stats.failed);
        for f in &stats.failures {
            println!("  {f}");
        }
    }
    println!("violations: {}", violations.len());
    for v in &violations {
        println!("  {v}");
    }
    if !failed_swaps.is_empty() {
        println!("failed swaps: {}", failed_swaps.len());
        for f in &failed_swaps {
            println!("  {f}");
        }
    }
    if let Some(why) = &aborted {
        println!("ABORTED: {why}");
        let log = daemon.log();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        println!("last lines of the hotswapd log:");
        for l in tail.into_iter().rev() {
            println!("  {l}");
        }
    }
    println!("wall time: {:.1} s", wall.elapsed().as_secs_f64());
    println!(
        "swaps={} requests={} failed={} switch_ms_p50={} swap_ms_p50={} time_to_traffic_ms_p50={} ready_detect_ms_p50={} mode={}",
        figures.len(),
        stats.requests,
        stats.failed,
        switch.p50,
        swap.p50,
        to_traffic.p50,
        ready.p50,
        args.mode
    );

    // Clean-up: stop the daemon, keep its files, then remove containers, images, HAProxy, temp dir.
    drop(client);
    drop(daemon);
    drop(_keep);
    drop(env);
    let clean = violations.is_empty() && failed_swaps.is_empty() && aborted.is_none();
    if clean {
        0
    } else {
        1
    }
}
