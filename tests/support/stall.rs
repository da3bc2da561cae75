//! A TCP stand-in on loopback for a peer that accepts connections and then never answers: a
//! proxy to the real endpoint that, once stalled, freezes every connection it has (bytes are no
//! longer passed either way, the socket stays open) and every connection it accepts while
//! stalled, for good. Healed, it passes new connections through again; the frozen ones stay
//! frozen, so a client recovers only if it drops a stuck connection and makes a new one.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Connections at most (a client that reconnects in a loop cannot exhaust descriptors).
const MAX_CONNECTIONS: u64 = 512;

#[derive(Default)]
struct State {
    stalled: AtomicBool,
    /// Connections numbered below this are frozen (they existed when the peer stalled).
    frozen_below: AtomicU64,
    next_id: AtomicU64,
    stop: AtomicBool,
    /// Connections accepted (frozen or not).
    accepted: AtomicU64,
}

pub struct Stall {
    pub addr: SocketAddr,
    state: Arc<State>,
}

impl Stall {
    /// A proxy on a free loopback port to `to`, passing bytes through.
    pub fn start(to: SocketAddr) -> Stall {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let state = Arc::new(State::default());
        let s = state.clone();
        std::thread::spawn(move || accept_loop(listener, to, s));
        Stall { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// From now on, nothing answers: open connections freeze, new ones are accepted and frozen.
    pub fn stall(&self) {
        self.state.stalled.store(true, Ordering::SeqCst);
        let next = self.state.next_id.load(Ordering::SeqCst);
        self.state.frozen_below.store(next, Ordering::SeqCst);
    }

    /// New connections pass through again; the frozen ones stay frozen.
    pub fn heal(&self) {
        self.state.stalled.store(false, Ordering::SeqCst);
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.state.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Stall {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
    }
}

fn accept_loop(listener: TcpListener, to: SocketAddr, state: Arc<State>) {
    let mut held = Vec::new();
    while !state.stop.load(Ordering::SeqCst) {
        let client = match listener.accept() {
            Ok((c, _)) => c,
            Err(_) => {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
        };
        if state.accepted.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            continue; // dropped
        }
        let id = state.next_id.fetch_add(1, Ordering::SeqCst);
        if state.stalled.load(Ordering::SeqCst) {
            held.push(client); // accepted, never answered
            continue;
        }
        let Ok(server) = TcpStream::connect(to) else {
            continue;
        };
        for (from, into) in [
            (client.try_clone().unwrap(), server.try_clone().unwrap()),
            (server, client),
        ] {
            let s = state.clone();
            std::thread::spawn(move || pass(from, into, id, s));
        }
    }
}

/// Copies `from` to `into` until either closes, the proxy stops, or the connection is frozen
/// (then both are held open, silent, until the proxy stops).
fn pass(mut from: TcpStream, mut into: TcpStream, id: u64, state: Arc<State>) {
    from.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut buf = [0u8; 16 * 1024];
    while !state.stop.load(Ordering::SeqCst) {
        if id < state.frozen_below.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if into.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    let _ = into.shutdown(std::net::Shutdown::Write);
}
