//! `hotswapctl deploy SERVICE --image REF [--wait]`

use std::time::Duration;

use crate::control::api::{DeployRequest, DeployStatus};
use crate::control::client::Client;

use super::{client_exit, exit};

pub struct DeployArgs {
    pub service: String,
    pub image: String,
    pub version: Option<String>,
    pub deploy_id: Option<String>,
    pub wait: bool,
    pub timeout: Duration,
    pub json: bool,
}

pub async fn run(client: &Client, args: DeployArgs) -> u8 {
    let req = DeployRequest {
        service: args.service.clone(),
        image: args.image.clone(),
        version: args.version,
        deploy_id: args.deploy_id,
    };
    let accepted = match client.deploy(&req).await {
        Ok(a) => a,
        Err(e) => {
            eprintln!(
                "hotswapctl: deploying {} to service {:?}: {e}",
                args.image, args.service
            );
            return client_exit(&e);
        }
    };
    if !args.wait {
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&accepted).expect("serializes")
            );
        } else if accepted.accepted {
            println!(
                "deploy {} of {} to {} accepted",
                accepted.deploy_id, args.image, accepted.service
            );
        } else {
            println!(
                "deploy {} was submitted before; not started again",
                accepted.deploy_id
            );
        }
        return exit::OK;
    }
    if !args.json {
        eprintln!(
            "deploy {} of {} to {}: waiting",
            accepted.deploy_id, args.image, accepted.service
        );
    }
    let status = match client.wait(&accepted.deploy_id, args.timeout).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("hotswapctl: following deploy {}: {e}", accepted.deploy_id);
            return client_exit(&e);
        }
    };
    print_outcome(&status, args.json)
}

fn print_outcome(status: &DeployStatus, json: bool) -> u8 {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(status).expect("serializes")
        );
    }
    match (status.finished, status.phase()) {
        (true, Some("succeeded")) => {
            if !json {
                let took = status
                    .state
                    .pointer("/swap/marks")
                    .and_then(|m| m.as_array())
                    .and_then(|m| {
                        Some(
                            m.last()?.get("at_ms")?.as_u64()?
                                - m.first()?.get("at_ms")?.as_u64()?,
                        )
                    });
                println!(
                    "deploy {} succeeded{}",
                    status.deploy_id,
                    took.map(|t| format!(" in {t} ms")).unwrap_or_default()
                );
            }
            exit::OK
        }
        (true, _) => {
            eprintln!(
                "hotswapctl: deploy {} failed: {}",
                status.deploy_id,
                status.reason().unwrap_or("no reason recorded")
            );
            exit::DEPLOY_FAILED
        }
        (false, _) => {
            eprintln!(
                "hotswapctl: deploy {} still {} when the wait ended",
                status.deploy_id,
                status.phase().unwrap_or(status.status())
            );
            exit::TIMEOUT
        }
    }
}
