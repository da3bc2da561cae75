//! The table of services: what the control API and the inbox see. Each service's handle and
//! its walker task; a config reload adds, changes or removes services; who may connect.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::balancer::Haproxy;
use crate::config::{AccessSettings, ProcessSettings, ServiceSettings, Settings};
use crate::engine::book::Book;
use crate::engine::journal::Journal;
use crate::engine::steps::containers::{Containers, Parts};
use crate::engine::steps::process::{Nudge, Processes};
use crate::engine::{ServiceHandle, Walker};
use crate::health::Http;
use crate::model::api::ReloadOutcome;
use crate::report::{Identity, Reporters};
use crate::runtime::archive::ArchiveFetcher;
use crate::runtime::secrets::Secrets;
use crate::runtime::Docker;

/// Settings updates reach a running walker through its watch channel.
enum Updates {
    Container(watch::Sender<ServiceSettings>),
    Process(watch::Sender<ProcessSettings>),
}

pub(crate) struct Slot {
    handle: Arc<ServiceHandle>,
    settings: Updates,
    task: JoinHandle<()>,
}

pub struct Services {
    pub instance_id: String,
    pub started: Instant,
    pub config_path: PathBuf,
    pub(crate) settings: Mutex<Settings>,
    pub(crate) slots: RwLock<BTreeMap<String, Slot>>,
    pub(crate) access: RwLock<AccessSettings>,
    pub(crate) docker: Arc<Docker>,
    pub(crate) reporter: Arc<Reporters>,
    pub(crate) identity: Arc<Identity>,
    pub(crate) archives: Arc<ArchiveFetcher>,
    pub(crate) secrets: Arc<Secrets>,
    /// What the metadata watcher last saw (None: no `[cloudformation]`).
    pub(crate) metadata_watch: Mutex<Option<crate::model::api::WatchView>>,
    pub(crate) journal: Journal,
}

impl Services {
    pub fn handle(&self, name: &str) -> Option<Arc<ServiceHandle>> {
        self.slots
            .read()
            .expect("services lock")
            .get(name)
            .map(|s| s.handle.clone())
    }

    pub fn handles(&self) -> Vec<Arc<ServiceHandle>> {
        self.slots
            .read()
            .expect("services lock")
            .values()
            .map(|s| s.handle.clone())
            .collect()
    }

    /// A `[processes]` service: it reloads code instead of swapping containers.
    pub fn is_process(&self, name: &str) -> bool {
        matches!(
            self.slots
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
            .slots
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

    /// A container service's HAProxy (as its settings name it now) and its settings (None for a
    /// process service or an unknown name).
    pub(crate) fn haproxy_of(
        &self,
        name: &str,
    ) -> Option<(crate::balancer::Haproxy, crate::config::HaproxySettings)> {
        let settings = self.settings.lock().expect("settings lock");
        let h = &settings.service(name)?.haproxy;
        Some((crate::balancer::Haproxy::new(h), h.clone()))
    }

    /// Sets HAProxy's maintenance again for every service the journal holds in maintenance and
    /// HAProxy does not (it lost it in a reload or restart). Logged, never fatal: the sweep
    /// comes back.
    pub async fn reapply_maintenance(&self) {
        use crate::engine::maintenance::{reapply, Reapplied};
        for handle in self.handles() {
            let Some((haproxy, settings)) = self.haproxy_of(&handle.name) else {
                continue;
            };
            match reapply(&haproxy, &handle).await {
                Ok(Reapplied::SetAgain) => {
                    tracing::info!(service = %handle.name, "maintenance set again in HAProxy (it had reloaded or restarted)")
                }
                Ok(Reapplied::Off | Reapplied::AlreadyOn) => {}
                Ok(Reapplied::RuleMissing) => {
                    tracing::warn!(service = %handle.name, backend = %settings.backend, "service in maintenance, but the running HAProxy has no maintenance rule for its backend: clients are not told")
                }
                Err(e) => {
                    tracing::warn!(service = %handle.name, error = %e, "service in maintenance, but HAProxy does not have it")
                }
            }
        }
    }

    pub fn service_names(&self) -> Vec<String> {
        self.slots
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
        Ok(Arc::new(ServiceHandle::open(name, Some(queue_file))?))
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

    pub(crate) fn spawn(&self, service: &ServiceSettings) -> anyhow::Result<Slot> {
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
                secrets: self.secrets.clone(),
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

    pub(crate) fn spawn_process(&self, process: &ProcessSettings) -> anyhow::Result<Slot> {
        let handle = self.open_handle(&process.name)?;
        let (tx, rx) = watch::channel(process.clone());
        let nudged = handle.clone();
        let nudge: Nudge = Arc::new(move || nudged.nudge());
        let steps = Processes::new(rx, Http, Some(nudge));
        let walker = Walker::new(steps, self.book(&process.name, &handle));
        Ok(Slot {
            handle,
            settings: Updates::Process(tx),
            task: tokio::spawn(walker.run()),
        })
    }

    /// What a reload cannot change: the daemon's paths and identity, and the report settings.
    fn check_restartless(&self, new: &Settings) -> Result<(), String> {
        let old = self.settings.lock().expect("settings lock").clone();
        let (a, b) = (&old.daemon, &new.daemon);
        for (key, changed) in [
            ("daemon.socket", a.socket != b.socket),
            ("daemon.state_dir", a.state_dir != b.state_dir),
            ("daemon.reports_file", a.reports_file != b.reports_file),
            ("daemon.instance_id", a.instance_id != b.instance_id),
            ("daemon.docker_socket", a.docker_socket != b.docker_socket),
            ("daemon.inbox_dir", a.inbox_dir != b.inbox_dir),
            ("report", old.report != new.report),
        ] {
            if changed {
                return Err(format!(
                    "config {}: {key} changed: restart hotswapd to apply it (nothing was changed)",
                    self.config_path.display()
                ));
            }
        }
        Ok(())
    }

    /// Re-reads the config file. A bad config changes nothing and says why. New services start,
    /// changed ones apply from their next swap, removed ones stop (their container keeps serving).
    pub fn reload(&self) -> Result<ReloadOutcome, String> {
        let new = Settings::load(&self.config_path).map_err(|e| e.to_string())?;
        self.check_restartless(&new)?;
        let mut services = self.slots.write().expect("services lock");
        let wanted = new.names();
        let removed: Vec<String> = services
            .keys()
            .filter(|k| !wanted.contains(k))
            .cloned()
            .collect();
        check_changes(&services, &removed, &new)?;
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
            self.reporter.metrics.forget(&name);
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

/// A service swapping now cannot be removed, nor move between `[services]` and `[processes]`.
fn check_changes(
    services: &BTreeMap<String, Slot>,
    removed: &[String],
    new: &Settings,
) -> Result<(), String> {
    for name in removed {
        if services[name].handle.view().running().is_some() {
            return Err(format!(
                "service {name:?} is swapping: it cannot be removed now (nothing was changed)"
            ));
        }
    }
    for (name, slot) in services {
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
    Ok(())
}
