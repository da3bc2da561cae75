//! The metadata watcher: hotswapd reads its CloudFormation resource's metadata itself
//! (DescribeStackResource, as cfn-hup does, with the instance's credentials) every `poll_secs`,
//! and when the releases there change it submits them exactly as `deploy --from-metadata` does
//! (same deploy ids, so a change seen twice, or also by a cfn-hup hook, swaps nothing twice).
//! Errors reaching CloudFormation are logged with backoff and shown in `status`; they never stop
//! the daemon.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::{now_ms, Backoff};
use crate::config::MetadataWatchSettings;
use crate::services::Services;

/// The longest wait between reads while CloudFormation keeps failing.
const BACKOFF_MAX: Duration = Duration::from_secs(300);

pub use crate::model::api::WatchView;

/// Runs the watcher for ever (until the daemon stops).
pub fn spawn(registry: Arc<Services>, s: MetadataWatchSettings) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let conf = crate::sdk::config(s.region.as_deref(), crate::sdk::Deadlines::CALL).await;
        let cfn = aws_sdk_cloudformation::Client::new(&conf);
        publish(&registry, |v| {
            v.stack = s.stack.clone();
            v.resource = s.resource.clone();
        });
        let mut last: Option<String> = None;
        let mut retry = false;
        let mut wait: Duration;
        let mut errors = Backoff::doubling(s.poll * 2, BACKOFF_MAX.max(s.poll));
        loop {
            match read(&cfn, &s).await {
                Ok(text) => {
                    wait = s.poll;
                    errors.reset();
                    let now = now_ms();
                    if last.as_deref() != Some(text.as_str()) {
                        match submit(
                            &registry,
                            &text,
                            &s.key,
                            &format!("{}/{}", s.stack, s.resource),
                        ) {
                            Ok(ids) => {
                                tracing::info!(stack = %s.stack, resource = %s.resource, deploys = ?ids, "the stack's releases changed; submitted");
                                publish(&registry, |v| {
                                    v.changed_ms = Some(now);
                                    v.submitted = ids;
                                    v.error = None;
                                });
                            }
                            Err((e, busy)) => {
                                tracing::error!(stack = %s.stack, resource = %s.resource, error = %e, "the stack's releases cannot be taken");
                                publish(&registry, |v| v.error = Some(e.clone()));
                                // refused for what it says: it would be refused again, so
                                // wait for a change; a busy service takes it at a later read
                                if busy {
                                    retry = true;
                                }
                            }
                        }
                        if !std::mem::take(&mut retry) {
                            last = Some(text);
                        }
                    }
                    publish(&registry, |v| {
                        v.read_ms = Some(now);
                        if v.error.as_deref().is_some_and(|e| e.starts_with("reading")) {
                            v.error = None;
                        }
                    });
                }
                Err(e) => {
                    wait = errors.next();
                    tracing::warn!(stack = %s.stack, resource = %s.resource, error = %e, retry_secs = wait.as_secs(), "cannot read the stack's metadata");
                    let why = format!(
                        "reading the metadata: {e}; next try in {} s",
                        wait.as_secs()
                    );
                    publish(&registry, |v| v.error = Some(why));
                }
            }
            tokio::time::sleep(wait).await;
        }
    })
}

fn publish(registry: &Services, f: impl FnOnce(&mut WatchView)) {
    let mut view = registry.metadata_watch.lock().expect("watch view lock");
    f(view.get_or_insert_with(WatchView::default));
}

fn aws_error(e: impl std::error::Error) -> String {
    aws_sdk_cloudformation::error::DisplayErrorContext(e).to_string()
}

/// The resource's metadata, as JSON text: what DescribeStackResource says (as cfn-hup reads it),
/// or, from an endpoint that gives no Metadata there (moto), the template's Metadata for the
/// resource resolved against the stack's parameters (GetTemplate, DescribeStacks).
pub async fn read(
    cfn: &aws_sdk_cloudformation::Client,
    s: &MetadataWatchSettings,
) -> Result<String, String> {
    let out = cfn
        .describe_stack_resource()
        .stack_name(&s.stack)
        .logical_resource_id(&s.resource)
        .send()
        .await
        .map_err(aws_error)?;
    if let Some(m) = out
        .stack_resource_detail()
        .and_then(|d| d.metadata())
        .filter(|m| !m.trim().is_empty())
    {
        return Ok(m.to_string());
    }
    let stacks = cfn
        .describe_stacks()
        .stack_name(&s.stack)
        .send()
        .await
        .map_err(aws_error)?;
    let stack = stacks
        .stacks()
        .first()
        .ok_or_else(|| format!("stack {} not found", s.stack))?;
    let mut names = crate::cfn::intrinsics::pseudo(
        stack.stack_id().unwrap_or_default(),
        stack.stack_name().unwrap_or(&s.stack),
    );
    for p in stack.parameters() {
        if let (Some(k), Some(v)) = (p.parameter_key(), p.parameter_value()) {
            names.insert(k.to_string(), v.to_string());
        }
    }
    let body = cfn
        .get_template()
        .stack_name(&s.stack)
        .send()
        .await
        .map_err(aws_error)?
        .template_body()
        .unwrap_or_default()
        .to_string();
    let template = crate::cfn::template::Template::parse(&body)?;
    let metadata = &template.body["Resources"][&s.resource]["Metadata"];
    if metadata.is_null() {
        return Ok("{}".into());
    }
    let resolved = crate::cfn::intrinsics::resolve(metadata, &names)
        .map_err(|e| format!("resolving {}'s Metadata: {e}", s.resource))?;
    Ok(resolved.to_string())
}

/// Submits every release of the metadata for a service this host runs; returns their deploy
/// ids. Services this host does not run are left to the hosts that do.
/// The deploy ids submitted; or why not, and whether trying the same metadata again may work
/// (a service too busy to take a release now).
fn submit(
    registry: &Services,
    text: &str,
    key: &str,
    source: &str,
) -> Result<Vec<String>, (String, bool)> {
    let fixed = |e: String| (e, false);
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| fixed(format!("the metadata is not JSON: {e}")))?;
    if value.get(key).is_none() {
        return Err(fixed(format!("the metadata has no {key:?} key")));
    }
    let requests = super::metadata::requests(text, key).map_err(fixed)?;
    let mut ids = Vec::new();
    let mut refused = Vec::new();
    let mut busy = false;
    for req in requests {
        if registry.handle(&req.service).is_none() {
            tracing::info!(service = %req.service, "the stack names a service this host does not run");
            continue;
        }
        let service = req.service.clone();
        let by = crate::engine::phase::Requester {
            via: "metadata_watch".into(),
            source: Some(source.to_string()),
            ..Default::default()
        };
        match super::accept(registry, req, by) {
            Ok(a) => ids.push(a.deploy_id),
            Err(e) => {
                busy |= matches!(e, super::Refusal::Busy(_));
                refused.push(format!("service {service:?}: {e}"));
            }
        }
    }
    if refused.is_empty() {
        Ok(ids)
    } else {
        Err((refused.join("; "), busy))
    }
}
