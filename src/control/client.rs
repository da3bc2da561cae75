//! The client side of the control API, for hotswapctl and tests.

use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use thiserror::Error;
use tokio::net::UnixStream;

use super::api::{DaemonStatus, DeployAccepted, DeployRequest, DeployStatus, ErrorBody};
use crate::clock::Backoff;

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("cannot reach hotswapd at {socket}: {message}")]
    Unreachable { socket: PathBuf, message: String },
    #[error("hotswapd refused the request ({status}): {message}")]
    Rejected { status: u16, message: String },
    #[error("hotswapd answered with something unexpected: {0}")]
    Protocol(String),
}

/// How long a request shed by a busy daemon is asked again before its error is shown.
const RETRY_FOR: Duration = Duration::from_secs(10);

/// How one request went wrong: worth asking again (the daemon shed it unread), closed with no
/// answer (asked again only when idempotent), or failed.
enum Once {
    Retry(ClientError),
    Closed(ClientError),
    Failed(ClientError),
}

/// Whether a request may be sent again after its connection closed with no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Idempotent {
    /// GET only.
    ByMethod,
    /// This request, whatever its method (a deploy with its id).
    Yes,
}

#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
}

impl Client {
    pub fn new(socket: &Path) -> Client {
        Client {
            socket: socket.to_owned(),
        }
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<T, ClientError> {
        self.call_with(method, path, body, timeout, Idempotent::ByMethod, |bytes| {
            serde_json::from_slice(bytes)
                .map_err(|e| format!("{e}: {}", String::from_utf8_lossy(bytes)))
        })
        .await
    }

    /// A GET whose answer is text, not JSON (`/metrics`).
    async fn text(
        &self,
        method: Method,
        path: &str,
        timeout: Duration,
    ) -> Result<String, ClientError> {
        self.call_with(method, path, None, timeout, Idempotent::ByMethod, |bytes| {
            String::from_utf8(bytes.to_vec()).map_err(|e| e.to_string())
        })
        .await
    }

    async fn call_with<T>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        timeout: Duration,
        idempotent: Idempotent,
        decode: fn(&[u8]) -> Result<T, String>,
    ) -> Result<T, ClientError> {
        let idempotent = method == Method::GET || idempotent == Idempotent::Yes;
        let work = async {
            // a daemon shedding load (all its control connections busy, or its socket's backlog
            // full) has not read the request: ask again, waits doubling up to 1 s
            let mut wait = Backoff::doubling(Duration::from_millis(50), Duration::from_secs(1));
            let give_up = tokio::time::Instant::now() + RETRY_FOR;
            loop {
                let e = match self.once(method.clone(), path, body.clone(), decode).await {
                    Ok(t) => return Ok(t),
                    Err(Once::Retry(e)) => e,
                    Err(Once::Closed(e)) if idempotent => e,
                    Err(Once::Closed(e) | Once::Failed(e)) => return Err(e),
                };
                if tokio::time::Instant::now() + wait.peek() > give_up {
                    return Err(e);
                }
                tokio::time::sleep(wait.next()).await;
            }
        };
        tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| self.unreachable(format!("no answer within {} s", timeout.as_secs())))?
    }

    fn unreachable(&self, message: String) -> ClientError {
        ClientError::Unreachable {
            socket: self.socket.clone(),
            message,
        }
    }

    /// One request on a new connection.
    async fn once<T>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        decode: fn(&[u8]) -> Result<T, String>,
    ) -> Result<T, Once> {
        let stream = UnixStream::connect(&self.socket).await.map_err(|e| {
            let busy = e.kind() == std::io::ErrorKind::WouldBlock;
            let e = self.unreachable(e.to_string());
            if busy {
                Once::Retry(e)
            } else {
                Once::Failed(e)
            }
        })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| Once::Failed(self.unreachable(e.to_string())))?;
        tokio::spawn(conn);
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "hotswapd")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .expect("request parts are valid");
        let res = sender.send_request(req).await.map_err(|e| {
            // closed with no answer: shed, or the daemon stopping
            let reset = std::error::Error::source(&e)
                .and_then(|s| s.downcast_ref::<std::io::Error>())
                .is_some_and(|io| {
                    matches!(
                        io.kind(),
                        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                    )
                });
            let closed = e.is_incomplete_message() || e.is_canceled() || e.is_closed() || reset;
            let e = self.unreachable(e.to_string());
            if closed {
                Once::Closed(e)
            } else {
                Once::Failed(e)
            }
        })?;
        let status = res.status();
        let bytes = res
            .into_body()
            .collect()
            .await
            .map_err(|e| Once::Failed(ClientError::Protocol(e.to_string())))?
            .to_bytes();
        if !status.is_success() {
            let message = serde_json::from_slice::<ErrorBody>(&bytes)
                .map(|e| e.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
            let e = ClientError::Rejected {
                status: status.as_u16(),
                message,
            };
            return Err(if status == StatusCode::SERVICE_UNAVAILABLE {
                Once::Retry(e)
            } else {
                Once::Failed(e)
            });
        }
        decode(&bytes).map_err(|e| Once::Failed(ClientError::Protocol(e)))
    }

    /// Submits a release. The deploy id is chosen here when the request has none, so asking
    /// again after a connection closed with no answer is safe: the daemon takes a deploy id
    /// once (a second submission answers `accepted: false`).
    pub async fn deploy(&self, req: &DeployRequest) -> Result<DeployAccepted, ClientError> {
        let mut req = req.clone();
        req.deploy_id
            .get_or_insert_with(crate::model::new_deploy_id);
        let body = serde_json::to_vec(&req).expect("requests serialize");
        self.call_with(
            Method::POST,
            "/v1/deploys",
            Some(body),
            Duration::from_secs(30),
            Idempotent::Yes,
            |bytes| {
                serde_json::from_slice(bytes)
                    .map_err(|e| format!("{e}: {}", String::from_utf8_lossy(bytes)))
            },
        )
        .await
    }

    /// With `wait`, the daemon answers when the deploy finishes or after `wait`.
    pub async fn deploy_status(
        &self,
        deploy_id: &str,
        wait: Option<Duration>,
    ) -> Result<DeployStatus, ClientError> {
        let path = match wait {
            Some(w) => format!("/v1/deploys/{deploy_id}?wait={}", w.as_secs().max(1)),
            None => format!("/v1/deploys/{deploy_id}"),
        };
        let timeout = wait.unwrap_or_default() + Duration::from_secs(30);
        self.call(Method::GET, &path, None, timeout).await
    }

    /// Follows a deploy like `wait`, calling `seen` with each status read (about once a second).
    pub async fn follow(
        &self,
        deploy_id: &str,
        timeout: Duration,
        seen: impl FnMut(&DeployStatus),
    ) -> Result<DeployStatus, ClientError> {
        self.poll(deploy_id, timeout, Duration::from_secs(1), seen)
            .await
    }

    /// Follows a deploy until it finishes or `timeout` passes; returns the last status seen.
    pub async fn wait(
        &self,
        deploy_id: &str,
        timeout: Duration,
    ) -> Result<DeployStatus, ClientError> {
        self.poll(deploy_id, timeout, Duration::from_secs(60), |_| {})
            .await
    }

    /// Long polls of at most `each` until the deploy finishes or `timeout` passes.
    async fn poll(
        &self,
        deploy_id: &str,
        timeout: Duration,
        each: Duration,
        mut seen: impl FnMut(&DeployStatus),
    ) -> Result<DeployStatus, ClientError> {
        let until = tokio::time::Instant::now() + timeout;
        loop {
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            let status = self.deploy_status(deploy_id, Some(left.min(each))).await?;
            seen(&status);
            if status.finished || left.is_zero() {
                return Ok(status);
            }
        }
    }

    pub async fn status(&self) -> Result<DaemonStatus, ClientError> {
        self.call(Method::GET, "/v1/status", None, Duration::from_secs(30))
            .await
    }
}

