//! `hotswapctl reload` (alias `reload-config`): a config reload, hotswapd re-reads its config
//! file; a bad one changes nothing. Not the hot code reload (`deploy --code`), nor an HAProxy
//! reload (hotswapd's own business, no verb).

use crate::control::client::Client;

use super::{client_exit, Exit, Globals};

/// Config reload: make hotswapd re-read its config file (a bad one changes nothing).
///
/// Services added start, changed ones apply from their next swap. This is not a hot code
/// reload (that is deploy --code) and not an HAProxy reload.
#[derive(clap::Args, Debug)]
#[command(visible_alias = "reload-config")]
pub struct Args {
    /// Print what changed as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub daemon: Globals,
}

pub fn run(args: Args, before: &Globals) -> Exit {
    let globals = &args.daemon.or(before);
    globals.with_daemon(|client| async move { reload(&client, args.json).await })
}

async fn reload(client: &Client, json: bool) -> Exit {
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
            Exit::Ok
        }
        Err(e) => {
            eprintln!("hotswapctl: reload: {e}");
            client_exit(&e)
        }
    }
}
