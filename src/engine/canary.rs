//! The canary's arithmetic, pure: server weights for a share of traffic, how many new containers a
//! step needs, a release's figures over a step from two readings of HAProxy's counters, and the
//! verdict on them.

use std::collections::BTreeMap;

use super::phase::{Figures, StepRecord};
use crate::balancer::ServerFigures;
use crate::config::CanaryLimits;

/// The weight of a server at full share (HAProxy's maximum is 256): the heavier release's servers
/// get it, the lighter one's a fraction of it.
pub const FULL_WEIGHT: u16 = 100;

/// Per-server weights (new, old) giving the new release `share_pct` of the traffic when it has
/// `n_new` servers and the old release `n_old`: `n_new * w_new / (n_new * w_new + n_old * w_old)`
/// is the share, to within HAProxy's integer weights.
pub fn weights(share_pct: u8, n_new: usize, n_old: usize) -> (u16, u16) {
    let share = u64::from(share_pct.min(100));
    if share == 0 || n_new == 0 {
        return (0, FULL_WEIGHT);
    }
    if share == 100 || n_old == 0 {
        return (FULL_WEIGHT, 0);
    }
    let (n_new, n_old) = (n_new as u64, n_old as u64);
    let full = u64::from(FULL_WEIGHT);
    // w_new / w_old = share * n_old / ((100 - share) * n_new)
    let (num, den) = (share * n_old, (100 - share) * n_new);
    if num <= den {
        // the new release's servers are the lighter ones: old at full weight
        let w_new = (full * num + den / 2) / den;
        (w_new.max(1) as u16, FULL_WEIGHT)
    } else {
        // the old release's servers are the lighter ones: new at full weight
        let w_old = (full * den + num / 2) / num;
        (FULL_WEIGHT, w_old.max(1) as u16)
    }
}

/// How many new containers serve at a step: the share of `replicas`, rounded up to whole batches,
/// at least one batch (the canary), at most `replicas`.
pub fn needed_new(share_pct: u8, replicas: usize, batch: usize) -> usize {
    let batch = batch.max(1);
    let want = (usize::from(share_pct.min(100)) * replicas).div_ceil(100);
    (want.div_ceil(batch) * batch).clamp(batch.min(replicas), replicas)
}

/// A reading of every server's counters, by server name.
pub type Reading = BTreeMap<String, ServerFigures>;

pub fn reading(figures: Vec<ServerFigures>) -> Reading {
    figures.into_iter().map(|f| (f.name.clone(), f)).collect()
}

/// A release's figures between two readings, summed over its servers. A server missing from the
/// first reading (added during the step) counts from zero. The response time is the average of
/// the servers' own averages, weighted by the requests each took in the step.
pub fn release_figures(before: &Reading, after: &Reading, servers: &[String]) -> Figures {
    let mut out = Figures::default();
    let (mut weighted, mut weight, mut max_rtime) = (0u64, 0u64, 0u64);
    for name in servers {
        let Some(a) = after.get(name) else { continue };
        let zero = ServerFigures::default();
        let b = before.get(name).unwrap_or(&zero);
        // counters only grow; a server re-created under the same name starts again from zero
        let d = |x: u64, y: u64| if x >= y { x - y } else { x };
        let requests = d(
            a.responses + a.failed_connections,
            b.responses + b.failed_connections,
        );
        out.requests += requests;
        out.errors += d(a.errors, b.errors);
        weighted += a.rtime_ms * requests;
        weight += requests;
        max_rtime = max_rtime.max(a.rtime_ms);
    }
    out.rtime_ms = weighted.checked_div(weight).unwrap_or(max_rtime);
    out
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// The new release took fewer requests than the limits need to judge.
    TooFew,
    /// Worse than the limits allow: why, with the figures.
    Trip(String),
}

fn pct(bp: u64) -> String {
    format!("{}.{:02} %", bp / 100, bp % 100)
}

/// Judges the new release's figures over a step against the old release's (over the same step
/// when it served enough requests, else `old_reference` from an earlier step).
pub fn judge(new: &Figures, old: Option<&Figures>, limits: &CanaryLimits) -> Verdict {
    if new.requests < limits.min_requests.max(1) {
        return Verdict::TooFew;
    }
    let new_bp = new.error_bp();
    let old_bp = old.map(|o| o.error_bp()).unwrap_or(0);
    let max_bp = (limits.max_error_pct * 100.0).round() as u64;
    let margin_bp = (limits.error_margin_pct * 100.0).round() as u64;
    if new_bp > max_bp && new_bp > old_bp + margin_bp {
        return Verdict::Trip(format!(
            "the new release failed {} of {} requests ({}), above the limit of {} and the old release's {} by more than {} points",
            new.errors,
            new.requests,
            pct(new_bp),
            pct(max_bp),
            pct(old_bp),
            pct(margin_bp).trim_end_matches(" %"),
        ));
    }
    let old_rtime = old.map(|o| o.rtime_ms).unwrap_or(0);
    let allowed =
        (old_rtime.max(limits.latency_floor_ms) as f64 * limits.max_latency_factor) as u64;
    if new.rtime_ms > limits.latency_floor_ms && new.rtime_ms > allowed {
        return Verdict::Trip(format!(
            "the new release's average response time is {} ms, above {} times the old release's {} ms (floor {} ms)",
            new.rtime_ms, limits.max_latency_factor, old_rtime, limits.latency_floor_ms
        ));
    }
    Verdict::Pass
}

