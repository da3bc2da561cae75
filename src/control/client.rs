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

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("cannot reach hotswapd at {socket}: {message}")]
    Unreachable { socket: PathBuf, message: String },
    #[error("hotswapd refused the request ({status}): {message}")]
    Rejected { status: u16, message: String },
    #[error("hotswapd answered with something unexpected: {0}")]
    Protocol(String),
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
        let unreachable = |message: String| ClientError::Unreachable {
            socket: self.socket.clone(),
            message,
        };
        let work = async {
            let stream = UnixStream::connect(&self.socket)
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            tokio::spawn(conn);
            let req = Request::builder()
                .method(method)
                .uri(path)
                .header("host", "hotswapd")
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body.unwrap_or_default())))
                .expect("request parts are valid");
            let res = sender
                .send_request(req)
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            let status = res.status();
            let bytes = res
                .into_body()
                .collect()
                .await
                .map_err(|e| ClientError::Protocol(e.to_string()))?
                .to_bytes();
            if !status.is_success() {
                let message = serde_json::from_slice::<ErrorBody>(&bytes)
                    .map(|e| e.error)
                    .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
                return Err(ClientError::Rejected {
                    status: status.as_u16(),
                    message,
                });
            }
            serde_json::from_slice(&bytes).map_err(|e| {
                ClientError::Protocol(format!("{e}: {}", String::from_utf8_lossy(&bytes)))
            })
        };
        tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| unreachable(format!("no answer within {} s", timeout.as_secs())))?
    }

    pub async fn deploy(&self, req: &DeployRequest) -> Result<DeployAccepted, ClientError> {
        let body = serde_json::to_vec(req).expect("requests serialize");
        self.call(
            Method::POST,
            "/v1/deploys",
            Some(body),
            Duration::from_secs(30),
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

    pub async fn rollback(&self, service: &str) -> Result<DeployAccepted, ClientError> {
        let path = format!("/v1/services/{service}/rollback");
        self.call(
            Method::POST,
            &path,
            Some(b"{}".to_vec()),
            Duration::from_secs(30),
        )
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
