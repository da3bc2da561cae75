//! `hotswapctl services [--json]`

use crate::control::client::Client;

use super::{client_exit, Exit, Globals};

/// List services with their current and previous release and phase.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print the services as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub daemon: Globals,
}

pub fn run(args: Args, before: &Globals) -> Exit {
    let globals = &args.daemon.or(before);
    globals.with_daemon(|client| async move { list(&client, args.json).await })
}

async fn list(client: &Client, json: bool) -> Exit {
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
        return Exit::Ok;
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
    Exit::Ok
}
