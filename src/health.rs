//! End-to-end HTTP health gate: a fresh connection per attempt, adaptive polling (fast at first),
//! per-attempt timeout, N consecutive passes, a deadline, and proof that the new release answers.

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::config::{HealthSettings, ReleaseMatch};

/// Bodies larger than this are not read: a health route answers small.
const MAX_BODY: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passed {
    /// The body of the last passing response (what the new release said about itself).
    pub body: String,
    pub attempts: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("health gate on http://{addr}{path} did not pass within {deadline_ms} ms after {attempts} attempts; last: {last}")]
pub struct GateFailed {
    pub addr: SocketAddr,
    pub path: String,
    pub deadline_ms: u128,
    pub attempts: u32,
    pub last: String,
}

/// One attempt: Ok(body) when the status and release match, Err(why not) otherwise.
pub async fn probe(
    addr: SocketAddr,
    settings: &HealthSettings,
    version: &str,
) -> Result<String, String> {
    let attempt = async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        stream.set_nodelay(true).ok();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let conn = tokio::spawn(conn);
        let req = hyper::Request::get(settings.path.as_str())
            .header(hyper::header::HOST, addr.to_string())
            .header(hyper::header::CONNECTION, "close")
            .header(hyper::header::USER_AGENT, "hotswapd-health")
            .body(Empty::<Bytes>::new())
            .expect("static request parts are valid");
        let res = sender
            .send_request(req)
            .await
            .map_err(|e| format!("request: {e}"))?;
        let status = res.status().as_u16();
        let body = Limited::new(res.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| format!("reading body: {e}"))?
            .to_bytes();
        conn.abort();
        let body = String::from_utf8_lossy(&body).into_owned();
        if status != settings.expect_status {
            return Err(format!(
                "status {status} (expected {}): {}",
                settings.expect_status,
                snippet(&body)
            ));
        }
        check_release(&settings.release_match, version, &body)?;
        Ok(body)
    };
    match tokio::time::timeout(settings.attempt_timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "no answer within {} ms",
            settings.attempt_timeout.as_millis()
        )),
    }
}

fn snippet(body: &str) -> String {
    let s: String = body.chars().take(200).collect();
    s.trim().to_string()
}

/// Does the body prove the response comes from `version`?
pub fn check_release(m: &ReleaseMatch, version: &str, body: &str) -> Result<(), String> {
    match m {
        ReleaseMatch::None => Ok(()),
        ReleaseMatch::BodyContains(_) => {
            let want = m.expected(version).unwrap_or_default();
            if body.contains(&want) {
                Ok(())
            } else {
                Err(format!("body does not contain {want:?}: {}", snippet(body)))
            }
        }
        ReleaseMatch::JsonField { field, .. } => {
            let want = m.expected(version).unwrap_or_default();
            let json: serde_json::Value = serde_json::from_str(body)
                .map_err(|e| format!("body is not JSON ({e}): {}", snippet(body)))?;
            let got = field.split('.').try_fold(&json, |v, k| v.get(k));
            match got {
                Some(serde_json::Value::String(s)) if *s == want => Ok(()),
                Some(v) if !v.is_string() && v.to_string() == want => Ok(()),
                Some(v) => Err(format!(
                    "field {field} is {v}, expected {want:?} (an older release answering?)"
                )),
                None => Err(format!("field {field} missing: {}", snippet(body))),
            }
        }
    }
}

/// The delay before the next attempt: starts at `min`, grows by half after each miss up to `max`;
/// after a pass the next attempt follows at `min` so consecutive passes come quickly.
fn next_interval(current: Duration, passed: bool, min: Duration, max: Duration) -> Duration {
    if passed {
        min
    } else {
        (current + current / 2).clamp(min, max)
    }
}

/// Told of each failed attempt: how many attempts so far, and what the last one answered.
pub type OnMiss<'a> = &'a (dyn Fn(u32, &str) + Send + Sync);

/// The health gate as the engine sees it; `Http` is the real one.
pub trait Prober: Send + Sync + 'static {
    fn gate(
        &self,
        addr: SocketAddr,
        settings: &HealthSettings,
        version: &str,
        deadline: Instant,
        on_miss: OnMiss<'_>,
    ) -> impl std::future::Future<Output = Result<Passed, GateFailed>> + Send;
    /// Sends `method path` to the app at `addr` (a drain notice) and returns the status it
    /// answered; Err says what went wrong.
    fn notify(
        &self,
        addr: SocketAddr,
        method: &str,
        path: &str,
    ) -> impl std::future::Future<Output = Result<u16, String>> + Send;
}

/// End-to-end HTTP checks (`gate` below).
#[derive(Debug, Clone, Copy, Default)]
pub struct Http;

impl Prober for Http {
    async fn gate(
        &self,
        addr: SocketAddr,
        settings: &HealthSettings,
        version: &str,
        deadline: Instant,
        on_miss: OnMiss<'_>,
    ) -> Result<Passed, GateFailed> {
        gate(addr, settings, version, deadline, on_miss).await
    }

