//! `hotswapctl deploy SERVICE --image REF [--wait]` and `hotswapctl deploy --from-metadata FILE`
//! (what a cfn-hup hook runs with the output of `cfn-get-metadata`). `deploy SERVICE --code
//! BUNDLE` is the hot code reload of a service that reloads code.

use std::path::PathBuf;
use std::time::Duration;

use crate::control::api::{DeployAccepted, DeployRequest, DeployStatus};
use crate::control::client::Client;
use crate::model::{Figures, StepRecord};

use super::{client_exit, Exit, Globals, Waiting};

mod metadata;
use metadata::from_metadata;

/// Swap a service to a new release (or every release of a CloudFormation metadata file).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The service to swap, as named in hotswapd's config (`[services.NAME]` or `[processes.NAME]`).
    #[arg(required_unless_present = "from_metadata")]
    pub service: Option<String>,
    /// Image reference of the release, e.g. web:2.
    #[arg(long, required_unless_present_any = ["from_metadata", "code"])]
    pub image: Option<String>,
    /// A code bundle (directory or .tar.gz): a hot code reload ([processes] services, containers
    /// with [services.NAME.code]).
    #[arg(long, conflicts_with = "image")]
    pub code: Option<PathBuf>,
    /// What the app reports for this release (default: the image tag).
    #[arg(long)]
    pub version: Option<String>,
    /// Makes retries safe: the same id never swaps twice.
    #[arg(long)]
    pub deploy_id: Option<String>,
    /// An image archive on this host (docker save output) to load first.
    #[arg(long)]
    pub archive: Option<PathBuf>,
    /// The archive's sha256, checked before loading.
    #[arg(long, requires = "archive")]
    pub archive_sha256: Option<String>,
    /// Read the releases from CloudFormation metadata (JSON as cfn-get-metadata prints it;
    /// "-" for stdin); implies --wait. For cfn-hup hooks.
    #[arg(long, conflicts_with_all = ["service", "image", "version", "deploy_id", "archive"])]
    pub from_metadata: Option<PathBuf>,
    /// Skip the service's canary ramp: all traffic moves once the health gate passes (the
    /// report says so).
    #[arg(long)]
    pub no_ramp: bool,
    #[command(flatten)]
    pub waiting: Waiting,
    #[command(flatten)]
    pub daemon: Globals,
}

pub fn run(args: Args, before: &Globals) -> Exit {
    let globals = &args.daemon.or(before);
    globals.with_daemon(|client| async move {
        let timeout = Duration::from_secs(args.waiting.timeout_secs);
        match &args.from_metadata {
            Some(file) => from_metadata(&client, file, timeout, args.waiting.json).await,
            None => deploy(&client, args).await,
        }
    })
}

/// One release, named on the command line.
async fn deploy(client: &Client, args: Args) -> Exit {
    let req = DeployRequest {
        service: args.service.unwrap_or_default(),
        image: args.image.unwrap_or_default(),
        version: args.version,
        deploy_id: args.deploy_id,
        archive: args.archive,
        archive_sha256: args.archive_sha256,
        code: args.code.map(|c| std::fs::canonicalize(&c).unwrap_or(c)),
        no_ramp: args.no_ramp,
    };
    let timeout = Duration::from_secs(args.waiting.timeout_secs);
    let accepted = match client.deploy(&req).await {
        Ok(a) => a,
        Err(e) => {
            eprintln!(
                "hotswapctl: deploying {} to service {:?}: {e}",
                req.image, req.service
            );
            return client_exit(&e);
        }
    };
    if !args.waiting.json {
        describe_accepted(&accepted, &what(&req));
    }
    if !args.waiting.wait {
        if args.waiting.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&accepted).expect("serializes")
            );
        }
        return Exit::Ok;
    }
    let followed = if args.waiting.json {
        client.wait(&accepted.deploy_id, timeout).await
    } else {
        let mut progress = Progress::default();
        client
            .follow(&accepted.deploy_id, timeout, |s| progress.show(s))
            .await
    };
    let status = match followed {
        Ok(s) => s,
        Err(e) => {
            eprintln!("hotswapctl: following deploy {}: {e}", accepted.deploy_id);
            return client_exit(&e);
        }
    };
    if args.waiting.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&status).expect("serializes")
        );
    }
    outcome(&status, args.waiting.json)
}

/// Prints a followed deploy's phases and canary steps on stderr as they happen (from the swap's
/// phase marks and step records, so a phase shorter than the poll is still shown).
#[derive(Default)]
pub struct Progress {
    /// What a queued deploy was last said to wait for.
    behind: Option<String>,
    /// Phase marks printed.
    marks_done: usize,
    /// Ramp steps and watch windows begun (one per `ramping` or `watching` mark printed).
    steps_begun: usize,
    /// Step records printed (each once it has ended).
    steps_done: usize,
    /// What the phase was last said to be doing (a pull's progress, the gate's last answer, the
    /// drain's sessions left).
    activity: Option<String>,
    /// The running canary step's figures last printed.
    live: Option<String>,
}

