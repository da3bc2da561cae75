//! `scripts/bench swap --services K`: K services on one host, each behind its own HAProxy
//! backend with its own keep-alive load (the total rate split among them), all swapped at once
//! in each round: what the per-service walkers cost each other (Docker's API, HAProxy's admin
//! socket, 2 cores). The last line is the swap bench's, with `services=K` added.

use std::time::Instant;

use futures_util::future::join_all;
use hotswap::control::client::Client;
use support::daemon::{write_config_services, Daemon, ServiceOpts};
use support::env::TestEnv;
use support::images::ImageOpts;
use support::load::Load;

use super::{deploy_to, summarize, support, Args, Figures};

pub async fn run(args: Args) -> i32 {
    let k = args.services;
    let names: Vec<String> = (1..=k).map(|i| format!("s{i}")).collect();
    let rate = (args.rate / k as u32).max(1);
    let conns = args.conns.unwrap_or(2);
    println!(
        "bench swap: services={k} rounds={} rate={rate} req/s and {conns} connections per service",
        args.swaps
    );
    let backends: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "roundrobin")).collect();
    let mut env = TestEnv::with_backends("bench-many", &backends);
    let images = [
        env.image("1", &ImageOpts::default()),
        env.image("2", &ImageOpts::default()),
    ];
    let opts = ServiceOpts::default();
    let services: Vec<(&str, &ServiceOpts)> = names.iter().map(|n| (n.as_str(), &opts)).collect();
    let config = write_config_services(env.dir.path(), &env.instance, &env.haproxy, &services);
    let daemon = Daemon::start(env.dir.path(), &config);
    let client = Client::new(&daemon.socket);
    let reports = daemon.dir.join("state/reports.jsonl");

    let round = |image: String| {
        let (client, reports, names) = (&client, &reports, &names);
        async move {
            join_all(
                names
                    .iter()
                    .map(|n| deploy_to(client, reports, n, &image))
                    .collect::<Vec<_>>(),
            )
            .await
        }
    };
    let t0 = Instant::now();
    let first: Vec<_> = round(images[0].clone()).await;
    if let Some(e) = first.iter().find_map(|f| match f {
        Ok(f) if f.success => None,
        Ok(f) => Some(format!("{:?}", f.reason)),
        Err(e) => Some(e.clone()),
    }) {
        eprintln!(
            "bench swap: first deploy failed: {e}\nhotswapd log:\n{}",
            daemon.log()
        );
        return 1;
    }
    println!(
        "first deploy of {k} services at once (not counted): {} ms",
        t0.elapsed().as_millis()
    );

    let loads: Vec<Load> = names
        .iter()
        .map(|n| Load::start_with_rate(env.haproxy.frontends[n.as_str()], conns, "/", Some(rate)))
        .collect();
    let marks: Vec<_> = loads.iter().map(|l| l.mark()).collect();
    let mut figures: Vec<Figures> = Vec::new();
    let mut failed_swaps = Vec::new();
    for r in 1..=args.swaps {
        let t = Instant::now();
        for (n, f) in names.iter().zip(round(images[r % 2].clone()).await) {
            match f {
                Ok(f) if f.success => figures.push(f),
                Ok(f) => failed_swaps.push(format!("round {r} {n}: {:?}", f.reason)),
                Err(e) => failed_swaps.push(format!("round {r} {n}: {e}")),
            }
        }
        println!(
            "round {r:>3}/{}: {k} swaps in {} ms",
            args.swaps,
            t.elapsed().as_millis()
        );
    }
    let failed: u64 = loads
        .iter()
        .zip(&marks)
        .map(|(l, m)| l.failed_since(m))
        .sum();
    let requests: u64 = loads
        .iter()
        .zip(&marks)
        .map(|(l, m)| l.requests_since(m))
        .sum();
    for l in loads {
        let stats = l.stop().await;
        if stats.failed > 0 {
            println!("load: {stats}");
        }
    }
    let swap = summarize(figures.iter().map(|f| f.swap_ms));
    let switch = summarize(figures.iter().filter_map(|f| f.switch_ms));
    let to_traffic = summarize(figures.iter().filter_map(|f| f.time_to_traffic_ms));
    let ready = summarize(figures.iter().filter_map(|f| f.ready_detect_ms));
    for phase in [
        "starting",
        "health_gate",
        "switching",
        "draining",
        "retiring",
    ] {
        let s = summarize(figures.iter().filter_map(|f| f.phase(phase)));
        println!("{phase:>12}: p50 {} p90 {} max {} ms", s.p50, s.p90, s.max);
    }
    println!(
        "swap_ms p50 {} p90 {} max {}; time_to_traffic_ms p50 {} p90 {}",
        swap.p50, swap.p90, swap.max, to_traffic.p50, to_traffic.p90
    );
    for f in &failed_swaps {
        println!("failed swap: {f}");
    }
    drop(daemon);
    drop(env);
    println!(
        "swaps={} requests={requests} failed={failed} switch_ms_p50={} swap_ms_p50={} time_to_traffic_ms_p50={} ready_detect_ms_p50={} mode=runtime services={k}",
        figures.len(),
        switch.p50,
        swap.p50,
        to_traffic.p50,
        ready.p50
    );
    if failed_swaps.is_empty() {
        0
    } else {
        1
    }
}
