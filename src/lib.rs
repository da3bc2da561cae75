//! hotswap: a host-side reload supervisor. See ARCHITECTURE.md for the map.

pub mod balancer;
pub mod cfn;
pub mod cli;
pub mod clock;
pub mod code;
pub mod config;
pub mod control;
pub mod daemon;
pub mod engine;
pub mod fleet;
pub mod fsutil;
pub mod health;
pub mod intake;
pub mod journald;
pub mod model;
pub mod report;
pub mod runtime;
pub mod sdk;
pub mod services;
pub mod systemd;
pub mod watchers;
