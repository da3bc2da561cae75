//! HAProxy as the balancer of one service's backend: runtime API for instant changes, the config
//! file's managed block so a reload or restart keeps them, reload by master socket or signal.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{
    rewrite_managed_block, AdminState, Balancer, BalancerError, RuntimeApi, ServerFigures,
    ServerSpec, ServerStatus,
};
use crate::config::{HaproxySettings, ReloadVia};
use crate::fsutil::write_atomic;

/// Several services may share one config file: one writer at a time.
static CONFIG_FILE_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long `del server` is retried while HAProxy closes the idle connections of a server in maint.
const DELETE_PATIENCE: Duration = Duration::from_secs(5);
/// How long a reload may take before the new worker answers with the expected servers.
const RELOAD_PATIENCE: Duration = Duration::from_secs(15);

#[derive(Debug, Clone)]
pub struct Haproxy {
    api: RuntimeApi,
    settings: HaproxySettings,
}

impl Haproxy {
    pub fn new(settings: &HaproxySettings) -> Haproxy {
        Haproxy {
            api: RuntimeApi::new(&settings.runtime_socket, settings.command_timeout),
            settings: settings.clone(),
        }
    }

    fn backend(&self) -> &str {
        &self.settings.backend
    }

    fn server_line(&self, s: &ServerSpec) -> String {
        format!(
            "server {} {}:{} {}",
            s.name, s.addr, s.port, self.settings.server_options
        )
        .trim_end()
        .to_string()
    }

    async fn find(&self, name: &str) -> Result<Option<ServerStatus>, BalancerError> {
        Ok(self.servers().await?.into_iter().find(|s| s.name == name))
    }

    /// Reads the server back and checks its admin state: HAProxy's replies to `set server` are
    /// free text, the state is the truth.
    async fn confirm_state(&self, name: &str, want: AdminState) -> Result<(), BalancerError> {
        match self.find(name).await? {
            Some(s) if s.admin == want => Ok(()),
            other => Err(BalancerError::Command {
                socket: self.api.socket().display().to_string(),
                command: format!("set server {}/{name} state {want:?}", self.backend()),
                reply: format!("server now reads {other:?}"),
            }),
        }
    }

    async fn master_reload(&self, socket: &std::path::Path) -> Result<(), BalancerError> {
        let io = async {
            let mut s = tokio::net::UnixStream::connect(socket).await?;
            s.write_all(b"reload\n").await?;
            let mut reply = String::new();
            s.read_to_string(&mut reply).await?;
            Ok::<_, std::io::Error>(reply)
        };
        match tokio::time::timeout(RELOAD_PATIENCE, io).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(BalancerError::Reload(format!(
                "master socket {}: {e}",
                socket.display()
            ))),
            Err(_) => Err(BalancerError::Reload(format!(
                "master socket {}: no answer",
                socket.display()
            ))),
        }
    }
}

/// HAProxy 2.6 gives a server added at runtime no idle-connection pool (purge delay 0, idle limit
/// 0): every request would open a new connection to the container. Servers from the config file
/// pool by default; runtime servers get the same unless the options say otherwise.
fn runtime_server_options(options: &str) -> String {
    let mut out = options.to_string();
    for (key, value) in [("pool-max-conn", "-1"), ("pool-purge-delay", "5s")] {
        if !options.split_whitespace().any(|w| w == key) {
            out.push_str(&format!(" {key} {value}"));
        }
    }
    out.trim().to_string()
}

impl Balancer for Haproxy {
    async fn maintenance_rule_loaded(&self) -> Result<bool, BalancerError> {
        super::maintenance::rule_loaded(&self.api, self.backend()).await
    }

    async fn maintenance_on(&self) -> Result<bool, BalancerError> {
        super::maintenance::is_on(&self.api, self.backend()).await
    }

    async fn set_maintenance(&self, on: Option<(&str, u64)>) -> Result<(), BalancerError> {
        super::maintenance::apply(&self.api, self.backend(), on).await
    }

