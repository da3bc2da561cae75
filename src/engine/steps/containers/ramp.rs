//! ramping and watching: the canary. Each step starts enough new containers for its share, sets
//! both releases' weights in one runtime API call, and holds, judging HAProxy's figures for both
//! releases every check interval (`engine::canary` is the pure part). The watch window holds at
//! 100 % with the old release kept at weight 0. A trip is an error: the walker rolls back.

use std::time::Duration;

use super::{servers_of, Containers};
use crate::balancer::Balancer;
use crate::clock::{ms, now_ms};
use crate::config::ServiceSettings;
use crate::engine::canary::{self, Verdict};
use crate::engine::error::StepError;
use crate::engine::phase::{Figures, Instance, StepRecord, Swap};
use crate::engine::steps::Ledger;
use crate::health::Prober;
use crate::runtime::Runtime;

/// Fixes the canary plan when the swap begins: the service's ramp, unless the release skips it,
/// it is a code reload, or nothing serves yet to compare with.
pub(super) fn plan(settings: &ServiceSettings, mut swap: Swap) -> Swap {
    let Some(ramp) = &settings.ramp else {
        return swap;
    };
    if swap.release.code.is_some() || swap.old.is_none() {
        return swap;
    }
    if swap.release.no_ramp {
        swap.ramp_skipped = true;
        swap.warnings
            .push("the canary ramp was skipped at the operator's request (--no-ramp)".into());
        return swap;
    }
    swap.with_ramp(ramp.steps.clone(), ms(ramp.watch))
}

impl<R: Runtime, B: Balancer, H: Prober> Containers<R, B, H> {
    /// Both releases' servers with the weights that give the new one `share_pct` of the traffic,
    /// in one runtime API call.
    pub(super) async fn set_share(&self, swap: &Swap, share_pct: u8) -> Result<(), StepError> {
        let new = servers_of(swap.new.as_ref());
        let old = servers_of(swap.old.as_ref());
        let (wn, wo) = canary::weights(share_pct, new.len(), old.len());
        let all: Vec<(String, u16)> = new
            .into_iter()
            .map(|s| (s, wn))
            .chain(old.into_iter().map(|s| (s, wo)))
            .collect();
        self.balancer
            .set_weights(&all)
            .await
            .map_err(StepError::haproxy(format!(
                "setting weights for {share_pct} % to the new release"
            )))
    }

    /// One ramp step: enough new containers for its share, the weights, then the hold.
    pub(super) async fn ramp_step(
        &self,
        ledger: &mut dyn Ledger,
        swap: &mut Swap,
        step: usize,
    ) -> Result<(), StepError> {
        let plan = swap.ramp[step];
        let needed =
            canary::needed_new(plan.share_pct, self.settings.replicas, self.settings.batch);
        loop {
            let have = swap.new.as_ref().map(Instance::count).unwrap_or(0);
            if have >= needed {
                break;
            }
            let count = self.settings.batch.min(needed - have);
            self.add_batch(ledger, swap, count, Some(0)).await?;
        }
        self.set_share(swap, plan.share_pct).await?;
        let what = format!(
            "canary step {} of {} ({} % of traffic)",
            step + 1,
            swap.ramp.len(),
            plan.share_pct
        );
        self.hold(ledger, swap, "ramp", plan.share_pct, plan.hold_ms, &what)
            .await
    }

    /// The watch window: all traffic on the new release, the old one kept at weight 0.
    pub(super) async fn watch_window(
        &self,
        ledger: &mut dyn Ledger,
        swap: &mut Swap,
    ) -> Result<(), StepError> {
        let what = format!(
            "the watch window ({} ms after the last step)",
            swap.watch_ms
        );
        let watch_ms = swap.watch_ms;
        self.hold(ledger, swap, "watch", 100, watch_ms, &what).await
    }

    /// Holds for `hold_ms`, reading HAProxy's figures every check interval; records the step.
    async fn hold(
        &self,
        ledger: &mut dyn Ledger,
        swap: &mut Swap,
        kind: &str,
        share_pct: u8,
        hold_ms: u64,
        what: &str,
    ) -> Result<(), StepError> {
        let (interval, limits) = match &self.settings.ramp {
            Some(r) => (r.check_interval, r.limits),
            None => (Duration::from_millis(250), Default::default()),
        };
        let before = self.read_figures(what).await?;
        let new_servers = servers_of(swap.new.as_ref());
        let old_servers = servers_of(swap.old.as_ref());
        let started_ms = now_ms();
        let end = started_ms + hold_ms;
        let earlier: Vec<StepRecord> = swap.steps.clone();
        swap.steps.push(StepRecord {
            kind: kind.to_string(),
            share_pct,
            started_ms,
            ended_ms: 0,
            new: Figures::default(),
            old: Figures::default(),
            verdict: "running".into(),
        });
        loop {
            let now = now_ms();
            if now < end {
                let nap = (end - now).min(ms(interval));
                tokio::time::sleep(Duration::from_millis(nap)).await;
            }
            let after = self.read_figures(what).await?;
            let new = canary::release_figures(&before, &after, &new_servers);
            let old = canary::release_figures(&before, &after, &old_servers);
            let reference = canary::old_reference(&old, &earlier, &limits).copied();
            let verdict = canary::judge(&new, reference.as_ref(), &limits);
            let done = now_ms() >= end;
            let record = swap.steps.last_mut().expect("pushed above");
            record.new = new;
            record.old = old;
            if let Verdict::Trip(why) = verdict {
                record.ended_ms = now_ms();
                record.verdict = format!("aborted: {why}");
                let e = StepError::Canary {
                    what: what.to_string(),
                    why,
                };
                tracing::warn!(service = self.name(), deploy_id = %swap.release.deploy_id, kind, share_pct, "{e}");
                return Err(e);
            }
            if done {
                record.ended_ms = now_ms();
                record.verdict = match verdict {
                    Verdict::TooFew => format!(
                        "passed: too few requests to judge ({} of {} needed)",
                        new.requests, limits.min_requests
                    ),
                    _ => "passed".into(),
                };
                tracing::info!(service = self.name(), deploy_id = %swap.release.deploy_id, kind, share_pct, new_requests = new.requests, new_errors = new.errors, old_requests = old.requests, old_errors = old.errors, "{what} passed");
                return Ok(());
            }
            ledger.show(swap);
        }
    }

    async fn read_figures(&self, what: &str) -> Result<canary::Reading, StepError> {
        self.balancer
            .figures()
            .await
            .map(canary::reading)
            .map_err(|source| StepError::Figures {
                what: what.to_string(),
                source,
            })
    }
}
