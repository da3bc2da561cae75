//! `hotswapctl reload`: the daemon re-reads its config; a bad one changes nothing.

use crate::control::client::Client;

use super::{client_exit, exit};

pub async fn run(client: &Client, json: bool) -> u8 {
    match client.reload().await {
        Ok(o) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&o).expect("serializes"));
            } else {
                println!(
                    "config reloaded: services {}; added [{}] changed [{}] removed [{}]",
                    o.services.join(", "),
                    o.added.join(", "),
                    o.changed.join(", "),
                    o.removed.join(", ")
                );
            }
            exit::OK
        }
        Err(e) => {
            eprintln!("hotswapctl: reload: {e}");
            client_exit(&e)
        }
    }
}