    async fn servers(&self) -> Result<Vec<ServerStatus>, BalancerError> {
        self.api.servers_state(self.backend()).await
    }

    async fn put_in(&self, server: &ServerSpec) -> Result<(), BalancerError> {
        let be = self.backend();
        let name = &server.name;
        match self.find(name).await? {
            Some(s) => {
                let moved = s.addr != server.addr || s.port != server.port;
                if moved {
                    self.api
                        .command(&format!(
                            "set server {be}/{name} addr {} port {}",
                            server.addr, server.port
                        ))
                        .await?;
                }
                // a replacement at the same address (Docker gives a freed address out again)
                // finds the server marked down by HAProxy's checks of the dead one
                if moved || !s.up || server.fresh {
                    // HAProxy's checks found the old address dead; the new one passed our gate.
                    // Its checks go on and take it out again if it fails them (a server
                    // without checks answers that it has none, which is fine).
                    let _ = self
                        .api
                        .command(&format!("set server {be}/{name} health up"))
                        .await;
                }
                if let Some(w) = server.weight {
                    self.set_weights(&[(name.clone(), w)]).await?;
                }
            }
            None => {
                let mut options = runtime_server_options(&self.settings.server_options);
                if let Some(w) = server.weight {
                    options = with_weight(&options, w);
                }
                let added = self
                    .api
                    .expect(
                        &format!(
                            "add server {be}/{name} {}:{} {options}",
                            server.addr, server.port
                        ),
                        "New server registered",
                    )
                    .await;
                if let Err(BalancerError::Command { reply, .. }) = added {
                    return Err(BalancerError::NeedsReload {
                        server: name.clone(),
                        reply,
                    });
                }
                added?;
                if options.split_whitespace().any(|w| w == "check") {
                    self.api
                        .quiet(&format!("enable health {be}/{name}"))
                        .await?;
                }
            }
        }
        self.api
            .command(&format!("set server {be}/{name} state ready"))
            .await?;
        self.confirm_state(name, AdminState::Ready).await
    }

    async fn drain(&self, name: &str) -> Result<(), BalancerError> {
        self.api
            .command(&format!("set server {}/{name} state drain", self.backend()))
            .await?;
        self.confirm_state(name, AdminState::Drain).await
    }

