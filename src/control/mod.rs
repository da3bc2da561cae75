//! The control API: HTTP/1.1 with JSON over the daemon's Unix socket, versioned paths.
//!
//! | method | path | what |
//! |---|---|---|
//! | POST | /v1/deploys | submit a release `{service, image, version?, deploy_id?}` → 202 `{deploy_id, accepted}` |
//! | GET | /v1/deploys/{id}?wait=SECS | one deploy; with `wait`, answers when it finishes (or after SECS) |
//! | GET | /v1/status | the daemon and every service |

pub mod api;
pub mod client;
pub mod server;
