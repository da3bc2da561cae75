//! `hotswapctl asg-switch --load-balancer TARGET_GROUP --new-group NAME`

use std::time::Duration;

use crate::fleet::asg_switch;
use crate::fleet::aws::Clients;

use super::{block_on, Exit};

/// Attach a new Auto Scaling group to a load balancer's target group, wait until its
/// instances are healthy, then detach every other group.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The ELBv2 target group (name or ARN).
    #[arg(long)]
    pub load_balancer: String,
    /// The Auto Scaling group to attach (name); every other group is detached once it is healthy.
    #[arg(long)]
    pub new_group: String,
    /// How long to wait for the new group's instances to be healthy in the target group
    /// (seconds, or 90s, 5m).
    #[arg(long, default_value_t = 300, value_parser = super::seconds)]
    pub timeout_secs: u64,
    /// AWS region (default: AWS_REGION).
    #[arg(long)]
    pub region: Option<String>,
    /// Print the outcome as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Exit {
    block_on(switch(
        &args.load_balancer,
        &args.new_group,
        Duration::from_secs(args.timeout_secs),
        args.region.as_deref(),
        args.json,
    ))
}

async fn switch(
    target_group: &str,
    new_group: &str,
    timeout: Duration,
    region: Option<&str>,
    json: bool,
) -> Exit {
    let clients = Clients::from_env(region).await;
    match asg_switch::run(&clients, target_group, new_group, timeout).await {
        Ok(s) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&s).expect("serializes"));
            } else {
                println!(
                    "{new_group} serves {target_group} ({} healthy instances); detached: {}",
                    s.healthy_instances.len(),
                    if s.detached.is_empty() {
                        "none".to_string()
                    } else {
                        s.detached.join(", ")
                    }
                );
            }
            Exit::Ok
        }
        Err(e) => {
            eprintln!("hotswapctl: asg-switch: {e}");
            Exit::Refused
        }
    }
}
