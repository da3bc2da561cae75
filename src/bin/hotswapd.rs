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
    /// Validate the config, print a summary and exit (0 valid, 1 not).
    #[arg(long)]
    check_config: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // Under systemd (JOURNAL_STREAM set) journald adds the time; colors would be noise there.
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(!journal && std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if journal {
        logs.without_time().init();
    } else {
        logs.init();
    }
    let settings = match Settings::load(&args.config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("hotswapd: {e}");
            return ExitCode::from(1);
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
