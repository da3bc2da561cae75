//! Wires the daemon: config → Docker, HAProxy, reporter, one walker per service (in the
//! registry), control socket, inbox, systemd; then waits for signals.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use anyhow::Context;

use crate::config::Settings;
use crate::engine::journal::Journal;
use crate::report::outbox::Outbox;
use crate::report::sqs::SqsSender;
use crate::report::{FileReporter, Identity, Reporters};
use crate::runtime::archive::ArchiveFetcher;
use crate::runtime::secrets::Secrets;
use crate::runtime::Docker;
use crate::services::Services;

pub async fn run(settings: Settings, config_path: PathBuf) -> anyhow::Result<()> {
    let d = settings.daemon.clone();
    let bounds = crate::control::conns::Bounds::for_nofile(raise_nofile());
    make_dirs(&d)?;
    let shared = services(&settings, config_path).await?;
    start_services(&shared, &settings)?;
    // what wakes the supervision of every service between swaps
    let _events = crate::watchers::docker_events(shared.clone(), shared.docker.clone());
    let _sweep = crate::watchers::sweep(shared.clone(), d.sweep);
    let _haproxy_files = crate::watchers::haproxy_files_changed(shared.clone())
        .map_err(|e| tracing::warn!(error = %e, "cannot watch HAProxy's files; the sweep will notice changes"))
        .ok();
    let intake = listen(&shared, &d, bounds).await?;
    // Signals are caught from here on: a SIGHUP before READY must not kill the daemon.
    let signals = Signals::catch()?;
    crate::systemd::recovered(&shared.handles()).await;
    // what the journal holds in maintenance, HAProxy answers 503 for (a restart of both)
    shared.reapply_maintenance().await;
    // releases from the stack's metadata, once what runs is known (a restart resubmits the
    // same deploy ids, which the services already know)
    let _metadata_watch = settings
        .cloudformation
        .clone()
        .map(|s| crate::intake::metadata_watch::spawn(shared.clone(), s));
    let views: Vec<_> = shared.handles().iter().map(|h| h.view()).collect();
    crate::systemd::ready(&crate::systemd::summary(&views));
    tracing::info!(socket = %d.socket.display(), services = shared.service_names().len(), instance = %d.instance_id, "hotswapd ready");
    let _watchdog = crate::systemd::watchdog_interval()
        .map(|every| tokio::spawn(crate::systemd::watchdog(every)));
    let status = signals.wait(&shared).await;
    // Stop taking releases first; swaps in flight stop where they are: each phase is journaled,
    // the next start finishes or undoes it.
    crate::systemd::stopping();
    tracing::info!("stopping");
    intake.server.abort();
    drop(intake);
    status.abort();
    let _ = std::fs::remove_file(&d.socket);
    Ok(())
}

fn make_dirs(d: &crate::config::DaemonSettings) -> anyhow::Result<()> {
    for dir in [d.state_dir.clone(), d.state_dir.join("queue")] {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating state directory {}", dir.display()))?;
    }
    if let Some(dir) = d.reports_file.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating reports directory {}", dir.display()))?;
    }
    Ok(())
}

/// The table of services with what they share: the journal, Docker, the reporters, the
/// archive fetcher, the secrets.
async fn services(settings: &Settings, config_path: PathBuf) -> anyhow::Result<Arc<Services>> {
    let d = &settings.daemon;
    let journal = Journal::open(&d.state_dir.join("journal"))?;
    let docker = Arc::new(
        Docker::connect(d.docker_socket.as_deref())
            .await
            .context("hotswapd needs the Docker engine")?
            .with_registry(settings.registry.clone())
            .with_concurrent_starts(d.concurrent_starts),
    );
    let identity = Arc::new(identity(settings).await);
    let outbox = outbox(settings, &identity).await?;
    Ok(Arc::new(Services {
        instance_id: d.instance_id.clone(),
        started: Instant::now(),
        config_path,
        settings: Mutex::new(settings.clone()),
        slots: RwLock::new(BTreeMap::new()),
        access: RwLock::new(d.access.clone()),
        docker,
        reporter: Arc::new(Reporters {
            file: FileReporter::rotated(d.reports_file.clone(), d.reports_rotation),
            outbox,
            metrics: crate::report::metrics::Metrics::new(),
        }),
        identity,
        archives: Arc::new(ArchiveFetcher::new(
            &d.state_dir.join("archives"),
            settings.report.region.clone(),
        )),
        secrets: Arc::new(Secrets::new(settings.report.region.clone())),
        metadata_watch: Mutex::new(None),
        journal,
    }))
}

/// With a report queue: the durable outbox, and its sender to SQS started.
async fn outbox(settings: &Settings, identity: &Identity) -> anyhow::Result<Option<Arc<Outbox>>> {
    let Some(url) = &settings.report.sqs_queue_url else {
        return Ok(None);
    };
    let outbox = Arc::new(
        Outbox::open(&settings.daemon.state_dir.join("outbox"))
            .context("opening the report outbox")?,
    );
    let conf = crate::sdk::config(
        settings.report.region.as_deref(),
        crate::sdk::Deadlines::CALL,
    )
    .await;
    let sender = SqsSender {
        client: aws_sdk_sqs::Client::new(&conf),
        queue_url: url.clone(),
        group_id: settings.report.message_group_id.clone(),
        instance_id: identity.instance_id.clone(),
    };
    tokio::spawn(sender.run(outbox.clone()));
    tracing::info!(queue = %url, instance = %identity.instance_id, "reports go to SQS through the outbox");
    Ok(Some(outbox))
}

