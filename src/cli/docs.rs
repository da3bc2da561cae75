//! Man pages and shell completions, generated from the clap definitions of the two binaries so
//! they cannot drift from `--help`. Hidden entry points write them: `hotswapd --generate-docs DIR`
//! and `hotswapctl generate-docs DIR`; `scripts/package` runs both and puts the output into the
//! packages. What clap does not know (signals, files, exit codes) is added here as sections.
//!
//! Layout of DIR: `man/<name>.<section>` (one page per visible subcommand as well, e.g.
//! `hotswapctl-deploy.1`), `completions/bash/<name>`, `completions/zsh/_<name>`,
//! `completions/fish/<name>.fish`.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Command;
use clap_complete::Shell;
use clap_mangen::roff::{bold, roman, Roff};
use clap_mangen::Man;

use super::Exit;

/// Write man pages and shell completions into DIR (for packaging).
#[derive(clap::Args, Debug)]
#[command(hide = true)]
pub struct Args {
    /// Where to write them (man/ and completions/ are made under it).
    pub dir: PathBuf,
}

/// Writes the man pages and completions of `cmd` under `out`; prints each path. 0 on success, 1
/// on an error (for both binaries: hotswapd's exit statuses are 0 and 1).
pub fn run(cmd: Command, section: &str, out: &Path) -> u8 {
    match write_all(cmd, section, out) {
        Ok(paths) => {
            for p in paths {
                println!("{}", p.display());
            }
            0
        }
        Err(e) => {
            eprintln!("generating docs into {}: {e}", out.display());
            1
        }
    }
}

