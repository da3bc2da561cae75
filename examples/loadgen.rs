//! A keep-alive load client that counts every failure, for the demo:
//! `cargo run --example loadgen -- ADDR SECONDS [CONNECTIONS]` prints one JSON line of figures.

#[path = "../tests/support/load.rs"]
#[allow(dead_code)]
mod load;

use std::net::SocketAddr;
use std::time::Duration;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(addr), Some(secs)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: loadgen ADDR SECONDS [CONNECTIONS]");
        std::process::exit(2);
    };
    let addr: SocketAddr = addr.parse().expect("ADDR is host:port");
    let secs: u64 = secs.parse().expect("SECONDS is a number");
    let conns: usize = args
        .get(3)
        .map(|c| c.parse().expect("CONNECTIONS is a number"))
        .unwrap_or(8);
    let load = load::Load::start(addr, conns, "/");
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let s = load.stop().await;
    println!(
        "{}",
        serde_json::json!({
            "requests": s.requests,
            "ok": s.ok,
            "failed": s.failed,
            "by_release": s.by_release,
            "first_failures": s.failures,
        })
    );
}
