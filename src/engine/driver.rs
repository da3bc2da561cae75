//! One task per service drives its swaps through the phases of `phase::Swap`: it does the work of
//! each phase (Docker, HAProxy, health), journals each phase change before acting on it, and at
//! start-up finishes or undoes whatever a previous run left half done.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tokio::time::Instant;

use super::book::Book;
use super::handle::ServiceHandle;
use super::journal::Journal;
use super::phase::{Budgets, Event, Instance, Phase, Release, Swap, UnixMs};
use crate::balancer::{Balancer, BalancerError, ServerSpec};
use crate::config::{HaproxySettings, ServiceSettings, SwitchMode};
use crate::health;
use crate::report::{Identity, Reporter};
use crate::runtime::archive::ArchiveFetcher;
use crate::runtime::{
    ContainerSpec, Runtime, LABEL_DEPLOY_ID, LABEL_INSTANCE, LABEL_RELEASE, LABEL_SERVICE,
    LABEL_VERSION,
};

/// How often a draining server's in-flight count is read.
const DRAIN_POLL: Duration = Duration::from_millis(10);
/// With `switch = "reload"` the old HAProxy worker's sessions cannot be read: wait this long.
const RELOAD_SETTLE: Duration = Duration::from_millis(500);
/// How often the health gate checks that the new container is still running.
const LIVENESS_POLL: Duration = Duration::from_millis(250);
/// Time allowed to undo a failed swap.
const ROLLBACK_BUDGET: Duration = Duration::from_secs(60);

mod code;

