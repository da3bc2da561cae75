//! Wires the daemon: config → Docker, HAProxy, reporter, one walker per service (in the
//! registry), control socket, inbox, systemd; then waits for signals.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use anyhow::Context;

use crate::config::Settings;
use crate::engine::journal::Journal;
use crate::registry::Registry;
use crate::report::outbox::Outbox;
use crate::report::sqs::SqsSender;
use crate::report::{FileReporter, Identity, Reporters};
use crate::runtime::archive::ArchiveFetcher;
use crate::runtime::secrets::Secrets;
use crate::runtime::Docker;

pub async fn run(settings: Settings, config_path: PathBuf) -> anyhow::Result<()> {
    let d = settings.daemon.clone();
    let nofile = raise_nofile();
    let bounds = crate::control::conns::Bounds::for_nofile(nofile);
    for dir in [d.state_dir.clone(), d.state_dir.join("queue")] {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating state directory {}", dir.display()))?;
    }
    if let Some(dir) = d.reports_file.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating reports directory {}", dir.display()))?;
    }
    let journal = Journal::open(&d.state_dir.join("journal"))?;
    let docker = Arc::new(
        Docker::connect(d.docker_socket.as_deref())
            .await
            .context("hotswapd needs the Docker engine")?
            .with_registry(settings.registry.clone())
            .with_concurrent_starts(d.concurrent_starts),
    );
    let identity = Arc::new(identity(&settings).await);
    let outbox = match &settings.report.sqs_queue_url {
        Some(url) => {
            let outbox = Arc::new(
                Outbox::open(&d.state_dir.join("outbox")).context("opening the report outbox")?,
            );
            let conf = crate::sdk::config(
                settings.report.region.as_deref(),
                crate::sdk::Deadlines::CALL,
            )
            .await;
            let client = aws_sdk_sqs::Client::new(&conf);
            let sender = SqsSender {
                client,
                queue_url: url.clone(),
                group_id: settings.report.message_group_id.clone(),
                instance_id: identity.instance_id.clone(),
            };
            tokio::spawn(sender.run(outbox.clone()));
            tracing::info!(queue = %url, instance = %identity.instance_id, "reports go to SQS through the outbox");
            Some(outbox)
        }
        None => None,
    };
    let shared = Arc::new(Registry {
        instance_id: d.instance_id.clone(),
        started: Instant::now(),
        config_path,
        settings: Mutex::new(settings.clone()),
        services: RwLock::new(BTreeMap::new()),
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
    });
    for service in settings.services.values() {
        let slot = shared
            .spawn(service)
            .with_context(|| format!("starting service {:?}", service.name))?;
        shared
            .services
            .write()
            .expect("services lock")
            .insert(service.name.clone(), slot);
    }
    for process in settings.processes.values() {
        let slot = shared
            .spawn_process(process)
            .with_context(|| format!("starting service {:?}", process.name))?;
        shared
            .services
            .write()
            .expect("services lock")
            .insert(process.name.clone(), slot);
    }
    // what wakes the supervision of every service between swaps
    let _events = crate::watchers::docker_events(shared.clone(), shared.docker.clone());
    let _sweep = crate::watchers::sweep(shared.clone(), d.sweep);
    let _haproxy_files = crate::watchers::haproxy_files_changed(shared.clone())
        .map_err(|e| tracing::warn!(error = %e, "cannot watch HAProxy's files; the sweep will notice changes"))
        .ok();
    let server = crate::control::server::serve(shared.clone(), &d.socket, bounds)
        .await
        .with_context(|| format!("listening on control socket {}", d.socket.display()))?;
    let _metrics_http = match d.metrics_listen {
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
    // Signals are caught from here on: a SIGHUP before READY must not kill the daemon.
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
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
    let mut status = tokio::spawn(crate::systemd::follow_status(shared.handles()));
    let _watchdog = crate::systemd::watchdog_interval()
        .map(|every| tokio::spawn(crate::systemd::watchdog(every)));

    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                // reload our own config: validated first; on error the old one stays
                crate::systemd::reloading();
                let result = shared.reload();
                let views: Vec<_> = shared.handles().iter().map(|h| h.view()).collect();
                match result {
                    Ok(outcome) => {
                        tracing::info!(?outcome, "SIGHUP: config reloaded");
                        crate::systemd::ready(&crate::systemd::summary(&views));
                        status.abort();
                        status = tokio::spawn(crate::systemd::follow_status(shared.handles()));
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "SIGHUP: config not reloaded; the old one stays");
                        crate::systemd::ready(&format!("config reload failed, old config kept: {e}"));
                    }
                }
            }
        }
    }
    // Stop taking releases first; swaps in flight stop where they are: each phase is journaled,
    // the next start finishes or undoes it.
    crate::systemd::stopping();
    tracing::info!("stopping");
    server.abort();
    drop(inbox);
    status.abort();
    let _ = std::fs::remove_file(&d.socket);
    Ok(())
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