    async fn notify(&self, addr: SocketAddr, method: &str, path: &str) -> Result<u16, String> {
        let attempt = async {
            let stream = TcpStream::connect(addr)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| format!("handshake: {e}"))?;
            let conn = tokio::spawn(conn);
            let req = hyper::Request::builder()
                .method(method)
                .uri(path)
                .header(hyper::header::HOST, addr.to_string())
                .header(hyper::header::CONNECTION, "close")
                .header(hyper::header::USER_AGENT, "hotswapd-drain")
                .body(Empty::<Bytes>::new())
                .map_err(|e| format!("{method} {path}: {e}"))?;
            let res = sender
                .send_request(req)
                .await
                .map_err(|e| format!("request: {e}"))?;
            conn.abort();
            Ok(res.status().as_u16())
        };
        tokio::time::timeout(NOTIFY_TIMEOUT, attempt)
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {} s", NOTIFY_TIMEOUT.as_secs())))
    }
}

/// How long a drain notice may take to be answered.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(2);

/// Polls until `consecutive_passes` attempts in a row pass, or `deadline`; `on_miss` hears of
/// each attempt that did not pass.
pub async fn gate(
    addr: SocketAddr,
    settings: &HealthSettings,
    version: &str,
    deadline: Instant,
    on_miss: OnMiss<'_>,
) -> Result<Passed, GateFailed> {
    let started = Instant::now();
    let mut interval = settings.min_interval;
    let mut attempts = 0;
    let mut streak = 0;
    let mut last = String::from("no attempt made");
    loop {
        attempts += 1;
        let result = tokio::time::timeout_at(deadline, probe(addr, settings, version)).await;
        let passed = match result {
            Ok(Ok(body)) => {
                streak += 1;
                if streak >= settings.consecutive_passes {
                    return Ok(Passed { body, attempts });
                }
                true
            }
            Ok(Err(why)) => {
                streak = 0;
                on_miss(attempts, &why);
                last = why;
                false
            }
            Err(_) => {
                last = format!("deadline passed during an attempt; before that: {last}");
                false
            }
        };
        interval = next_interval(
            interval,
            passed,
            settings.min_interval,
            settings.max_interval,
        );
        if Instant::now() + interval >= deadline {
            return Err(GateFailed {
                addr,
                path: settings.path.clone(),
                deadline_ms: (deadline - started).as_millis(),
                attempts,
                last,
            });
        }
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_field_match_names_what_it_saw() {
        let m = ReleaseMatch::JsonField {
            field: "release".into(),
            equals: "{version}".into(),
        };
        assert!(check_release(&m, "2", r#"{"release":"2"}"#).is_ok());
        let err = check_release(&m, "2", r#"{"release":"1"}"#).unwrap_err();
        assert!(err.contains("\"1\"") && err.contains("\"2\""), "{err}");
        assert!(check_release(&m, "2", "oops")
            .unwrap_err()
            .contains("not JSON"));
        let nested = ReleaseMatch::JsonField {
            field: "build.version".into(),
            equals: "v{version}".into(),
        };
        assert!(check_release(&nested, "7", r#"{"build":{"version":"v7"}}"#).is_ok());
        let num = ReleaseMatch::JsonField {
            field: "n".into(),
            equals: "{version}".into(),
        };
        assert!(check_release(&num, "3", r#"{"n":3}"#).is_ok());
    }

    #[test]
    fn body_contains_match() {
        let m = ReleaseMatch::BodyContains("version={version}".into());
        assert!(check_release(&m, "9", "ok version=9").is_ok());
        assert!(check_release(&m, "9", "ok version=8").is_err());
    }

    #[test]
    fn polling_starts_fast_and_backs_off_to_the_cap() {
        let (min, max) = (Duration::from_millis(2), Duration::from_millis(50));
        let mut i = min;
        let mut seen = vec![];
        for _ in 0..12 {
            i = next_interval(i, false, min, max);
            seen.push(i.as_millis());
        }
        assert_eq!(seen[0], 3);
        assert!(seen.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(*seen.last().unwrap(), 50);
        assert_eq!(next_interval(max, true, min, max), min);
    }

    #[tokio::test]
    async fn gate_fails_at_deadline_against_a_closed_port_and_says_why() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let settings = HealthSettings {
            path: "/health".into(),
            expect_status: 200,
            release_match: ReleaseMatch::None,
            attempt_timeout: Duration::from_millis(100),
            consecutive_passes: 1,
            deadline: Duration::from_millis(200),
            min_interval: Duration::from_millis(2),
            max_interval: Duration::from_millis(20),
        };
        let misses = std::sync::atomic::AtomicU32::new(0);
        let on_miss = |n: u32, why: &str| {
            assert!(why.contains("connect"), "{why}");
            misses.store(n, std::sync::atomic::Ordering::Relaxed);
        };
        let err = gate(
            addr,
            &settings,
            "1",
            Instant::now() + settings.deadline,
            &on_miss,
        )
        .await
        .unwrap_err();
        assert!(err.attempts > 3, "{err}");
        assert_eq!(misses.into_inner(), err.attempts, "every miss was told");
        assert!(err.last.contains("connect"), "{err}");
    }
}