impl Progress {
    pub fn show(&mut self, status: &DeployStatus) {
        if let Some(behind) = status.behind() {
            if Some(behind) != self.behind.as_deref() {
                eprintln!("  queued: waiting for {behind}");
            }
            self.behind = Some(behind.to_string());
        }
        let Some(swap) = status.swap() else {
            return;
        };
        let (steps, plan) = (&swap.steps, &swap.ramp);
        for m in swap.marks.iter().skip(self.marks_done) {
            // the steps begun before this phase ended before it began
            self.print_steps(steps, self.steps_begun);
            let phase = m.phase.as_str();
            let detail = match phase {
                "ramping" => {
                    let share = plan.get(self.steps_begun).map_or(0, |p| p.share_pct);
                    format!(
                        ": step {} of {}, {share} % of traffic to the new release",
                        self.steps_begun + 1,
                        plan.len()
                    )
                }
                "watching" => {
                    ": all traffic on the new release, the old one kept for a flip back".to_string()
                }
                _ => String::new(),
            };
            if matches!(phase, "ramping" | "watching") {
                self.steps_begun += 1;
            }
            if phase != "accepted" {
                eprintln!("  {phase}{detail}");
            }
            self.marks_done += 1;
        }
        self.print_steps(steps, steps.len());
        // the step in progress: its figures so far, once a second while they change
        let live = steps
            .last()
            .filter(|s| s.ended_ms == 0)
            .map(|s| format!("so far: {}", figures_of(s)));
        if let Some(l) = live.as_deref().filter(|l| Some(*l) != self.live.as_deref()) {
            eprintln!("    {l}");
        }
        self.live = live;
        let activity = swap.activity.as_deref();
        if let Some(a) = activity.filter(|a| Some(*a) != self.activity.as_deref()) {
            eprintln!("    {a}");
        }
        self.activity = activity.map(String::from);
    }

    /// Prints the ended step records among the first `upto` not printed yet, in order.
    fn print_steps(&mut self, steps: &[StepRecord], upto: usize) {
        while self.steps_done < upto.min(steps.len()) && steps[self.steps_done].ended_ms > 0 {
            eprintln!("    {}", describe_step(&steps[self.steps_done]));
            self.steps_done += 1;
        }
    }
}

/// Both releases' figures of a step: "new 120 requests, 0 errors (0.00 %), 3 ms; old ...".
fn figures_of(step: &StepRecord) -> String {
    let figures = |who: &str, f: &Figures| {
        let bp = f.error_bp();
        format!(
            "{who} {} requests, {} errors ({}.{:02} %), {} ms",
            f.requests,
            f.errors,
            bp / 100,
            bp % 100,
            f.rtime_ms
        )
    };
    format!(
        "{}; {}",
        figures("new", &step.new),
        figures("old", &step.old)
    )
}

/// One canary step's line: its share, how long, both releases' figures, the verdict.
fn describe_step(step: &StepRecord) -> String {
    let took = step.ended_ms.saturating_sub(step.started_ms);
    let what = if step.kind == "watch" {
        "watch window".to_string()
    } else {
        format!("step at {} %", step.share_pct)
    };
    format!(
        "{what} for {}.{} s: {}: {}",
        took / 1000,
        (took % 1000) / 100,
        figures_of(step),
        step.verdict
    )
}

/// What is being deployed, for messages: the image, or the code bundle.
fn what(req: &DeployRequest) -> String {
    match &req.code {
        Some(c) if req.image.is_empty() => format!("code {}", c.display()),
        _ => req.image.clone(),
    }
}

fn describe_accepted(a: &DeployAccepted, image: &str) {
    if !a.accepted {
        eprintln!(
            "deploy {} was submitted before: not started again",
            a.deploy_id
        );
        return;
    }
    eprintln!(
        "deploy {} of {image} to {} accepted",
        a.deploy_id, a.service
    );
    if let Some(running) = &a.queued_behind {
        eprintln!("  queued behind deploy {running}, which is swapping now");
    }
    if !a.superseded.is_empty() {
        eprintln!(
            "  it replaces queued deploy(s) {} (they will not run)",
            a.superseded.join(", ")
        );
    }
}

/// Prints how a followed deploy ended and returns the exit code for it.
pub fn outcome(status: &DeployStatus, json: bool) -> Exit {
    if !json && status.finished {
        for w in status
            .swap()
            .map(|s| s.warnings.as_slice())
            .unwrap_or_default()
        {
            eprintln!("  warning: {w}");
        }
    }
    match (status.finished, status.status(), status.phase()) {
        (true, "reported", _) if status.result() == Some("success") => {
            if !json {
                println!(
                    "deploy {} to {} succeeded (from its report)",
                    status.deploy_id, status.service
                );
            }
            Exit::Ok
        }
        (true, _, Some("succeeded")) => {
            if !json {
                let took = status.swap().and_then(|s| {
                    Some(s.marks.last()?.at_ms.saturating_sub(s.marks.first()?.at_ms))
                });
                println!(
                    "deploy {} to {} succeeded{}",
                    status.deploy_id,
                    status.service,
                    took.map(|t| format!(" in {t} ms")).unwrap_or_default()
                );
            }
            Exit::Ok
        }
        (true, "superseded", _) => {
            eprintln!(
                "hotswapctl: deploy {} to {} was superseded by deploy {} before it started",
                status.deploy_id,
                status.service,
                status.superseded_by().unwrap_or("?")
            );
            Exit::Superseded
        }
        (true, _, _) => {
            eprintln!(
                "hotswapctl: deploy {} to {} failed: {}",
                status.deploy_id,
                status.service,
                status.reason().unwrap_or("no reason recorded")
            );
            Exit::DeployFailed
        }
        (false, s, p) => {
            eprintln!(
                "hotswapctl: deploy {} to {} still {} when the wait ended",
                status.deploy_id,
                status.service,
                p.unwrap_or(s)
            );
            Exit::Timeout
        }
    }
}
