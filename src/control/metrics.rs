//! `GET /metrics`: on the control socket (a route of `server.rs`) and, with `[daemon]
//! metrics_listen`, on its own TCP listener that serves nothing else.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};

use super::conns::{error, Admission, Bounds, Reply, Table};
use crate::report::metrics::ServiceGauges;
use crate::services::Services;

/// `GET /metrics`: Prometheus' text format.
pub(super) async fn metrics(shared: &Services) -> Reply {
    let services: Vec<_> = shared
        .handles()
        .iter()
        .map(|h| {
            let v = h.view();
            ServiceGauges {
                service: v.service,
                state: v.state,
                queued: v.queued.len(),
                maintenance: v.maintenance.is_some(),
            }
        })
        .collect();
    let outbox = shared.reporter.outbox.clone();
    let depth = match outbox {
        Some(o) => tokio::task::spawn_blocking(move || o.depth()).await.ok(),
        None => None,
    };
    let text = shared.reporter.metrics.render(&services, depth);
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
        .body(Full::new(Bytes::from(text)))
        .expect("a valid response")
}

/// Connections the metrics listener holds at once.
const METRICS_CONNECTIONS: usize = 128;

/// The bounds of the metrics listener, which may face a network: fewer connections than the
/// control socket, and shorter patience with idle or slow ones (a scrape is one quick request).
fn metrics_bounds() -> Bounds {
    Bounds {
        max_connections: METRICS_CONNECTIONS,
        idle_timeout: Duration::from_secs(5),
        header_timeout: Duration::from_secs(5),
    }
}

/// `[daemon] metrics_listen`: `GET /metrics` (and nothing else) over TCP, for a Prometheus that
/// cannot reach the socket. Connections are held in a table like the control socket's
/// (`conns.rs`): at most `METRICS_CONNECTIONS`, closed after 5 s idle, headers within 5 s, and
/// at the bound the connection idle the longest (one that sent nothing, or is still trickling
/// its headers) gives way to the new one, so a scraper is answered however many idle or slow
/// connections others hold open.
pub async fn serve_metrics(
    shared: Arc<Services>,
    addr: std::net::SocketAddr,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving metrics over TCP");
    let table = Table::new(metrics_bounds());
    Ok(tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // out of descriptors, most likely: let closing connections give theirs back
                    tracing::debug!(error = %e, "metrics listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            match table.admit(tokio::time::Instant::now()) {
                Admission::Admitted(ticket) => {
                    let shared = shared.clone();
                    tokio::spawn(super::conns::serve(ticket, stream, move |req| {
                        let shared = shared.clone();
                        async move { route(&shared, &req).await }
                    }));
                }
                Admission::Busy => {
                    let table = table.clone();
                    tokio::spawn(async move { super::conns::refuse(&table, stream).await });
                }
                Admission::Shed => drop(stream),
            }
        }
    }))
}

async fn route(shared: &Services, req: &Request<Incoming>) -> Reply {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => metrics(shared).await,
        _ => error(StatusCode::NOT_FOUND, "only GET /metrics here"),
    }
}
