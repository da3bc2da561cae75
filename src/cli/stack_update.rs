//! `hotswapctl stack-update --stack NAME --template FILE [--parameter K=V ...]`

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::fleet::aws::Clients;
use crate::fleet::stack_update::{self, exit, new_deploy_id, Options};
use crate::fleet::template::Template;

pub struct Args {
    pub stack: String,
    pub template: PathBuf,
    pub parameters: Vec<String>,
    pub queue_url: Option<String>,
    pub deploy_id: Option<String>,
    pub max_age: Duration,
    pub timeout: Duration,
    pub pre_hook: Option<String>,
    pub post_hook: Option<String>,
    pub dry_run: bool,
    pub region: Option<String>,
    pub json: bool,
}

pub async fn run(a: Args) -> u8 {
    let text = match std::fs::read_to_string(&a.template) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("hotswapctl: reading template {}: {e}", a.template.display());
            return super::exit::USAGE;
        }
    };
    let template = match Template::parse(&text) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("hotswapctl: template {}: {e}", a.template.display());
            return exit::REFUSED;
        }
    };
    let mut parameters = BTreeMap::new();
    for p in &a.parameters {
        match p.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                parameters.insert(k.to_string(), v.to_string());
            }
            _ => {
                eprintln!("hotswapctl: --parameter {p:?}: expected KEY=VALUE");
                return super::exit::USAGE;
            }
        }
    }
    let clients = Clients::from_env(a.region.as_deref()).await;
    let options = Options {
        stack: a.stack,
        template,
        parameters,
        queue_url: a.queue_url,
        deploy_id: a.deploy_id.unwrap_or_else(new_deploy_id),
        max_age: a.max_age,
        timeout: a.timeout,
        pre_hook: a.pre_hook,
        post_hook: a.post_hook,
        dry_run: a.dry_run,
    };
    let (code, summary) = stack_update::run(&clients, options, a.json).await;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&summary).expect("serializes")
        );
    } else {
        if summary.outcome == "dry-run" {
            println!(
                "plan for stack {} (deploy id {}):",
                summary.stack, summary.deploy_id
            );
            println!(
                "  group {} live DesiredCapacity {}",
                summary.group.as_deref().unwrap_or("?"),
                summary.live_desired.unwrap_or(0)
            );
            for n in &summary.notes {
                println!("  keeps scaling: {n}");
            }
            for (k, v) in &summary.parameters {
                println!("  parameter {k} = {v}");
            }
        }
        let line = format!(
            "stack-update {}: {}{}",
            summary.stack,
            summary.outcome,
            summary
                .message
                .as_deref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        );
        if code == exit::OK {
            println!("{line}");
        } else {
            eprintln!("hotswapctl: {line}");
        }
    }
    code
}