    async fn in_flight(&self, name: &str) -> Result<Option<u64>, BalancerError> {
        Ok(self
            .api
            .in_flight(self.backend())
            .await?
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, n)| n))
    }

    async fn sessions(&self) -> Result<Vec<super::Session>, BalancerError> {
        self.api.sessions(self.backend()).await
    }

    async fn shutdown_sessions(&self, ids: &[String]) -> Result<usize, BalancerError> {
        self.api.shutdown_sessions(ids).await
    }

    async fn take_out(&self, name: &str) -> Result<(), BalancerError> {
        let be = self.backend();
        if self.find(name).await?.is_none() {
            return Ok(());
        }
        self.api
            .command(&format!("set server {be}/{name} state maint"))
            .await?;
        let started = Instant::now();
        loop {
            let reply = self.api.command(&format!("del server {be}/{name}")).await?;
            if reply.contains("Server deleted") || self.find(name).await?.is_none() {
                return Ok(());
            }
            if started.elapsed() > DELETE_PATIENCE {
                return Err(BalancerError::Command {
                    socket: self.api.socket().display().to_string(),
                    command: format!("del server {be}/{name}"),
                    reply: reply.trim().to_string(),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn persist(&self, servers: &[ServerSpec]) -> Result<(), BalancerError> {
        let Some(path) = &self.settings.config_file else {
            return Ok(());
        };
        let _guard = CONFIG_FILE_LOCK.lock().await;
        let err = |message: String| BalancerError::ConfigFile {
            path: path.display().to_string(),
            message,
        };
        let text = crate::fsutil::read_bounded_string(path, crate::fsutil::CONFIG_MAX_BYTES)
            .map_err(|e| err(e.to_string()))?;
        let lines: Vec<String> = servers.iter().map(|s| self.server_line(s)).collect();
        let new = rewrite_managed_block(&text, self.backend(), &lines).map_err(err)?;
        if new != text {
            let path = path.clone();
            tokio::task::spawn_blocking(move || write_atomic(&path, new.as_bytes()))
                .await
                .expect("config writer task")
                .map_err(|e| err(e.to_string()))?;
        }
        Ok(())
    }

    async fn figures(&self) -> Result<Vec<ServerFigures>, BalancerError> {
        self.api.server_figures(self.backend()).await
    }

    async fn set_weights(&self, weights: &[(String, u16)]) -> Result<(), BalancerError> {
        if weights.is_empty() {
            return Ok(());
        }
        let be = self.backend();
        let command = weights
            .iter()
            .map(|(name, w)| format!("set weight {be}/{name} {w}"))
            .collect::<Vec<_>>()
            .join("; ");
        // `set weight` answers nothing on success; any text is a refusal (e.g. a static
        // balance algorithm, or an unknown server)
        self.api.quiet(&command).await
    }

    async fn backend_failures(&self) -> Result<u64, BalancerError> {
        self.api.backend_failures(self.backend()).await
    }

    async fn reload(&self, expect: &str) -> Result<(), BalancerError> {
        match &self.settings.reload {
            None => {
                return Err(BalancerError::Reload(
                    "no reload method configured (master_socket or pidfile)".into(),
                ))
            }
            Some(ReloadVia::MasterSocket(socket)) => self.master_reload(socket).await?,
            Some(ReloadVia::Signal { pidfile, signal }) => {
                let text =
                    crate::fsutil::read_bounded_string(pidfile, crate::fsutil::PIDFILE_MAX_BYTES)
                        .map_err(|e| {
                        BalancerError::Reload(format!("reading pidfile {}: {e}", pidfile.display()))
                    })?;
                let pid: i32 = text
                    .split_whitespace()
                    .next()
                    .and_then(|p| p.parse().ok())
                    .ok_or_else(|| {
                        BalancerError::Reload(format!("pidfile {} holds no pid", pidfile.display()))
                    })?;
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), *signal).map_err(|e| {
                    BalancerError::Reload(format!("sending {signal} to pid {pid}: {e}"))
                })?;
            }
        }
        let started = Instant::now();
        loop {
            if let Ok(servers) = self.servers().await {
                if servers.iter().any(|s| s.name == expect) {
                    return Ok(());
                }
            }
            if started.elapsed() > RELOAD_PATIENCE {
                return Err(BalancerError::Reload(format!(
                    "server {expect} not visible on {} {} s after the reload (is the config valid? try haproxy -c)",
                    self.api.socket().display(),
                    RELOAD_PATIENCE.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// The server options with `weight` set to `w` (replacing a configured weight).
fn with_weight(options: &str, w: u16) -> String {
    let mut words: Vec<String> = Vec::new();
    let mut it = options.split_whitespace();
    while let Some(word) = it.next() {
        if word == "weight" {
            it.next();
        } else {
            words.push(word.to_string());
        }
    }
    words.push(format!("weight {w}"));
    words.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_weight_given_replaces_the_configured_one() {
        assert_eq!(
            with_weight("check weight 50 inter 2s", 0),
            "check inter 2s weight 0"
        );
        assert_eq!(with_weight("", 7), "weight 7");
    }

    #[test]
    fn runtime_servers_pool_connections_unless_told_otherwise() {
        assert_eq!(
            runtime_server_options("check inter 2s"),
            "check inter 2s pool-max-conn -1 pool-purge-delay 5s"
        );
        assert_eq!(
            runtime_server_options("pool-purge-delay 1s"),
            "pool-purge-delay 1s pool-max-conn -1"
        );
    }
}
