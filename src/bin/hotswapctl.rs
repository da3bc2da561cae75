//! hotswapctl: the command line for hotswapd. Each verb's arguments and work live in its file
//! under `src/cli/`; this parses and dispatches.

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use hotswap::cli::{
    asg_switch, check_config, deploy, docs, history, lint_template, maintenance, reload, rollback,
    services, stack_update, status, Exit, Globals,
};

#[derive(Parser, Debug)]
#[command(name = "hotswapctl", version, about = "Command line for hotswapd", after_help = Exit::help())]
struct Cli {
    // --socket and --config before the verb, for the verbs that talk to hotswapd
    #[command(flatten)]
    globals: Globals,
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Subcommand, Debug)]
enum Verb {
    Deploy(deploy::Args),
    Status(status::Args),
    Services(services::Args),
    Rollback(rollback::Args),
    History(history::Args),
    Maintenance(maintenance::Args),
    Reload(reload::Args),
    StackUpdate(stack_update::Args),
    LintTemplate(lint_template::Args),
    AsgSwitch(asg_switch::Args),
    CheckConfig(check_config::Args),
    GenerateDocs(docs::Args),
}

fn main() -> ExitCode {
    let Cli { globals, verb } = Cli::parse();
    let g = &globals;
    match verb {
        Verb::Deploy(a) => deploy::run(a, g),
        Verb::Status(a) => status::run(a, g),
        Verb::Services(a) => services::run(a, g),
        Verb::Rollback(a) => rollback::run(a, g),
        Verb::History(a) => history::run(a, g),
        Verb::Maintenance(a) => maintenance::run(a, g),
        Verb::Reload(a) => reload::run(a, g),
        Verb::StackUpdate(a) => stack_update::run(a),
        Verb::LintTemplate(a) => lint_template::run(a),
        Verb::AsgSwitch(a) => asg_switch::run(a),
        Verb::CheckConfig(a) => check_config::run(a, g),
        Verb::GenerateDocs(a) => return ExitCode::from(docs::run(Cli::command(), "1", &a.dir)),
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;

    fn parse(line: &str) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("hotswapctl").chain(line.split_whitespace()))
    }

    #[test]
    fn help_ends_with_every_exit_code_and_its_meaning() {
        Cli::command().debug_assert();
        let help = Cli::command().render_help().to_string();
        let listed: Vec<&str> = help
            .lines()
            .skip_while(|l| *l != "Exit codes:")
            .skip(1)
            .collect();
        for e in Exit::ALL {
            let line = format!("{:>3}  {}", *e as u8, e.meaning());
            assert!(listed.contains(&line.as_str()), "{e:?} not listed: {help}");
        }
        assert_eq!(listed.len(), Exit::ALL.len(), "{help}");
    }

    #[test]
    fn where_hotswapd_is_goes_before_or_after_the_verb_and_only_where_it_is_used() {
        for line in ["--socket /s status", "status --socket /s"] {
            let Cli { globals, verb } = parse(line).unwrap();
            let Verb::Status(a) = verb else {
                panic!("{line}")
            };
            assert_eq!(
                a.daemon.or(&globals).socket.as_deref(),
                Some(std::path::Path::new("/s")),
                "{line}"
            );
        }
        let Cli { globals, verb } = parse("--socket /a status --socket /b").unwrap();
        let Verb::Status(a) = verb else { panic!() };
        assert_eq!(
            a.daemon.or(&globals).socket.as_deref(),
            Some(std::path::Path::new("/b")),
            "after the verb wins"
        );
        let mut cmd = Cli::command();
        let mut help = |verb: &str| {
            cmd.find_subcommand_mut(verb)
                .unwrap()
                .render_long_help()
                .to_string()
        };
        for verb in ["stack-update", "lint-template", "asg-switch"] {
            let help = help(verb);
            assert!(
                !help.contains("--socket"),
                "{verb} does not talk to hotswapd: {help}"
            );
            assert!(parse(&format!("{verb} --socket /s")).is_err(), "{verb}");
        }
        for verb in [
            "deploy",
            "status",
            "services",
            "rollback",
            "history",
            "maintenance",
            "reload",
            "check-config",
        ] {
            let help = help(verb);
            assert!(
                help.contains("--socket") && help.contains("--config"),
                "{verb}: {help}"
            );
        }
    }

    /// docs/hotswapctl.md's table of verbs, made from the clap definitions (usage and about).
    fn verb_table() -> String {
        let mut cmd = Cli::command();
        cmd.build();
        let mut out = String::from("| command | what it does |\n| --- | --- |\n");
        for sub in cmd
            .get_subcommands_mut()
            .filter(|s| !s.is_hide_set() && s.get_name() != "help")
        {
            let usage = sub.render_usage().to_string();
            let usage = usage.trim_start_matches("Usage: ").replace('|', "\\|");
            let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
            out.push_str(&format!("| `{usage}` | {about} |\n"));
        }
        out
    }

    #[test]
    fn the_readme_verb_table_is_the_clap_definitions() {
        const BEGIN: &str =
            "<!-- verbs: generated from the clap definitions (src/bin/hotswapctl.rs test) -->\n";
        const END: &str = "<!-- verbs end -->";
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/hotswapctl.md");
        let readme = std::fs::read_to_string(path).unwrap();
        let (head, rest) = readme
            .split_once(BEGIN)
            .expect("docs/hotswapctl.md has the verbs marker");
        let (table, tail) = rest
            .split_once(END)
            .expect("docs/hotswapctl.md has the verbs end marker");
        let want = verb_table();
        if std::env::var_os("HOTSWAP_UPDATE_README").is_some() {
            std::fs::write(path, format!("{head}{BEGIN}{want}{END}{tail}")).unwrap();
            return;
        }
        assert_eq!(table, want, "docs/hotswapctl.md's verb table is stale: run HOTSWAP_UPDATE_README=1 cargo test --bin hotswapctl");
    }

    #[test]
    fn the_man_pages_examples_parse() {
        let mut pages = vec!["hotswapctl".to_string()];
        pages.extend(
            Cli::command()
                .get_subcommands()
                .map(|s| format!("hotswapctl-{}", s.get_name())),
        );
        let mut seen = 0;
        for page in pages {
            for (_, command) in docs::examples(&page) {
                // the hotswapctl part of a pipeline
                let line = command.rsplit("| ").next().unwrap();
                parse(line.trim_start_matches("hotswapctl"))
                    .unwrap_or_else(|e| panic!("{page}: {command}: {e}"));
                seen += 1;
            }
        }
        assert!(seen >= 10, "{seen} examples");
    }

    #[test]
    fn durations_take_units() {
        for (text, secs) in [
            ("90", 90),
            ("90s", 90),
            ("10m", 600),
            ("2h", 7200),
            ("7d", 604800),
        ] {
            assert_eq!(hotswap::cli::seconds(text), Ok(secs), "{text}");
        }
        for bad in ["", "ten", "5w", "-3", "1.5h"] {
            assert!(hotswap::cli::seconds(bad).is_err(), "{bad}");
        }
        let cli = parse("deploy web --image web:2 --wait --timeout-secs 10m").unwrap();
        let Verb::Deploy(d) = cli.verb else {
            panic!("{cli:?}")
        };
        assert_eq!(d.waiting.timeout_secs, 600);
        assert!(parse("deploy web --image web:2 --timeout-secs soon").is_err());
    }

    /// Every flag and positional of every verb, hidden ones aside, says what it is for.
    #[test]
    fn every_argument_has_help() {
        fn missing(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if arg.is_hide_set() || id == "help" || id == "version" {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    out.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                missing(sub, &format!("{path} {}", sub.get_name()), out);
            }
        }
        let mut out = Vec::new();
        missing(&Cli::command(), "hotswapctl", &mut out);
        assert!(out.is_empty(), "arguments without help: {out:?}");
    }

    #[test]
    fn every_verb_parses_and_bad_command_lines_are_usage_errors() {
        for line in [
            "deploy web --image web:2 --version 2 --deploy-id d1 --wait --timeout-secs 5 --json",
            "deploy web --code ./bundle --no-ramp",
            "deploy web --image web:2 --archive a.tar --archive-sha256 ab",
            "deploy --from-metadata - --code ./ignored",
            "status --json",
            "services",
            "rollback web --wait --timeout-secs 9",
            "reload --json",
            "reload-config",
            "stack-update --stack s --template t.yaml --parameter A=1 --parameter B=2 --dry-run",
            "lint-template t.yaml --json",
            "asg-switch --load-balancer tg --new-group g2 --region eu-west-1",
            "check-config",
            "check-config c.toml --json",
            "generate-docs /tmp/docs",
            "--socket /run/s.sock status",
            "services --config /etc/c.toml",
        ] {
            parse(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        }
        for (line, kind) in [
            ("", ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand),
            ("frobnicate", ErrorKind::InvalidSubcommand),
            ("deploy", ErrorKind::MissingRequiredArgument),
            ("deploy web", ErrorKind::MissingRequiredArgument),
            ("deploy web --image a --code b", ErrorKind::ArgumentConflict),
            ("deploy --from-metadata f web", ErrorKind::ArgumentConflict),
            (
                "deploy web --image a --archive-sha256 x",
                ErrorKind::MissingRequiredArgument,
            ),
            (
                "deploy web --image a --timeout-secs soon",
                ErrorKind::ValueValidation,
            ),
            ("rollback", ErrorKind::MissingRequiredArgument),
            ("status --bogus", ErrorKind::UnknownArgument),
            ("stack-update --stack s", ErrorKind::MissingRequiredArgument),
            ("lint-template", ErrorKind::MissingRequiredArgument),
            (
                "asg-switch --load-balancer tg",
                ErrorKind::MissingRequiredArgument,
            ),
        ] {
            let e = parse(line).expect_err(line);
            assert_eq!(e.kind(), kind, "{line}: {e}");
            assert_eq!(e.exit_code(), i32::from(Exit::Usage.code()), "{line}");
        }
    }

    #[test]
    fn defaults_and_globals_are_as_documented() {
        let cli = parse("deploy web --image web:2").unwrap();
        assert_eq!(
            cli.globals.config_path(),
            std::path::Path::new("/etc/hotswap/config.toml")
        );
        assert_eq!(cli.globals.socket, None);
        let Verb::Deploy(d) = cli.verb else {
            panic!("{cli:?}")
        };
        assert_eq!(
            (d.service.as_deref(), d.image.as_deref()),
            (Some("web"), Some("web:2"))
        );
        assert_eq!(
            (d.waiting.wait, d.waiting.timeout_secs, d.from_metadata),
            (false, 600, None)
        );
        let cli = parse("rollback web --socket /s").unwrap();
        let Verb::Rollback(r) = cli.verb else {
            panic!("{cli:?}")
        };
        assert_eq!(
            r.daemon.or(&cli.globals).socket.as_deref(),
            Some(std::path::Path::new("/s"))
        );
        assert_eq!((r.service.as_str(), r.waiting.timeout_secs), ("web", 600));
        let Verb::StackUpdate(s) = parse("stack-update --stack s --template t").unwrap().verb
        else {
            panic!()
        };
        assert_eq!((s.max_age_secs, s.timeout_secs), (7 * 24 * 3600, 240));
        let Verb::AsgSwitch(a) = parse("asg-switch --load-balancer tg --new-group g")
            .unwrap()
            .verb
        else {
            panic!()
        };
        assert_eq!(a.timeout_secs, 300);
        assert!(matches!(
            parse("reload-config").unwrap().verb,
            Verb::Reload(_)
        ));
    }
}
