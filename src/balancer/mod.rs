//! The load balancer seen by the engine: put a server in, drain one, count its sessions, take it
//! out, and keep the persistent config in step. HAProxy is the production implementation.

mod config_file;
mod haproxy;
pub mod maintenance;
mod runtime_api;
mod sessions;

use std::future::Future;

use thiserror::Error;

pub use config_file::rewrite_managed_block;
pub use haproxy::Haproxy;
pub use runtime_api::RuntimeApi;
pub use sessions::Session;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSpec {
    pub name: String,
    pub addr: std::net::IpAddr,
    pub port: u16,
    /// The weight it is added with (HAProxy's default, 1, when None).
    pub weight: Option<u16>,
    /// A new container behind a server that served another one (a repair): its health is
    /// forced up, since HAProxy's checks may still be judging the dead one (a check sent to a
    /// dead address before the replacement took it fails a second later).
    pub fresh: bool,
}

/// A server's cumulative counters from `show stat`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServerFigures {
    pub name: String,
    /// Responses of every class (hrsp_1xx .. hrsp_other).
    pub responses: u64,
    /// 5xx responses, connection errors and response errors.
    pub errors: u64,
    /// Connection and response errors (requests that got no response from the server).
    pub failed_connections: u64,
    /// Average response time over the server's last 1024 requests, in ms.
    pub rtime_ms: u64,
    pub weight: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminState {
    Ready,
    Drain,
    Maint,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerStatus {
    pub name: String,
    pub addr: std::net::IpAddr,
    pub port: u16,
    pub admin: AdminState,
    /// HAProxy's operational view (its own checks): running or not.
    pub up: bool,
}

#[derive(Debug, Error)]
pub enum BalancerError {
    #[error("HAProxy runtime API {socket}: {message}")]
    Api { socket: String, message: String },
    #[error("HAProxy command {command:?} on {socket} failed: {reply}")]
    Command {
        socket: String,
        command: String,
        reply: String,
    },
    #[error("HAProxy config file {path}: {message}")]
    ConfigFile { path: String, message: String },
    #[error("reloading HAProxy: {0}")]
    Reload(String),
    /// The runtime API cannot make this change (e.g. a backend with a static balance algorithm
    /// takes no dynamic servers): it needs the config file and a reload.
    #[error("HAProxy cannot add server {server} at runtime: {reply}")]
    NeedsReload { server: String, reply: String },
}

pub trait Balancer: Send + Sync + 'static {
    /// The servers of our backend as HAProxy sees them now.
    fn servers(&self) -> impl Future<Output = Result<Vec<ServerStatus>, BalancerError>> + Send;
    /// Adds the server (if missing), enables its checks and sets it ready: it takes traffic.
    fn put_in(&self, server: &ServerSpec)
        -> impl Future<Output = Result<(), BalancerError>> + Send;
    /// No new requests to this server; in-flight ones finish.
    fn drain(&self, name: &str) -> impl Future<Output = Result<(), BalancerError>> + Send;
    /// Requests the server is handling or has queued; None when the server is gone.
    fn in_flight(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<u64>, BalancerError>> + Send;
    /// The sessions HAProxy holds on our backend's servers, requests and streams told apart.
    fn sessions(&self) -> impl Future<Output = Result<Vec<Session>, BalancerError>> + Send;
    /// Closes the sessions named; how many were still open.
    fn shutdown_sessions(
        &self,
        ids: &[String],
    ) -> impl Future<Output = Result<usize, BalancerError>> + Send;
    /// Maint, then delete. A server already gone is fine.
    fn take_out(&self, name: &str) -> impl Future<Output = Result<(), BalancerError>> + Send;
    /// Writes the servers into the persistent config so a reload or restart keeps them.
    fn persist(
        &self,
        servers: &[ServerSpec],
    ) -> impl Future<Output = Result<(), BalancerError>> + Send;
    /// The backend's failed-request counter (connection and response errors, 5xx answers).
    fn backend_failures(&self) -> impl Future<Output = Result<u64, BalancerError>> + Send;
    /// Every server's cumulative figures.
    fn figures(&self) -> impl Future<Output = Result<Vec<ServerFigures>, BalancerError>> + Send;
    /// Sets the weights of several servers in one runtime API call (commands separated by `;`),
    /// so traffic moves between releases at once.
    fn set_weights(
        &self,
        weights: &[(String, u16)],
    ) -> impl Future<Output = Result<(), BalancerError>> + Send;
    /// Reloads HAProxy hitlessly and waits until the new process answers with `expect` present.
    fn reload(&self, expect: &str) -> impl Future<Output = Result<(), BalancerError>> + Send;
    /// Whether the running HAProxy has loaded our backend's maintenance rule (maintenance.rs).
    fn maintenance_rule_loaded(&self) -> impl Future<Output = Result<bool, BalancerError>> + Send;
    /// Whether our backend answers 503 for maintenance now.
    fn maintenance_on(&self) -> impl Future<Output = Result<bool, BalancerError>> + Send;
    /// Turns our backend's maintenance on (message, Retry-After seconds) or off.
    fn set_maintenance(
        &self,
        on: Option<(&str, u64)>,
    ) -> impl Future<Output = Result<(), BalancerError>> + Send;
}
