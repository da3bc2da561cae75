//! Long-lived streams: a WebSocket echo (`GET /ws`) and a server-sent-events stream
//! (`GET /events`). Each holds its connection's thread until the peer leaves, the app shuts
//! down (SIGTERM), or a drain notice ends the kinds `DRAIN_ENDS` names.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::{is_timeout, linger_close, Request, State};

/// How often an SSE stream sends `data: tick`.
const TICK_EVERY: Duration = Duration::from_millis(500);
/// Frames larger than this close the WebSocket (1009).
const MAX_FRAME: usize = 64 * 1024;
const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum DrainEnds {
    None,
    Sse,
    Ws,
    All,
}

impl DrainEnds {
    pub fn from_env() -> DrainEnds {
        match std::env::var("DRAIN_ENDS").unwrap_or_default().trim() {
            "" | "none" => DrainEnds::None,
            "sse" => DrainEnds::Sse,
            "ws" => DrainEnds::Ws,
            "all" => DrainEnds::All,
            other => {
                eprintln!("hotswap-testapp: invalid DRAIN_ENDS={other:?} (sse, ws, all, none)");
                std::process::exit(2);
            }
        }
    }
    fn ends_sse(self) -> bool {
        matches!(self, DrainEnds::Sse | DrainEnds::All)
    }
    fn ends_ws(self) -> bool {
        matches!(self, DrainEnds::Ws | DrainEnds::All)
    }
}

/// Serves the stream `req` asked for on `stream`; `buf` holds what the peer sent after the head.
pub fn serve(state: &State, mut stream: TcpStream, req: &Request, buf: Vec<u8>) {
    if req.path == "/events" {
        return sse(state, &mut stream);
    }
    let Some(key) = &req.ws_key else {
        let _ = stream.write_all(
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        return linger_close(&mut stream);
    };
    websocket(state, &mut stream, key, buf)
}

fn release_header(state: &State) -> String {
    state.release_header.read().unwrap().clone()
}

fn sse(state: &State, stream: &mut TcpStream) {
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nX-Release: {}\r\nConnection: close\r\n\r\nevent: hello\ndata: {{\"release\":{}}}\n\n",
        release_header(state),
        state.release_json.read().unwrap()
    );
    if stream.write_all(head.as_bytes()).is_err() {
        return;
    }
    let mut last_tick = Instant::now();
    let mut tmp = [0u8; 1024];
    loop {
        if state.draining() || (state.drain_noticed() && state.cfg.drain_ends.ends_sse()) {
            let _ = stream.write_all(b"event: bye\ndata: draining\n\n");
            return linger_close(stream);
        }
        if last_tick.elapsed() >= TICK_EVERY {
            if stream.write_all(b"data: tick\n\n").is_err() {
                return;
            }
            last_tick = Instant::now();
        }
        // the read times out every TICK: a way to notice the peer leaving
        match stream.read(&mut tmp) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if is_timeout(&e) => {}
            Err(_) => return,
        }
    }
}

fn accept_key(key: &str) -> String {
    let digest = sha1_smol::Sha1::from(format!("{key}{WS_GUID}")).digest().bytes();
    base64(&digest)
}

fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// One server-to-client frame (never masked).
fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n <= 0xffff => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
    out
}

fn close_frame(code: u16, why: &str) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(why.as_bytes());
    frame(8, &payload)
}

/// A whole client frame at the start of `buf`: (opcode, unmasked payload, bytes used).
fn parse_frame(buf: &[u8]) -> Result<Option<(u8, Vec<u8>, usize)>, u16> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let opcode = buf[0] & 0x0f;
    if buf[1] & 0x80 == 0 {
        return Err(1002); // a client's frames are masked
    }
    let (len, mut at) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
        127 if buf.len() >= 10 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(b).min(usize::MAX as u64) as usize, 10)
        }
        126 | 127 => return Ok(None),
        n => (n as usize, 2),
    };
    if len > MAX_FRAME {
        return Err(1009);
    }
    if buf.len() < at + 4 + len {
        return Ok(None);
    }
    let mask = [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]];
    at += 4;
    let payload = buf[at..at + len]
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ mask[i % 4])
        .collect();
    Ok(Some((opcode, payload, at + len)))
}

fn websocket(state: &State, stream: &mut TcpStream, key: &str, mut buf: Vec<u8>) {
    let head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\nX-Release: {}\r\n\r\n",
        accept_key(key),
        release_header(state)
    );
    let hello = format!("{{\"release\":{}}}", state.release_json.read().unwrap());
    let mut out = head.into_bytes();
    out.extend(frame(1, hello.as_bytes()));
    if stream.write_all(&out).is_err() {
        return;
    }
    let mut tmp = [0u8; 8192];
    loop {
        loop {
            match parse_frame(&buf) {
                Ok(None) => break,
                Err(code) => {
                    let _ = stream.write_all(&close_frame(code, "bad frame"));
                    return linger_close(stream);
                }
                Ok(Some((opcode, payload, used))) => {
                    buf.drain(..used);
                    let reply = match opcode {
                        1 | 2 => frame(opcode, &payload),
                        9 => frame(10, &payload),
                        8 => {
                            // the peer closes: answer with its code, then close
                            let _ = stream.write_all(&frame(8, &payload[..payload.len().min(2)]));
                            return linger_close(stream);
                        }
                        _ => continue,
                    };
                    if stream.write_all(&reply).is_err() {
                        return;
                    }
                }
            }
        }
        if state.draining() || (state.drain_noticed() && state.cfg.drain_ends.ends_ws()) {
            let _ = stream.write_all(&close_frame(1001, "draining"));
            return linger_close(stream);
        }
        match stream.read(&mut tmp) {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
            Err(e) if is_timeout(&e) => {}
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_is_rfc6455s_example() {
        assert_eq!(accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }
}
