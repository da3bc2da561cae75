//! hotswapd: the reload supervisor daemon.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use hotswap::config::{Settings, DEFAULT_PATH};

#[derive(Parser)]
#[command(
    name = "hotswapd",
    version,
    about = "Swaps releases of services behind HAProxy with no dropped request"
)]
struct Args {
    /// Config file.
    #[arg(long, default_value = DEFAULT_PATH)]
    config: PathBuf,
    /// Validate the config, print a summary and exit (0 valid, 9 not, as `hotswapctl
    /// check-config`).
    #[arg(long)]
    check_config: bool,
    /// With --check-config: also check this host (Docker, each service's HAProxy socket and
    /// backend, writable directories); exit 15 when one is not so.
    #[arg(long, requires = "check_config")]
    live: bool,
    /// Write man pages and shell completions into DIR (for packaging).
    #[arg(long, hide = true, value_name = "DIR")]
    generate_docs: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(dir) = &args.generate_docs {
        let cmd = <Args as clap::CommandFactory>::command();
        return ExitCode::from(hotswap::cli::docs::run(cmd, "8", dir));
    }
    // Under systemd: no colors, no time (journald adds it), a priority per line.
    hotswap::systemd::init_logging();
    use hotswap::cli::exit::Exit;
    let settings = match Settings::load(&args.config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("hotswapd: {e}");
            // the same code as `hotswapctl check-config`; a daemon that cannot start exits 1
            return if args.check_config {
                Exit::InvalidConfig.into()
            } else {
                ExitCode::from(1)
            };
        }
    };
    if args.check_config {
        println!(
            "config {} is valid: {} service(s): {}",
            args.config.display(),
            settings.services.len(),
            settings
                .services
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
        if args.live && !hotswap::cli::check_config::live(&settings, false).1 {
            return Exit::NotReady.into();
        }
        return ExitCode::SUCCESS;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(hotswap::daemon::run(settings, args.config.clone())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hotswapd: {e:#}");
            ExitCode::from(1)
        }
    }
}
