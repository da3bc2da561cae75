//! The backoff of repairs: a release that dies again soon after a repair waits 1, 2, 4 … s
//! (up to `repair_backoff_max_secs`) before the next; a stable spell starts afresh.

use std::time::Duration;

use tokio::time::Instant;

/// The first wait before repairing again a release that died again soon after a repair.
pub(super) const BACKOFF_FIRST: Duration = Duration::from_secs(1);
/// A repaired release that serves this long without dying starts afresh (no wait).
const STABLE_AFTER: Duration = Duration::from_secs(10);
/// Repairs of the current release in a row, for the backoff.
#[derive(Debug, Default)]
pub struct Repairs {
    /// Repairs (and failed looks) in a row without a stable spell between them.
    pub(super) streak: u32,
    pub(super) last: Option<Instant>,
    /// Looks in a row that failed (Docker or HAProxy not answering).
    pub(super) look_failures: u32,
    /// When the walker looks again by itself (a repair or a look waiting out its backoff).
    pub next_try: Option<Instant>,
}

impl Repairs {
    /// The wait still due before repair number `streak + 1`, if any.
    pub(super) fn wait(&self, max: Duration, now: Instant) -> Option<Duration> {
        let last = self.last?;
        if self.streak == 0 || now.duration_since(last) >= STABLE_AFTER {
            return None;
        }
        let backoff = BACKOFF_FIRST
            .saturating_mul(1 << (self.streak - 1).min(16))
            .min(max);
        (last + backoff).checked_duration_since(now)
    }

    pub(super) fn attempted(&mut self, now: Instant) {
        if self
            .last
            .is_some_and(|l| now.duration_since(l) >= STABLE_AFTER)
        {
            self.streak = 0;
        }
        self.streak += 1;
        self.last = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_max_and_a_stable_spell_starts_afresh() {
        let max = Duration::from_secs(8);
        let t0 = Instant::now();
        let mut r = Repairs::default();
        assert_eq!(r.wait(max, t0), None, "the first repair does not wait");
        r.attempted(t0);
        assert_eq!(r.wait(max, t0), Some(Duration::from_secs(1)));
        let mut now = t0;
        let mut waits = Vec::new();
        for _ in 0..6 {
            let w = r.wait(max, now).unwrap();
            waits.push(w.as_secs());
            now += w;
            r.attempted(now);
        }
        assert_eq!(waits, [1, 2, 4, 8, 8, 8]);
        let later = now + STABLE_AFTER;
        assert_eq!(r.wait(max, later), None, "stable for a while: no wait");
        r.attempted(later);
        assert_eq!(r.streak, 1);
    }
}
