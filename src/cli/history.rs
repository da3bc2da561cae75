//! `hotswapctl history [SERVICE] [--limit N] [--json]`: past swaps and repairs, newest first,
//! from the daemon's reports (the reports file and its rotated copies): result, how long, the
//! phases, and who asked and how.

use crate::control::client::Client;

use super::{client_exit, Exit, Globals};

/// Show past swaps and repairs with their result, duration, phases and requester.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Only this service's (default: every service's).
    pub service: Option<String>,
    /// How many, newest first (1 to 1000).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub limit: u16,
    /// Print the reports as JSON on stdout, as they were written.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub daemon: Globals,
}

pub fn run(args: Args, before: &Globals) -> Exit {
    let globals = &args.daemon.or(before);
    globals.with_daemon(|client| async move { show(&client, &args).await })
}

async fn show(client: &Client, args: &Args) -> Exit {
    let entries = match client
        .history(args.service.as_deref(), usize::from(args.limit))
        .await
    {
        Ok(e) => e,
        Err(e) => {
            eprintln!("hotswapctl: reading history: {e}");
            return client_exit(&e);
        }
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&entries).expect("serializes")
        );
        return Exit::Ok;
    }
    println!(
        "{:<20} {:<12} {:<7} {:<20} {:<8} {:>8}  {:<40} WHO",
        "WHEN (UTC)", "SERVICE", "KIND", "VERSION", "RESULT", "TOOK", "PHASES / WHY"
    );
    for r in &entries {
        println!("{}", line(r));
    }
    Exit::Ok
}

/// What the table shows of a report. Every field may be missing: the reports file keeps lines
/// that older versions wrote.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct Line {
    kind: Option<String>,
    service: Option<String>,
    version: Option<String>,
    result: Option<String>,
    phase_reached: Option<String>,
    reason: Option<String>,
    accepted_ms: u64,
    finished_ms: u64,
    phases: Vec<PhaseTook>,
    repair: Option<RepairWhy>,
    requested_by: Option<crate::model::Requester>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct PhaseTook {
    phase: String,
    took_ms: u64,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct RepairWhy {
    why: Option<String>,
}

/// One report as a line of the table.
fn line(r: &serde_json::Value) -> String {
    let r: Line = serde_json::from_value(r.clone()).unwrap_or_default();
    let s = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let took = r.finished_ms.saturating_sub(r.accepted_ms);
    let phases: Vec<String> = r
        .phases
        .iter()
        .map(|t| format!("{} {}", t.phase, t.took_ms))
        .collect();
    let detail = match (r.result.as_deref(), r.kind.as_deref()) {
        (Some("failure"), _) => format!("{}: {}", s(&r.phase_reached), s(&r.reason)),
        (_, Some("repair")) => s(&r.repair.and_then(|p| p.why)),
        _ => phases.join(", "),
    };
    let who = r
        .requested_by
        .map(|b| b.to_string())
        .unwrap_or_else(|| "-".into());
    format!(
        "{:<20} {:<12} {:<7} {:<20} {:<8} {:>6}ms  {:<40} {who}",
        utc(r.accepted_ms),
        s(&r.service),
        s(&r.kind),
        s(&r.version),
        s(&r.result),
        took,
        detail
    )
}

/// `2026-12-01 04:23:05` from unix milliseconds (civil-from-days, Howard Hinnant's algorithm).
fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_print_as_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(1_796_099_385_000), "2026-12-01 04:29:45");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00");
    }

    #[test]
    fn a_line_names_result_phases_and_requester() {
        let r = serde_json::json!({
            "kind": "swap", "service": "web", "version": "2", "result": "success",
            "accepted_ms": 1000, "finished_ms": 1450,
            "phases": [{"phase": "starting", "took_ms": 300}, {"phase": "switching", "took_ms": 3}],
            "requested_by": {"via": "socket", "uid": 0, "pid": 42, "command": "hotswapctl deploy web --image web:2"}
        });
        let l = line(&r);
        for part in [
            "web",
            "success",
            "450ms",
            "starting 300, switching 3",
            "socket uid=0 pid=42 (hotswapctl deploy web --image web:2)",
        ] {
            assert!(l.contains(part), "{part:?} not in {l:?}");
        }
    }
}
