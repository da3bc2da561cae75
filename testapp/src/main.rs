//! hotswap-testapp: a tiny HTTP/1.1 server used as the workload container in
//! hotswap's tests. Thread per connection, keep-alive, Content-Length bodies,
//! graceful drain on SIGTERM/SIGINT. Runs as PID 1 in a `FROM scratch` image.
//!
//! Configuration (environment):
//! - `RELEASE`   string reported in every body (default "unknown")
//! - `PORT`      listen port on 0.0.0.0 (default 8080)
//! - `WARMUP_MS` /health answers 503 until this long after start (default 0)
//! - `HEALTHY`   `never`: /health always answers 503
//! - `FAIL_PCT`  percentage of non-health requests answered 500 (deterministic)
//! - `FAIL_AFTER_MS` FAIL_PCT applies only from this long after start (a release that
//!   turns bad later; default 0)
//! - `DELAY_MS`  delay before answering a non-health request (default 0)
//! - `EXIT_AFTER_MS` exit with code 3 this long after start, a crash (default 0: never)
//!
//! - `DRAIN_ENDS` which long-lived streams the app ends itself on a drain notice: `sse`, `ws`,
//!   `all` or `none` (default)
//!
//! Long-lived streams (`streams.rs`): `GET /ws` is a WebSocket echo (its first message is
//! `{"release":...}`), `GET /events` a server-sent-events stream (`event: hello` with the release,
//! then `data: tick` every 500 ms). A drain notice (SIGUSR1, or `POST /drain`) ends the kinds
//! `DRAIN_ENDS` names gracefully: SSE with `event: bye`, WebSockets with a close frame 1001.
//!
//! `GET /env/NAME` answers the value of env var NAME (what the container was given).
//! `GET /alloc/MB` allocates MB MiB, touches every page and keeps it: an app over its memory
//! limit (the OOM killer's case).
//!
//! Shutdown (SIGTERM/SIGINT): the listener is closed at once (after taking the
//! connections the kernel had already completed), requests in flight are
//! answered with `Connection: close`, idle keep-alive connections are closed,
//! and the process exits 0 once no connection is left (at most ~10 s).

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod streams;

/// How often a connection thread wakes up to look at the shutdown flag.
const TICK: Duration = Duration::from_millis(25);
/// Idle keep-alive connections are closed after this long without a request.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// At shutdown, a connection that has not sent its first request yet (e.g. it
/// was still in the accept backlog) gets this long to send it.
const NEW_CONN_GRACE: Duration = Duration::from_millis(1000);
/// Upper bound on the drain after a signal.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);
/// After the last response on a connection, how long to wait for the peer to
/// close before we drop it (avoids an RST discarding our response).
const LINGER: Duration = Duration::from_millis(500);
const MAX_HEAD: usize = 16 * 1024;
const MAX_BODY: usize = 1024 * 1024;

static SIGNAL_PIPE_WR: AtomicI32 = AtomicI32::new(-1);
static SIGNAL_SEEN: AtomicI32 = AtomicI32::new(0);
/// SIGHUP: re-read the code version from CODE_DIR (a hot code reload).
static RELOAD_SEEN: AtomicBool = AtomicBool::new(false);
/// SIGUSR1 or `POST /drain`: the proxy is about to stop sending us traffic; end streams.
static DRAIN_NOTICE: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(sig: libc::c_int) {
    // Only async-signal-safe operations here: lock-free atomics and write(2).
    unsafe {
        let errno = libc::__errno_location();
        let saved = *errno;
        if sig == libc::SIGHUP {
            RELOAD_SEEN.store(true, Ordering::SeqCst);
        } else if sig == libc::SIGUSR1 {
            DRAIN_NOTICE.store(true, Ordering::SeqCst);
        } else {
            SIGNAL_SEEN.store(sig, Ordering::SeqCst);
        }
        let fd = SIGNAL_PIPE_WR.load(Ordering::SeqCst);
        if fd >= 0 {
            let b = [sig as u8];
            libc::write(fd, b.as_ptr() as *const libc::c_void, 1);
        }
        *errno = saved;
    }
}

