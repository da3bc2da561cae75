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
use super::canary::{self, Verdict, FULL_WEIGHT};
use super::handle::ServiceHandle;
use super::journal::Journal;
use super::phase::{
    Budgets, Event, Figures, Instance, Phase, Release, Replica, StepRecord, Swap, UnixMs,
};
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

fn member_spec(r: &Replica, weight: Option<u16>) -> ServerSpec {
    ServerSpec {
        name: r.server.clone(),
        addr: Ipv4Addr::LOCALHOST.to_string(),
        port: r.host_port,
        weight,
    }
}

/// The HAProxy servers of every container of a release.
fn specs_of(i: &Instance) -> Vec<ServerSpec> {
    i.members().iter().map(|m| member_spec(m, None)).collect()
}

fn servers_of(i: Option<&Instance>) -> Vec<String> {
    i.map(|i| i.members().into_iter().map(|m| m.server).collect())
        .unwrap_or_default()
}

/// How long a rolled-back canary's servers get to finish their requests before they are removed.
const CANARY_DRAIN: Duration = Duration::from_secs(10);

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
            swap = self.plan_ramp(swap);
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
                Phase::Ramping { step, deadline } => {
                    match within(deadline, "the ramp step", self.ramp_step(&mut swap, step)).await {
                        Ok(()) => self.book.advance(swap, Event::StepPassed),
                        Err(reason) => self.book.advance(swap, Event::Fail(reason)),
                    }
                }
                Phase::Watching { deadline } => {
                    match within(deadline, "the watch window", self.watch(&mut swap)).await {
                        Ok(()) => self.book.advance(swap, Event::Watched),
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
        // the first batch: the canary when the service ramps
        let first = self.settings.batch.min(self.settings.replicas).max(1);
        let mut members = Vec::new();
        for index in 0..first {
            members.push(self.start_member(release, index).await?);
        }
        let primary = members.remove(0);
        Ok(Instance {
            release: release.clone(),
            container_id: primary.container_id,
            server: primary.server,
            host_port: primary.host_port,
            pids: vec![],
            code_dir: None,
            replicas: members,
        })
    }

    /// Starts container number `index` (0: the first) of a release.
    async fn start_member(&self, release: &Release, index: usize) -> Result<Replica, String> {
        let mut spec = self.container_spec(release);
        let mut server = server_name(&release.deploy_id);
        if index > 0 {
            spec.name = format!("{}-{}", spec.name, index + 1);
            server = format!("{server}-{}", index + 1);
        }
        let started = self.runtime.start(&spec).await.map_err(|e| {
            format!(
                "starting container {} of service {:?} (image {}): {e}",
                index + 1,
                self.service(),
                release.image
            )
        })?;
        Ok(Replica {
            container_id: started.id,
            server,
            host_port: started.host_port,
        })
    }

    /// Starts the next batch of new containers (at most `count`), journals them, gates them, and
    /// puts them in HAProxy at `weight`. Returns the servers added.
    async fn add_batch(
        &mut self,
        swap: &mut Swap,
        count: usize,
        weight: Option<u16>,
    ) -> Result<Vec<Replica>, String> {
        let mut added = Vec::new();
        for _ in 0..count {
            let new = swap
                .new
                .as_mut()
                .ok_or("no new release to add containers to")?;
            let index = new.count();
            let member = self.start_member(&swap.release, index).await?;
            new.replicas.push(member.clone());
            added.push(member);
            // journaled before it serves: a restart removes it with the rest of the release
            self.book.note(swap);
        }
        let deadline = now_ms() + swap.health_deadline_ms;
        self.gate_members(&added, &swap.release, deadline).await?;
        for m in &added {
            self.balancer
                .put_in(&member_spec(m, weight))
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(added)
    }

    /// Gates every container given (at once); the first one's answer is returned.
    async fn gate_members(
        &self,
        members: &[Replica],
        release: &Release,
        deadline: UnixMs,
    ) -> Result<health::Passed, String> {
        let gates = members.iter().map(|m| self.gate_one(m, release, deadline));
        let mut passed = None;
        for r in futures_util::future::join_all(gates).await {
            let p = r?;
            passed.get_or_insert(p);
        }
        passed.ok_or_else(|| "no container to check".to_string())
    }

    async fn gate_one(
        &self,
        m: &Replica,
        release: &Release,
        deadline: UnixMs,
    ) -> Result<health::Passed, String> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, m.host_port));
        let gate = health::gate(
            addr,
            &self.settings.health,
            &release.version,
            instant_of(deadline),
        );
        let died = async {
            loop {
                tokio::time::sleep(LIVENESS_POLL).await;
                if let Ok(false) = self.runtime.is_running(&m.container_id).await {
                    return;
                }
            }
        };
        tokio::select! {
            r = gate => r.map_err(|e| e.to_string()),
            () = died => Err(format!("container {} exited before passing its health gate", &m.container_id[..12.min(m.container_id.len())])),
        }
    }

    /// Fixes the canary plan when the swap begins: the service's ramp, unless the release skips
    /// it, it is a code reload, or nothing serves yet to compare with.
    fn plan_ramp(&self, swap: Swap) -> Swap {
        let Some(ramp) = &self.settings.ramp else {
            return swap;
        };
        if swap.release.code.is_some() || swap.old.is_none() {
            return swap;
        }
        if swap.release.no_ramp {
            let mut swap = swap;
            swap.ramp_skipped = true;
            swap.warnings
                .push("the canary ramp was skipped at the operator's request (--no-ramp)".into());
            return swap;
        }
        let watch = u64::try_from(ramp.watch.as_millis()).unwrap_or(u64::MAX);
        swap.with_ramp(ramp.steps.clone(), watch)
    }

    /// Both releases' servers with the weights that give the new one `share_pct` of the traffic,
    /// in one runtime API call.
    async fn set_share(&self, swap: &Swap, share_pct: u8) -> Result<(), String> {
        let new = servers_of(swap.new.as_ref());
        let old = servers_of(swap.old.as_ref());
        let (wn, wo) = canary::weights(share_pct, new.len(), old.len());
        let all: Vec<(String, u16)> = new
            .into_iter()
            .map(|s| (s, wn))
            .chain(old.into_iter().map(|s| (s, wo)))
            .collect();
        self.balancer
            .set_weights(&all)
            .await
            .map_err(|e| format!("setting weights for {share_pct} % to the new release: {e}"))
    }

    /// One ramp step: enough new containers for its share, the weights, then the hold, judging
    /// HAProxy's figures for both releases as they come; an error aborts the canary.
    async fn ramp_step(&mut self, swap: &mut Swap, step: usize) -> Result<(), String> {
        let plan = swap.ramp[step];
        let needed =
            canary::needed_new(plan.share_pct, self.settings.replicas, self.settings.batch);
        loop {
            let have = swap.new.as_ref().map(Instance::count).unwrap_or(0);
            if have >= needed {
                break;
            }
            let count = self.settings.batch.min(needed - have);
            self.add_batch(swap, count, Some(0)).await?;
        }
        self.set_share(swap, plan.share_pct).await?;
        let what = format!(
            "canary step {} of {} ({} % of traffic)",
            step + 1,
            swap.ramp.len(),
            plan.share_pct
        );
        self.hold(swap, "ramp", plan.share_pct, plan.hold_ms, &what)
            .await
    }

    /// The watch window: all traffic on the new release, the old one kept at weight 0.
    async fn watch(&mut self, swap: &mut Swap) -> Result<(), String> {
        let what = format!(
            "the watch window ({} ms after the last step)",
            swap.watch_ms
        );
        let watch_ms = swap.watch_ms;
        self.hold(swap, "watch", 100, watch_ms, &what).await
    }

    /// Holds for `hold_ms`, reading HAProxy's figures every check interval; records the step.
    async fn hold(
        &mut self,
        swap: &mut Swap,
        kind: &str,
        share_pct: u8,
        hold_ms: u64,
        what: &str,
    ) -> Result<(), String> {
        let (interval, limits) = match &self.settings.ramp {
            Some(r) => (r.check_interval, r.limits),
            None => (Duration::from_millis(250), Default::default()),
        };
        let before = self.read_figures(what).await?;
        let new_servers = servers_of(swap.new.as_ref());
        let old_servers = servers_of(swap.old.as_ref());
        let started_ms = now_ms();
        let end = started_ms + hold_ms;
        let earlier: Vec<StepRecord> = swap.steps.clone();
        swap.steps.push(StepRecord {
            kind: kind.to_string(),
            share_pct,
            started_ms,
            ended_ms: 0,
            new: Figures::default(),
            old: Figures::default(),
            verdict: "running".into(),
        });
        loop {
            let now = now_ms();
            if now < end {
                let nap = (end - now).min(u64::try_from(interval.as_millis()).unwrap_or(250));
                tokio::time::sleep(Duration::from_millis(nap)).await;
            }
            let after = self.read_figures(what).await?;
            let new = canary::release_figures(&before, &after, &new_servers);
            let old = canary::release_figures(&before, &after, &old_servers);
            let reference = canary::old_reference(&old, &earlier, &limits).copied();
            let verdict = canary::judge(&new, reference.as_ref(), &limits);
            let done = now_ms() >= end;
            let record = swap.steps.last_mut().expect("pushed above");
            record.new = new;
            record.old = old;
            if let Verdict::Trip(why) = verdict {
                record.ended_ms = now_ms();
                record.verdict = format!("aborted: {why}");
                let reason = format!("{what}: {why}; traffic turned back to the old release");
                tracing::warn!(service = self.service(), deploy_id = %swap.release.deploy_id, kind, share_pct, "{reason}");
                return Err(reason);
            }
            if done {
                record.ended_ms = now_ms();
                record.verdict = match verdict {
                    Verdict::TooFew => format!(
                        "passed: too few requests to judge ({} of {} needed)",
                        new.requests, limits.min_requests
                    ),
                    _ => "passed".into(),
                };
                tracing::info!(service = self.service(), deploy_id = %swap.release.deploy_id, kind, share_pct, new_requests = new.requests, new_errors = new.errors, old_requests = old.requests, old_errors = old.errors, "{what} passed");
                return Ok(());
            }
            self.book.show(swap);
        }
    }

    async fn read_figures(&self, what: &str) -> Result<canary::Reading, String> {
        self.balancer
            .figures()
            .await
            .map(canary::reading)
            .map_err(|e| format!("reading HAProxy's figures during {what}: {e}"))
    }

    async fn health_gate(&self, swap: &Swap, deadline: UnixMs) -> Result<health::Passed, String> {
        let new = swap.new.as_ref().ok_or("no new container to check")?;
        self.gate_members(&new.members(), &swap.release, deadline)
            .await
    }

    /// The new server takes traffic only now (after its gate); the old one drains only after.
    /// With a ramp, the new servers join at weight 0 and the steps move traffic. Without one,
    /// the new release's batches join one after another, each draining as many old servers as it
    /// replaces, so the serving count never drops below `replicas`.
    async fn switch(&mut self, swap: &mut Swap) -> Result<(), String> {
        if swap.release.code.is_some() {
            // the container already serves: nothing moves in HAProxy
            return Ok(());
        }
        let new = swap.new.clone().ok_or("no new container to switch to")?;
        let err = |e: BalancerError| e.to_string();
        let can_reload = self.settings.haproxy.reload.is_some()
            && self.settings.haproxy.config_file.is_some()
            && self.settings.replicas == 1;
        match self.settings.haproxy.switch {
            SwitchMode::Runtime => {
                let weight = if swap.ramp.is_empty() { FULL_WEIGHT } else { 0 };
                for m in new.members() {
                    match self.balancer.put_in(&member_spec(&m, Some(weight))).await {
                        Ok(()) => {}
                        // the one change that needs a reload: fall back to porter's way
                        Err(e @ BalancerError::NeedsReload { .. })
                            if can_reload && swap.ramp.is_empty() =>
                        {
                            tracing::warn!(service = self.service(), error = %e, "switching by config reload");
                            swap.warnings.push(format!(
                                "{e}; switched by rewriting the config and reloading HAProxy"
                            ));
                            swap.switched_by_reload = true;
                            self.balancer.persist(&specs_of(&new)).await.map_err(err)?;
                            return self.balancer.reload(&new.server).await.map_err(err);
                        }
                        Err(e) => return Err(err(e)),
                    }
                }
                if !swap.ramp.is_empty() {
                    return Ok(());
                }
                self.drain_replaced(swap).await?;
                loop {
                    let have = swap.new.as_ref().map(Instance::count).unwrap_or(0);
                    if have >= self.settings.replicas {
                        break;
                    }
                    let count = self.settings.batch.min(self.settings.replicas - have);
                    self.add_batch(swap, count, Some(FULL_WEIGHT)).await?;
                    self.drain_replaced(swap).await?;
                }
                Ok(())
            }
            SwitchMode::Reload => {
                swap.switched_by_reload = true;
                self.balancer.persist(&specs_of(&new)).await.map_err(err)?;
                self.balancer.reload(&new.server).await.map_err(err)
            }
        }
    }

    /// Drains the old servers the new ones replace: as many stay ready as `replicas` still needs
    /// beside the new servers, none once the new release is complete.
    async fn drain_replaced(&self, swap: &Swap) -> Result<(), String> {
        let Some(old) = &swap.old else { return Ok(()) };
        let have = swap.new.as_ref().map(Instance::count).unwrap_or(0);
        let keep = self.settings.replicas.saturating_sub(have);
        let new = servers_of(swap.new.as_ref());
        for (i, m) in old.members().iter().enumerate() {
            if i >= keep && !new.contains(&m.server) {
                self.balancer
                    .drain(&m.server)
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }

    async fn drain(&self, swap: &mut Swap, deadline: UnixMs) {
        if swap.release.code.is_some() {
            return self.code_drain(swap, deadline).await;
        }
        // Keep the config file in step first, so a reload from here on keeps the new servers.
        if let Some(new) = &swap.new {
            if let Err(e) = self.balancer.persist(&specs_of(new)).await {
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
        let new = servers_of(swap.new.as_ref());
        let old: Vec<String> = servers_of(Some(&old))
            .into_iter()
            .filter(|s| !new.contains(s))
            .collect();
        // after a ramp the old servers are ready at weight 0: drain them now (idempotent)
        self.drain_servers(swap, &old, deadline).await;
    }

    /// Sets `servers` to drain, then waits until none has a request in flight, or the deadline.
    async fn drain_servers(&self, swap: &mut Swap, servers: &[String], deadline: UnixMs) {
        for s in servers {
            if let Err(e) = self.balancer.drain(s).await {
                swap.warnings.push(format!("draining {s}: {e}"));
            }
        }
        loop {
            let mut busy = Vec::new();
            let mut failed = None;
            for s in servers {
                match self.balancer.in_flight(s).await {
                    Ok(None) | Ok(Some(0)) => {}
                    Ok(Some(n)) => busy.push(format!("{n} on {s}")),
                    Err(e) => failed = Some(format!("draining {s}: {e}")),
                }
            }
            if busy.is_empty() && failed.is_none() {
                return;
            }
            if now_ms() >= deadline {
                match failed {
                    Some(e) => swap.warnings.push(e),
                    None => swap.warnings.push(format!(
                        "drain budget ended with requests still in flight: {}",
                        busy.join(", ")
                    )),
                }
                return;
            }
            tokio::time::sleep(DRAIN_POLL).await;
        }
    }

    /// Takes the old release out of HAProxy, stops and removes its container, and removes images
    /// no longer needed (keeping `keep_images` previous ones for rollback).
    async fn retire(&mut self, swap: &mut Swap) {
        if swap.release.code.is_some() {
            return self.code_retire(swap);
        }
        if let Some(old) = swap.old.clone() {
            let new = servers_of(swap.new.as_ref());
            for m in old.members() {
                if new.contains(&m.server) {
                    continue;
                }
                if let Err(e) = self.balancer.take_out(&m.server).await {
                    swap.warnings
                        .push(format!("taking {} out of HAProxy: {e}", m.server));
                }
                if let Err(e) = self
                    .runtime
                    .stop_and_remove(&m.container_id, self.settings.container.stop_grace)
                    .await
                {
                    swap.warnings.push(format!("removing old container: {e}"));
                }
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
        let new_servers = servers_of(swap.new.as_ref());
        if swap.mark("ramping").is_some() {
            // the canary took traffic: all of it back to the old release in one call, then the
            // canary's requests in flight finish before its servers go
            if let Err(e) = self.set_share(swap, 0).await {
                swap.warnings.push(e);
            }
            let deadline = now_ms() + u64::try_from(CANARY_DRAIN.as_millis()).unwrap_or(0);
            self.drain_servers(swap, &new_servers, deadline).await;
        }
        for s in &new_servers {
            if let Err(e) = self.balancer.take_out(s).await {
                swap.warnings
                    .push(format!("taking {s} out of HAProxy: {e}"));
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
            for m in old.members() {
                if let Err(e) = self
                    .balancer
                    .put_in(&member_spec(&m, Some(FULL_WEIGHT)))
                    .await
                {
                    swap.warnings
                        .push(format!("putting {} back in HAProxy: {e}", m.server));
                }
            }
            if let Err(e) = self.balancer.persist(&specs_of(old)).await {
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
                Phase::Starting { .. }
                | Phase::HealthGate { .. }
                | Phase::Ramping { .. }
                | Phase::Watching { .. } => {
                    let why = format!(
                        "hotswapd restarted during phase {}; rolled back",
                        swap.phase
                    );
                    self.book.advance(swap, Event::Fail(why))
                }
                Phase::Switching { .. } => {
                    // finish the switch only if every container of the new release still runs
                    // and passes its gate (one started by the last batch may still be warming
                    // up: it must not join HAProxy before it is ready)
                    let healthy = match &swap.new {
                        Some(n) => {
                            let mut running = true;
                            for m in n.members() {
                                running &= self
                                    .runtime
                                    .is_running(&m.container_id)
                                    .await
                                    .unwrap_or(false);
                            }
                            let deadline = now_ms() + swap.health_deadline_ms;
                            running
                                && self
                                    .gate_members(&n.members(), &swap.release, deadline)
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
        let current_members = self
            .book
            .record
            .current
            .as_ref()
            .map(Instance::members)
            .unwrap_or_default();
        for f in &found {
            let is_current = current_members.iter().any(|m| m.container_id == f.id);
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
        if let Some(mut cur) = self.book.record.current.clone() {
            let mut down = Vec::new();
            let mut moved = false;
            for (i, m) in cur.members().into_iter().enumerate() {
                match found.iter().find(|f| f.id == m.container_id) {
                    Some(f) if f.running => {
                        let mut m = m;
                        if let Some(port) = f.host_port.filter(|p| *p != m.host_port) {
                            tracing::warn!(
                                service = self.service(),
                                server = %m.server,
                                port,
                                "current container has a new host port"
                            );
                            m.host_port = port;
                            moved = true;
                            cur.set_host_port(i, port);
                        }
                        self.balancer
                            .put_in(&member_spec(&m, None))
                            .await
                            .map_err(|e| e.to_string())?;
                    }
                    _ => down.push(m.container_id.clone()),
                }
            }
            if moved {
                self.book.record.current = Some(cur.clone());
                self.book.store();
            }
            self.balancer
                .persist(&specs_of(&cur))
                .await
                .map_err(|e| e.to_string())?;
            if !down.is_empty() {
                let why = format!(
                    "degraded: current container(s) {} not running",
                    down.join(", ")
                );
                tracing::error!(service = self.service(), "{why}");
                self.book.publish(&why);
            }
        }
        for s in servers {
            let ours = s.name.starts_with("hs-");
            let is_current = current_members.iter().any(|m| m.server == s.name);
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
