//! `hotswapctl services [--json]`

use crate::control::client::Client;

use super::{client_exit, exit};

pub async fn run(client: &Client, json: bool) -> u8 {
    let services = match client.services().await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("hotswapctl: {e}");
            return client_exit(&e);
        }
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&services).expect("serializes")
        );
        return exit::OK;
    }
    println!(
        "{:<16} {:<14} {:<30} {:<30} {}",
        "SERVICE", "STATE", "CURRENT", "PREVIOUS", "QUEUED"
    );
    for s in services {
        let state = match &s.phase {
            Some(p) => format!("swap:{p}"),
            None => s.state.clone(),
        };
        println!(
            "{:<16} {:<14} {:<30} {:<30} {}",
            s.service,
            state,
            s.current.as_deref().unwrap_or("-"),
            s.previous.as_deref().unwrap_or("-"),
            if s.queued.is_empty() {
                "-".to_string()
            } else {
                s.queued.join(",")
            }
        );
    }
    exit::OK
}
