//! `GET /metrics`: on the control socket (a route of `server.rs`) and, with `[daemon]
//! metrics_listen`, on its own TCP listener that serves nothing else.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};

use super::conns::Reply;
use super::server::{error, READ_TIMEOUT};
use crate::registry::Registry;

/// `GET /metrics`: Prometheus' text format.
pub(super) async fn metrics(shared: &Registry) -> Reply {
    let views: Vec<_> = shared.handles().iter().map(|h| h.view()).collect();
    let outbox = shared.reporter.outbox.clone();
    let depth = match outbox {
        Some(o) => tokio::task::spawn_blocking(move || o.depth()).await.ok(),
        None => None,
    };
    let text = shared.reporter.metrics.render(&views, depth);
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
        .body(Full::new(Bytes::from(text)))
        .expect("a valid response")
}

/// `[daemon] metrics_listen`: `GET /metrics` (and nothing else) over TCP, for a Prometheus that
/// cannot reach the socket. At most 16 connections at once; headers within 10 s.
pub async fn serve_metrics(
    shared: Arc<Registry>,
    addr: std::net::SocketAddr,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving metrics over TCP");
    let slots = Arc::new(tokio::sync::Semaphore::new(16));
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                continue; // dropped: a scraper retries
            };
            let shared = shared.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let shared = shared.clone();
                    async move {
                        Ok::<_, std::convert::Infallible>(match (req.method(), req.uri().path()) {
                            (&Method::GET, "/metrics") => metrics(&shared).await,
                            _ => error(StatusCode::NOT_FOUND, "only GET /metrics here"),
                        })
                    }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(READ_TIMEOUT)
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
                let _ = tokio::time::timeout(Duration::from_secs(60), conn).await;
                drop(slot);
            });
        }
    }))
}