pub fn write_all(mut cmd: Command, section: &str, out: &Path) -> std::io::Result<Vec<PathBuf>> {
    cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let name = cmd.get_name().to_string();
    let mut written = Vec::new();

    let man_dir = out.join("man");
    std::fs::create_dir_all(&man_dir)?;
    let mut pages = vec![cmd.clone()];
    pages.extend(cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
    for page in pages {
        let path = man_dir.join(format!(
            "{}.{section}",
            page.get_display_name().unwrap_or(page.get_name())
        ));
        std::fs::write(&path, man_page(page, &name, section)?)?;
        written.push(path);
    }

    // clap_complete offers hidden verbs and flags too: complete a copy without them. (clap
    // names are &'static str without its "string" feature; this runs once, at packaging.)
    let leak = |s: &str| -> &'static str { Box::leak(s.to_owned().into_boxed_str()) };
    let mut visible = Command::new(leak(&name))
        .disable_help_flag(true)
        .disable_version_flag(true)
        .args(cmd.get_arguments().filter(|a| !a.is_hide_set()).cloned())
        .subcommands(cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
    if let Some(v) = cmd.get_version() {
        visible = visible.version(leak(v));
    }
    for (shell, dir, file) in [
        (Shell::Bash, "bash", name.clone()),
        (Shell::Zsh, "zsh", format!("_{name}")),
        (Shell::Fish, "fish", format!("{name}.fish")),
    ] {
        let dir = out.join("completions").join(dir);
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(file);
        let mut f = std::fs::File::create(&path)?;
        clap_complete::generate(shell, &mut visible, &name, &mut f);
        f.flush()?;
        written.push(path);
    }
    Ok(written)
}

/// One page: clap_mangen's sections, with ours before VERSION (clap's after_help, written for a
/// terminal, is replaced by sections made for a man page).
fn man_page(page: Command, program: &str, section: &str) -> std::io::Result<Vec<u8>> {
    let title = page
        .get_display_name()
        .unwrap_or(page.get_name())
        .to_string();
    let page = page.after_help(None::<&str>).after_long_help(None::<&str>);
    let manual = if section == "8" {
        "System Administration"
    } else {
        "User Commands"
    };
    let mut text = Vec::new();
    Man::new(page)
        .section(section)
        .manual(manual)
        .source(format!("hotswap {}", env!("CARGO_PKG_VERSION")))
        .render(&mut text)?;
    let text = String::from_utf8(text).expect("clap_mangen writes UTF-8");
    let extra = extra_sections(program, &title).to_roff();
    let text = match text.find(".SH VERSION") {
        Some(at) => format!("{}{extra}{}", &text[..at], &text[at..]),
        None => format!("{text}{extra}"),
    };
    Ok(text.into_bytes())
}

fn extra_sections(program: &str, title: &str) -> Roff {
    let mut r = Roff::new();
    let para = |r: &mut Roff, head: &str, body: &str| {
        r.control("TP", []);
        r.text([bold(head)]);
        r.text([roman(body)]);
    };
    let examples = examples(title);
    if !examples.is_empty() {
        r.control("SH", ["EXAMPLES"]);
        for (what, command) in examples {
            r.control("TP", []);
            r.text([roman(*what)]);
            r.control("nf", []);
            r.text([bold(*command)]);
            r.control("fi", []);
        }
    }
    match (program, title) {
        ("hotswapd", _) => {
            r.control("SH", ["SIGNALS"]);
            para(&mut r, "SIGHUP", "Re-read the config file. It is validated first: on an error the running config stays, and the reason is logged and shown in the systemd status.");
            para(&mut r, "SIGTERM, SIGINT", "Stop taking releases and exit. A swap in flight is journaled per phase; the next start finishes or undoes it.");
            r.control("SH", ["SYSTEMD"]);
            r.text([roman("hotswapd speaks the sd_notify protocol when NOTIFY_SOCKET is set: READY=1 once the control socket listens and every service finished its start-up recovery; STATUS= with what each service does, sent when it changes; WATCHDOG=1 at half of WATCHDOG_USEC; RELOADING=1 then READY=1 around a reload; STOPPING=1 at SIGTERM. Under systemd (JOURNAL_STREAM naming its stderr) log lines carry no colors and no time stamps, and a syslog priority prefix.")]);
            r.control("SH", ["ENVIRONMENT"]);
            para(
                &mut r,
                "RUST_LOG",
                "Log filter (default: info), e.g. hotswap=debug.",
            );
            para(
                &mut r,
                "DOCKER_HOST",
                "Docker engine address when daemon.docker_socket is not set.",
            );
            para(
                &mut r,
                "AWS_REGION, AWS_ENDPOINT_URL",
                "For the SQS reporter and S3 image archives.",
            );
            r.control("SH", ["FILES"]);
            para(&mut r, "/etc/hotswap/config.toml", "The config file; every key is documented in /usr/share/doc/hotswap/examples/config.example.toml.");
            para(
                &mut r,
                "/run/hotswap/hotswapd.sock",
                "The control socket (mode 0660, group hotswap).",
            );
            para(&mut r, "/var/lib/hotswap/", "State: journal/, queue/, outbox/, archives/, reports.jsonl and the inbox/ for release files.");
            r.control("SH", ["EXIT STATUS"]);
            r.text([roman("0 after a stop by signal or a valid --check-config; 9 when --check-config finds the config not valid and 15 when --check-config --live finds that this host cannot run it (the codes of hotswapctl check-config); 1 when the daemon could not start, an invalid config included.")]);
            r.control("SH", ["SEE ALSO"]);
            r.text([roman("hotswapctl(1), systemd.service(5), haproxy(1)")]);
        }
        (_, _) => {
            r.control("SH", ["EXIT STATUS"]);
            r.control("nf", []);
            for e in Exit::ALL {
                r.text([roman(e.line())]);
            }
            r.control("fi", []);
            r.control("SH", ["FILES"]);
            para(
                &mut r,
                "/etc/hotswap/config.toml",
                "Read for the control socket's path when --socket is not given.",
            );
            r.control("SH", ["SEE ALSO"]);
            if title == program {
                r.text([roman("hotswapd(8)")]);
            } else {
                r.text([roman(format!("{program}(1), hotswapd(8)"))]);
            }
        }
    }
    r
}

/// What a page shows as EXAMPLES: (what it does, the command).
pub fn examples(title: &str) -> &'static [(&'static str, &'static str)] {
    match title {
        "hotswapd" => &[
            (
                "Check a config before installing it, and that this host can run it:",
                "hotswapd --check-config --live --config /etc/hotswap/config.toml",
            ),
            (
                "Run in the foreground with debug logs:",
                "RUST_LOG=hotswap=debug hotswapd --config ./config.toml",
            ),
        ],
        "hotswapctl" => &[
            (
                "Swap service web to a new image and follow it to the end:",
                "hotswapctl deploy web --image registry.example/web:42 --wait",
            ),
            ("What every service runs and does:", "hotswapctl status"),
            (
                "The last ten swaps and repairs of web, and who asked:",
                "hotswapctl history web --limit 10",
            ),
            (
                "Go back two releases (a kept image):",
                "hotswapctl rollback web --to 40 --wait",
            ),
        ],
        "hotswapctl-deploy" => &[
            (
                "Swap to an image, waiting at most ten minutes:",
                "hotswapctl deploy web --image web:42 --wait --timeout-secs 10m",
            ),
            (
                "Skip the canary ramp (the report says so):",
                "hotswapctl deploy web --image web:42 --no-ramp --wait",
            ),
            (
                "Hot code reload of a gunicorn service:",
                "hotswapctl deploy app --code /srv/bundles/app-17.tar.gz --wait",
            ),
            (
                "From a cfn-hup hook:",
                "cfn-get-metadata -s STACK -r Hosts | hotswapctl deploy --from-metadata -",
            ),
        ],
        "hotswapctl-rollback" => &[
            (
                "Back to the previous release:",
                "hotswapctl rollback web --wait",
            ),
            (
                "Back to version 40, if its image was kept (keep_images):",
                "hotswapctl rollback web --to 40 --wait",
            ),
        ],
        "hotswapctl-history" => &[
            (
                "Every service's last 20 swaps and repairs:",
                "hotswapctl history",
            ),
            (
                "As JSON, the reports as written:",
                "hotswapctl history web --limit 100 --json",
            ),
        ],
        "hotswapctl-status" => &[(
            "For a script (exit 14 when a service is not serving):",
            "hotswapctl status --json",
        )],
        "hotswapctl-stack-update" => &[(
            "Update the stack and wait for every host's report:",
            "hotswapctl stack-update --stack shop --template fleet.yaml --parameter ImageTag=42",
        )],
        _ => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, ArgAction};

    fn cli() -> Command {
        Command::new("hotswapctl")
            .version("1")
            .about("Command line for hotswapd")
            .after_help(Exit::help())
            .subcommand(
                Command::new("status")
                    .about("Show it")
                    .arg(Arg::new("json").long("json").action(ArgAction::SetTrue)),
            )
            .subcommand(Command::new("generate-docs").hide(true))
    }

    #[test]
    fn pages_for_visible_verbs_and_completions_for_three_shells() {
        let dir = tempfile::tempdir().unwrap();
        let paths = write_all(cli(), "1", dir.path()).unwrap();
        let names: Vec<String> = paths
            .iter()
            .map(|p| p.strip_prefix(dir.path()).unwrap().display().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "man/hotswapctl.1",
                "man/hotswapctl-status.1",
                "completions/bash/hotswapctl",
                "completions/zsh/_hotswapctl",
                "completions/fish/hotswapctl.fish"
            ]
        );
        let page = std::fs::read_to_string(dir.path().join("man/hotswapctl.1")).unwrap();
        assert!(page.contains(".SH \"EXIT STATUS\""), "{page}");
        for e in Exit::ALL {
            let line = e.line().replace('-', "\\-");
            assert!(page.contains(&line), "{e:?} not in EXIT STATUS: {page}");
        }
        assert!(!page.contains(".SH EXTRA"), "{page}");
        assert!(
            page.find("EXIT STATUS") < page.find(".SH VERSION"),
            "{page}"
        );
        assert!(!page.contains("generate\\-docs"), "{page}");
        let bash = std::fs::read_to_string(dir.path().join("completions/bash/hotswapctl")).unwrap();
        assert!(
            bash.contains("status") && !bash.contains("generate-docs"),
            "{bash}"
        );
    }
}
