//! hotswapctl's verbs, one file each, all thin clients of the daemon's socket.

pub mod asg_switch;
pub mod check_config;
pub mod deploy;
pub mod docs;
pub mod lint_template;
pub mod reload;
pub mod rollback;
pub mod services;
pub mod stack_update;
pub mod status;

use crate::control::client::ClientError;

/// Exit codes, distinct per failure kind (listed in `hotswapctl --help` and the README).
pub mod exit {
    pub const OK: u8 = 0;
    pub const USAGE: u8 = 2;
    pub const UNREACHABLE: u8 = 3;
    pub const REJECTED: u8 = 4;
    pub const DEPLOY_FAILED: u8 = 5;
    pub const TIMEOUT: u8 = 6;
    pub const PROTOCOL: u8 = 7;
    pub const SUPERSEDED: u8 = 8;
    pub const INVALID_CONFIG: u8 = 9;
}

pub const EXIT_CODES_HELP: &str = "Exit codes:\n  0  success\n  2  usage error\n  3  cannot reach hotswapd (socket missing or not answering)\n  4  request refused by hotswapd (bad input, unknown service)\n  5  deploy failed (rolled back; the old release serves)\n  6  timed out waiting for the deploy\n  7  unexpected answer from hotswapd\n  8  deploy superseded by a later release before it started\n  9  config file not valid (check-config)\n 10  refused by a safety check (stack-update, asg-switch)\n 11  AWS call failed\n 12  a hook failed\n 13  the template has lint warnings";

pub fn client_exit(e: &ClientError) -> u8 {
    match e {
        ClientError::Unreachable { .. } => exit::UNREACHABLE,
        ClientError::Rejected { .. } => exit::REJECTED,
        ClientError::Protocol(_) => exit::PROTOCOL,
    }
}
