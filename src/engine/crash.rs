//! Crash points, for the tests that kill the real daemon at the worst moments: right after a
//! phase is journaled and before it acts, and right after a report is written and before the
//! journal closes the swap. `HOTSWAP_CRASH_AT=journaled:<phase>` or `=reported` makes the daemon
//! SIGKILL itself there. Debug builds only: a release build (what the packages ship) has no such
//! switch, and reads no such variable.

/// Kills the process (SIGKILL, as the OOM killer or a power cut would: nothing runs after it)
/// when `HOTSWAP_CRASH_AT` names this point.
#[cfg(debug_assertions)]
pub fn at(point: &str, detail: &str) {
    static WANTED: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let wanted = WANTED.get_or_init(|| std::env::var("HOTSWAP_CRASH_AT").ok());
    let Some(wanted) = wanted.as_deref() else {
        return;
    };
    let here = if detail.is_empty() {
        point.to_string()
    } else {
        format!("{point}:{detail}")
    };
    if wanted == here {
        tracing::warn!(point = %here, "HOTSWAP_CRASH_AT: killing myself here");
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}

#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn at(_point: &str, _detail: &str) {}
