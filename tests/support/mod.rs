#![allow(dead_code)]
pub mod daemon;
pub mod env;
pub mod gunicorn;
pub mod haproxy;
pub mod images;
pub mod load;
pub mod moto;
pub mod reports;

/// The value after `name` on the command line (benches: `--rate 1000`).
pub fn cli_arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}
