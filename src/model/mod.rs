//! The domain's data, below every other module but the pure helpers (`clock`): a release and who
//! asked for it, the canary's steps and figures, a report, what status says of a service, and
//! the control API's request and answer bodies. Plain data with serde, no I/O: the engine, the
//! adapters, intake, the control server and the CLI all speak it, so none of them needs another
//! one's types (ARCHITECTURE.md, Layers).

pub mod api;
pub mod canary;
pub mod release;
pub mod report;
pub mod requester;
pub mod status;

pub use canary::{Figures, RampStep, StepRecord};
pub use release::{new_deploy_id, ImageArchive, Release};
pub use report::{
    CanaryReport, Cause, HookRun, Identity, Outcome, PhaseTiming, RepairReport, RepairedPart,
    Report, ReportKind, StreamCounts,
};
pub use requester::Requester;
pub use status::{Maintenance, State};
