//! `hotswapctl status [--json]`

use crate::control::client::Client;
use crate::engine::{Phase, ServiceView, State};
use crate::model::api::WatchView;

use super::{client_exit, Exit, Globals};

/// Show the daemon and each service. Exits 14 when any service is not serving (a swap keeps
/// the old release serving), so monitoring can use it.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print the daemon's whole status as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub daemon: Globals,
}

pub fn run(args: Args, before: &Globals) -> Exit {
    let globals = &args.daemon.or(before);
    globals.with_daemon(|client| async move { show(&client, args.json).await })
}

async fn show(client: &Client, json: bool) -> Exit {
    let status = match client.status().await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("hotswapctl: {e}");
            return client_exit(&e);
        }
    };
    let unwell = status.services.iter().any(|s| !s.state.is_well());
    let exit = if unwell { Exit::NotServing } else { Exit::Ok };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&status).expect("serializes")
        );
        return exit;
    }
    println!(
        "hotswapd {} on {} (up {} s)",
        status.version, status.instance_id, status.uptime_secs
    );
    if let Some(w) = &status.cloudformation {
        print_watcher(w);
    }
    println!(
        "{:<16} {:<12} {:<28} {:<24} {}",
        "SERVICE", "STATE", "CURRENT", "PREVIOUS", "LAST DEPLOY"
    );
    for s in &status.services {
        print_service(s);
    }
    exit
}

/// The metadata watcher's line: what it read and when, and its last error.
fn print_watcher(w: &WatchView) {
    let ago = |ms: Option<u64>| match ms {
        Some(ms) => format!("{} s ago", crate::clock::now_ms().saturating_sub(ms) / 1000),
        None => "never".into(),
    };
    println!(
        "releases from stack {} resource {}: read {}, last changed {}{}",
        w.stack,
        w.resource,
        ago(w.read_ms),
        ago(w.changed_ms),
        w.error
            .as_deref()
            .map(|e| format!("; error: {e}"))
            .unwrap_or_default()
    );
}

/// A service's line (a swap shows its phase, a canary step its share), then why it is not
/// serving and its maintenance mode.
fn print_service(s: &ServiceView) {
    let last = s
        .history
        .last()
        .map(|l| {
            format!(
                "{} {} {}",
                l.release.deploy_id,
                l.phase.name(),
                l.reason.as_deref().unwrap_or("")
            )
        })
        .unwrap_or_else(|| "-".into());
    let state = match s.swap.as_ref().map(|w| (w, &w.phase)) {
        // a canary step shows its share: swap:ramping@25%
        Some((w, Phase::Ramping { step, .. })) if s.state == State::Swapping => {
            let share = w.ramp.get(*step).map_or(0, |r| r.share_pct);
            format!("swap:ramping@{share}%")
        }
        Some((_, p)) if s.state == State::Swapping => format!("swap:{}", p.name()),
        _ => s.state.name().to_string(),
    };
    println!(
        "{:<16} {:<12} {:<28} {:<24} {}",
        s.service,
        state,
        s.current.as_ref().map_or("-", |c| c.release.image.as_str()),
        s.previous.as_ref().map_or("-", |p| p.image.as_str()),
        last.trim_end()
    );
    if let Some(why) = &s.reason {
        println!("{:<16} {why}", "");
    }
    if let Some(m) = &s.maintenance {
        println!(
            "{:<16} maintenance: clients get 503 (Retry-After {} s): {}",
            "", m.retry_after_secs, m.message
        );
    }
}
