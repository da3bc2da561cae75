//! An honest keep-alive HTTP/1.1 load client for tests and benchmarks.
//!
//! Each connection is a tokio task that sends requests back to back (or at a
//! target rate), reusing its connection. Every attempt is counted exactly
//! once: there are no silent retries. A request counts as failed on a connect
//! error, a send error, the connection closing before or while answering, a
//! non-2xx status, a body read error, or the 2 s per-request timeout. After a
//! transport error (or timeout) the connection is dropped and re-established
//! for the next request; after a non-2xx status whose body was read completely
//! the connection is kept. A response carrying `Connection: close` is counted
//! normally and the connection is then replaced without counting anything.
//!
//! The release that answered is parsed from the JSON body `{"release":"..."}`
//! (bodies without one are counted under `"?"`).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Per-request timeout: connect (when needed) + send + full response body.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause after a failed attempt before the next one on the same connection
/// task, so a dead target doesn't turn into a busy loop.
pub const FAILURE_BACKOFF: Duration = Duration::from_millis(10);
/// How many failure descriptions are kept.
pub const MAX_FAILURES_KEPT: usize = 20;

/// Counters of a load run (cumulative since `Load::start`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Completed attempts: `ok + failed`.
    pub requests: u64,
    /// 2xx responses with the full body read.
    pub ok: u64,
    pub failed: u64,
    /// The first 20 failures: `+<secs since start>s conn#<i>: <what>`.
    pub failures: Vec<String>,
    /// Successful responses by the release in their body.
    pub by_release: BTreeMap<String, u64>,
    /// Release of the most recent successful response.
    pub last_release_seen: Option<String>,
    /// When each release first answered (ms since the Unix epoch).
    pub first_seen_ms: BTreeMap<String, u64>,
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "requests={} ok={} failed={} by_release={:?} last_release={:?}",
            self.requests, self.ok, self.failed, self.by_release, self.last_release_seen
        )?;
        if !self.failures.is_empty() {
            write!(f, "\nfirst failures:")?;
            for fl in &self.failures {
                write!(f, "\n  {fl}")?;
            }
        }
        Ok(())
    }
}

/// A point in a load run; see [`Load::mark`].
#[derive(Debug, Clone)]
pub struct Marker {
    pub at: Instant,
    requests: u64,
    ok: u64,
    failed: u64,
    by_release: BTreeMap<String, u64>,
}

struct Shared {
    started: Instant,
    stats: Mutex<Stats>,
}

impl Shared {
    fn record_ok(&self, release: String) {
        let mut s = self.stats.lock().unwrap();
        s.requests += 1;
        s.ok += 1;
        *s.by_release.entry(release.clone()).or_insert(0) += 1;
        if !s.first_seen_ms.contains_key(&release) {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            s.first_seen_ms.insert(release.clone(), now);
        }
        s.last_release_seen = Some(release);
    }

    fn record_failure(&self, conn: usize, what: String) {
        let t = self.started.elapsed().as_secs_f64();
        let mut s = self.stats.lock().unwrap();
        s.requests += 1;
        s.failed += 1;
        if s.failures.len() < MAX_FAILURES_KEPT {
            s.failures.push(format!("+{t:.3}s conn#{conn}: {what}"));
        }
    }
}

