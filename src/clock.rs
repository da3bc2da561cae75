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
}
