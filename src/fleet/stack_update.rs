//! `hotswapctl stack-update`: porter's hot swap from the build box. Checks the stack (settled,
//! young enough, live capacity within the template), binds the template to the live capacity,
//! runs the pre hook, calls UpdateStack with a fresh deploy id, counts the instances in service,
//! and waits for one success report per instance on SQS; the post hook always runs.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::aws::{describe, Clients};
use super::checks::{self, Plan, Refusal};
use super::tally::{Outcome, Tally};
use crate::cfn::template::Template;

mod wait;
pub use wait::wait_for_reports;

pub struct Options {
    pub stack: String,
    pub template: Template,
    pub parameters: BTreeMap<String, String>,
    pub queue_url: Option<String>,
    pub deploy_id: String,
    pub max_age: Duration,
    pub timeout: Duration,
    pub pre_hook: Option<String>,
    pub post_hook: Option<String>,
    pub dry_run: bool,
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub stack: String,
    pub deploy_id: String,
    /// "success", "failure", "timeout", "refused", "dry-run", "error", "hook-failed".
    pub outcome: String,
    pub message: Option<String>,
    pub group: Option<String>,
    pub live_desired: Option<i64>,
    pub instances_expected: usize,
    pub instances_succeeded: Vec<String>,
    pub failed_instance: Option<String>,
    pub parameters: BTreeMap<String, String>,
    pub notes: Vec<String>,
    pub elapsed_ms: u64,
    /// From the last report read to the decision (the CLI's own delay).
    pub detect_ms: Option<u64>,
}

pub fn new_deploy_id() -> String {
    format!(
        "sd{}",
        crate::model::new_deploy_id().trim_start_matches('d')
    )
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

struct Live {
    status: String,
    age: Duration,
    queue_url: Option<String>,
}

async fn describe_stack(c: &Clients, stack: &str) -> Result<Live, String> {
    let out = c
        .cfn
        .describe_stacks()
        .stack_name(stack)
        .send()
        .await
        .map_err(|e| format!("describing stack {stack}: {}", describe(e)))?;
    let s = out
        .stacks()
        .first()
        .ok_or_else(|| format!("stack {stack} not found"))?;
    let created = s.creation_time().map(|t| t.secs()).unwrap_or_else(now_secs);
    Ok(Live {
        status: s
            .stack_status()
            .map(|st| st.as_str().to_string())
            .unwrap_or_default(),
        age: Duration::from_secs((now_secs() - created).max(0) as u64),
        queue_url: s
            .outputs()
            .iter()
            .find(|o| o.output_key() == Some("HotswapQueueUrl"))
            .and_then(|o| o.output_value().map(String::from)),
    })
}

/// The group's physical name (looked up each time: an update may replace the group).
async fn group_name(c: &Clients, stack: &str, logical: &str) -> Result<String, String> {
    let out = c
        .cfn
        .describe_stack_resource()
        .stack_name(stack)
        .logical_resource_id(logical)
        .send()
        .await
        .map_err(|e| format!("finding {logical} in stack {stack}: {}", describe(e)))?;
    out.stack_resource_detail()
        .and_then(|d| d.physical_resource_id().map(String::from))
        .ok_or_else(|| format!("{logical} in stack {stack} has no physical id"))
}

/// (DesiredCapacity, instances InService).
async fn group_state(c: &Clients, name: &str) -> Result<(i64, Vec<String>), String> {
    let out = c
        .asg
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(name)
        .send()
        .await
        .map_err(|e| format!("describing Auto Scaling group {name}: {}", describe(e)))?;
    let g = out
        .auto_scaling_groups()
        .first()
        .ok_or_else(|| format!("Auto Scaling group {name} not found"))?;
    let in_service = g
        .instances()
        .iter()
        .filter(|i| i.lifecycle_state().map(|s| s.as_str()) == Some("InService"))
        .filter_map(|i| i.instance_id().map(String::from))
        .collect();
    Ok((g.desired_capacity().unwrap_or(0) as i64, in_service))
}

fn run_hook(name: &str, cmd: &str, env: &[(&str, String)]) -> Result<(), String> {
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(std::process::Stdio::null())
        .status()
        .map_err(|e| format!("{name} hook {cmd:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{name} hook {cmd:?} exited with {status}"))
    }
}