impl ClientError {
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Rejected { status, .. } => StatusCode::from_u16(*status).ok(),
            _ => None,
        }
    }
}

impl Client {
    pub async fn services(&self) -> Result<Vec<super::api::ServiceSummary>, ClientError> {
        self.call(Method::GET, "/v1/services", None, Duration::from_secs(30))
            .await
    }

    pub async fn rollback(
        &self,
        service: &str,
        to: Option<&str>,
    ) -> Result<DeployAccepted, ClientError> {
        let path = format!("/v1/services/{service}/rollback");
        let body = super::api::RollbackRequest {
            deploy_id: None,
            to: to.map(String::from),
        };
        self.call(
            Method::POST,
            &path,
            Some(serde_json::to_vec(&body).expect("serializes")),
            Duration::from_secs(30),
        )
        .await
    }

    /// The last `limit` reports (swaps and repairs), newest first; of one service if given.
    pub async fn history(
        &self,
        service: Option<&str>,
        limit: usize,
    ) -> Result<Vec<serde_json::Value>, ClientError> {
        let path = match service {
            Some(s) => format!("/v1/history?service={s}&limit={limit}"),
            None => format!("/v1/history?limit={limit}"),
        };
        self.call(Method::GET, &path, None, Duration::from_secs(30))
            .await
    }

    pub async fn maintenance(
        &self,
        service: &str,
        req: &super::api::MaintenanceRequest,
    ) -> Result<super::api::MaintenanceOutcome, ClientError> {
        let path = format!("/v1/services/{service}/maintenance");
        self.call(
            Method::POST,
            &path,
            Some(serde_json::to_vec(req).expect("serializes")),
            Duration::from_secs(30),
        )
        .await
    }

    /// `GET /metrics`: Prometheus' text format.
    pub async fn metrics(&self) -> Result<String, ClientError> {
        self.text(Method::GET, "/metrics", Duration::from_secs(30))
            .await
    }

    pub async fn reload(&self) -> Result<super::api::ReloadOutcome, ClientError> {
        self.call(Method::POST, "/v1/reload", None, Duration::from_secs(30))
            .await
    }

    pub async fn health(&self) -> Result<super::api::Health, ClientError> {
        self.call(Method::GET, "/v1/health", None, Duration::from_secs(30))
            .await
    }
}
