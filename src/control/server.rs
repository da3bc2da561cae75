//! The daemon side of the control API. Every connection's peer credentials are checked
//! (SO_PEERCRED) before a request is read; requests are bounded in size and time, connections
//! in number and idle time (`conns.rs`); a body is one JSON object with only the documented
//! fields (`api::parse_body`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use tokio::net::{UnixListener, UnixStream};

use super::access::{check_peer, Peer};
use super::api::{
    parse_body, DaemonStatus, DeployRequest, DeployStatus, Health, MaintenanceRequest,
    RollbackRequest, ServiceSummary, MAX_BODY,
};
use super::conns::{error, json, Admission, Bounds, Reply, Table, Ticket};
use crate::engine::phase::Requester;
use crate::engine::DeployState;
use crate::intake::{self, Refusal};
use crate::services::Services;

/// The longest a `wait` may hold a connection.
const MAX_WAIT: Duration = Duration::from_secs(600);
/// A request's body must arrive within this (its headers: within `conns.rs`'s timeout).
pub(super) const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds the socket (replacing a stale one), mode 0660 with the configured group, and serves
/// at most `bounds.max_connections` connections until the task is dropped.
pub async fn serve(
    shared: Arc<Services>,
    socket: &Path,
    bounds: Bounds,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(socket) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = UnixListener::bind(socket)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o660))?;
    let group = shared.access().socket_group;
    match nix::unistd::Group::from_name(&group) {
        Ok(Some(g)) => {
            if let Err(e) = nix::unistd::chown(socket, None, Some(g.gid)) {
                tracing::warn!(group, error = %e, "cannot give the control socket to its group");
            }
        }
        _ => tracing::warn!(
            group,
            "socket group does not exist: only root and hotswapd's user may use the control socket"
        ),
    }
    let table = Table::new(bounds);
    tracing::info!(
        max_connections = bounds.max_connections,
        idle_timeout_secs = bounds.idle_timeout.as_secs(),
        "control socket bounds"
    );
    Ok(tokio::spawn(async move {
        let mut refused_logged = false;
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and the like: back off rather than spin
                    tracing::warn!(error = %e, open = table.open(), "control socket accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            match table.admit(tokio::time::Instant::now()) {
                Admission::Admitted(ticket) => {
                    refused_logged = false;
                    let shared = shared.clone();
                    tokio::spawn(async move { connection(shared, ticket, stream).await });
                }
                refusal => {
                    // one line per run of refusals, not one per connection
                    if !refused_logged {
                        tracing::warn!(
                            max_connections = bounds.max_connections,
                            open = table.open(),
                            "control socket full: refusing new connections until some close"
                        );
                        refused_logged = true;
                    }
                    if let Admission::Busy = refusal {
                        let table = table.clone();
                        tokio::spawn(async move { super::conns::refuse(&table, stream).await });
                    }
                }
            }
        }
    }))
}

async fn connection(shared: Arc<Services>, ticket: Ticket, stream: UnixStream) {
    let verdict = match stream.peer_cred() {
        Ok(cred) => {
            let peer = Peer {
                uid: cred.uid(),
                gid: cred.gid(),
                pid: cred.pid(),
            };
            check_peer(&peer, &shared.access())
        }
        Err(e) => Err(format!("cannot read the peer's credentials: {e}")),
    };
    if let Err(why) = &verdict {
        tracing::warn!(reason = %why, "refused a control connection");
    }
    let by = Arc::new(requester(&stream));
    let handler = move |req| {
        let shared = shared.clone();
        let verdict = verdict.clone();
        let by = by.clone();
        async move {
            match verdict {
                Ok(()) => handle(&shared, req, &by).await,
                Err(why) => error(StatusCode::FORBIDDEN, why),
            }
        }
    };
    super::conns::serve(ticket, stream, handler).await;
}

/// Who is on the other end of a connection: its credentials and command line, for the journal
/// and the report of what it asks for.
fn requester(stream: &UnixStream) -> Requester {
    let cred = stream.peer_cred().ok();
    let pid = cred.as_ref().and_then(|c| c.pid());
    let command = pid
        .and_then(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).ok())
        .map(|raw| {
            let mut line: String = String::from_utf8_lossy(&raw)
                .split('\0')
                .filter(|a| !a.is_empty())
                .collect::<Vec<_>>()
                .join(" ");
            if line.chars().count() > 200 {
                line = line.chars().take(199).chain(['…']).collect();
            }
            line
        });
    Requester {
        via: "socket".into(),
        uid: cred.as_ref().map(|c| c.uid()),
        pid,
        command,
        source: None,
    }
}

