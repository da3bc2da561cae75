//! The control API: HTTP/1.1 with JSON over the daemon's Unix socket, versioned paths.
//!
//! | method | path | what |
//! |---|---|---|
//! | POST | /v1/deploys | submit a release → 202 `DeployAccepted` |
//! | GET | /v1/deploys/{id}?wait=SECS | one deploy; with `wait`, answers when it finishes (or after SECS) |
//! | GET | /v1/services | one summary per service |
//! | GET | /v1/services/{name} | a service's full view |
//! | POST | /v1/services/{name}/rollback | queue the previous release again, or `to` a kept one |
//! | GET | /v1/history?service=NAME&limit=N | the last N reports, newest first |
//! | POST | /v1/services/{name}/maintenance | maintenance mode on (503, message, Retry-After) or off |
//! | GET | /metrics | Prometheus' text format (also over TCP with `metrics_listen`) |
//! | POST | /v1/reload | re-read the config file |
//! | GET | /v1/health | version, host, uptime, per-service state |
//! | GET | /v1/status | the daemon and every service's full view |
//!
//! Connections are bounded (`conns.rs`): idle ones close after 10 s, and at the bound the one
//! idle the longest gives way to a new one, so `status` answers however many clients hold
//! connections open.

pub mod access;
pub mod api;
pub mod client;
pub mod conns;
pub mod metrics;
pub mod server;
