//! The swap engine: the pure state machine (`phase`), its journal, the per-service driver and the
//! handle the control API talks to.

pub mod book;
pub mod canary;
pub mod driver;
pub mod handle;
pub mod journal;
pub mod phase;
pub mod reload;

pub use driver::{now_ms, Driver};
pub use handle::{DeployState, ServiceHandle, ServiceView, Submitted};
pub use phase::{Instance, Phase, Release, Swap};
