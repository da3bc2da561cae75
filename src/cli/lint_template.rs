//! `hotswapctl lint-template FILE`: blue-green lessons as warnings, each with its template path.

use std::path::{Path, PathBuf};

use crate::cfn::template::Template;
use crate::fleet::lint::lint;

use super::Exit;

/// Warn about blue-green pitfalls in a CloudFormation template.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The template file (JSON or YAML).
    pub file: PathBuf,
    /// Print the warnings as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Exit {
    lint_file(&args.file, args.json)
}

fn lint_file(file: &Path, json: bool) -> Exit {
    let template = match std::fs::read_to_string(file)
        .map_err(|e| e.to_string())
        .and_then(|t| Template::parse(&t))
    {
        Ok(t) => t,
        Err(e) => {
            eprintln!("hotswapctl: template {}: {e}", file.display());
            return Exit::Usage;
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
        Exit::Ok
    } else {
        Exit::LintWarnings
    }
}