/// A walker per service and per local server, each recovering what its journal holds.
fn start_services(shared: &Arc<Services>, settings: &Settings) -> anyhow::Result<()> {
    let mut slots = Vec::new();
    for service in settings.services.values() {
        let slot = shared
            .spawn(service)
            .with_context(|| format!("starting service {:?}", service.name))?;
        slots.push((service.name.clone(), slot));
    }
    for process in settings.processes.values() {
        let slot = shared
            .spawn_process(process)
            .with_context(|| format!("starting service {:?}", process.name))?;
        slots.push((process.name.clone(), slot));
    }
    shared.slots.write().expect("services lock").extend(slots);
    Ok(())
}

/// Where releases and requests come in: the control socket, the metrics listener, the inbox.
struct Intake {
    server: tokio::task::JoinHandle<()>,
    _metrics: Option<tokio::task::JoinHandle<()>>,
    _inbox: Option<crate::intake::inbox::Inbox>,
}

async fn listen(
    shared: &Arc<Services>,
    d: &crate::config::DaemonSettings,
    bounds: crate::control::conns::Bounds,
) -> anyhow::Result<Intake> {
    let server = crate::control::server::serve(shared.clone(), &d.socket, bounds)
        .await
        .with_context(|| format!("listening on control socket {}", d.socket.display()))?;
    let metrics = match d.metrics_listen {
        Some(addr) => Some(
            crate::control::metrics::serve_metrics(shared.clone(), addr)
                .await
                .with_context(|| {
                    format!("listening for metrics on {addr} (daemon.metrics_listen)")
                })?,
        ),
        None => None,
    };
    let inbox = match &d.inbox_dir {
        Some(dir) => Some(
            crate::intake::inbox::watch(shared.clone(), dir)
                .with_context(|| format!("watching inbox {}", dir.display()))?,
        ),
        None => None,
    };
    Ok(Intake {
        server,
        _metrics: metrics,
        _inbox: inbox,
    })
}

/// SIGTERM and SIGINT stop the daemon; SIGHUP reloads its config.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn catch() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// Follows the services in systemd's STATUS and reloads on SIGHUP until told to stop;
    /// returns the STATUS follower, still running.
    async fn wait(mut self, shared: &Arc<Services>) -> tokio::task::JoinHandle<()> {
        let mut status = tokio::spawn(crate::systemd::follow_status(shared.handles()));
        loop {
            tokio::select! {
                _ = self.term.recv() => return status,
                _ = self.int.recv() => return status,
                _ = self.hup.recv() => {
                    if reload(shared) {
                        status.abort();
                        status = tokio::spawn(crate::systemd::follow_status(shared.handles()));
                    }
                }
            }
        }
    }
}

/// SIGHUP: our own config re-read, validated first; on error the old one stays. Whether it was
/// reloaded.
fn reload(shared: &Services) -> bool {
    crate::systemd::reloading();
    let result = shared.reload();
    let views: Vec<_> = shared.handles().iter().map(|h| h.view()).collect();
    match result {
        Ok(outcome) => {
            tracing::info!(?outcome, "SIGHUP: config reloaded");
            crate::systemd::ready(&crate::systemd::summary(&views));
            true
        }
        Err(e) => {
            tracing::error!(error = %e, "SIGHUP: config not reloaded; the old one stays");
            crate::systemd::ready(&format!("config reload failed, old config kept: {e}"));
            false
        }
    }
}

/// Raises the soft descriptor limit to the hard one (systemd starts a service at 1024 soft,
/// 524288 hard) and returns the soft limit in force: the control socket's connection bound is
/// taken from it, leaving the engine its share (`control::conns::bound_for_nofile`).
fn raise_nofile() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(limits) => limits,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the descriptor limit; assuming 1024");
            return 1024;
        }
    };
    if soft >= hard {
        tracing::info!(nofile = soft, "descriptor limit (already the hard limit)");
        return soft;
    }
    match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => {
            tracing::info!(
                nofile = hard,
                was = soft,
                "descriptor limit raised to the hard limit"
            );
            hard
        }
        Err(e) => {
            tracing::warn!(nofile = soft, hard, error = %e, "cannot raise the descriptor limit");
            soft
        }
    }
}

/// The instance id reports carry: IMDSv2 when configured, else the configured instance id.
async fn identity(settings: &Settings) -> Identity {
    let configured = settings.daemon.instance_id.clone();
    let instance_id = match &settings.report.imds_endpoint {
        Some(endpoint) => {
            match crate::report::imds::instance_id(endpoint, std::time::Duration::from_secs(2))
                .await
            {
                Ok(id) => id,
                Err(e) => {
                    tracing::warn!(error = %e, fallback = %configured, "instance id not read from IMDS; using the configured one");
                    configured
                }
            }
        }
        None => configured,
    };
    Identity {
        instance_id,
        stack: settings.report.stack.clone(),
    }
}
