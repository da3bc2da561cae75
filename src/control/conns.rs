//! How many connections the control socket holds, and which one gives way when it is full.
//!
//! The socket must answer `status` however many clients hold connections open, so connections
//! are bounded and an idle one is never worth more than a new one:
//! - a connection that sends nothing for `idle_timeout` (before its first request or between
//!   keep-alive requests) is closed; a request being handled (a `wait` long poll) is not idle;
//! - at `max_connections`, a new connection takes the place of the one idle the longest, which
//!   is closed (`graceful_shutdown`: at once when nothing is in progress);
//! - only when every connection is busy with a request is a new one refused: a short 503, then
//!   closed. A closing connection still holds its descriptor until its task has run, which a
//!   burst of new connections on a loaded host can outpace, so up to `3 * max_connections` are
//!   allowed beyond the bound (the soft descriptor limit is raised at start); past that, and
//!   past `MAX_REFUSING` 503s being written, a new connection is closed without a word.
//!
//! Descriptors are shared with the engine (Docker, HAProxy, health checks, journal), so the
//! bound is derived from the process's descriptor limit (`bound_for_nofile`).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::sync::{watch, Notify, Semaphore};
use tokio::time::Instant;

/// The most connections the control socket serves at once (fewer when descriptors are scarce).
pub const MAX_CONNECTIONS: usize = 256;
/// A connection that sends nothing for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Descriptors left to the engine whatever the socket does.
pub const ENGINE_FDS: u64 = 512;
/// A request's headers must arrive within this (hyper's own timer).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// What a connection told to close gets to finish a response in progress.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// 503s being written at once; past this a refused connection is just closed.
const MAX_REFUSING: usize = 16;
/// What a refused connection gets to send its request and read the 503.
const REFUSE_BUDGET: Duration = Duration::from_secs(1);

pub type Reply = Response<Full<Bytes>>;

/// A JSON answer.
pub(super) fn json(status: StatusCode, body: &impl serde::Serialize) -> Reply {
    let bytes = serde_json::to_vec(body).expect("responses serialize");
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(bytes)))
        .expect("static response parts are valid")
}

/// An error answer: `{"error": message}`.
pub(super) fn error(status: StatusCode, message: impl Into<String>) -> Reply {
    json(
        status,
        &crate::model::api::ErrorBody {
            error: message.into(),
        },
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub max_connections: usize,
    pub idle_timeout: Duration,
    /// A request's headers must arrive within this of its first byte (or of the connection).
    pub header_timeout: Duration,
}

impl Bounds {
    /// The production bounds under a soft descriptor limit of `nofile`.
    pub fn for_nofile(nofile: u64) -> Bounds {
        Bounds {
            max_connections: bound_for_nofile(nofile),
            idle_timeout: IDLE_TIMEOUT,
            header_timeout: HEADER_READ_TIMEOUT,
        }
    }

    /// Connections allowed beyond the bound while others close.
    fn closing_allowance(&self) -> usize {
        3 * self.max_connections
    }
}

/// The connection bound under a descriptor limit: `MAX_CONNECTIONS`, or half of what is left
/// after `ENGINE_FDS` when that is less (the other half covers closing connections, 503s and the
/// listener), never below 4.
pub fn bound_for_nofile(nofile: u64) -> usize {
    let half = nofile.saturating_sub(ENGINE_FDS) / 2;
    usize::try_from(half)
        .unwrap_or(usize::MAX)
        .clamp(4, MAX_CONNECTIONS)
}

/// One open connection as the table sees it.
#[derive(Debug)]
struct Slot {
    /// Since when nothing is being handled; None while a request is.
    idle_since: watch::Sender<Option<Instant>>,
    /// Told to close (it gave way to a newer connection).
    closing: AtomicBool,
    close: Notify,
}

impl Slot {
    fn idle_since(&self) -> Option<Instant> {
        *self.idle_since.borrow()
    }
}

/// Every open connection of the control socket.
#[derive(Debug)]
pub struct Table {
    bounds: Bounds,
    slots: Mutex<Slots>,
    refusing: Arc<Semaphore>,
}

#[derive(Debug, Default)]
struct Slots {
    next_id: u64,
    open: BTreeMap<u64, Arc<Slot>>,
}

/// What a new connection gets.
#[derive(Debug)]
pub enum Admission {
    /// Served; the ticket holds its place until dropped.
    Admitted(Ticket),
    /// Every connection is busy with a request: answer 503 and close.
    Busy,
    /// Not even a 503 fits: close at once.
    Shed,
}

/// A connection's place in the table, given back when dropped.
#[derive(Debug)]
pub struct Ticket {
    table: Arc<Table>,
    id: u64,
    slot: Arc<Slot>,
}

/// Marks its connection busy while it lives (one per request being handled).
pub struct BusyGuard(Arc<Slot>);

impl BusyGuard {
    fn new(slot: &Arc<Slot>) -> BusyGuard {
        slot.idle_since.send_replace(None);
        BusyGuard(slot.clone())
    }
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.idle_since.send_replace(Some(Instant::now()));
    }
}