/// The one place a refusal becomes an HTTP status.
fn refused(r: Refusal) -> Reply {
    let status = match &r {
        Refusal::UnknownService { .. } => StatusCode::NOT_FOUND,
        Refusal::Invalid(_) => StatusCode::BAD_REQUEST,
        Refusal::NoPrevious(_) | Refusal::BundleGone(_) | Refusal::NotKept { .. } => {
            StatusCode::CONFLICT
        }
        Refusal::NotQueued(_) => StatusCode::INTERNAL_SERVER_ERROR,
        Refusal::Unavailable(_) => StatusCode::BAD_GATEWAY,
        Refusal::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(status, r.to_string())
}

async fn handle(shared: &Services, req: Request<Incoming>, by: &Requester) -> Reply {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let method = req.method().clone();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (&method, segments.as_slice()) {
        (&Method::POST, ["v1", "deploys"]) => {
            match body::<DeployRequest>(req, "deploy request", false).await {
                Ok(r) => match intake::accept(shared, r, by.clone()) {
                    Ok(a) => json(StatusCode::ACCEPTED, &a),
                    Err(r) => refused(r),
                },
                Err(reply) => reply,
            }
        }
        (&Method::GET, ["v1", "deploys", id]) => deploy_status(shared, id, &query).await,
        (&Method::GET, ["v1", "services"]) => json(
            StatusCode::OK,
            &shared
                .handles()
                .iter()
                .map(|h| summary(&h.view()))
                .collect::<Vec<_>>(),
        ),
        (&Method::GET, ["v1", "services", name]) => match shared.handle(name) {
            Some(h) => json(StatusCode::OK, &h.view()),
            None => error(StatusCode::NOT_FOUND, format!("unknown service {name:?}")),
        },
        (&Method::POST, ["v1", "services", name, "rollback"]) => {
            match body::<RollbackRequest>(req, "rollback request", true).await {
                Ok(r) => match intake::rollback(shared, name, r, by.clone()) {
                    Ok(a) => json(StatusCode::ACCEPTED, &a),
                    Err(r) => refused(r),
                },
                Err(reply) => reply,
            }
        }
        (&Method::POST, ["v1", "services", name, "maintenance"]) => {
            match body::<MaintenanceRequest>(req, "maintenance request", false).await {
                Ok(r) => match intake::maintenance::set(shared, name, r, by.clone()).await {
                    Ok(o) => json(StatusCode::OK, &o),
                    Err(r) => refused(r),
                },
                Err(reply) => reply,
            }
        }
        (&Method::POST, ["v1", "reload"]) => match shared.reload() {
            Ok(outcome) => json(StatusCode::OK, &outcome),
            Err(e) => error(StatusCode::UNPROCESSABLE_ENTITY, e),
        },
        (&Method::GET, ["v1", "health"]) => json(StatusCode::OK, &health(shared)),
        (&Method::GET, ["v1", "status"]) => {
            let views: Vec<_> = shared.handles().iter().map(|h| h.view()).collect();
            json(
                StatusCode::OK,
                &DaemonStatus {
                    version: env!("CARGO_PKG_VERSION").to_string(),
                    instance_id: shared.instance_id.clone(),
                    uptime_secs: shared.started.elapsed().as_secs(),
                    services: views,
                    cloudformation: shared
                        .metadata_watch
                        .lock()
                        .expect("watch view lock")
                        .clone(),
                },
            )
        }
        (&Method::GET, ["v1", "history"]) => history(shared, &query).await,
        (&Method::GET, ["metrics"]) => super::metrics::metrics(shared).await,
        (_, ["v1", ..]) => error(StatusCode::NOT_FOUND, format!("no route {method} {path}")),
        _ => error(
            StatusCode::NOT_FOUND,
            format!("unknown API version in {path:?} (this daemon speaks /v1)"),
        ),
    }
}

/// Reads a bounded JSON body. With `optional`, an empty body is the type's default.
async fn body<T: serde::de::DeserializeOwned + Default>(
    req: Request<Incoming>,
    what: &str,
    optional: bool,
) -> Result<T, Reply> {
    let bytes = match tokio::time::timeout(
        READ_TIMEOUT,
        Limited::new(req.into_body(), MAX_BODY).collect(),
    )
    .await
    {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(e)) => {
            return Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("reading request body (limit {MAX_BODY} bytes): {e}"),
            ))
        }
        Err(_) => {
            return Err(error(
                StatusCode::REQUEST_TIMEOUT,
                "request body did not arrive in time",
            ))
        }
    };
    if optional && bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    // every way a body can be wrong is the client's to fix: 400 with what was wrong
    parse_body(&bytes)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("{what} is not valid: {e}")))
}

impl Default for DeployRequest {
    fn default() -> Self {
        DeployRequest {
            service: String::new(),
            image: String::new(),
            version: None,
            deploy_id: None,
            archive: None,
            archive_sha256: None,
            code: None,
            no_ramp: false,
        }
    }
}

