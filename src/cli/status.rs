//! `hotswapctl status [--json]`

use crate::control::client::Client;

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
    let unwell = status
        .services
        .iter()
        .any(|s| !matches!(s["state"].as_str(), Some("serving" | "swapping")));
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
    println!(
        "{:<16} {:<12} {:<28} {:<24} {}",
        "SERVICE", "STATE", "CURRENT", "PREVIOUS", "LAST DEPLOY"
    );
    for s in &status.services {
        let text = |p: &str| {
            s.pointer(p)
                .and_then(|v| v.as_str())
                .unwrap_or("-")
                .to_string()
        };
        let last = s
            .pointer("/history")
            .and_then(|h| h.as_array())
            .and_then(|h| h.last())
            .map(|l| {
                format!(
                    "{} {} {}",
                    l.pointer("/release/deploy_id")
                        .and_then(|v| v.as_str())
                        .unwrap_or("?"),
                    l.pointer("/phase/phase")
                        .and_then(|v| v.as_str())
                        .unwrap_or("?"),
                    l.pointer("/reason").and_then(|v| v.as_str()).unwrap_or("")
                )
            })
            .unwrap_or_else(|| "-".into());
        let state = match s.pointer("/swap/phase/phase").and_then(|v| v.as_str()) {
            // a canary step shows its share: swap:ramping@25%
            Some("ramping") if text("/state") == "swapping" => {
                let step = s
                    .pointer("/swap/phase/step")
                    .and_then(|v| v.as_u64())
                    .unwrap_or(0);
                let share = s
                    .pointer(&format!("/swap/ramp/{step}/share_pct"))
                    .and_then(|v| v.as_u64())
                    .unwrap_or(0);
                format!("swap:ramping@{share}%")
            }
            Some(p) if text("/state") == "swapping" => format!("swap:{p}"),
            _ => text("/state"),
        };
        println!(
            "{:<16} {:<12} {:<28} {:<24} {}",
            text("/service"),
            state,
            text("/current/release/image"),
            text("/previous/image"),
            last.trim_end()
        );
        if let Some(why) = s["reason"].as_str() {
            println!("{:<16} {why}", "");
        }
        if let Some(m) = s.get("maintenance").filter(|m| !m.is_null()) {
            println!(
                "{:<16} maintenance: clients get 503 (Retry-After {} s): {}",
                "",
                m["retry_after_secs"].as_u64().unwrap_or(0),
                m["message"].as_str().unwrap_or("")
            );
        }
    }
    exit
}
