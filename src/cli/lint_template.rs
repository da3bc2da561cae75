//! `hotswapctl lint-template FILE`: blue-green lessons as warnings, each with its template path.

use std::path::Path;

use crate::fleet::lint::lint;
use crate::fleet::template::Template;

pub const WARNINGS: u8 = 13;

pub fn run(file: &Path, json: bool) -> u8 {
    let template = match std::fs::read_to_string(file)
        .map_err(|e| e.to_string())
        .and_then(|t| Template::parse(&t))
    {
        Ok(t) => t,
        Err(e) => {
            eprintln!("hotswapctl: template {}: {e}", file.display());
            return super::exit::USAGE;
        }
    };
    let warnings = lint(&template);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&warnings).expect("serializes")
        );
    } else {
        for w in &warnings {
            println!("{}: {}: warning: {}", file.display(), w.path, w.message);
        }
        if warnings.is_empty() {
            println!("{}: no warnings", file.display());
        }
    }
    if warnings.is_empty() {
        super::exit::OK
    } else {
        WARNINGS
    }
}
