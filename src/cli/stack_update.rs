//! `hotswapctl stack-update --stack NAME --template FILE [--parameter K=V ...]`

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::cfn::template::Template;
use crate::fleet::aws::Clients;
use crate::fleet::stack_update::{self, new_deploy_id, Options, Summary};

use super::{block_on, Exit};

/// Hot swap a whole stack from the build box: check it, UpdateStack, wait for one success
/// report per instance on SQS.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The CloudFormation stack to update (name or id).
    #[arg(long)]
    pub stack: String,
    /// The CloudFormation template (JSON or YAML).
    #[arg(long)]
    pub template: PathBuf,
    /// Template parameter, repeatable.
    #[arg(long = "parameter", value_name = "KEY=VALUE")]
    pub parameters: Vec<String>,
    /// The SQS queue hosts report to (default: the stack's HotswapQueueUrl output).
    #[arg(long)]
    pub queue_url: Option<String>,
    /// Default: a fresh one; passed as the DeployId parameter, echoed by the hosts.
    #[arg(long)]
    pub deploy_id: Option<String>,
    /// Older stacks are refused: re-provision them instead. Seconds, or 12h, 7d.
    #[arg(long, default_value_t = 7 * 24 * 3600, value_parser = super::seconds)]
    pub max_age_secs: u64,
    /// How long to wait for the reports (default: host budget 180 s + 60 s margin). With a
    /// canary ramp on the hosts, add its holds and watch window.
    #[arg(long, default_value_t = 240, value_parser = super::seconds)]
    pub timeout_secs: u64,
    /// Run before UpdateStack (sh -c); non-zero aborts.
    #[arg(long)]
    pub pre_hook: Option<String>,
    /// Run at the end whatever happened, with HOTSWAP_OUTCOME in its environment.
    #[arg(long)]
    pub post_hook: Option<String>,
    /// Print the plan (checks, parameters, instance count) and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// AWS region (default: AWS_REGION).
    #[arg(long)]
    pub region: Option<String>,
    /// Print the outcome (instances expected and succeeded, timings) as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Exit {
    block_on(update(args))
}

async fn update(a: Args) -> Exit {
    let text = match std::fs::read_to_string(&a.template) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("hotswapctl: reading template {}: {e}", a.template.display());
            return Exit::Usage;
        }
    };
    let template = match Template::parse(&text) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("hotswapctl: template {}: {e}", a.template.display());
            return Exit::Refused;
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
                return Exit::Usage;
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
        max_age: Duration::from_secs(a.max_age_secs),
        timeout: Duration::from_secs(a.timeout_secs),
        pre_hook: a.pre_hook,
        post_hook: a.post_hook,
        dry_run: a.dry_run,
    };
    let (ending, summary) = stack_update::run(&clients, options, a.json).await;
    let code = Exit::from(ending);
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&summary).expect("serializes")
        );
    } else {
        print_summary(&summary, code);
    }
    code
}

/// The plan of a dry run, then one line: how the update ended, and why.
fn print_summary(summary: &Summary, code: Exit) {
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
    if code == Exit::Ok {
        println!("{line}");
    } else {
        eprintln!("hotswapctl: {line}");
    }
}
