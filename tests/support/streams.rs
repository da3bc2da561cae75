//! Long-lived stream clients for tests and benchmarks: WebSockets (`GET /ws`, the test app's
//! echo) and server-sent-event streams (`GET /events`). Each client holds one stream at a time
//! and, when it ends, opens the next one at once; every stream's life is kept: which release
//! answered, when it opened and ended, and whether the app ended it gracefully (a close frame,
//! `event: bye`) or the connection was simply closed.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use hotswap::clock::now_ms;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Ws,
    Sse,
}

/// One stream, from its opening to its end (or the end of the run).
#[derive(Debug, Clone)]
pub struct Life {
    pub kind: Kind,
    pub client: usize,
    pub release: String,
    pub opened_ms: u64,
    /// None: still open when the run stopped.
    pub ended_ms: Option<u64>,
    /// The app ended it: a WebSocket close frame, or an SSE `event: bye`.
    pub graceful: bool,
}

pub struct StreamClients {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    lives: Arc<Mutex<Vec<Life>>>,
    /// Attempts to open a stream that failed (connect, handshake, first message).
    failures: Arc<Mutex<Vec<String>>>,
}

/// How long opening a stream (connect, handshake, first message) may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);

impl StreamClients {
    /// `ws` WebSocket clients and `sse` event-stream clients against `addr`.
    pub fn start(addr: SocketAddr, ws: usize, sse: usize) -> StreamClients {
        let (stop, stopped) = watch::channel(false);
        let lives = Arc::new(Mutex::new(Vec::new()));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let kinds = std::iter::repeat(Kind::Ws)
            .take(ws)
            .chain(std::iter::repeat(Kind::Sse).take(sse));
        let tasks = kinds
            .enumerate()
            .map(|(client, kind)| {
                let (lives, failures, stopped) = (lives.clone(), failures.clone(), stopped.clone());
                tokio::spawn(run_client(addr, kind, client, lives, failures, stopped))
            })
            .collect();
        StreamClients {
            stop,
            tasks,
            lives,
            failures,
        }
    }

    pub fn lives(&self) -> Vec<Life> {
        self.lives.lock().unwrap().clone()
    }

