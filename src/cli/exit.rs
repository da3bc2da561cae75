//! hotswapctl's exit codes: one per failure kind, each with the one-line meaning that
//! `hotswapctl --help` ("Exit codes:"), the man page's EXIT STATUS and the table in docs/hotswapctl.md show.

use std::process::ExitCode;

/// Defines [`Exit`], [`Exit::ALL`] and [`Exit::meaning`] from one table, so no code can be
/// added without its meaning or left out of the lists.
macro_rules! exit_codes {
    ($($variant:ident = $code:literal, $meaning:literal;)+) => {
        /// How hotswapctl ends (the process exit status is the number).
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[repr(u8)]
        pub enum Exit {
            $($variant = $code,)+
        }

        impl Exit {
            /// Every code, in order.
            pub const ALL: &'static [Exit] = &[$(Exit::$variant,)+];

            /// What the code means, in one line.
            pub const fn meaning(self) -> &'static str {
                match self {
                    $(Exit::$variant => $meaning,)+
                }
            }
        }
    };
}

exit_codes! {
    Ok = 0, "success";
    Usage = 2, "usage error (bad arguments; metadata, template or --config file unreadable)";
    Unreachable = 3, "cannot reach hotswapd (socket missing, permission denied, not answering)";
    Rejected = 4, "request refused by hotswapd (bad input, unknown service, peer not allowed)";
    DeployFailed = 5, "deploy failed (rolled back; the old release serves)";
    Timeout = 6, "timed out waiting for the deploy";
    Protocol = 7, "unexpected answer from hotswapd";
    Superseded = 8, "deploy superseded by a later release before it started";
    InvalidConfig = 9, "config file not valid (check-config)";
    Refused = 10, "refused by a safety check (stack-update, asg-switch)";
    Aws = 11, "AWS call failed";
    Hook = 12, "a hook failed";
    LintWarnings = 13, "the template has lint warnings";
    NotServing = 14, "status: a service is not serving (repairing, degraded, down or recovering)";
    NotReady = 15, "check-config --live: this host cannot run the config now (Docker, HAProxy, a backend, a directory)";
}

impl Exit {
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// The code and its meaning as one line of the list, e.g. `  5  deploy failed (...)`.
    pub fn line(self) -> String {
        format!("{:>3}  {}", self.code(), self.meaning())
    }

    /// The "Exit codes:" text that ends `hotswapctl --help`.
    pub fn help() -> String {
        let mut text = String::from("Exit codes:");
        for e in Self::ALL {
            text.push('\n');
            text.push_str(&e.line());
        }
        text
    }
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e.code())
    }
}

impl From<crate::fleet::stack_update::Ending> for Exit {
    fn from(e: crate::fleet::stack_update::Ending) -> Exit {
        use crate::fleet::stack_update::Ending;
        match e {
            Ending::Done => Exit::Ok,
            Ending::Aws => Exit::Aws,
            Ending::Refused => Exit::Refused,
            Ending::Hook => Exit::Hook,
            Ending::Failed => Exit::DeployFailed,
            Ending::Timeout => Exit::Timeout,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_lists_every_code_with_its_number_and_meaning_in_order() {
        let help = Exit::help();
        let mut lines = help.lines();
        assert_eq!(lines.next(), Some("Exit codes:"));
        for e in Exit::ALL {
            let line = lines
                .next()
                .unwrap_or_else(|| panic!("{e:?} missing: {help}"));
            let (code, meaning) = line.trim_start().split_once("  ").expect("two columns");
            assert_eq!(code.parse::<u8>(), Ok(*e as u8), "{line}");
            assert_eq!(meaning, e.meaning(), "{line}");
        }
        assert_eq!(lines.next(), None, "{help}");
        let codes: Vec<u8> = Exit::ALL.iter().map(|e| e.code()).collect();
        assert!(codes.windows(2).all(|w| w[0] < w[1]), "{codes:?}");
    }

    #[test]
    fn the_docs_table_lists_every_code_with_the_same_words() {
        let readme = include_str!("../../docs/hotswapctl.md");
        let table: Vec<String> = readme
            .lines()
            .skip_while(|l| !l.starts_with("| exit code | meaning |"))
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .map(|l| l.replace('`', ""))
            .collect();
        let want: Vec<String> = Exit::ALL
            .iter()
            .map(|e| format!("| {} | {} |", e.code(), e.meaning()))
            .collect();
        assert_eq!(table, want, "docs/hotswapctl.md's exit-code table");
    }
}
