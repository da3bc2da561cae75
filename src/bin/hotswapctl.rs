//! hotswapctl: the command line for hotswapd.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use hotswap::cli::{self, deploy::DeployArgs, EXIT_CODES_HELP};
use hotswap::config::{Settings, DEFAULT_PATH};
use hotswap::control::client::Client;

#[derive(Parser)]
#[command(name = "hotswapctl", version, about = "Command line for hotswapd", after_help = EXIT_CODES_HELP)]
struct Args {
    /// The daemon's control socket (default: the one named in --config).
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
    /// The daemon's config file, read for the socket path.
    #[arg(long, global = true, default_value = DEFAULT_PATH)]
    config: PathBuf,
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Subcommand)]
enum Verb {
    /// Swap a service to a new release.
    Deploy {
        service: String,
        /// Image reference of the release, e.g. web:2.
        #[arg(long)]
        image: String,
        /// What the app reports for this release (default: the image tag).
        #[arg(long)]
        version: Option<String>,
        /// Makes retries safe: the same id never swaps twice.
        #[arg(long)]
        deploy_id: Option<String>,
        /// Wait until the swap ends; exit non-zero if it failed.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits, in seconds.
        #[arg(long, default_value_t = 600)]
        timeout_secs: u64,
        #[arg(long)]
        json: bool,
    },
    /// Show the daemon and each service.
    Status {
        #[arg(long)]
        json: bool,
    },
}

fn socket_path(args: &Args) -> Result<PathBuf, String> {
    if let Some(s) = &args.socket {
        return Ok(s.clone());
    }
    match Settings::load(&args.config) {
        Ok(s) => Ok(s.daemon.socket),
        Err(e) => Err(format!("{e} (or pass --socket)")),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let socket = match socket_path(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("hotswapctl: {e}");
            return ExitCode::from(cli::exit::USAGE);
        }
    };
    let client = Client::new(&socket);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = runtime.block_on(async {
        match args.verb {
            Verb::Deploy {
                service,
                image,
                version,
                deploy_id,
                wait,
                timeout_secs,
                json,
            } => {
                cli::deploy::run(
                    &client,
                    DeployArgs {
                        service,
                        image,
                        version,
                        deploy_id,
                        wait,
                        timeout: Duration::from_secs(timeout_secs),
                        json,
                    },
                )
                .await
            }
            Verb::Status { json } => cli::status::run(&client, json).await,
        }
    });
    ExitCode::from(code)
}
