//! Time as the engine keeps it: unix milliseconds, so a deadline journaled by one run of the daemon
//! means the same instant to the next; and the tokio instant a wait needs for such a deadline.

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// Milliseconds since the Unix epoch.
pub type UnixMs = u64;

pub fn now_ms() -> UnixMs {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A duration in whole milliseconds (saturating), as swaps journal their budgets.
pub fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The tokio instant of a journaled deadline (now, when it has passed).
pub fn instant_of(deadline: UnixMs) -> Instant {
    Instant::now() + Duration::from_millis(deadline.saturating_sub(now_ms()))
}

/// Runs `work` until `deadline`; `late` makes the error when the deadline comes first.
pub async fn within<T, E>(
    deadline: UnixMs,
    work: impl Future<Output = Result<T, E>>,
    late: impl FnOnce() -> E,
) -> Result<T, E> {
    match tokio::time::timeout_at(instant_of(deadline), work).await {
        Ok(r) => r,
        Err(_) => Err(late()),
    }
}

/// A wait that grows after each try, up to a limit: every retry of the daemon waits through
/// one. `next` gives the wait due now and grows the next one; `reset` starts again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    due: Duration,
    /// The growth per try, as a fraction (2/1 doubles, 3/2 grows by half).
    grow: (u32, u32),
}

impl Backoff {
    /// From `first`, doubling up to `max`.
    pub const fn doubling(first: Duration, max: Duration) -> Backoff {
        Backoff {
            first,
            max,
            due: first,
            grow: (2, 1),
        }
    }

    /// From `first`, growing by half up to `max` (polling that starts fast).
    pub const fn by_half(first: Duration, max: Duration) -> Backoff {
        Backoff {
            first,
            max,
            due: first,
            grow: (3, 2),
        }
    }

    /// The wait due now; the next one grows.
    pub fn next(&mut self) -> Duration {
        let now = self.due.min(self.max);
        self.due = (now * self.grow.0 / self.grow.1).min(self.max);
        now
    }

    /// The wait `next` would give, without growing it.
    pub fn peek(&self) -> Duration {
        self.due
    }

    /// Back to the first wait (after a success).
    pub fn reset(&mut self) {
        self.due = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn within_gives_the_late_error_when_the_deadline_comes_first() {
        let slow = async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok::<_, String>(1)
        };
        let r = within(now_ms() + 20, slow, || "late".to_string()).await;
        assert_eq!(r, Err("late".to_string()));
        let fast = async { Ok::<_, String>(2) };
        assert_eq!(within(now_ms() + 1000, fast, || "late".into()).await, Ok(2));
    }

    #[test]
    fn a_passed_deadline_is_now() {
        let before = Instant::now();
        assert!(instant_of(0) >= before);
        assert!(instant_of(0) <= Instant::now() + Duration::from_millis(1));
    }

    #[test]
    fn a_backoff_grows_to_its_limit_and_starts_again_when_reset() {
        let ms = Duration::from_millis;
        let mut b = Backoff::doubling(ms(100), ms(500));
        let waits: Vec<_> = (0..5).map(|_| b.next()).collect();
        assert_eq!(waits, [ms(100), ms(200), ms(400), ms(500), ms(500)]);
        assert_eq!(b.peek(), ms(500));
        b.reset();
        assert_eq!(b.next(), ms(100));
        let mut half = Backoff::by_half(ms(100), ms(300));
        let waits: Vec<_> = (0..4).map(|_| half.next()).collect();
        assert_eq!(waits, [ms(100), ms(150), ms(225), ms(300)]);
        // a first wait above the limit is the limit
        assert_eq!(Backoff::doubling(ms(900), ms(500)).next(), ms(500));
    }
}