pub fn now_ms() -> UnixMs {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The tokio instant of a journaled deadline.
fn instant_of(deadline: UnixMs) -> Instant {
    Instant::now() + Duration::from_millis(deadline.saturating_sub(now_ms()))
}

async fn within<T>(
    deadline: UnixMs,
    what: &str,
    work: impl Future<Output = Result<T, String>>,
) -> Result<T, String> {
    match tokio::time::timeout_at(instant_of(deadline), work).await {
        Ok(r) => r,
        Err(_) => Err(format!("{what} did not finish before its deadline")),
    }
}

fn budgets_of(settings: &ServiceSettings) -> Budgets {
    Budgets {
        health_deadline: settings.health.deadline,
        drain_budget: settings.drain_budget,
        host_budget: settings.host_budget,
        rollback: ROLLBACK_BUDGET,
    }
}

pub fn server_name(deploy_id: &str) -> String {
    format!("hs-{deploy_id}")
}

fn spec_of(i: &Instance) -> ServerSpec {
    ServerSpec {
        name: i.server.clone(),
        addr: Ipv4Addr::LOCALHOST.to_string(),
        port: i.host_port,
    }
}

pub struct Driver<R, B, P> {
    settings: ServiceSettings,
    /// Config reloads arrive here; they apply from the next swap.
    updates: watch::Receiver<ServiceSettings>,
    make_balancer: fn(&HaproxySettings) -> B,
    instance_id: String,
    runtime: Arc<R>,
    archives: Arc<ArchiveFetcher>,
    balancer: B,
    book: Book<P>,
}

impl<R: Runtime, B: Balancer, P: Reporter> Driver<R, B, P> {
    pub fn new(
        updates: watch::Receiver<ServiceSettings>,
        make_balancer: fn(&HaproxySettings) -> B,
        instance_id: String,
        identity: Arc<Identity>,
        runtime: Arc<R>,
        archives: Arc<ArchiveFetcher>,
        reporter: Arc<P>,
        journal: Journal,
        handle: Arc<ServiceHandle>,
    ) -> Self {
        let settings = updates.borrow().clone();
        Driver {
            balancer: make_balancer(&settings.haproxy),
            book: Book::new(&settings.name, journal, handle, reporter, identity),
            settings,
            updates,
            make_balancer,
            instance_id,
            runtime,
            archives,
        }
    }

    /// Takes the latest settings from a config reload (between swaps only).
    fn refresh_settings(&mut self) {
        if self.updates.has_changed().unwrap_or(false) {
            let new = self.updates.borrow_and_update().clone();
            if new.haproxy != self.settings.haproxy {
                self.balancer = (self.make_balancer)(&new.haproxy);
            }
            tracing::info!(service = %new.name, "new settings in effect");
            self.settings = new;
        }
    }

    fn service(&self) -> &str {
        &self.settings.name
    }

    /// Recovers, then swaps releases as they come, one at a time, for ever.
    pub async fn run(mut self) {
        let mut wait = Duration::from_millis(200);
        loop {
            match self.recover().await {
                Ok(()) => break,
                Err(e) => {
                    tracing::error!(service = self.service(), error = %e, "recovery failed; retrying");
                    let why = format!("degraded: recovery failed: {e}");
                    self.book.handle.publish(|v| v.state = why);
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(10));
                }
            }
        }
        self.book.publish("idle");
        loop {
            let updates = self.updates.clone();
            let next = self.book.next_swap(|| budgets_of(&updates.borrow())).await;
            self.refresh_settings();
            if let Some(swap) = next {
                self.swap(swap).await;
                self.book.publish("idle");
            }
        }
    }

    /// Runs a swap from whatever phase it is in to its end, then reports it.
    async fn swap(&mut self, mut swap: Swap) {
        if swap.phase == Phase::Accepted {
            swap.lb_failures_at_start = self.balancer.backend_failures().await.ok();
            self.book.begin(&swap);
        }
        loop {
            swap = match swap.phase.clone() {
                Phase::Accepted => self.book.advance(swap, Event::Begin),
                Phase::Starting { deadline } => {
                    match within(
                        deadline,
                        "starting the container",
                        self.start_new(&mut swap),
                    )
                    .await
                    {
                        Ok(instance) => self.book.advance(swap, Event::Started(instance)),
                        Err(reason) => self.book.advance(swap, Event::Fail(reason)),
                    }
                }
                Phase::HealthGate { deadline } => match self.health_gate(&swap, deadline).await {
                    Ok(passed) => {
                        swap.health_response = Some(passed.body);
                        self.book.advance(swap, Event::GatePassed)
                    }
                    Err(reason) => self.book.advance(swap, Event::Fail(reason)),
                },
                Phase::Switching { deadline } => {
                    match within(deadline, "switching HAProxy", self.switch(&mut swap)).await {
                        Ok(()) => self.book.advance(swap, Event::Switched),
                        Err(reason) => self.book.advance(swap, Event::Fail(reason)),
                    }
                }
                Phase::Draining { deadline } => {
                    self.drain(&mut swap, deadline).await;
                    self.book.advance(swap, Event::Drained)
                }
                Phase::Retiring { .. } => {
                    self.retire(&mut swap).await;
                    self.book.advance(swap, Event::Retired)
                }
                Phase::RollingBack { deadline } => {
                    if tokio::time::timeout_at(instant_of(deadline), self.roll_back(&mut swap))
                        .await
                        .is_err()
                    {
                        swap.warnings
                            .push("rolling back did not finish in time".into());
                    }
                    self.book.advance(swap, Event::RolledBack)
                }
                Phase::Succeeded | Phase::Failed => break,
            };
        }
        if swap.failed_requests.is_none() {
            if let (Some(start), Ok(end)) = (
                swap.lb_failures_at_start,
                self.balancer.backend_failures().await,
            ) {
                swap.failed_requests = Some(end.saturating_sub(start));
            }
        }
        self.book.settle(swap).await;
    }

    fn container_spec(&self, release: &Release) -> ContainerSpec {
        let c = &self.settings.container;
        let mut labels = c.labels.clone();
        labels.insert(LABEL_INSTANCE.into(), self.instance_id.clone());
        labels.insert(LABEL_SERVICE.into(), self.settings.name.clone());
        labels.insert(LABEL_RELEASE.into(), release.image.clone());
        labels.insert(LABEL_VERSION.into(), release.version.clone());
        labels.insert(LABEL_DEPLOY_ID.into(), release.deploy_id.clone());
        ContainerSpec {
            name: format!(
                "hotswap-{}-{}-{}",
                self.instance_id, self.settings.name, release.deploy_id
            ),
            image: release.image.clone(),
            env: c.env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
            command: c.command.clone(),
            volumes: c.volumes.clone(),
            labels,
            container_port: self.settings.container_port,
            stop_signal: c.stop_signal.clone(),
            stop_grace: c.stop_grace,
        }
    }

    async fn start_new(&self, swap: &mut Swap) -> Result<Instance, String> {
        if swap.release.code.is_some() {
            return self.code_start(swap).await;
        }
        let release = &swap.release;
        if let Some(archive) = &release.archive {
            let location = archive.path.to_string_lossy().into_owned();
            let (file, downloaded) = if location.starts_with("s3://") {
                (
                    self.archives.fetch(&location, &release.deploy_id).await?,
                    true,
                )
            } else {
                (archive.path.clone(), false)
            };
            let loaded = async {
                if let Some(want) = &archive.sha256 {
                    let got = crate::fsutil::sha256_file(&file)
                        .await
                        .map_err(|e| format!("reading image archive {location}: {e}"))?;
                    if !got.eq_ignore_ascii_case(want) {
                        return Err(format!(
                            "image archive {location} has sha256 {got}, expected {want}: not loaded, nothing started"
                        ));
                    }
                }
                self.runtime.load_archive(&file).await.map_err(|e| {
                    format!("loading image archive {location} for service {:?}: {e}", self.service())
                })
            }
            .await;
            if downloaded {
                let _ = tokio::fs::remove_file(&file).await;
            }
            loaded?;
        }
        self.runtime
            .ensure_image(&release.image)
            .await
            .map_err(|e| format!("preparing image for service {:?}: {e}", self.service()))?;
        let spec = self.container_spec(release);
        let started = self.runtime.start(&spec).await.map_err(|e| {
            format!(
                "starting container for service {:?} (image {}): {e}",
                self.service(),
                release.image
            )
        })?;
        Ok(Instance {
            release: release.clone(),
            container_id: started.id,
            server: server_name(&release.deploy_id),
            host_port: started.host_port,
            pids: vec![],
            code_dir: None,
        })
    }

    async fn health_gate(&self, swap: &Swap, deadline: UnixMs) -> Result<health::Passed, String> {
        let new = swap.new.as_ref().ok_or("no new container to check")?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, new.host_port));
        let gate = health::gate(
            addr,
            &self.settings.health,
            &swap.release.version,
            instant_of(deadline),
        );
        let died = async {
            loop {
                tokio::time::sleep(LIVENESS_POLL).await;
                if let Ok(false) = self.runtime.is_running(&new.container_id).await {
                    return;
                }
            }
        };
        tokio::select! {
            r = gate => r.map_err(|e| e.to_string()),
            () = died => Err(format!("container {} exited before passing its health gate", &new.container_id[..12.min(new.container_id.len())])),
        }
    }

    /// The new server takes traffic only now (after its gate); the old one drains only after.
    async fn switch(&self, swap: &mut Swap) -> Result<(), String> {
        if swap.release.code.is_some() {
            // the container already serves: nothing moves in HAProxy
            return Ok(());
        }
        let new = swap.new.clone().ok_or("no new container to switch to")?;
        let new = &new;
        let err = |e: BalancerError| e.to_string();
        let can_reload =
            self.settings.haproxy.reload.is_some() && self.settings.haproxy.config_file.is_some();
        match self.settings.haproxy.switch {
            SwitchMode::Runtime => {
                match self.balancer.put_in(&spec_of(new)).await {
                    Ok(()) => {}
                    // the one change that needs a reload: fall back to porter's way
                    Err(e @ BalancerError::NeedsReload { .. }) if can_reload => {
                        tracing::warn!(service = self.service(), error = %e, "switching by config reload");
                        swap.warnings.push(format!(
                            "{e}; switched by rewriting the config and reloading HAProxy"
                        ));
                        swap.switched_by_reload = true;
                        self.balancer.persist(&[spec_of(new)]).await.map_err(err)?;
                        return self.balancer.reload(&new.server).await.map_err(err);
                    }
                    Err(e) => return Err(err(e)),
                }
                if let Some(old) = &swap.old {
                    if old.server != new.server {
                        self.balancer.drain(&old.server).await.map_err(err)?;
                    }
                }
                Ok(())
            }
            SwitchMode::Reload => {
                swap.switched_by_reload = true;
                self.balancer.persist(&[spec_of(new)]).await.map_err(err)?;
                self.balancer.reload(&new.server).await.map_err(err)
            }
        }
    }

    async fn drain(&self, swap: &mut Swap, deadline: UnixMs) {
        if swap.release.code.is_some() {
            return self.code_drain(swap, deadline).await;
        }
        // Keep the config file in step first, so a reload from here on keeps the new server.
        if let Some(new) = &swap.new {
            if let Err(e) = self.balancer.persist(&[spec_of(new)]).await {
                swap.warnings
                    .push(format!("HAProxy config file not updated: {e}"));
            }
        }
        let Some(old) = swap.old.clone() else { return };
        if swap.switched_by_reload {
            tokio::time::sleep_until(instant_of(deadline).min(Instant::now() + RELOAD_SETTLE))
                .await;
            return;
        }
        loop {
            match self.balancer.in_flight(&old.server).await {
                Ok(None) | Ok(Some(0)) => return,
                Ok(Some(n)) if now_ms() >= deadline => {
                    swap.warnings.push(format!(
                        "drain budget ended with {n} requests still on {}",
                        old.server
                    ));
                    return;
                }
                Err(e) if now_ms() >= deadline => {
                    swap.warnings.push(format!("draining {}: {e}", old.server));
                    return;
                }
                _ => tokio::time::sleep(DRAIN_POLL).await,
            }
        }
    }

    /// Takes the old release out of HAProxy, stops and removes its container, and removes images
    /// no longer needed (keeping `keep_images` previous ones for rollback).
    async fn retire(&mut self, swap: &mut Swap) {
        if swap.release.code.is_some() {
            return self.code_retire(swap);
        }
        if let Some(old) = swap.old.clone() {
            if let Err(e) = self.balancer.take_out(&old.server).await {
                swap.warnings
                    .push(format!("taking {} out of HAProxy: {e}", old.server));
            }
            if let Err(e) = self
                .runtime
                .stop_and_remove(&old.container_id, self.settings.container.stop_grace)
                .await
            {
                swap.warnings.push(format!("removing old container: {e}"));
            }
        }
        let mut candidates: Vec<String> =
            swap.old.iter().map(|o| o.release.image.clone()).collect();
        candidates.extend(self.book.record.kept_images.iter().cloned());
        let mut kept: Vec<String> = Vec::new();
        for image in candidates {
            if image == swap.release.image || kept.contains(&image) {
                continue;
            }
            if kept.len() < self.settings.keep_images {
                kept.push(image);
            } else if let Err(e) = self.runtime.remove_image(&image).await {
                swap.warnings.push(e.to_string());
            }
        }
        self.book.record.kept_images = kept;
    }

    /// Undoes a failed swap: the new release leaves HAProxy and Docker, the old one is ready.
    async fn roll_back(&self, swap: &mut Swap) {
        if swap.release.code.is_some() {
            return self.code_roll_back(swap).await;
        }
        if let Some(new) = &swap.new {
            if let Err(e) = self.balancer.take_out(&new.server).await {
                swap.warnings
                    .push(format!("taking {} out of HAProxy: {e}", new.server));
            }
        }
        // also a container started but never recorded (a failure or restart mid-start)
        let leftovers = self
            .runtime
            .list(&[
                (LABEL_INSTANCE, &self.instance_id),
                (LABEL_SERVICE, &self.settings.name),
                (LABEL_DEPLOY_ID, &swap.release.deploy_id),
            ])
            .await;
        let mut ids: Vec<String> = swap.new.iter().map(|n| n.container_id.clone()).collect();
        match leftovers {
            Ok(found) => ids.extend(found.into_iter().map(|f| f.id)),
            Err(e) => swap.warnings.push(e.to_string()),
        }
        ids.sort();
        ids.dedup();
        for id in ids {
            if let Err(e) = self
                .runtime
                .stop_and_remove(&id, self.settings.container.stop_grace)
                .await
            {
                swap.warnings.push(format!("removing new container: {e}"));
            }
        }
        if let Some(old) = &swap.old {
            if let Err(e) = self.balancer.put_in(&spec_of(old)).await {
                swap.warnings
                    .push(format!("putting {} back in HAProxy: {e}", old.server));
            }
            if let Err(e) = self.balancer.persist(&[spec_of(old)]).await {
                swap.warnings.push(e.to_string());
            }
        }
        let keep = swap
            .old
            .iter()
            .any(|o| o.release.image == swap.release.image)
            || self.book.record.kept_images.contains(&swap.release.image);
        if !keep {
            if let Err(e) = self.runtime.remove_image(&swap.release.image).await {
                swap.warnings.push(e.to_string());
            }
        }
    }

    /// Brings the service to one consistent state after a start: finishes or undoes the swap the
    /// journal shows in flight, removes containers of ours that nothing refers to, and makes sure
    /// HAProxy serves the current release.
    async fn recover(&mut self) -> Result<(), String> {
        self.book.record = self
            .book
            .journal
            .load(&self.settings.name)
            .map_err(|e| e.to_string())?;
        self.book.publish("recovering");
        // Fail fast when Docker or HAProxy are not there; run() retries.
        let (instance_id, name) = (self.instance_id.clone(), self.settings.name.clone());
        let ours = [
            (LABEL_INSTANCE, instance_id.as_str()),
            (LABEL_SERVICE, name.as_str()),
        ];
        self.runtime.list(&ours).await.map_err(|e| e.to_string())?;
        self.balancer.servers().await.map_err(|e| e.to_string())?;

        if let Some(swap) = self.book.record.swap.clone() {
            tracing::warn!(service = self.service(), deploy_id = %swap.release.deploy_id, phase = swap.phase.name(), "resuming swap left by a previous run");
            let resumed = match swap.phase {
                // nothing acted yet: run it
                Phase::Accepted => swap,
                Phase::Starting { .. } | Phase::HealthGate { .. } => {
                    let why = format!(
                        "hotswapd restarted during phase {}; rolled back",
                        swap.phase
                    );
                    self.book.advance(swap, Event::Fail(why))
                }
                Phase::Switching { .. } => {
                    // finish the switch only if the new release is still there and healthy
                    let healthy = match &swap.new {
                        Some(n) => {
                            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, n.host_port));
                            self.runtime
                                .is_running(&n.container_id)
                                .await
                                .unwrap_or(false)
                                && health::probe(addr, &self.settings.health, &swap.release.version)
                                    .await
                                    .is_ok()
                        }
                        None => false,
                    };
                    if healthy {
                        swap
                    } else {
                        let why = "hotswapd restarted while switching and the new release is not healthy; rolled back".to_string();
                        self.book.advance(swap, Event::Fail(why))
                    }
                }
                _ => swap,
            };
            self.swap(resumed).await;
        }

        // containers of ours that are not the current release are orphans
        let found = self.runtime.list(&ours).await.map_err(|e| e.to_string())?;
        for f in &found {
            let is_current = self
                .book
                .record
                .current
                .as_ref()
                .is_some_and(|c| c.container_id == f.id);
            if !is_current {
                tracing::warn!(service = self.service(), container = %f.name, "removing orphan container");
                self.runtime
                    .stop_and_remove(&f.id, self.settings.container.stop_grace)
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        // HAProxy serves exactly the current release among our servers
        let servers = self.balancer.servers().await.map_err(|e| e.to_string())?;
        if let Some(cur) = self.book.record.current.clone() {
            match found.iter().find(|f| f.id == cur.container_id) {
                Some(f) if f.running => {
                    let mut cur = cur;
                    if let Some(port) = f.host_port.filter(|p| *p != cur.host_port) {
                        tracing::warn!(
                            service = self.service(),
                            port,
                            "current container has a new host port"
                        );
                        cur.host_port = port;
                        self.book.record.current = Some(cur.clone());
                        self.book.store();
                    }
                    self.balancer
                        .put_in(&spec_of(&cur))
                        .await
                        .map_err(|e| e.to_string())?;
                    self.balancer
                        .persist(&[spec_of(&cur)])
                        .await
                        .map_err(|e| e.to_string())?;
                }
                _ => {
                    let why = format!(
                        "degraded: current container {} is not running",
                        cur.container_id
                    );
                    tracing::error!(service = self.service(), "{why}");
                    self.book.publish(&why);
                }
            }
        }
        for s in servers {
            let ours = s.name.starts_with("hs-");
            let is_current = self
                .book
                .record
                .current
                .as_ref()
                .is_some_and(|c| c.server == s.name);
            if ours && !is_current {
                tracing::warn!(service = self.service(), server = %s.name, "removing stray HAProxy server");
                self.balancer
                    .take_out(&s.name)
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }
}
