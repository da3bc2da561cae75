//! hotswapctl's verbs, one file each: its clap arguments (`Args`) and its `run`. The verbs that
//! talk to hotswapd are thin clients of its control socket; the build-box verbs talk to AWS.
//! `src/bin/hotswapctl.rs` only parses and dispatches.

pub mod asg_switch;
pub mod check_config;
pub mod check_live;
pub mod deploy;
pub mod docs;
pub mod exit;
pub mod history;
pub mod lint_template;
pub mod maintenance;
pub mod reload;
pub mod rollback;
pub mod services;
pub mod stack_update;
pub mod status;

use std::future::Future;
use std::path::PathBuf;

use crate::config::{Settings, DEFAULT_PATH};
use crate::control::client::{Client, ClientError};

pub use exit::Exit;

// Where hotswapd is: taken by the verbs that talk to it (and check-config), after the verb or
// before it (`hotswapctl --socket S status`); the build-box verbs have none. (No doc comment:
// clap would make it the program's about.)
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Globals {
    /// The daemon's control socket (default: the one named in --config).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// The daemon's config file, read for the socket path (default: /etc/hotswap/config.toml).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl Globals {
    /// These, each filled from `before` (given before the verb) where not given after it.
    pub fn or(&self, before: &Globals) -> Globals {
        Globals {
            socket: self.socket.clone().or_else(|| before.socket.clone()),
            config: self.config.clone().or_else(|| before.config.clone()),
        }
    }

    /// --config, else the packaged default.
    pub fn config_path(&self) -> PathBuf {
        self.config
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_PATH))
    }

    /// --socket, else the socket named in --config.
    fn socket_path(&self) -> Result<PathBuf, String> {
        if let Some(s) = &self.socket {
            return Ok(s.clone());
        }
        match Settings::load(&self.config_path()) {
            Ok(s) => Ok(s.daemon.socket),
            Err(e) => Err(format!("{e} (or pass --socket)")),
        }
    }

    /// Runs a verb that talks to hotswapd with a client of its socket; no socket path is a
    /// usage error.
    pub fn with_daemon<F, Fut>(&self, verb: F) -> Exit
    where
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = Exit>,
    {
        let socket = match self.socket_path() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("hotswapctl: {e}");
                return Exit::Usage;
            }
        };
        block_on(verb(Client::new(&socket)))
    }
}

/// Runs a verb's future to its end on a single-threaded runtime.
pub fn block_on<F: Future>(work: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(work)
}

/// How a verb that starts a swap (deploy, rollback) waits for it.
/// A duration on the command line, in seconds: `90`, `90s`, `10m`, `2h` or `7d`.
pub fn seconds(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (num, unit) = match t.char_indices().last() {
        Some((i, c @ ('s' | 'm' | 'h' | 'd'))) => (&t[..i], c),
        _ => (t, 's'),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{text:?} is not a duration: use seconds, or 30s, 10m, 2h, 7d"))?;
    let unit = match unit {
        'm' => 60,
        'h' => 3600,
        'd' => 86400,
        _ => 1,
    };
    n.checked_mul(unit)
        .ok_or_else(|| format!("{text:?} is too long a duration"))
}

#[derive(clap::Args, Debug)]
pub struct Waiting {
    /// Wait until the swap ends, showing each ramp step; exit non-zero if it failed.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits: seconds, or 30s, 10m, 2h.
    #[arg(long, default_value_t = 600, value_parser = seconds)]
    pub timeout_secs: u64,
    /// Print the deploy's status as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn client_exit(e: &ClientError) -> Exit {
    match e {
        ClientError::Unreachable { .. } => Exit::Unreachable,
        ClientError::Rejected { .. } => Exit::Rejected,
        ClientError::Protocol(_) => Exit::Protocol,
    }
}