impl Summary {
    fn new(o: &Options) -> Summary {
        Summary {
            stack: o.stack.clone(),
            deploy_id: o.deploy_id.clone(),
            outcome: "error".into(),
            message: None,
            group: None,
            live_desired: None,
            instances_expected: 0,
            instances_succeeded: vec![],
            failed_instance: None,
            parameters: BTreeMap::new(),
            notes: vec![],
            elapsed_ms: 0,
            detect_ms: None,
        }
    }
}

/// What the checks before anything changes settled.
struct Checked {
    plan: Plan,
    /// The Auto Scaling group's logical id in the template.
    logical: String,
    queue_url: String,
    live_desired: i64,
}

/// Porter's checks, before anything changes: the stack settled and young enough, the template
/// with a DeployId parameter and a group, the plan that keeps live capacity, a report queue.
/// A refusal or an AWS error comes back as how the update ends.
async fn preflight(
    c: &Clients,
    o: &mut Options,
    s: &mut Summary,
) -> Result<Checked, (Ending, &'static str, String)> {
    let aws = |e: String| (Ending::Aws, "error", e);
    let refused = |r: Refusal| (Ending::Refused, "refused", r.to_string());
    let live = describe_stack(c, &o.stack).await.map_err(aws)?;
    checks::check_status(&o.stack, &live.status).map_err(refused)?;
    checks::check_age(&o.stack, live.age, o.max_age).map_err(refused)?;
    if !o.template.has_parameter("DeployId") {
        return Err(refused(Refusal::Template("the template declares no DeployId parameter: hosts could not echo the deploy id in their reports".into())));
    }
    o.parameters.insert("DeployId".into(), o.deploy_id.clone());
    let logical = o
        .template
        .group()
        .map_err(|e| refused(Refusal::Template(e)))?;
    let physical = group_name(c, &o.stack, &logical).await.map_err(aws)?;
    let (live_desired, _) = group_state(c, &physical).await.map_err(aws)?;
    s.group = Some(physical);
    s.live_desired = Some(live_desired);
    let plan = checks::plan(&mut o.template, &o.parameters, live_desired).map_err(refused)?;
    s.parameters = plan.parameters.clone();
    s.notes = plan.notes.clone();
    let Some(queue_url) = o.queue_url.clone().or(live.queue_url) else {
        return Err(refused(Refusal::Template(
            "no report queue: pass --queue-url or give the stack a HotswapQueueUrl output".into(),
        )));
    };
    Ok(Checked {
        plan,
        logical,
        queue_url,
        live_desired,
    })
}

/// How a stack update ended, for the caller to turn into its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Every instance reported success (or the dry run's checks passed).
    Done,
    /// A call to AWS failed.
    Aws,
    /// A safety check refused the update before anything changed.
    Refused,
    /// The pre or post hook failed.
    Hook,
    /// An instance reported failure.
    Failed,
    /// Not every instance reported in time.
    Timeout,
}

pub async fn run(c: &Clients, mut o: Options, quiet: bool) -> (Ending, Summary) {
    let started = Instant::now();
    let mut s = Summary::new(&o);
    let finish = |mut s: Summary, code: Ending, outcome: &str, message: Option<String>| {
        s.outcome = outcome.to_string();
        s.message = message;
        s.elapsed_ms = started.elapsed().as_millis() as u64;
        (code, s)
    };
    let Checked {
        plan,
        logical,
        queue_url,
        live_desired,
    } = match preflight(c, &mut o, &mut s).await {
        Ok(k) => k,
        Err((code, outcome, message)) => return finish(s, code, outcome, Some(message)),
    };
    if o.dry_run {
        s.instances_expected = live_desired as usize;
        return finish(
            s,
            Ending::Done,
            "dry-run",
            Some(format!(
                "checks passed; UpdateStack would run with deploy id {}",
                o.deploy_id
            )),
        );
    }

    let hook_env = |outcome: &str| {
        vec![
            ("HOTSWAP_STACK", o.stack.clone()),
            ("HOTSWAP_DEPLOY_ID", o.deploy_id.clone()),
            ("HOTSWAP_OUTCOME", outcome.to_string()),
        ]
    };
    if let Some(cmd) = &o.pre_hook {
        if let Err(e) = run_hook("pre_hotswap", cmd, &hook_env("pending")) {
            if let Some(post) = &o.post_hook {
                let _ = run_hook("post_hotswap", post, &hook_env("aborted"));
            }
            return finish(s, Ending::Hook, "hook-failed", Some(e));
        }
    }
    let (code, outcome, message) =
        update_and_wait(c, &o, &plan, &logical, &queue_url, &mut s, quiet).await;
    if let Some(cmd) = &o.post_hook {
        if let Err(e) = run_hook("post_hotswap", cmd, &hook_env(&outcome)) {
            let msg = format!("{}; {e}", message.unwrap_or_default());
            return finish(
                s,
                if code == Ending::Done {
                    Ending::Hook
                } else {
                    code
                },
                &outcome,
                Some(msg),
            );
        }
    }
    finish(s, code, &outcome, message)
}