/// A running load; see the module docs.
pub struct Load {
    shared: Arc<Shared>,
    stop_tx: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Load {
    /// Starts `connections` keep-alive connections to `addr`, each sending
    /// `GET path` back to back. Must be called inside a tokio runtime.
    pub fn start(addr: SocketAddr, connections: usize, path: &str) -> Load {
        Load::start_with_rate(addr, connections, path, None)
    }

    /// Like [`Load::start`], optionally limited to about `rate` requests per
    /// second in total (spread evenly over the connections; a slow server
    /// lowers the achieved rate, missed slots are not caught up in bursts).
    pub fn start_with_rate(
        addr: SocketAddr,
        connections: usize,
        path: &str,
        rate: Option<u32>,
    ) -> Load {
        Load::start_with(addr, connections, path, rate, REQUEST_TIMEOUT)
    }

    /// Like [`Load::start_with_rate`], with a per-request timeout of `timeout` (the polling
    /// client of the hot-reload experiment counts 0.1 s as down).
    pub fn start_with(
        addr: SocketAddr,
        connections: usize,
        path: &str,
        rate: Option<u32>,
        timeout: Duration,
    ) -> Load {
        assert!(connections > 0, "Load needs at least one connection");
        let path = if path.starts_with('/') {
            path.to_string()
        } else {
            format!("/{path}")
        };
        let shared = Arc::new(Shared {
            started: Instant::now(),
            stats: Mutex::new(Stats::default()),
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        let period =
            rate.map(|r| Duration::from_secs_f64(connections as f64 / f64::from(r.max(1))));
        let tasks = (0..connections)
            .map(|i| {
                let offset = period
                    .map(|p| p.mul_f64(i as f64 / connections as f64))
                    .unwrap_or_default();
                tokio::spawn(conn_task(
                    i,
                    addr,
                    path.clone(),
                    period.map(|p| (offset, p)),
                    timeout,
                    Arc::clone(&shared),
                    stop_rx.clone(),
                ))
            })
            .collect();
        Load {
            shared,
            stop_tx,
            tasks,
        }
    }

    /// Time since the load started.
    pub fn elapsed(&self) -> Duration {
        self.shared.started.elapsed()
    }

    /// Current counters.
    pub fn snapshot(&self) -> Stats {
        self.shared.stats.lock().unwrap().clone()
    }

    /// Marks "now"; pair with [`Load::releases_since`] / [`Load::failed_since`].
    pub fn mark(&self) -> Marker {
        let s = self.shared.stats.lock().unwrap();
        Marker {
            at: Instant::now(),
            requests: s.requests,
            ok: s.ok,
            failed: s.failed,
            by_release: s.by_release.clone(),
        }
    }

    /// Successful responses per release completed after `marker` (releases
    /// with none are omitted).
    pub fn releases_since(&self, marker: &Marker) -> BTreeMap<String, u64> {
        let s = self.shared.stats.lock().unwrap();
        s.by_release
            .iter()
            .filter_map(|(rel, n)| {
                let before = marker.by_release.get(rel).copied().unwrap_or(0);
                (*n > before).then(|| (rel.clone(), n - before))
            })
            .collect()
    }

    /// Failed requests completed after `marker`.
    pub fn failed_since(&self, marker: &Marker) -> u64 {
        self.shared.stats.lock().unwrap().failed - marker.failed
    }

    /// Requests (ok + failed) completed after `marker`.
    pub fn requests_since(&self, marker: &Marker) -> u64 {
        self.shared.stats.lock().unwrap().requests - marker.requests
    }

    /// Stops the load: no new request is started; requests in flight finish
    /// (bounded by the 2 s request timeout) and are counted. Returns the
    /// final counters.
    pub async fn stop(mut self) -> Stats {
        let _ = self.stop_tx.send(true);
        let deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT + Duration::from_secs(1);
        for mut task in std::mem::take(&mut self.tasks) {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                task.abort();
            }
        }
        self.snapshot()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        let _ = self.stop_tx.send(true);
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// One client connection plus the task driving it.
struct Conn {
    sender: SendRequest<Empty<Bytes>>,
    driver: JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

async fn connect(addr: SocketAddr) -> Result<Conn, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect error: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake error: {e}"))?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(Conn { sender, driver })
}

enum Outcome {
    /// 2xx, body read. `close`: server said `Connection: close`.
    Ok { release: String, close: bool },
    /// Non-2xx, body read: the connection is still usable unless `close`.
    Status { what: String, close: bool },
    /// Transport failure: the connection must be replaced.
    Broken(String),
}

async fn one_request(slot: &mut Option<Conn>, addr: SocketAddr, path: &str) -> Outcome {
    if slot.is_none() {
        match connect(addr).await {
            Ok(c) => *slot = Some(c),
            Err(e) => return Outcome::Broken(e),
        }
    }
    let conn = slot.as_mut().expect("connection present");
    if let Err(e) = conn.sender.ready().await {
        return Outcome::Broken(format!(
            "connection closed before the request was sent: {e}"
        ));
    }
    let req = match hyper::Request::get(path)
        .header(hyper::header::HOST, addr.to_string())
        .header(hyper::header::USER_AGENT, "hotswap-test-load")
        .body(Empty::<Bytes>::new())
    {
        Ok(r) => r,
        Err(e) => return Outcome::Broken(format!("building request: {e}")),
    };
    let resp = match conn.sender.send_request(req).await {
        Ok(r) => r,
        Err(e) => {
            return Outcome::Broken(format!("send error / closed before answering: {e}"));
        }
    };
    let status = resp.status();
    let close = resp
        .headers()
        .get_all(hyper::header::CONNECTION)
        .iter()
        .any(|v| {
            v.to_str()
                .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
                .unwrap_or(false)
        });
    let body = match resp.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return Outcome::Broken(format!("body read error (status {status}): {e}")),
    };
    let release = parse_release(&body);
    if status.is_success() {
        Outcome::Ok {
            release: release.unwrap_or_else(|| "?".to_string()),
            close,
        }
    } else {
        Outcome::Status {
            what: format!(
                "status {} (release {})",
                status.as_u16(),
                release.as_deref().unwrap_or("?")
            ),
            close,
        }
    }
}

/// Extracts `release` from a JSON body like `{"release":"3", ...}`.
pub fn parse_release(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    match v.get("release")? {
        serde_json::Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

async fn conn_task(
    id: usize,
    addr: SocketAddr,
    path: String,
    pacing: Option<(Duration, Duration)>,
    timeout: Duration,
    shared: Arc<Shared>,
    mut stop_rx: watch::Receiver<bool>,
) {
    let mut ticker = pacing.map(|(offset, period)| {
        let mut t = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    let mut slot: Option<Conn> = None;
    loop {
        if *stop_rx.borrow() {
            break;
        }
        if let Some(t) = ticker.as_mut() {
            tokio::select! {
                _ = t.tick() => {}
                _ = stop_rx.changed() => break,
            }
        }
        let outcome = match tokio::time::timeout(timeout, one_request(&mut slot, addr, &path)).await
        {
            Ok(o) => o,
            Err(_) => Outcome::Broken(format!("timeout: no complete answer within {timeout:?}")),
        };
        let failed = match outcome {
            Outcome::Ok { release, close } => {
                shared.record_ok(release);
                if close {
                    slot = None;
                }
                false
            }
            Outcome::Status { what, close } => {
                shared.record_failure(id, what);
                if close {
                    slot = None;
                }
                true
            }
            Outcome::Broken(what) => {
                shared.record_failure(id, what);
                slot = None;
                true
            }
        };
        if failed {
            tokio::select! {
                _ = tokio::time::sleep(FAILURE_BACKOFF) => {}
                _ = stop_rx.changed() => break,
            }
        }
    }
}
