//! `hotswapctl maintenance SERVICE on|off [--message TEXT] [--retry-after SECS]`: HAProxy
//! answers the service's clients 503 with the message and Retry-After (no reload), until off.

use crate::control::api::MaintenanceRequest;

use super::{client_exit, Exit, Globals};

/// Turn a service's maintenance mode on (its clients get 503 with a message and Retry-After,
/// through HAProxy's runtime API, no reload) or off. Kept across restarts.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The service, as named in hotswapd's config.
    pub service: String,
    /// on: clients get 503; off: traffic flows again.
    #[arg(value_parser = ["on", "off"])]
    pub state: String,
    /// What clients read (with on; printable ASCII, at most 200 characters).
    #[arg(long)]
    pub message: Option<String>,
    /// The Retry-After clients get, e.g. 300, 5m, 1h (with on; default 300 s).
    #[arg(long, value_name = "SECS", value_parser = super::seconds)]
    pub retry_after: Option<u64>,
    /// Print the outcome as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub daemon: Globals,
}

pub fn run(args: Args, before: &Globals) -> Exit {
    let globals = &args.daemon.or(before);
    globals.with_daemon(|client| async move {
        let req = MaintenanceRequest {
            on: args.state == "on",
            message: args.message.clone(),
            retry_after_secs: args.retry_after,
        };
        match client.maintenance(&args.service, &req).await {
            Ok(o) if args.json => {
                println!("{}", serde_json::to_string_pretty(&o).expect("serializes"));
                Exit::Ok
            }
            Ok(o) => {
                match &o.maintenance {
                    Some(m) => println!(
                        "{}: maintenance on: clients get 503 (Retry-After {} s): {}",
                        o.service, m.retry_after_secs, m.message
                    ),
                    None => println!("{}: maintenance off: traffic flows", o.service),
                }
                Exit::Ok
            }
            Err(e) => {
                eprintln!(
                    "hotswapctl: maintenance {} for service {:?}: {e}",
                    args.state, args.service
                );
                client_exit(&e)
            }
        }
    })
}