/// The old release's figures to compare with: over this step when it served enough requests,
/// else over the latest earlier step where it did.
pub fn old_reference<'a>(
    this_step: &'a Figures,
    earlier: &'a [StepRecord],
    limits: &CanaryLimits,
) -> Option<&'a Figures> {
    let enough = |f: &Figures| f.requests >= limits.min_requests.max(1);
    if enough(this_step) {
        return Some(this_step);
    }
    earlier.iter().rev().map(|s| &s.old).find(|f| enough(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(p: u8, n_new: usize, n_old: usize) -> f64 {
        let (wn, wo) = weights(p, n_new, n_old);
        let (tn, to) = (wn as f64 * n_new as f64, wo as f64 * n_old as f64);
        100.0 * tn / (tn + to)
    }

    #[test]
    fn weights_give_the_share_asked_for() {
        assert_eq!(weights(100, 1, 1), (100, 0));
        assert_eq!(weights(0, 1, 1), (0, 100));
        assert_eq!(weights(50, 1, 1), (100, 100));
        assert_eq!(weights(5, 1, 1), (5, 100));
        assert_eq!(weights(75, 1, 1), (100, 33));
        for (p, n, o) in [
            (5, 1, 4),
            (25, 1, 4),
            (50, 2, 4),
            (10, 1, 1),
            (90, 4, 1),
            (1, 1, 8),
        ] {
            let got = share(p, n, o);
            assert!(
                (got - p as f64).abs() < 1.0,
                "{p}% with {n} new, {o} old: {got}"
            );
        }
        // a share never rounds to nothing
        assert_eq!(weights(1, 8, 1), (1, 100));
    }

    #[test]
    fn a_step_needs_the_share_of_the_replicas_in_whole_batches() {
        assert_eq!(needed_new(5, 4, 1), 1);
        assert_eq!(needed_new(25, 4, 1), 1);
        assert_eq!(needed_new(50, 4, 1), 2);
        assert_eq!(needed_new(51, 4, 1), 3);
        assert_eq!(needed_new(100, 4, 1), 4);
        assert_eq!(needed_new(5, 4, 2), 2);
        assert_eq!(needed_new(60, 5, 2), 4);
        assert_eq!(needed_new(100, 5, 2), 5);
        assert_eq!(needed_new(5, 1, 1), 1);
    }

    fn sf(name: &str, responses: u64, errors: u64, rtime: u64) -> ServerFigures {
        ServerFigures {
            name: name.into(),
            responses,
            errors,
            failed_connections: 0,
            rtime_ms: rtime,
            weight: 1,
        }
    }

    #[test]
    fn release_figures_are_differences_summed_over_its_servers() {
        let before = reading(vec![sf("a", 100, 1, 2), sf("b", 50, 0, 2)]);
        let after = reading(vec![
            sf("a", 150, 6, 4),
            sf("b", 100, 0, 2),
            sf("c", 50, 0, 10),
        ]);
        let old = release_figures(&before, &after, &["a".into(), "b".into()]);
        assert_eq!((old.requests, old.errors, old.rtime_ms), (100, 5, 3));
        // a server added during the step counts from zero
        let new = release_figures(&before, &after, &["c".into()]);
        assert_eq!((new.requests, new.rtime_ms), (50, 10));
    }

    fn fig(requests: u64, errors: u64, rtime: u64) -> Figures {
        Figures {
            requests,
            errors,
            rtime_ms: rtime,
        }
    }

    #[test]
    fn a_canary_trips_on_errors_above_the_limit_and_the_old_release() {
        let l = CanaryLimits::default();
        let v = judge(&fig(200, 40, 2), Some(&fig(2000, 0, 2)), &l);
        let Verdict::Trip(why) = v else {
            panic!("{v:?}")
        };
        assert!(why.contains("failed 40 of 200 requests (20.00 %)"), "{why}");
        // as bad as the old release: not the canary's fault
        assert_eq!(
            judge(&fig(200, 4, 2), Some(&fig(2000, 40, 2)), &l),
            Verdict::Pass
        );
        // under the limit
        assert_eq!(
            judge(&fig(1000, 5, 2), Some(&fig(2000, 0, 2)), &l),
            Verdict::Pass
        );
        // too few requests to say
        assert_eq!(judge(&fig(10, 10, 2), None, &l), Verdict::TooFew);
    }

    #[test]
    fn a_canary_trips_on_response_time_above_the_factor_and_floor() {
        let l = CanaryLimits::default();
        let v = judge(&fig(100, 0, 90), Some(&fig(100, 0, 30)), &l);
        assert!(
            matches!(v, Verdict::Trip(ref w) if w.contains("90 ms")),
            "{v:?}"
        );
        assert_eq!(
            judge(&fig(100, 0, 50), Some(&fig(100, 0, 30)), &l),
            Verdict::Pass
        );
        // a few ms against one: noise under the floor (20 ms, times 2)
        assert_eq!(
            judge(&fig(100, 0, 15), Some(&fig(100, 0, 1)), &l),
            Verdict::Pass
        );
    }

    #[test]
    fn the_old_reference_falls_back_to_the_last_step_it_served() {
        let l = CanaryLimits::default();
        let rec = |old: Figures| StepRecord {
            kind: "ramp".into(),
            share_pct: 50,
            started_ms: 0,
            ended_ms: 1,
            new: Figures::default(),
            old,
            verdict: "passed".into(),
        };
        let earlier = vec![rec(fig(500, 1, 3)), rec(fig(300, 2, 4))];
        let now = fig(0, 0, 4);
        assert_eq!(old_reference(&now, &earlier, &l), Some(&earlier[1].old));
        let busy = fig(100, 0, 4);
        assert_eq!(old_reference(&busy, &earlier, &l), Some(&busy));
        assert_eq!(old_reference(&now, &[], &l), None);
    }
}
