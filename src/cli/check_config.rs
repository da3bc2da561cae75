//! `hotswapctl check-config [FILE]`: validates a config file locally, as hotswapd would.

use std::path::{Path, PathBuf};

use crate::config::Settings;

use super::{Exit, Globals};

/// Validate a config file locally, as hotswapd would (default: --config).
#[derive(clap::Args, Debug)]
pub struct Args {
    pub file: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args, globals: &Globals) -> Exit {
    check(args.file.as_deref().unwrap_or(&globals.config), args.json)
}

fn check(path: &Path, json: bool) -> Exit {
    match Settings::load(path) {
        Ok(s) => {
            let names: Vec<&String> = s.services.keys().collect();
            if json {
                println!(
                    "{}",
                    serde_json::json!({"valid": true, "file": path, "services": names})
                );
            } else {
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
            Exit::Ok
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
