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
use tokio::net::UnixStream;
use tokio::sync::{watch, Notify, Semaphore};
use tokio::time::Instant;

/// The most connections the control socket serves at once (fewer when descriptors are scarce).
pub const MAX_CONNECTIONS: usize = 256;
/// A connection that sends nothing for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Descriptors left to the engine whatever the socket does.
pub const ENGINE_FDS: u64 = 512;
/// A request's headers must arrive within this (hyper's own timer).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// What a connection told to close gets to finish a response in progress.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// 503s being written at once; past this a refused connection is just closed.
const MAX_REFUSING: usize = 16;
/// What a refused connection gets to send its request and read the 503.
const REFUSE_BUDGET: Duration = Duration::from_secs(1);

pub type Reply = Response<Full<Bytes>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub max_connections: usize,
    pub idle_timeout: Duration,
}

impl Bounds {
    /// The production bounds under a soft descriptor limit of `nofile`.
    pub fn for_nofile(nofile: u64) -> Bounds {
        Bounds {
            max_connections: bound_for_nofile(nofile),
            idle_timeout: IDLE_TIMEOUT,
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
pub async fn serve<F, Fut>(ticket: Ticket, stream: UnixStream, handle: F)
where
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
        .header_read_timeout(HEADER_READ_TIMEOUT)
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
pub async fn refuse(table: &Table, stream: UnixStream) {
    let Ok(_permit) = table.refusing.clone().try_acquire_owned() else {
        return;
    };
    let max = table.bounds.max_connections;
    let svc = hyper::service::service_fn(move |_req| async move {
        let body = super::api::ErrorBody {
            error: format!(
                "hotswapd is busy: all {max} control connections are handling requests; try again"
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
mod tests {
    use super::*;

    fn table(max: usize) -> Arc<Table> {
        Table::new(Bounds {
            max_connections: max,
            idle_timeout: Duration::from_millis(200),
        })
    }

    fn admitted(a: Admission) -> Ticket {
        match a {
            Admission::Admitted(t) => t,
            other => panic!("not admitted: {other:?}"),
        }
    }

    #[test]
    fn the_bound_leaves_descriptors_to_the_engine() {
        assert_eq!(bound_for_nofile(1024), 256);
        assert_eq!(bound_for_nofile(1_048_576), MAX_CONNECTIONS);
        assert_eq!(bound_for_nofile(u64::MAX), MAX_CONNECTIONS);
        assert_eq!(bound_for_nofile(712), 100);
        assert_eq!(bound_for_nofile(256), 4);
    }

    #[tokio::test]
    async fn a_full_table_closes_the_connection_idle_the_longest() {
        let t = table(8); // 2 more may be closing
        let now = Instant::now();
        let held: Vec<_> = (0..8u64)
            .map(|i| admitted(t.admit(now + Duration::from_millis(i))))
            .collect();
        // the oldest is busy (a long poll): the next oldest, idle since it opened, gives way
        let _busy = held[0].busy();
        let _ninth = admitted(t.admit(now + Duration::from_millis(8)));
        let closing = |held: &[Ticket]| held.iter().map(Ticket::is_closing).collect::<Vec<_>>();
        assert_eq!(
            closing(&held),
            [false, true, false, false, false, false, false, false]
        );
        // held[1] still holds its descriptor until it is gone: held[2] gives way next
        let _tenth = admitted(t.admit(now + Duration::from_millis(9)));
        assert_eq!(
            closing(&held),
            [false, true, true, false, false, false, false, false]
        );
        assert_eq!(t.open(), 10);
        // up to three times the bound may be closing: nothing more until one is gone
        let burst: Vec<_> = (0..22u64)
            .map(|i| admitted(t.admit(now + Duration::from_millis(10 + i))))
            .collect();
        assert_eq!(t.open(), 8 + 24);
        assert!(matches!(t.admit(now), Admission::Shed));
        let mut held = held;
        held.remove(1);
        assert_eq!(t.open(), 8 + 23);
        // one gone, room again
        let _next = admitted(t.admit(now + Duration::from_millis(40)));
        assert!(
            !held[0].is_closing(),
            "a connection busy with a request never gives way"
        );
        drop(burst);
    }

    #[tokio::test]
    async fn a_connection_idle_again_after_a_request_counts_from_its_end() {
        let t = table(2);
        let a = admitted(t.admit(Instant::now()));
        tokio::time::sleep(Duration::from_millis(5)).await;
        let b = admitted(t.admit(Instant::now()));
        drop(a.busy()); // a request came and went: a is now idle for less time than b
        let _c = admitted(t.admit(Instant::now()));
        assert!(b.is_closing() && !a.is_closing());
    }

    #[tokio::test]
    async fn when_every_connection_is_busy_the_new_one_is_refused() {
        let t = table(2);
        let a = admitted(t.admit(Instant::now()));
        let b = admitted(t.admit(Instant::now()));
        let (_ga, _gb) = (a.busy(), b.busy());
        assert!(matches!(t.admit(Instant::now()), Admission::Busy));
        assert!(!a.is_closing() && !b.is_closing());
        assert_eq!(t.open(), 2);
    }

    /// A client that sends one request and reads the whole reply (the server closes after it).
    async fn ask(stream: &mut UnixStream, request: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = stream.read(&mut buf).await.unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    async fn eof_within(stream: &mut UnixStream, limit: Duration) -> bool {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 64];
        matches!(
            tokio::time::timeout(limit, stream.read(&mut buf)).await,
            Ok(Ok(0))
        )
    }

    fn slow(
        delay: Duration,
    ) -> impl Fn(Request<Incoming>) -> std::pin::Pin<Box<dyn Future<Output = Reply> + Send>>
           + Clone
           + Send
           + 'static {
        move |_req| {
            Box::pin(async move {
                tokio::time::sleep(delay).await;
                Response::new(Full::new(Bytes::from_static(b"done")))
            })
        }
    }

    #[tokio::test]
    async fn idle_connections_close_and_a_long_request_is_not_idle() {
        let t = table(8);
        // nothing sent at all
        let (mut client, server) = UnixStream::pair().unwrap();
        let ticket = admitted(t.admit(Instant::now()));
        let task = tokio::spawn(serve(ticket, server, slow(Duration::ZERO)));
        assert!(eof_within(&mut client, Duration::from_secs(2)).await);
        task.await.unwrap();
        assert_eq!(t.open(), 0);

        // a request handled for longer than the idle timeout, on a keep-alive connection
        let (mut client, server) = UnixStream::pair().unwrap();
        let ticket = admitted(t.admit(Instant::now()));
        let task = tokio::spawn(serve(ticket, server, slow(Duration::from_millis(600))));
        let reply = ask(&mut client, "GET /x HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(
            reply.starts_with("HTTP/1.1 200") && reply.ends_with("done"),
            "{reply}"
        );
        // then idle again: closed
        let idle_from = std::time::Instant::now();
        assert!(eof_within(&mut client, Duration::from_secs(2)).await);
        assert!(idle_from.elapsed() >= Duration::from_millis(150));
        task.await.unwrap();
    }

    #[tokio::test]
    async fn a_connection_told_to_give_way_closes_and_a_refused_one_reads_503() {
        let t = table(1);
        let (mut first, server) = UnixStream::pair().unwrap();
        let task = tokio::spawn(serve(
            admitted(t.admit(Instant::now())),
            server,
            slow(Duration::ZERO),
        ));
        let second = admitted(t.admit(Instant::now()));
        assert!(eof_within(&mut first, Duration::from_millis(100)).await);
        task.await.unwrap();

        let _busy = second.busy();
        let (mut client, server) = UnixStream::pair().unwrap();
        assert!(matches!(t.admit(Instant::now()), Admission::Busy));
        let refusing = tokio::spawn({
            let t = t.clone();
            async move { refuse(&t, server).await }
        });
        let reply = ask(&mut client, "GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(
            reply.starts_with("HTTP/1.1 503") && reply.contains("all 1 control connections"),
            "{reply}"
        );
        refusing.await.unwrap();
    }
}
