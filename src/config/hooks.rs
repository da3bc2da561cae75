//! The host hooks a service runs around a swap, as validated settings.

use std::time::Duration;

/// Commands run on this host around a swap (`[services.NAME.hooks]`): each an argv, run with
/// the swap's description in its environment, killed (with its process group) after `timeout`.
/// A failing `before_start` or `before_switch` fails the swap (the old release keeps serving);
/// `after_switch` and `after_swap` failing are warnings.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HookSettings {
    pub before_start: Option<Vec<String>>,
    pub before_switch: Option<Vec<String>>,
    pub after_switch: Option<Vec<String>>,
    pub after_swap: Option<Vec<String>>,
    pub timeout: Duration,
}

/// When a hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    BeforeStart,
    BeforeSwitch,
    AfterSwitch,
    AfterSwap,
}

impl Hook {
    pub fn name(self) -> &'static str {
        match self {
            Hook::BeforeStart => "before_start",
            Hook::BeforeSwitch => "before_switch",
            Hook::AfterSwitch => "after_switch",
            Hook::AfterSwap => "after_swap",
        }
    }

    /// Whether its failure fails the swap (it runs before the switch) or is a warning.
    pub fn gates(self) -> bool {
        matches!(self, Hook::BeforeStart | Hook::BeforeSwitch)
    }
}

impl HookSettings {
    pub fn command(&self, hook: Hook) -> Option<&[String]> {
        match hook {
            Hook::BeforeStart => self.before_start.as_deref(),
            Hook::BeforeSwitch => self.before_switch.as_deref(),
            Hook::AfterSwitch => self.after_switch.as_deref(),
            Hook::AfterSwap => self.after_swap.as_deref(),
        }
    }
}
