//! `[services.NAME.hooks]` (and `[processes.NAME.hooks]`) as written: commands run on this host
//! around a swap, each an argv with an absolute program path, under one timeout.

use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, Ctx};
use crate::config::HookSettings;

/// What a hook may take unless the config says otherwise.
const DEFAULT_TIMEOUT_SECS: u64 = 60;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Hooks {
    before_start: Option<Vec<String>>,
    before_switch: Option<Vec<String>>,
    after_switch: Option<Vec<String>>,
    after_swap: Option<Vec<String>>,
    timeout_secs: Option<u64>,
}

impl Hooks {
    pub(super) fn validate(self, ctx: &Ctx, key: &str) -> Result<HookSettings, ConfigError> {
        let command = |name: &str, argv: Option<Vec<String>>| {
            match argv {
            None => Ok(None),
            Some(argv) => match argv.first() {
                None => Err(ctx.invalid(
                    format!("{key}.{name}"),
                    "an empty command: give the program and its arguments, e.g. [\"/usr/local/bin/warm-cache\", \"--quick\"]",
                )),
                Some(p) if !p.starts_with('/') => Err(ctx.invalid(
                    format!("{key}.{name}[0]"),
                    format!("{p:?}: give the program's absolute path (hotswapd runs under systemd with a minimal PATH)"),
                )),
                Some(_) if argv.iter().any(|a| a.contains('\0')) => Err(ctx.invalid(
                    format!("{key}.{name}"),
                    "an argument holds a NUL byte",
                )),
                Some(_) => Ok(Some(argv)),
            },
        }
        };
        let timeout_secs = self.timeout_secs.unwrap_or(DEFAULT_TIMEOUT_SECS);
        if !(1..=3600).contains(&timeout_secs) {
            return Err(ctx.invalid(
                format!("{key}.timeout_secs"),
                format!("{timeout_secs}: give 1 to 3600 seconds"),
            ));
        }
        Ok(HookSettings {
            before_start: command("before_start", self.before_start)?,
            before_switch: command("before_switch", self.before_switch)?,
            after_switch: command("after_switch", self.after_switch)?,
            after_swap: command("after_swap", self.after_swap)?,
            timeout: Duration::from_secs(timeout_secs),
        })
    }
}
