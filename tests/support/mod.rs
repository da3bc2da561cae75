#![allow(dead_code)]
pub mod daemon;
pub mod env;
pub mod faults;
pub mod fleet;
pub mod gunicorn;
pub mod haproxy;
pub mod images;
pub mod load;
pub mod moto;
pub mod process;
pub mod registry;
pub mod reports;
pub mod stall;
pub mod streams;

/// The value after `name` on the command line (benches: `--rate 1000`).
pub fn cli_arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

/// The number after flag `name` on the command line (a bench's), or `default`.
pub fn cli_num(name: &str, default: u64) -> u64 {
    cli_arg(name)
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} needs a number, got {v:?}"))
        })
        .unwrap_or(default)
}

/// Runs `docker ARGS`, failing the test with what it said when it fails.
pub fn docker(args: &[&str]) {
    let out = std::process::Command::new("docker")
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("running docker");
    assert!(out.status.success(), "docker {args:?}: {}", text(&out));
}

/// A command's stdout then stderr, as text (for assertion messages).
pub fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs a blocking call (the CLI) without stalling the tasks of the test's runtime (a load).
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}
