//! `hotswapctl rollback SERVICE [--to VERSION] [--wait]`: swap back to the previous release, or
//! to an older one whose image was kept (`keep_images`).

use std::time::Duration;

use crate::control::client::Client;

use super::{client_exit, deploy::outcome, deploy::Progress, Exit, Globals, Waiting};

/// Swap a service back to its previous release, or with --to to an older kept one (kept
/// locally: nothing is pulled).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The service to roll back, as named in hotswapd's config.
    pub service: String,
    /// The kept release to go back to: its version, image or image tag (`hotswapctl history`
    /// lists them; the service's `keep_images` says how many are kept). Default: the previous.
    #[arg(long, value_name = "VERSION")]
    pub to: Option<String>,
    #[command(flatten)]
    pub waiting: Waiting,
    #[command(flatten)]
    pub daemon: Globals,
}

pub fn run(args: Args, before: &Globals) -> Exit {
    let globals = &args.daemon.or(before);
    globals.with_daemon(|client| async move {
        let w = &args.waiting;
        let timeout = Duration::from_secs(w.timeout_secs);
        rollback(
            &client,
            &args.service,
            args.to.as_deref(),
            w.wait,
            timeout,
            w.json,
        )
        .await
    })
}

async fn rollback(
    client: &Client,
    service: &str,
    to: Option<&str>,
    wait: bool,
    timeout: Duration,
    json: bool,
) -> Exit {
    let accepted = match client.rollback(service, to).await {
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
    let followed = if json {
        client.wait(&accepted.deploy_id, timeout).await
    } else {
        let mut progress = Progress::default();
        let mut named = false;
        client
            .follow(&accepted.deploy_id, timeout, |s| {
                if !named {
                    if let Some(release) = s.release() {
                        eprintln!(
                            "rollback {} of {service}: back to version {} ({})",
                            accepted.deploy_id, release.version, release.image
                        );
                        named = true;
                    }
                }
                progress.show(s)
            })
            .await
    };
    match followed {
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