pub fn summary(v: &crate::engine::ServiceView) -> ServiceSummary {
    ServiceSummary {
        service: v.service.clone(),
        state: v.state.name().to_string(),
        reason: v.reason.clone(),
        current: v.current.as_ref().map(|c| c.release.image.clone()),
        current_version: v.current.as_ref().map(|c| c.release.version.clone()),
        previous: v.previous.as_ref().map(|p| p.image.clone()),
        phase: v
            .swap
            .as_ref()
            .filter(|s| !s.phase.is_terminal())
            .map(|s| s.phase.name().to_string()),
        queued: v.queued.iter().map(|r| r.deploy_id.clone()).collect(),
    }
}

fn health(shared: &Services) -> Health {
    Health {
        version: env!("CARGO_PKG_VERSION").to_string(),
        instance_id: shared.instance_id.clone(),
        host: nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default(),
        uptime_secs: shared.started.elapsed().as_secs(),
        services: shared
            .handles()
            .iter()
            .map(|h| {
                let v = h.view();
                let text = match v.reason {
                    Some(why) => format!("{}: {why}", v.state),
                    None => v.state.to_string(),
                };
                (h.name.clone(), text)
            })
            .collect(),
    }
}

async fn deploy_status(shared: &Services, id: &str, query: &str) -> Reply {
    let wait = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("wait="))
        .and_then(|v| v.parse::<u64>().ok())
        .map(|s| Duration::from_secs(s).min(MAX_WAIT));
    let Some(handle) = shared
        .handles()
        .into_iter()
        .find(|h| h.deploy(id).is_some())
    else {
        return reported(shared, id).await;
    };
    let mut rx = handle.subscribe();
    let until = tokio::time::Instant::now() + wait.unwrap_or_default();
    loop {
        rx.borrow_and_update();
        let state = handle.deploy(id);
        let Some(state) = state else {
            return error(
                StatusCode::NOT_FOUND,
                format!("deploy {id:?} is no longer remembered"),
            );
        };
        if state.is_finished() || wait.is_none() {
            return json(StatusCode::OK, &DeployStatus::new(id, &handle.name, &state));
        }
        match tokio::time::timeout_at(until, rx.changed()).await {
            Ok(Ok(())) => continue,
            _ => return json(StatusCode::OK, &DeployStatus::new(id, &handle.name, &state)),
        }
    }
}

/// A deploy no service holds in memory (answered before a restart, or long ago): its report in
/// the reports file says how it ended.
async fn reported(shared: &Services, id: &str) -> Reply {
    let file = shared.reporter.file.clone();
    let key = id.to_string();
    let found = tokio::task::spawn_blocking(move || file.find_deploy(&key)).await;
    let report = match found {
        Ok(Ok(Some(r))) => r,
        Ok(Ok(None)) => {
            return error(
                StatusCode::NOT_FOUND,
                format!("no deploy {id:?} on this host"),
            )
        }
        Ok(Err(e)) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("looking for deploy {id:?} in the reports file: {e}"),
            )
        }
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let text = |k: &str| report[k].as_str().map(String::from);
    let state = match (text("result").as_deref(), text("superseded_by")) {
        (Some("superseded"), Some(by)) => DeployState::Superseded { release: None, by },
        _ => DeployState::Reported {
            result: text("result").unwrap_or_default(),
            phase_reached: text("phase_reached").unwrap_or_default(),
            reason: text("reason"),
            finished_ms: report["finished_ms"].as_u64().unwrap_or_default(),
        },
    };
    let service = text("service").unwrap_or_default();
    json(StatusCode::OK, &DeployStatus::new(id, &service, &state))
}

/// `GET /v1/history?service=NAME&limit=N`: the last N reports (swaps and repairs), newest
/// first, from the reports file and its rotated copies.
async fn history(shared: &Services, query: &str) -> Reply {
    let mut service = None;
    let mut limit = 20usize;
    for (k, v) in query.split('&').filter_map(|kv| kv.split_once('=')) {
        match k {
            "service" => service = Some(v.to_string()),
            "limit" => match v.parse::<usize>() {
                Ok(n) if (1..=1000).contains(&n) => limit = n,
                _ => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        format!("limit={v:?}: give a whole number from 1 to 1000"),
                    )
                }
            },
            _ => {}
        }
    }
    if let Some(name) = &service {
        if shared.handle(name).is_none() {
            return error(StatusCode::NOT_FOUND, format!("unknown service {name:?}"));
        }
    }
    let file = shared.reporter.file.clone();
    match tokio::task::spawn_blocking(move || file.history(service.as_deref(), limit)).await {
        Ok(Ok(entries)) => json(StatusCode::OK, &entries),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
