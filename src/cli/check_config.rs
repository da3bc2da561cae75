//! `hotswapctl check-config [FILE]`: validates a config file locally, as hotswapd would.

use std::path::Path;

use crate::config::Settings;

use super::exit;

pub fn run(path: &Path, json: bool) -> u8 {
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
            exit::OK
        }
        Err(e) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"valid": false, "file": path, "error": e.to_string()})
                );
            }
            eprintln!("hotswapctl: {e}");
            exit::INVALID_CONFIG
        }
    }
}
