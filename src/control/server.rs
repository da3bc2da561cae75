//! The daemon side of the control API.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::hash::{BuildHasher, Hasher};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::UnixListener;

use super::api::{
    check_deploy_id, check_image, default_version, DaemonStatus, DeployAccepted, DeployRequest,
    DeployStatus, ErrorBody, MAX_BODY,
};
use crate::engine::{now_ms, Release, ServiceHandle, Submitted};

/// The longest a `wait` may hold a connection.
const MAX_WAIT: Duration = Duration::from_secs(600);
/// A request must arrive whole within this.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Control {
    pub services: BTreeMap<String, Arc<ServiceHandle>>,
    pub instance_id: String,
    pub started: Instant,
}

pub fn new_deploy_id() -> String {
    let salt = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    format!("d{:x}-{:06x}", now_ms(), salt & 0xff_ffff)
}

/// Binds the socket (replacing a stale one) and serves until the task is dropped.
pub async fn serve(
    control: Arc<Control>,
    socket: &Path,
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
    Ok(tokio::spawn(async move {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "control socket accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let control = control.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let control = control.clone();
                    async move { Ok::<_, Infallible>(handle(&control, req).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(READ_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), svc);
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "control connection ended with an error");
                }
            });
        }
    }))
}

fn json(status: StatusCode, body: &impl serde::Serialize) -> Response<Full<Bytes>> {
    let bytes = serde_json::to_vec(body).expect("responses serialize");
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(bytes)))
        .expect("static response parts are valid")
}

fn error(status: StatusCode, message: impl Into<String>) -> Response<Full<Bytes>> {
    json(
        status,
        &ErrorBody {
            error: message.into(),
        },
    )
}

async fn handle(control: &Control, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (req.method(), segments.as_slice()) {
        (&Method::POST, ["v1", "deploys"]) => submit(control, req).await,
        (&Method::GET, ["v1", "deploys", id]) => deploy_status(control, id, &query).await,
        (&Method::GET, ["v1", "status"]) => {
            let views: Vec<_> = control.services.values().map(|h| h.view()).collect();
            json(
                StatusCode::OK,
                &DaemonStatus {
                    version: env!("CARGO_PKG_VERSION").to_string(),
                    instance_id: control.instance_id.clone(),
                    uptime_secs: control.started.elapsed().as_secs(),
                    services: DaemonStatus::service_views(&views),
                },
            )
        }
        (_, ["v1", ..]) => error(
            StatusCode::NOT_FOUND,
            format!("no route {} {path}", req.method()),
        ),
        _ => error(
            StatusCode::NOT_FOUND,
            format!("unknown API version in {path:?} (this daemon speaks /v1)"),
        ),
    }
}

async fn submit(control: &Control, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let body = match tokio::time::timeout(
        READ_TIMEOUT,
        Limited::new(req.into_body(), MAX_BODY).collect(),
    )
    .await
    {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(e)) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("reading request body (limit {MAX_BODY} bytes): {e}"),
            )
        }
        Err(_) => {
            return error(
                StatusCode::REQUEST_TIMEOUT,
                "request body did not arrive in time",
            )
        }
    };
    let req: DeployRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("deploy request is not valid: {e}"),
            )
        }
    };
    let Some(handle) = control.services.get(&req.service) else {
        let known: Vec<&str> = control.services.keys().map(|s| s.as_str()).collect();
        return error(
            StatusCode::NOT_FOUND,
            format!(
                "unknown service {:?} (configured: {})",
                req.service,
                known.join(", ")
            ),
        );
    };
    if let Err(e) = check_image(&req.image) {
        return error(StatusCode::BAD_REQUEST, e);
    }
    let deploy_id = req.deploy_id.unwrap_or_else(new_deploy_id);
    if let Err(e) = check_deploy_id(&deploy_id) {
        return error(StatusCode::BAD_REQUEST, e);
    }
    let version = req.version.unwrap_or_else(|| default_version(&req.image));
    let release = Release {
        service: req.service.clone(),
        image: req.image,
        version,
        deploy_id,
    };
    tracing::info!(service = %release.service, release = %release.image, deploy_id = %release.deploy_id, "release submitted");
    let (deploy_id, accepted) = match handle.submit(release) {
        Submitted::Accepted { deploy_id } => (deploy_id, true),
        Submitted::Existing { deploy_id } => (deploy_id, false),
    };
    json(
        StatusCode::ACCEPTED,
        &DeployAccepted {
            deploy_id,
            service: req.service,
            accepted,
        },
    )
}

async fn deploy_status(control: &Control, id: &str, query: &str) -> Response<Full<Bytes>> {
    let wait = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("wait="))
        .and_then(|v| v.parse::<u64>().ok())
        .map(|s| Duration::from_secs(s).min(MAX_WAIT));
    let Some((name, handle)) = control
        .services
        .iter()
        .find(|(_, h)| h.view().deploy(id).is_some())
    else {
        return error(
            StatusCode::NOT_FOUND,
            format!("no deploy {id:?} on this host"),
        );
    };
    let mut rx = handle.subscribe();
    let until = tokio::time::Instant::now() + wait.unwrap_or_default();
    loop {
        let state = rx.borrow_and_update().deploy(id);
        let Some(state) = state else {
            return error(
                StatusCode::NOT_FOUND,
                format!("deploy {id:?} is no longer remembered"),
            );
        };
        if state.is_finished() || wait.is_none() {
            return json(StatusCode::OK, &DeployStatus::new(id, name, &state));
        }
        match tokio::time::timeout_at(until, rx.changed()).await {
            Ok(Ok(())) => continue,
            _ => return json(StatusCode::OK, &DeployStatus::new(id, name, &state)),
        }
    }
}
