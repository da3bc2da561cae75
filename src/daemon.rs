//! Wires the daemon: config → Docker, HAProxy, reporter, one driver per service, control socket,
//! inbox. `Shared` is what the control API and the inbox see: the services (a config reload may
//! add, change or remove them) and who may connect.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use anyhow::Context;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::balancer::Haproxy;
use crate::config::{AccessSettings, ProcessSettings, ServiceSettings, Settings};
use crate::control::api::ReloadOutcome;
use crate::engine::book::Book;
use crate::engine::journal::Journal;
use crate::engine::steps::containers::{Containers, Parts};
use crate::engine::steps::process::Processes;
use crate::engine::{ServiceHandle, Walker};
use crate::health::Http;
use crate::report::outbox::Outbox;
use crate::report::sqs::SqsSender;
use crate::report::{FileReporter, Identity, Reporters};
use crate::runtime::archive::ArchiveFetcher;
use crate::runtime::Docker;

/// Settings updates reach a running driver through its watch channel.
enum Updates {
    Container(watch::Sender<ServiceSettings>),
    Process(watch::Sender<ProcessSettings>),
}

struct Slot {
    handle: Arc<ServiceHandle>,
    settings: Updates,
    task: JoinHandle<()>,
}

pub struct Shared {
    pub instance_id: String,
    pub started: Instant,
    pub config_path: PathBuf,
    settings: Mutex<Settings>,
    services: RwLock<BTreeMap<String, Slot>>,
    access: RwLock<AccessSettings>,
    docker: Arc<Docker>,
    reporter: Arc<Reporters>,
    identity: Arc<Identity>,
    archives: Arc<ArchiveFetcher>,
    journal: Journal,
}

impl Shared {
    pub fn handle(&self, name: &str) -> Option<Arc<ServiceHandle>> {
        self.services
            .read()
            .expect("services lock")
            .get(name)
            .map(|s| s.handle.clone())
    }

    pub fn handles(&self) -> Vec<Arc<ServiceHandle>> {
        self.services
            .read()
            .expect("services lock")
            .values()
            .map(|s| s.handle.clone())
            .collect()
    }

    /// A `[processes]` service: it reloads code instead of swapping containers.
    pub fn is_process(&self, name: &str) -> bool {
        matches!(
            self.services
                .read()
                .expect("services lock")
                .get(name)
                .map(|s| &s.settings),
            Some(Updates::Process(_))
        )
    }

    /// A container service with code mounted from the host: it takes code-only releases.
    pub fn takes_code(&self, name: &str) -> bool {
        match self
            .services
            .read()
            .expect("services lock")
            .get(name)
            .map(|s| &s.settings)
        {
            Some(Updates::Container(tx)) => tx.borrow().code.is_some(),
            Some(Updates::Process(_)) => true,
            None => false,
        }
    }

    pub fn service_names(&self) -> Vec<String> {
        self.services
            .read()
            .expect("services lock")
            .keys()
            .cloned()
            .collect()
    }

    pub fn access(&self) -> AccessSettings {
        self.access.read().expect("access lock").clone()
    }

    fn open_handle(&self, name: &str) -> anyhow::Result<Arc<ServiceHandle>> {
        let d = &self.settings.lock().expect("settings lock").daemon;
        let queue_file = d.state_dir.join("queue").join(format!("{name}.json"));
        Ok(Arc::new(
            ServiceHandle::open(name, Some(queue_file)).map_err(anyhow::Error::msg)?,
        ))
    }

    /// The record a service's walker keeps: journal, view, reports.
    fn book(&self, name: &str, handle: &Arc<ServiceHandle>) -> Book<Reporters> {
        Book::new(
            name,
            self.journal.clone(),
            handle.clone(),
            self.reporter.clone(),
            self.identity.clone(),
        )
    }

    fn spawn(&self, service: &ServiceSettings) -> anyhow::Result<Slot> {
        let handle = self.open_handle(&service.name)?;
        let instance_id = self
            .settings
            .lock()
            .expect("settings lock")
            .daemon
            .instance_id
            .clone();
        let (tx, rx) = watch::channel(service.clone());
        let steps = Containers::new(
            rx,
            Arc::new(Haproxy::new),
            Parts {
                instance_id,
                runtime: self.docker.clone(),
                archives: self.archives.clone(),
                prober: Http,
            },
        );
        let walker = Walker::new(steps, self.book(&service.name, &handle));
        Ok(Slot {
            handle,
            settings: Updates::Container(tx),
            task: tokio::spawn(walker.run()),
        })
    }

    fn spawn_process(&self, process: &ProcessSettings) -> anyhow::Result<Slot> {
        let handle = self.open_handle(&process.name)?;
        let (tx, rx) = watch::channel(process.clone());
        let walker = Walker::new(Processes::new(rx, Http), self.book(&process.name, &handle));
        Ok(Slot {
            handle,
            settings: Updates::Process(tx),
            task: tokio::spawn(walker.run()),
        })
    }