    /// Streams open now, by release.
    pub fn open_on(&self, release: &str) -> usize {
        self.lives
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.ended_ms.is_none() && l.release == release)
            .count()
    }

    /// Waits until `want` streams are open on `release`, failing after `limit` with how many are.
    pub async fn wait_open(&self, release: &str, want: usize, limit: Duration) {
        let until = std::time::Instant::now() + limit;
        while self.open_on(release) < want {
            assert!(
                std::time::Instant::now() < until,
                "{} of {want} streams open on {release}; failures: {:?}",
                self.open_on(release),
                self.failures()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn failures(&self) -> Vec<String> {
        self.failures.lock().unwrap().clone()
    }

    /// Stops every client (the streams still open stay `ended_ms: None`) and returns the lives.
    pub async fn stop(self) -> Vec<Life> {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        let lives = self.lives.lock().unwrap().clone();
        lives
    }
}

async fn run_client(
    addr: SocketAddr,
    kind: Kind,
    client: usize,
    lives: Arc<Mutex<Vec<Life>>>,
    failures: Arc<Mutex<Vec<String>>>,
    mut stopped: watch::Receiver<bool>,
) {
    while !*stopped.borrow() {
        let opened = tokio::time::timeout(OPEN_TIMEOUT, open(addr, kind)).await;
        let (mut conn, release, mut rest) = match opened {
            Ok(Ok(o)) => o,
            Ok(Err(e)) => {
                failures
                    .lock()
                    .unwrap()
                    .push(format!("{kind:?} #{client}: {e}"));
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            Err(_) => {
                failures.lock().unwrap().push(format!(
                    "{kind:?} #{client}: not open within {OPEN_TIMEOUT:?}"
                ));
                continue;
            }
        };
        let index = {
            let mut l = lives.lock().unwrap();
            l.push(Life {
                kind,
                client,
                release,
                opened_ms: now_ms(),
                ended_ms: None,
                graceful: false,
            });
            l.len() - 1
        };
        let mut buf = [0u8; 4096];
        let graceful = loop {
            if graceful_end(kind, &rest) {
                break Some(true);
            }
            tokio::select! {
                _ = stopped.changed() => break None,
                n = conn.read(&mut buf) => match n {
                    Ok(0) | Err(_) => break Some(graceful_end(kind, &rest)),
                    Ok(n) => {
                        rest.extend_from_slice(&buf[..n]);
                        // keep only a tail: enough to find the end markers
                        if rest.len() > 8192 {
                            rest.drain(..rest.len() - 64);
                        }
                    }
                },
            }
        };
        let Some(graceful) = graceful else { return };
        let mut l = lives.lock().unwrap();
        l[index].ended_ms = Some(now_ms());
        l[index].graceful = graceful;
    }
}

/// The app said it ends the stream: a close frame (opcode 8, unmasked from a server) or `bye`.
fn graceful_end(kind: Kind, seen: &[u8]) -> bool {
    match kind {
        Kind::Ws => seen.windows(2).any(|w| w[0] == 0x88 && (w[1] & 0x80) == 0),
        Kind::Sse => seen.windows(10).any(|w| w == b"event: bye"),
    }
}

/// Opens one stream: the connection, the release that answered, what was read past it.
async fn open(addr: SocketAddr, kind: Kind) -> Result<(TcpStream, String, Vec<u8>), String> {
    let mut conn = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    conn.set_nodelay(true).ok();
    let request = match kind {
        Kind::Ws => "GET /ws HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        Kind::Sse => "GET /events HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\n\r\n",
    };
    conn.write_all(request.as_bytes())
        .await
        .map_err(|e| format!("send: {e}"))?;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(p) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let n = conn
            .read(&mut buf)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err(format!(
                "closed before answering: {:?}",
                String::from_utf8_lossy(&seen)
            ));
        }
        seen.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&seen[..head_end]).to_string();
    let want = match kind {
        Kind::Ws => " 101 ",
        Kind::Sse => " 200 ",
    };
    if !head.lines().next().unwrap_or("").contains(want) {
        return Err(format!("answered {:?}", head.lines().next().unwrap_or("")));
    }
    let mut rest = seen[head_end..].to_vec();
    if kind == Kind::Ws {
        // one echo through the proxy: a masked text frame comes back unmasked
        let mask = [1u8, 2, 3, 4];
        let mut frame = vec![0x81, 0x80 | 4];
        frame.extend_from_slice(&mask);
        frame.extend(b"ping".iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        conn.write_all(&frame)
            .await
            .map_err(|e| format!("send: {e}"))?;
    }
    // the first message names the release: `{"release":"..."}` (and the echo, for a WebSocket)
    loop {
        let text = String::from_utf8_lossy(&rest).to_string();
        let echoed = kind == Kind::Sse || rest.windows(4).any(|w| w == b"ping");
        if let (Some(release), true) = (release_in(&text), echoed) {
            return Ok((conn, release, rest));
        }
        let n = conn
            .read(&mut buf)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err(format!("closed before its first message: {text:?}"));
        }
        rest.extend_from_slice(&buf[..n]);
    }
}

fn release_in(text: &str) -> Option<String> {
    let at = text.find("\"release\":\"")? + "\"release\":\"".len();
    let end = text[at..].find('"')?;
    Some(text[at..at + end].to_string())
}

/// A service's `[services.NAME]` lines and container env for the streams test and bench: the
/// stream budget and close window (whole seconds), SIGUSR1 as the drain notice, and a test app
/// that ends its event streams itself when told and leaves its WebSockets to hotswapd.
pub fn service_opts(budget_ms: u64, spread_ms: u64) -> super::daemon::ServiceOpts {
    super::daemon::ServiceOpts {
        top: format!(
            "stream_budget_secs = {}\nclose_spread_secs = {}\ndrain_notice = \"SIGUSR1\"\n",
            budget_ms / 1000,
            spread_ms / 1000
        ),
        env: vec![("DRAIN_ENDS", "sse".to_string())],
        ..Default::default()
    }
}
