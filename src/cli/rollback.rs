//! `hotswapctl rollback SERVICE [--wait]`: swap back to the previous release (its image was kept).

use std::time::Duration;

use crate::control::client::Client;

use super::{client_exit, deploy::outcome, exit};

pub async fn run(client: &Client, service: &str, wait: bool, timeout: Duration, json: bool) -> u8 {
    let accepted = match client.rollback(service).await {
        Ok(a) => a,
        Err(e) => {
            eprintln!("hotswapctl: rolling back service {service:?}: {e}");
            return client_exit(&e);
        }
    };
    if !wait {
        if json {
            println!(
                "{}",
                serde_json::to_string_pretty(&accepted).expect("serializes")
            );
        } else {
            println!(
                "rollback of {service} accepted as deploy {}",
                accepted.deploy_id
            );
        }
        return exit::OK;
    }
    match client.wait(&accepted.deploy_id, timeout).await {
        Ok(s) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&s).expect("serializes"));
            }
            outcome(&s, json)
        }
        Err(e) => {
            eprintln!("hotswapctl: following rollback {}: {e}", accepted.deploy_id);
            client_exit(&e)
        }
    }
}