    /// Re-reads the config file. A bad config changes nothing and says why. New services start,
    /// changed ones apply from their next swap, removed ones stop (their container keeps serving).
    pub fn reload(&self) -> Result<ReloadOutcome, String> {
        let new = Settings::load(&self.config_path).map_err(|e| e.to_string())?;
        let old_daemon = self.settings.lock().expect("settings lock").daemon.clone();
        let (a, b) = (&old_daemon, &new.daemon);
        for (key, changed) in [
            ("daemon.socket", a.socket != b.socket),
            ("daemon.state_dir", a.state_dir != b.state_dir),
            ("daemon.reports_file", a.reports_file != b.reports_file),
            ("daemon.instance_id", a.instance_id != b.instance_id),
            ("daemon.docker_socket", a.docker_socket != b.docker_socket),
            ("daemon.inbox_dir", a.inbox_dir != b.inbox_dir),
            (
                "report",
                self.settings.lock().expect("settings lock").report != new.report,
            ),
        ] {
            if changed {
                return Err(format!(
                    "config {}: {key} changed: restart hotswapd to apply it (nothing was changed)",
                    self.config_path.display()
                ));
            }
        }
        let mut services = self.services.write().expect("services lock");
        let wanted = new.names();
        let removed: Vec<String> = services
            .keys()
            .filter(|k| !wanted.contains(k))
            .cloned()
            .collect();
        for name in &removed {
            if services[name].handle.view().running().is_some() {
                return Err(format!(
                    "service {name:?} is swapping: it cannot be removed now (nothing was changed)"
                ));
            }
        }
        for (name, slot) in services.iter() {
            let kind_changed = match &slot.settings {
                Updates::Container(_) => new.processes.contains_key(name),
                Updates::Process(_) => new.services.contains_key(name),
            };
            if kind_changed {
                return Err(format!(
                    "service {name:?} moved between [services] and [processes]: restart hotswapd to apply it (nothing was changed)"
                ));
            }
        }
        *self.settings.lock().expect("settings lock") = new.clone();
        let mut outcome = ReloadOutcome {
            services: wanted,
            added: vec![],
            changed: vec![],
            removed: removed.clone(),
        };
        for name in removed {
            let slot = services.remove(&name).expect("listed above");
            slot.task.abort();
            tracing::warn!(service = %name, "service removed from config: what runs is left as it is");
        }
        for (name, s) in &new.services {
            match services.get(name).map(|slot| &slot.settings) {
                Some(Updates::Container(tx)) if *tx.borrow() == *s => {}
                Some(Updates::Container(tx)) => {
                    tx.send_replace(s.clone());
                    outcome.changed.push(name.clone());
                }
                _ => {
                    let slot = self
                        .spawn(s)
                        .map_err(|e| format!("starting service {name:?}: {e:#}"))?;
                    services.insert(name.clone(), slot);
                    outcome.added.push(name.clone());
                }
            }
        }
        for (name, p) in &new.processes {
            match services.get(name).map(|slot| &slot.settings) {
                Some(Updates::Process(tx)) if *tx.borrow() == *p => {}
                Some(Updates::Process(tx)) => {
                    tx.send_replace(p.clone());
                    outcome.changed.push(name.clone());
                }
                _ => {
                    let slot = self
                        .spawn_process(p)
                        .map_err(|e| format!("starting service {name:?}: {e:#}"))?;
                    services.insert(name.clone(), slot);
                    outcome.added.push(name.clone());
                }
            }
        }
        *self.access.write().expect("access lock") = new.daemon.access.clone();
        tracing::info!(?outcome, "config reloaded");
        Ok(outcome)
    }
}

pub async fn run(settings: Settings, config_path: PathBuf) -> anyhow::Result<()> {
    let d = settings.daemon.clone();
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
            .context("hotswapd needs the Docker engine")?,
    );
    let identity = Arc::new(identity(&settings).await);
    let outbox = match &settings.report.sqs_queue_url {
        Some(url) => {
            let outbox = Arc::new(
                Outbox::open(&d.state_dir.join("outbox")).context("opening the report outbox")?,
            );
            let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
            if let Some(region) = &settings.report.region {
                loader = loader.region(aws_config::Region::new(region.clone()));
            }
            let client = aws_sdk_sqs::Client::new(&loader.load().await);
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
    let shared = Arc::new(Shared {
        instance_id: d.instance_id.clone(),
        started: Instant::now(),
        config_path,
        settings: Mutex::new(settings.clone()),
        services: RwLock::new(BTreeMap::new()),
        access: RwLock::new(d.access.clone()),
        docker,
        reporter: Arc::new(Reporters {
            file: FileReporter::new(d.reports_file.clone()),
            outbox,
        }),
        identity,
        archives: Arc::new(ArchiveFetcher::new(
            &d.state_dir.join("archives"),
            settings.report.region.clone(),
        )),
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
    let server = crate::control::server::serve(shared.clone(), &d.socket)
        .await
        .with_context(|| format!("listening on control socket {}", d.socket.display()))?;
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
