//! The host hooks around a swap (`[services.NAME.hooks]`), the same for every kind of service:
//! `before_start` before anything starts, `before_switch` once the gate passed (the new release
//! runs, no traffic yet: a smoke test or a migration check), `after_switch` once traffic moved,
//! `after_swap` at the end whatever the result. Each run is recorded in the swap (journaled with
//! its next phase, reported); one recorded before a restart is not run again. A failing
//! `before_*` hook fails the swap, so the walker rolls it back; the others become warnings.

use crate::config::{Hook, HookSettings};
use crate::engine::error::StepError;
use crate::engine::phase::{Phase, Swap};

/// Runs `hook` for `swap` when the service has one and it has not run for this swap yet.
pub async fn run(settings: &HookSettings, hook: Hook, swap: &mut Swap) -> Result<(), StepError> {
    let Some(argv) = settings.command(hook) else {
        return Ok(());
    };
    if swap.hooks.iter().any(|r| r.hook == hook.name()) {
        return Ok(());
    }
    let service = swap.release.service.clone();
    let deploy_id = swap.release.deploy_id.clone();
    tracing::info!(service = %service, deploy_id = %deploy_id, hook = hook.name(), "hook started");
    let run = crate::runtime::hook::run(
        hook.name(),
        argv,
        &environment(hook, swap),
        settings.timeout,
    )
    .await;
    let failure = run.failure.clone();
    let took_ms = run.took_ms;
    swap.hooks.push(run);
    let Some(why) = failure else {
        tracing::info!(service = %service, deploy_id = %deploy_id, hook = hook.name(), took_ms, "hook passed");
        return Ok(());
    };
    tracing::warn!(service = %service, deploy_id = %deploy_id, hook = hook.name(), took_ms, reason = %why, "hook failed");
    let command = argv.join(" ");
    if hook.gates() {
        return Err(StepError::Hook {
            hook: hook.name(),
            command,
            why,
        });
    }
    swap.warnings.push(format!(
        "the {} hook ({command}) failed: {why}",
        hook.name()
    ));
    Ok(())
}

/// What a hook is told of the swap, as `HOTSWAP_*` variables.
fn environment(hook: Hook, swap: &Swap) -> Vec<(String, String)> {
    let r = &swap.release;
    let mut env = vec![
        ("HOTSWAP_HOOK", hook.name().to_string()),
        ("HOTSWAP_SERVICE", r.service.clone()),
        ("HOTSWAP_IMAGE", r.image.clone()),
        ("HOTSWAP_VERSION", r.version.clone()),
        ("HOTSWAP_DEPLOY_ID", r.deploy_id.clone()),
        ("HOTSWAP_PHASE", swap.phase.name().to_string()),
    ];
    if let Some(old) = &swap.old {
        env.push(("HOTSWAP_PREVIOUS_IMAGE", old.release.image.clone()));
        env.push(("HOTSWAP_PREVIOUS_VERSION", old.release.version.clone()));
    }
    // where the new release answers directly (containers): a before_switch smoke test's target
    let addresses: Vec<String> = swap
        .new
        .iter()
        .flat_map(|n| n.members())
        .map(|m| m.socket().to_string())
        .collect();
    if !addresses.is_empty() {
        env.push(("HOTSWAP_NEW_ADDRESSES", addresses.join(",")));
    }
    if hook == Hook::AfterSwap {
        let ok = swap.phase == Phase::Succeeded;
        env.push((
            "HOTSWAP_RESULT",
            if ok { "success" } else { "failure" }.to_string(),
        ));
        if let Some(reason) = &swap.reason {
            env.push(("HOTSWAP_REASON", reason.clone()));
        }
    }
    env.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}
