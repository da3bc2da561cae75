//! hotswapctl: the command line for hotswapd.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};
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
    /// Swap a service to a new release (or every release of a CloudFormation metadata file).
    Deploy {
        #[arg(required_unless_present = "from_metadata")]
        service: Option<String>,
        /// Image reference of the release, e.g. web:2.
        #[arg(long, required_unless_present_any = ["from_metadata", "code"])]
        image: Option<String>,
        /// A code bundle (directory or .tar.gz) for a service that reloads code ([processes]).
        #[arg(long, conflicts_with = "image")]
        code: Option<PathBuf>,
        /// What the app reports for this release (default: the image tag).
        #[arg(long)]
        version: Option<String>,
        /// Makes retries safe: the same id never swaps twice.
        #[arg(long)]
        deploy_id: Option<String>,
        /// An image archive on this host (docker save output) to load first.
        #[arg(long)]
        archive: Option<PathBuf>,
        /// The archive's sha256, checked before loading.
        #[arg(long, requires = "archive")]
        archive_sha256: Option<String>,
        /// Read the releases from CloudFormation metadata (JSON as cfn-get-metadata prints it;
        /// "-" for stdin); implies --wait. For cfn-hup hooks.
        #[arg(long, conflicts_with_all = ["service", "image", "version", "deploy_id", "archive"])]
        from_metadata: Option<PathBuf>,
        /// Skip the service's canary ramp: all traffic moves once the health gate passes (the
        /// report says so).
        #[arg(long)]
        no_ramp: bool,
        /// Wait until the swap ends, showing each ramp step; exit non-zero if it failed.
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
    /// List services with their current and previous release and phase.
    Services {
        #[arg(long)]
        json: bool,
    },
    /// Swap a service back to its previous release (kept locally: nothing is pulled).
    Rollback {
        service: String,
        #[arg(long)]
        wait: bool,
        #[arg(long, default_value_t = 600)]
        timeout_secs: u64,
        #[arg(long)]
        json: bool,
    },
    /// Make the daemon re-read its config file (a bad one changes nothing).
    Reload {
        #[arg(long)]
        json: bool,
    },
    /// Hot swap a whole stack from the build box: check it, UpdateStack, wait for one success
    /// report per instance on SQS.
    StackUpdate {
        #[arg(long)]
        stack: String,
        /// The CloudFormation template (JSON or YAML).
        #[arg(long)]
        template: PathBuf,
        /// Template parameter, repeatable.
        #[arg(long = "parameter", value_name = "KEY=VALUE")]
        parameters: Vec<String>,
        /// The SQS queue hosts report to (default: the stack's HotswapQueueUrl output).
        #[arg(long)]
        queue_url: Option<String>,
        /// Default: a fresh one; passed as the DeployId parameter, echoed by the hosts.
        #[arg(long)]
        deploy_id: Option<String>,
        /// Older stacks are refused: re-provision them instead.
        #[arg(long, default_value_t = 7 * 24 * 3600)]
        max_age_secs: u64,
        /// How long to wait for the reports (default: host budget 180 s + 60 s margin). With a
        /// canary ramp on the hosts, add its holds and watch window.
        #[arg(long, default_value_t = 240)]
        timeout_secs: u64,
        /// Run before UpdateStack (sh -c); non-zero aborts.
        #[arg(long)]
        pre_hook: Option<String>,
        /// Run at the end whatever happened, with HOTSWAP_OUTCOME in its environment.
        #[arg(long)]
        post_hook: Option<String>,
        /// Print the plan (checks, parameters, instance count) and change nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        region: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Warn about blue-green pitfalls in a CloudFormation template.
    LintTemplate {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Attach a new Auto Scaling group to a load balancer's target group, wait until its
    /// instances are healthy, then detach every other group.
    AsgSwitch {
        /// The ELBv2 target group (name or ARN).
        #[arg(long)]
        load_balancer: String,
        #[arg(long)]
        new_group: String,
        #[arg(long, default_value_t = 300)]
        timeout_secs: u64,
        #[arg(long)]
        region: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Validate a config file locally, as hotswapd would (default: --config).
    CheckConfig {
        file: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Write man pages and shell completions into DIR (for packaging).
    #[command(hide = true)]
    GenerateDocs { dir: PathBuf },
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
    match &args.verb {
        Verb::CheckConfig { file, json } => {
            return ExitCode::from(cli::check_config::run(
                file.as_ref().unwrap_or(&args.config),
                *json,
            ))
        }
        Verb::LintTemplate { file, json } => {
            return ExitCode::from(cli::lint_template::run(file, *json))
        }
        Verb::StackUpdate { .. } | Verb::AsgSwitch { .. } => {
            return ExitCode::from(build_box(args.verb))
        }
        Verb::GenerateDocs { dir } => {
            return ExitCode::from(cli::docs::run(Args::command(), "1", dir))
        }
        _ => {}
    }
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
                from_metadata: Some(file),
                timeout_secs,
                json,
                ..
            } => {
                cli::deploy::from_metadata(&client, &file, Duration::from_secs(timeout_secs), json)
                    .await
            }
            Verb::Deploy {
                service,
                image,
                code,
                version,
                deploy_id,
                archive,
                archive_sha256,
                no_ramp,
                wait,
                timeout_secs,
                json,
                ..
            } => {
                let args = DeployArgs {
                    service: service.unwrap_or_default(),
                    image: image.unwrap_or_default(),
                    version,
                    deploy_id,
                    archive,
                    archive_sha256,
                    code,
                    no_ramp,
                    wait,
                    timeout: Duration::from_secs(timeout_secs),
                    json,
                };
                cli::deploy::run(&client, args).await
            }
            Verb::Status { json } => cli::status::run(&client, json).await,
            Verb::Services { json } => cli::services::run(&client, json).await,
            Verb::Rollback {
                service,
                wait,
                timeout_secs,
                json,
            } => {
                cli::rollback::run(
                    &client,
                    &service,
                    wait,
                    Duration::from_secs(timeout_secs),
                    json,
                )
                .await
            }
            Verb::Reload { json } => cli::reload::run(&client, json).await,
            Verb::CheckConfig { .. }
            | Verb::GenerateDocs { .. }
            | Verb::LintTemplate { .. }
            | Verb::StackUpdate { .. }
            | Verb::AsgSwitch { .. } => {
                unreachable!("handled before connecting")
            }
        }
    });
    ExitCode::from(code)
}

/// The verbs that talk to AWS rather than to hotswapd.
fn build_box(verb: Verb) -> u8 {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        match verb {
            Verb::StackUpdate {
                stack,
                template,
                parameters,
                queue_url,
                deploy_id,
                max_age_secs,
                timeout_secs,
                pre_hook,
                post_hook,
                dry_run,
                region,
                json,
            } => {
                cli::stack_update::run(cli::stack_update::Args {
                    stack,
                    template,
                    parameters,
                    queue_url,
                    deploy_id,
                    max_age: Duration::from_secs(max_age_secs),
                    timeout: Duration::from_secs(timeout_secs),
                    pre_hook,
                    post_hook,
                    dry_run,
                    region,
                    json,
                })
                .await
            }
            Verb::AsgSwitch {
                load_balancer,
                new_group,
                timeout_secs,
                region,
                json,
            } => {
                cli::asg_switch::run(
                    &load_balancer,
                    &new_group,
                    Duration::from_secs(timeout_secs),
                    region.as_deref(),
                    json,
                )
                .await
            }
            _ => unreachable!("only build-box verbs come here"),
        }
    })
}
