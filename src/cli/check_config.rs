//! `hotswapctl check-config [FILE]`: validates a config file locally, as hotswapd would.

use std::path::{Path, PathBuf};

use crate::config::Settings;

use super::{Exit, Globals};

/// Validate a config file locally, as hotswapd would (default: --config).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The config file (default: --config).
    pub file: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also check this host: Docker answers, each service's HAProxy socket answers and has its
    /// backend (with a balance that takes servers at runtime), hotswapd's directories are
    /// writable. Exits 15 when one is not so.
    #[arg(long)]
    pub live: bool,
    #[command(flatten)]
    pub daemon: Globals,
}

pub fn run(args: Args, before: &Globals) -> Exit {
    let globals = &args.daemon.or(before);
    check(
        &args.file.clone().unwrap_or_else(|| globals.config_path()),
        args.json,
        args.live,
    )
}

/// The host checks of `--live`; prints them unless `json`. Returns them and whether all passed.
pub fn live(settings: &Settings, json: bool) -> (Vec<super::check_live::Finding>, bool) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let findings = runtime.block_on(super::check_live::check(settings));
    let ok = findings.iter().all(|f| f.ok);
    if !json {
        super::check_live::print(&findings);
    }
    (findings, ok)
}

fn check(path: &Path, json: bool, live_too: bool) -> Exit {
    match Settings::load(path) {
        Ok(s) => {
            let names: Vec<&String> = s.services.keys().collect();
            if !json {
                println!(
                    "config {} is valid: {} service(s): {}",
                    path.display(),
                    names.len(),
                    names
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            let (findings, ready) = if live_too {
                live(&s, json)
            } else {
                (Vec::new(), true)
            };
            if json {
                println!(
                    "{}",
                    serde_json::json!({"valid": true, "file": path, "services": names, "live": live_too.then_some(&findings)})
                );
            }
            if ready {
                Exit::Ok
            } else {
                Exit::NotReady
            }
        }
        Err(e) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"valid": false, "file": path, "error": e.to_string()})
                );
            }
            eprintln!("hotswapctl: {e}");
            Exit::InvalidConfig
        }
    }
}