async fn update_and_wait(
    c: &Clients,
    o: &Options,
    plan: &Plan,
    logical: &str,
    queue_url: &str,
    s: &mut Summary,
    quiet: bool,
) -> (Ending, String, Option<String>) {
    if let Err(e) = update_stack(c, o, plan).await {
        return (Ending::Aws, "error".into(), Some(e));
    }
    if !quiet {
        eprintln!(
            "UpdateStack {} sent with deploy id {}",
            o.stack, o.deploy_id
        );
    }
    // the update may have replaced the group: look it up again
    let instances = match group_name(c, &o.stack, logical).await {
        Ok(name) => match group_state(c, &name).await {
            Ok((_, i)) => {
                s.group = Some(name);
                i
            }
            Err(e) => return (Ending::Aws, "error".into(), Some(e)),
        },
        Err(e) => return (Ending::Aws, "error".into(), Some(e)),
    };
    s.instances_expected = instances.len();
    let mut tally = Tally::new(&o.deploy_id, instances.len());
    let result = wait_for_reports(c, queue_url, &mut tally, o.timeout, quiet).await;
    s.instances_succeeded = tally.succeeded.keys().cloned().collect();
    ending_of(result, &tally, s, o.timeout)
}

/// UpdateStack with the plan's parameters (every one passed explicitly) and the template.
async fn update_stack(c: &Clients, o: &Options, plan: &Plan) -> Result<(), String> {
    let params: Vec<aws_sdk_cloudformation::types::Parameter> = plan
        .parameters
        .iter()
        .map(|(k, v)| {
            aws_sdk_cloudformation::types::Parameter::builder()
                .parameter_key(k)
                .parameter_value(v)
                .build()
        })
        .collect();
    c.cfn
        .update_stack()
        .stack_name(&o.stack)
        .template_body(o.template.to_json())
        .set_parameters(Some(params))
        .capabilities(aws_sdk_cloudformation::types::Capability::CapabilityIam)
        .capabilities(aws_sdk_cloudformation::types::Capability::CapabilityNamedIam)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| format!("UpdateStack {}: {}", o.stack, describe(e)))
}

/// How the wait for the hosts' reports ended, as the update's ending, outcome and message.
fn ending_of(
    result: Result<(Outcome, Option<u64>), String>,
    tally: &Tally,
    s: &mut Summary,
    timeout: Duration,
) -> (Ending, String, Option<String>) {
    match result {
        Err(e) => (Ending::Aws, "error".into(), Some(e)),
        Ok((Outcome::AllSucceeded, detect)) => {
            s.detect_ms = detect;
            (
                Ending::Done,
                "success".into(),
                Some(format!(
                    "{} of {} instances reported success",
                    tally.succeeded.len(),
                    tally.expected
                )),
            )
        }
        Ok((
            Outcome::Failed {
                instance,
                service,
                reason,
            },
            detect,
        )) => {
            s.detect_ms = detect;
            s.failed_instance = Some(instance.clone());
            (
                Ending::Failed,
                "failure".into(),
                Some(format!(
                    "instance {instance} reported failure of service {service}: {reason}"
                )),
            )
        }
        Ok((Outcome::Waiting, _)) => (
            Ending::Timeout,
            "timeout".into(),
            Some(format!(
                "{} of {} instances reported success within {} s",
                tally.succeeded.len(),
                tally.expected,
                timeout.as_secs()
            )),
        ),
    }
}
