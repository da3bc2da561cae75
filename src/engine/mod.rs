//! The swap engine. `phase` is the pure state machine; `walker` the one loop that walks a swap
//! through it, journaling (`book`, `journal`) before each phase acts; `steps` the work of each
//! phase per kind of service, one file per phase; `recover` what a restart does; `handle` the
//! per-service queue and view the control API talks to.

pub mod book;
pub mod canary;
pub mod crash;
pub mod error;
pub mod handle;
pub mod hooks;
pub mod instance;
pub mod journal;
pub mod maintenance;
pub mod phase;
mod queue_file;
pub mod recover;
mod repairs;
pub mod steps;
pub mod superseded;
pub mod supervise;
pub mod view;
pub mod walker;

#[cfg(test)]
mod fakes;
#[cfg(test)]
mod tests;

pub use error::StepError;
pub use handle::{DeployState, Maintenance, ServiceHandle, ServiceView, State, Submitted};
pub use instance::StreamCounts;
pub use phase::{Instance, Phase, Release, Swap};
pub use walker::Walker;
