//! `hotswapctl rollback SERVICE [--wait]`: swap back to the previous release (its image was kept).

use std::time::Duration;

use crate::control::client::Client;

use super::{client_exit, deploy::outcome, Exit, Globals, Waiting};

/// Swap a service back to its previous release (kept locally: nothing is pulled).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The service to roll back, as named in hotswapd's config.
    pub service: String,
    #[command(flatten)]
    pub waiting: Waiting,
}

pub fn run(args: Args, globals: &Globals) -> Exit {
    globals.with_daemon(|client| async move {
        let w = &args.waiting;
        let timeout = Duration::from_secs(w.timeout_secs);
        rollback(&client, &args.service, w.wait, timeout, w.json).await
    })
}

async fn rollback(
    client: &Client,
    service: &str,
    wait: bool,
    timeout: Duration,
    json: bool,
) -> Exit {
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
        return Exit::Ok;
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