impl Table {
    pub fn new(bounds: Bounds) -> Arc<Table> {
        Arc::new(Table {
            bounds,
            slots: Mutex::new(Slots::default()),
            refusing: Arc::new(Semaphore::new(MAX_REFUSING)),
        })
    }

    /// Connections open now (closing ones included).
    pub fn open(&self) -> usize {
        self.slots.lock().expect("connection table").open.len()
    }

    /// Admits a new connection, telling the connection idle the longest to close when the
    /// table is full.
    pub fn admit(self: &Arc<Self>, now: Instant) -> Admission {
        let mut slots = self.slots.lock().expect("connection table");
        let open = slots.open.len();
        if open >= self.bounds.max_connections {
            let victim = slots
                .open
                .iter()
                .filter(|(_, s)| !s.closing.load(Ordering::Relaxed))
                .filter_map(|(id, s)| s.idle_since().map(|t| (t, *id, s)))
                .min_by_key(|(t, id, _)| (*t, *id))
                .map(|(_, _, s)| s.clone());
            let room = open < self.bounds.max_connections + self.bounds.closing_allowance();
            match victim {
                Some(victim) if room => {
                    victim.closing.store(true, Ordering::Relaxed);
                    victim.close.notify_one();
                }
                Some(_) => return Admission::Shed,
                None => return Admission::Busy,
            }
        }
        let id = slots.next_id;
        slots.next_id += 1;
        let slot = Arc::new(Slot {
            idle_since: watch::Sender::new(Some(now)),
            closing: AtomicBool::new(false),
            close: Notify::new(),
        });
        slots.open.insert(id, slot.clone());
        Admission::Admitted(Ticket {
            table: self.clone(),
            id,
            slot,
        })
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.table
            .slots
            .lock()
            .expect("connection table")
            .open
            .remove(&self.id);
    }
}

impl Ticket {
    /// Marks the connection busy until the guard is dropped (`serve` does this per request).
    pub fn busy(&self) -> BusyGuard {
        BusyGuard::new(&self.slot)
    }

    pub fn is_closing(&self) -> bool {
        self.slot.closing.load(Ordering::Relaxed)
    }

    /// Resolves when the connection should close: told to (it gave way), or idle for the
    /// table's idle timeout.
    async fn until_close(&self) -> &'static str {
        let mut idle = self.slot.idle_since.subscribe();
        let idle_timeout = self.table.bounds.idle_timeout;
        loop {
            if self.is_closing() {
                return "gave way to a newer connection";
            }
            let since = *idle.borrow_and_update();
            // busy: only a change can make it idle again
            let deadline = since.map(|t| t + idle_timeout);
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = self.slot.close.notified() => return "gave way to a newer connection",
                _ = sleep => return "idle",
                _ = idle.changed() => continue,
            }
        }
    }
}

/// Serves one admitted connection with `handle`, until the client closes it, it is idle too
/// long, or it gives way.
pub async fn serve<S, F, Fut>(ticket: Ticket, stream: S, handle: F)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    F: Fn(Request<Incoming>) -> Fut + Send + Clone + 'static,
    Fut: Future<Output = Reply> + Send + 'static,
{
    let slot = ticket.slot.clone();
    let svc = hyper::service::service_fn(move |req| {
        let busy = BusyGuard::new(&slot);
        let work = handle(req);
        async move {
            let reply = work.await;
            drop(busy);
            Ok::<_, Infallible>(reply)
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(ticket.table.bounds.header_timeout)
        .serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    let why = tokio::select! {
        ended = conn.as_mut() => {
            if let Err(e) = ended {
                tracing::debug!(error = %e, "control connection ended with an error");
            }
            return;
        }
        why = ticket.until_close() => why,
    };
    tracing::debug!(reason = why, "closing a control connection");
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(CLOSE_GRACE, conn).await;
}

/// Answers a connection that found every other one busy: 503 with the reason, then closed.
pub async fn refuse<S>(table: &Table, stream: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let Ok(_permit) = table.refusing.clone().try_acquire_owned() else {
        return;
    };
    let max = table.bounds.max_connections;
    let svc = hyper::service::service_fn(move |_req| async move {
        let body = super::api::ErrorBody {
            error: format!(
                "hotswapd is busy: all {max} connections here are handling requests; try again"
            ),
        };
        let reply = Response::builder()
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(
                serde_json::to_vec(&body).expect("responses serialize"),
            )))
            .expect("static response parts are valid");
        Ok::<_, Infallible>(reply)
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), svc);
    let _ = tokio::time::timeout(REFUSE_BUDGET, conn).await;
}

#[cfg(test)]
#[path = "conns_tests.rs"]
mod tests;