fn install_signal_handlers() -> std::io::Result<libc::c_int> {
    let mut fds = [-1 as libc::c_int; 2];
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    SIGNAL_PIPE_WR.store(fds[1], Ordering::SeqCst);
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGUSR1] {
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok(fds[0])
}

struct Config {
    release: String,
    port: u16,
    warmup_ms: u64,
    healthy_never: bool,
    fail_pct: u32,
    fail_after_ms: u64,
    delay_ms: u64,
    /// Exit (code 3) this long after start: a crash.
    exit_after_ms: u64,
    /// Streams ended by the app itself on a drain notice.
    drain_ends: streams::DrainEnds,
}

fn env_num<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => match v.trim().parse() {
            Ok(n) => n,
            Err(_) => {
                eprintln!("hotswap-testapp: invalid {name}={v:?}");
                std::process::exit(2);
            }
        },
        _ => default,
    }
}

/// With CODE_DIR set (code mounted from the host), the release is the code's version:
/// CODE_DIR/current/VERSION, read at start and again on SIGHUP.
fn code_version() -> Option<String> {
    let dir = std::env::var("CODE_DIR").ok().filter(|d| !d.is_empty())?;
    let v = std::fs::read_to_string(format!("{dir}/current/VERSION")).ok()?;
    Some(v.trim().to_string()).filter(|v| !v.is_empty())
}

fn header_value(release: &str) -> String {
    release.chars().filter(|c| c.is_ascii_graphic() || *c == ' ').collect()
}

impl Config {
    fn from_env() -> Config {
        let release = match (code_version(), std::env::var("RELEASE")) {
            (Some(v), _) => v,
            (None, Ok(r)) if !r.is_empty() => r,
            _ => "unknown".to_string(),
        };
        let healthy = std::env::var("HEALTHY").unwrap_or_default();
        Config {
            release,
            port: env_num("PORT", 8080u16),
            warmup_ms: env_num("WARMUP_MS", 0u64),
            healthy_never: healthy.trim().eq_ignore_ascii_case("never"),
            fail_pct: env_num("FAIL_PCT", 0u32).min(100),
            fail_after_ms: env_num("FAIL_AFTER_MS", 0u64),
            delay_ms: env_num("DELAY_MS", 0u64),
            exit_after_ms: env_num("EXIT_AFTER_MS", 0u64),
            drain_ends: streams::DrainEnds::from_env(),
        }
    }
}

struct State {
    cfg: Config,
    release_json: std::sync::RwLock<String>,
    release_header: std::sync::RwLock<String>,
    start: Instant,
    ready_at_ms: u64,
    shutting_down: AtomicBool,
    shutdown_at: OnceLock<Instant>,
    live_conns: AtomicUsize,
    app_requests: AtomicU64,
    served: AtomicU64,
}

impl State {
    fn ready(&self) -> bool {
        !self.cfg.healthy_never && self.start.elapsed() >= Duration::from_millis(self.cfg.warmup_ms)
    }
    fn draining(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }
    fn drain_noticed(&self) -> bool {
        DRAIN_NOTICE.load(Ordering::SeqCst)
    }
}

fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn main() {
    let cfg = Config::from_env();
    let start = Instant::now();
    let ready_at_ms = epoch_ms() + cfg.warmup_ms;

    let listener = match TcpListener::bind(("0.0.0.0", cfg.port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("hotswap-testapp: bind 0.0.0.0:{}: {e}", cfg.port);
            std::process::exit(1);
        }
    };
    listener
        .set_nonblocking(true)
        .expect("set listener nonblocking");
    let sig_rd = match install_signal_handlers() {
        Ok(fd) => fd,
        Err(e) => {
            eprintln!("hotswap-testapp: installing signal handlers: {e}");
            std::process::exit(1);
        }
    };

    if cfg.exit_after_ms > 0 {
        // a crash: the process ends with code 3, answering nothing more (a crash-looping release)
        let after = Duration::from_millis(cfg.exit_after_ms);
        std::thread::spawn(move || {
            std::thread::sleep(after);
            eprintln!("hotswap-testapp: exiting with code 3, as EXIT_AFTER_MS says");
            std::process::exit(3);
        });
    }
    let state = Arc::new(State {
        release_json: std::sync::RwLock::new(json_string(&cfg.release)),
        release_header: std::sync::RwLock::new(header_value(&cfg.release)),
        cfg,
        start,
        ready_at_ms,
        shutting_down: AtomicBool::new(false),
        shutdown_at: OnceLock::new(),
        live_conns: AtomicUsize::new(0),
        app_requests: AtomicU64::new(0),
        served: AtomicU64::new(0),
    });
    let c = &state.cfg;
    println!(
        "hotswap-testapp: release={} listening on 0.0.0.0:{} pid={} warmup_ms={} healthy={} fail_pct={} delay_ms={}",
        c.release,
        c.port,
        std::process::id(),
        c.warmup_ms,
        if c.healthy_never { "never" } else { "auto" },
        c.fail_pct,
        c.delay_ms
    );

    loop {
        let mut pfds = [
            libc::pollfd {
                fd: listener.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: sig_rd,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let rc = unsafe { libc::poll(pfds.as_mut_ptr(), 2, -1) };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            eprintln!("hotswap-testapp: poll: {e}");
            break;
        }
        if pfds[1].revents != 0 {
            let mut buf = [0u8; 64];
            while unsafe { libc::read(sig_rd, buf.as_mut_ptr() as *mut libc::c_void, buf.len()) } > 0 {}
        }
        if RELOAD_SEEN.swap(false, Ordering::SeqCst) {
            match code_version() {
                Some(v) => {
                    println!("hotswap-testapp: SIGHUP: code version now {v}");
                    *state.release_json.write().unwrap() = json_string(&v);
                    *state.release_header.write().unwrap() = header_value(&v);
                }
                None => eprintln!("hotswap-testapp: SIGHUP without a readable CODE_DIR/current/VERSION"),
            }
        }
        if SIGNAL_SEEN.load(Ordering::SeqCst) != 0 {
            break;
        }
        if pfds[0].revents != 0 {
            accept_pending(&listener, &state);
        }
    }

    // Shutdown: mark draining, take what the kernel already accepted on our
    // behalf (those clients think they are connected), then close the listener.
    let _ = state.shutdown_at.set(Instant::now());
    state.shutting_down.store(true, Ordering::SeqCst);
    accept_pending(&listener, &state);
    drop(listener);
    let sig = SIGNAL_SEEN.load(Ordering::SeqCst);
    println!(
        "hotswap-testapp: release={} got signal {sig}, listener closed, draining {} connection(s)",
        state.cfg.release,
        state.live_conns.load(Ordering::SeqCst)
    );

    let drain_start = Instant::now();
    while state.live_conns.load(Ordering::SeqCst) > 0 && drain_start.elapsed() < DRAIN_LIMIT {
        std::thread::sleep(Duration::from_millis(5));
    }
    let left = state.live_conns.load(Ordering::SeqCst);
    println!(
        "hotswap-testapp: release={} exiting: signal={sig} served={} drain_ms={} unfinished_connections={left}",
        state.cfg.release,
        state.served.load(Ordering::SeqCst),
        drain_start.elapsed().as_millis()
    );
    let _ = std::io::stdout().flush();
    std::process::exit(0);
}

fn accept_pending(listener: &TcpListener, state: &Arc<State>) {
    loop {
        match listener.accept() {
            Ok((stream, _peer)) => {
                state.live_conns.fetch_add(1, Ordering::SeqCst);
                let st = Arc::clone(state);
                let spawned = std::thread::Builder::new()
                    .stack_size(256 * 1024)
                    .spawn(move || {
                        serve_conn(&st, stream);
                        st.live_conns.fetch_sub(1, Ordering::SeqCst);
                    });
                if let Err(e) = spawned {
                    eprintln!("hotswap-testapp: spawn: {e}");
                    state.live_conns.fetch_sub(1, Ordering::SeqCst);
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                // ECONNABORTED, EMFILE, ...: don't spin; try again on next poll.
                eprintln!("hotswap-testapp: accept: {e}");
                std::thread::sleep(Duration::from_millis(10));
                return;
            }
        }
    }
}

struct Request {
    method: String,
    path: String,
    /// `Upgrade: websocket` with its `Sec-WebSocket-Key`.
    ws_key: Option<String>,
    keep_alive: bool,
    head_len: usize,
    body_len: usize,
}

enum Parse {
    Incomplete,
    Done(Request),
    Bad(u16, &'static str),
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

fn parse_request(buf: &[u8]) -> Parse {
    let Some(head_len) = find_head_end(buf) else {
        if buf.len() > MAX_HEAD {
            return Parse::Bad(431, "Request Header Fields Too Large");
        }
        return Parse::Incomplete;
    };
    let Ok(head) = std::str::from_utf8(&buf[..head_len]) else {
        return Parse::Bad(400, "Bad Request");
    };
    let mut lines = head.split("\r\n");
    let mut parts = lines.next().unwrap_or("").split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Parse::Bad(400, "Bad Request");
    };
    if !version.starts_with("HTTP/1.") {
        return Parse::Bad(505, "HTTP Version Not Supported");
    }
    let mut keep_alive = version == "HTTP/1.1";
    let mut body_len = 0usize;
    let mut upgrade_ws = false;
    let mut ws_key = None;
    for line in lines {
        if line.is_empty() {
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Parse::Bad(400, "Bad Request");
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            match value.parse::<usize>() {
                Ok(n) if n <= MAX_BODY => body_len = n,
                Ok(_) => return Parse::Bad(413, "Content Too Large"),
                Err(_) => return Parse::Bad(400, "Bad Request"),
            }
        } else if name.eq_ignore_ascii_case("upgrade") {
            upgrade_ws = value.eq_ignore_ascii_case("websocket");
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            ws_key = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Parse::Bad(501, "Not Implemented");
        } else if name.eq_ignore_ascii_case("connection") {
            for tok in value.split(',') {
                let tok = tok.trim();
                if tok.eq_ignore_ascii_case("close") {
                    keep_alive = false;
                } else if tok.eq_ignore_ascii_case("keep-alive") {
                    keep_alive = true;
                }
            }
        }
    }
    let path = target.split('?').next().unwrap_or("/");
    Parse::Done(Request {
        method: method.to_string(),
        path: path.to_string(),
        ws_key: ws_key.filter(|_| upgrade_ws),
        keep_alive,
        head_len,
        body_len,
    })
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

fn write_response(
    stream: &mut TcpStream,
    state: &State,
    code: u16,
    reason: &str,
    body: &str,
    head_only: bool,
    close: bool,
) -> bool {
    let mut out = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nX-Release: {}\r\nConnection: {}\r\n\r\n",
        body.len(),
        state.release_header.read().unwrap(),
        if close { "close" } else { "keep-alive" }
    );
    if !head_only {
        out.push_str(body);
    }
    let ok = stream.write_all(out.as_bytes()).is_ok();
    if ok {
        state.served.fetch_add(1, Ordering::SeqCst);
    }
    ok
}

/// Returns (status, body) for a complete request. May sleep (DELAY_MS).
fn handle(state: &State, req: &Request) -> (u16, String) {
    if req.path == "/health" {
        if state.ready() {
            (
                200,
                format!(
                    "{{\"release\":{},\"ready_at_ms\":{}}}",
                    state.release_json.read().unwrap(), state.ready_at_ms
                ),
            )
        } else {
            (
                503,
                format!("{{\"release\":{},\"ready\":false}}", state.release_json.read().unwrap()),
            )
        }
    } else if req.path == "/drain" && req.method.eq_ignore_ascii_case("POST") {
        DRAIN_NOTICE.store(true, Ordering::SeqCst);
        println!("hotswap-testapp: release={} drain notice (POST /drain)", state.cfg.release);
        (200, format!("{{\"release\":{},\"draining\":true}}", state.release_json.read().unwrap()))
    } else if let Some(name) = req.path.strip_prefix("/env/") {
        match std::env::var(name) {
            Ok(v) => (200, format!("{{\"release\":{},\"value\":{:?}}}", state.release_json.read().unwrap(), v)),
            Err(_) => (404, format!("{{\"release\":{},\"error\":\"no such env var\"}}", state.release_json.read().unwrap())),
        }
    } else if let Some(mb) = req.path.strip_prefix("/alloc/").and_then(|m| m.parse::<usize>().ok()) {
        // kept for ever, every page written (ones, not zeros, so no page is shared)
        std::mem::forget(vec![1u8; mb << 20]);
        (200, format!("{{\"release\":{},\"allocated_mb\":{mb}}}", state.release_json.read().unwrap()))
    } else {
        if state.cfg.delay_ms > 0 {
            std::thread::sleep(Duration::from_millis(state.cfg.delay_ms));
        }
        // Deterministic failure injection: exactly FAIL_PCT of every 100
        // consecutive requests fail, spread evenly.
        let n = state.app_requests.fetch_add(1, Ordering::SeqCst) + 1;
        let failing = state.start.elapsed() >= Duration::from_millis(state.cfg.fail_after_ms);
        let pct = if failing { state.cfg.fail_pct as u64 } else { 0 };
        if n * pct / 100 != (n - 1) * pct / 100 {
            (
                500,
                format!(
                    "{{\"release\":{},\"error\":\"injected failure\"}}",
                    state.release_json.read().unwrap()
                ),
            )
        } else {
            (200, format!("{{\"release\":{}}}", state.release_json.read().unwrap()))
        }
    }
}

fn serve_conn(state: &State, mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    if stream.set_read_timeout(Some(TICK)).is_err() {
        return;
    }
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut tmp = [0u8; 8192];
    let mut served_here = 0u64;
    let mut idle_since = Instant::now();
    let mut graceful_close = false;

    loop {
        match parse_request(&buf) {
            Parse::Bad(code, why) => {
                let body = format!("{{\"release\":{},\"error\":\"{why}\"}}", state.release_json.read().unwrap());
                write_response(&mut stream, state, code, why, &body, false, true);
                graceful_close = true;
                break;
            }
            Parse::Done(req) if buf.len() >= req.head_len + req.body_len => {
                buf.drain(..req.head_len + req.body_len);
                if req.path == "/ws" || req.path == "/events" {
                    // a long-lived stream takes the connection for the rest of its life
                    return streams::serve(state, stream, &req, buf);
                }
                let (code, body) = handle(state, &req);
                // Decide on keep-alive only after handling: a signal may have
                // arrived during DELAY_MS.
                let close = !req.keep_alive || state.draining();
                let head_only = req.method.eq_ignore_ascii_case("HEAD");
                if !write_response(
                    &mut stream,
                    state,
                    code,
                    reason(code),
                    &body,
                    head_only,
                    close,
                ) {
                    return;
                }
                served_here += 1;
                idle_since = Instant::now();
                if close {
                    graceful_close = true;
                    break;
                }
                continue;
            }
            // Head incomplete, or body still arriving: read more.
            _ => {}
        }

        if buf.is_empty() {
            if state.draining() {
                // Idle keep-alive connection: close now. A connection that
                // never sent a request gets a short grace to send its first.
                let since = state
                    .shutdown_at
                    .get()
                    .map(|t| t.elapsed())
                    .unwrap_or_default();
                if served_here > 0 || since >= NEW_CONN_GRACE {
                    break;
                }
            }
            if idle_since.elapsed() >= IDLE_TIMEOUT {
                break;
            }
        }

        match stream.read(&mut tmp) {
            Ok(0) => return, // peer closed
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
            Err(e) if is_timeout(&e) => {}
            Err(_) => return,
        }
    }

    if graceful_close {
        linger_close(&mut stream);
    }
}

/// After a final response: half-close and wait (bounded) for the peer's FIN so unread input
/// can't turn our close into an RST.
fn linger_close(stream: &mut TcpStream) {
    let mut tmp = [0u8; 4096];
    let _ = stream.shutdown(Shutdown::Write);
    let deadline = Instant::now() + LINGER;
    while Instant::now() < deadline {
        match stream.read(&mut tmp) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if is_timeout(&e) => {}
            Err(_) => break,
        }
    }
}

/// A read that timed out (the TICK) or was interrupted: nothing happened, look again.
fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
    )
}
