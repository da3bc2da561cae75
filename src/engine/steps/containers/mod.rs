//! Steps of a container service: its `replicas` containers started in batches, gated, joined to
//! HAProxy, the old ones drained and retired. A code-only release for a service with code mounted
//! from the host takes the `code` steps instead (same container, new code, a signal).
//! One file per phase; this one holds the service's parts and sends each phase to its file.

mod code;
mod drain;
mod gate;
mod ramp;
mod rebuild;
mod reconcile;
mod repair;
mod retire;
mod rollback;
mod start;
mod streams;
mod switch;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::{Activity, Dead, Ledger, Part, Steps};
use crate::balancer::{Balancer, ServerSpec, ServerStatus};
use crate::clock::UnixMs;
use crate::config::{HaproxySettings, ServiceSettings};
use crate::engine::error::StepError;
use crate::engine::phase::{Budgets, DrainSplit, Instance, Replica, Swap};
use crate::health::{Passed, Prober};
use crate::runtime::archive::ArchiveFetcher;
use crate::runtime::secrets::Secrets;
use crate::runtime::{Found, Runtime, LABEL_INSTANCE, LABEL_SERVICE};

/// Time allowed to undo a failed swap.
pub const ROLLBACK_BUDGET: Duration = Duration::from_secs(60);

pub struct Containers<R, B, H> {
    settings: ServiceSettings,
    /// Config reloads arrive here; they apply from the next swap.
    updates: watch::Receiver<ServiceSettings>,
    make_balancer: MakeBalancer<B>,
    instance_id: String,
    runtime: Arc<R>,
    archives: Arc<ArchiveFetcher>,
    /// Env from files and AWS, resolved when a container is created.
    secrets: Arc<Secrets>,
    balancer: B,
    prober: H,
    /// What the gate or the drain waits on now, shown by the walker.
    activity: Activity,
    /// Containers Docker said died, for the next reconcile.
    died: Vec<String>,
}

/// Builds the balancer of a service from its settings (again after a config reload changes them).
pub type MakeBalancer<B> = Arc<dyn Fn(&HaproxySettings) -> B + Send + Sync>;

/// What a container service is made of; the daemon builds one per service.
pub struct Parts<R, H> {
    pub instance_id: String,
    pub runtime: Arc<R>,
    pub archives: Arc<ArchiveFetcher>,
    pub secrets: Arc<Secrets>,
    pub prober: H,
}

impl<R: Runtime, B: Balancer, H: Prober> Containers<R, B, H> {
    pub fn new(
        updates: watch::Receiver<ServiceSettings>,
        make_balancer: MakeBalancer<B>,
        parts: Parts<R, H>,
    ) -> Self {
        let settings = updates.borrow().clone();
        Containers {
            balancer: make_balancer(&settings.haproxy),
            settings,
            updates,
            make_balancer,
            instance_id: parts.instance_id,
            runtime: parts.runtime,
            archives: parts.archives,
            secrets: parts.secrets,
            prober: parts.prober,
            activity: Activity::default(),
            died: Vec::new(),
        }
    }

    fn name(&self) -> &str {
        &self.settings.name
    }

    /// Every container of this service, running or not, as Docker shows it now.
    async fn containers(&self) -> Result<Vec<Found>, StepError> {
        self.runtime
            .list(&self.ours())
            .await
            .map_err(StepError::docker(format!(
                "listing the containers of service {:?}",
                self.name()
            )))
    }

    /// The servers of this service's backend, as HAProxy shows them now.
    async fn servers(&self) -> Result<Vec<ServerStatus>, StepError> {
        self.balancer
            .servers()
            .await
            .map_err(StepError::haproxy(format!(
                "reading the servers of service {:?}",
                self.name()
            )))
    }

    /// The labels every container of this service carries.
    fn ours(&self) -> [(&'static str, &str); 2] {
        [
            (LABEL_INSTANCE, self.instance_id.as_str()),
            (LABEL_SERVICE, self.settings.name.as_str()),
        ]
    }
}

pub fn budgets_of(settings: &ServiceSettings) -> Budgets {
    Budgets {
        health_deadline: settings.health.deadline,
        drain_budget: settings.streams.phase_budget(settings.drain_budget),
        drain_split: Some(DrainSplit {
            requests_ms: crate::clock::ms(settings.drain_budget),
            streams_ms: crate::clock::ms(settings.streams.budget),
            close_spread_ms: crate::clock::ms(settings.streams.close_spread),
        }),
        host_budget: settings.host_budget,
        rollback: ROLLBACK_BUDGET,
    }
}

/// The HAProxy server of a release's first container: `hs-<deploy id>`.
pub fn server_name(deploy_id: &str) -> String {
    format!("hs-{deploy_id}")
}

fn member_spec(r: &Replica, weight: Option<u16>) -> ServerSpec {
    ServerSpec {
        name: r.server.clone(),
        addr: r.addr.clone(),
        port: r.host_port,
        weight,
        fresh: false,
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

impl<R: Runtime, B: Balancer, H: Prober> Steps for Containers<R, B, H> {
    fn service(&self) -> &str {
        self.name()
    }

    fn activity(&self) -> Activity {
        self.activity.clone()
    }

    fn hooks(&self) -> crate::config::HookSettings {
        self.settings.hooks.clone()
    }

    fn refresh(&mut self) {
        if self.updates.has_changed().unwrap_or(false) {
            let new = self.updates.borrow_and_update().clone();
            if new.haproxy != self.settings.haproxy {
                self.balancer = (self.make_balancer)(&new.haproxy);
            }
            tracing::info!(service = %new.name, "new settings in effect");
            self.settings = new;
        }
    }

    fn budgets(&self) -> Budgets {
        budgets_of(&self.updates.borrow())
    }

    fn repair_backoff_max(&self) -> Duration {
        self.settings.repair_backoff_max
    }

    async fn plan(&mut self, swap: Swap) -> Swap {
        let mut swap = ramp::plan(&self.settings, swap);
        swap.lb_failures_at_start = self.balancer.backend_failures().await.ok();
        swap
    }

    async fn start(
        &mut self,
        ledger: &mut dyn Ledger,
        swap: &mut Swap,
    ) -> Result<Instance, StepError> {
        if swap.release.code.is_some() {
            return self.code_start(swap).await;
        }
        self.start_new(ledger, swap).await
    }

    async fn gate(&mut self, swap: &Swap, deadline: UnixMs) -> Result<Passed, StepError> {
        let new = swap
            .new
            .as_ref()
            .ok_or(StepError::Missing("no new container to check"))?;
        self.gate_members(&new.members(), &swap.release, deadline)
            .await
    }

    async fn switch(&mut self, ledger: &mut dyn Ledger, swap: &mut Swap) -> Result<(), StepError> {
        if swap.release.code.is_some() {
            // the container already serves the new code: nothing moves in HAProxy
            return Ok(());
        }
        self.switch_to_new(ledger, swap).await
    }

    async fn ramp(
        &mut self,
        ledger: &mut dyn Ledger,
        swap: &mut Swap,
        step: usize,
    ) -> Result<(), StepError> {
        self.ramp_step(ledger, swap, step).await
    }

    async fn watch(&mut self, ledger: &mut dyn Ledger, swap: &mut Swap) -> Result<(), StepError> {
        self.watch_window(ledger, swap).await
    }

    async fn drain(&mut self, swap: &mut Swap, deadline: UnixMs) {
        if swap.release.code.is_some() {
            return self.code_drain(swap, deadline).await;
        }
        self.drain_old(swap, deadline).await
    }

    async fn retire(&mut self, ledger: &mut dyn Ledger, swap: &mut Swap) {
        if swap.release.code.is_some() {
            return self.code_retire(ledger, swap);
        }
        self.retire_old(ledger, swap).await
    }

    async fn roll_back(&mut self, ledger: &mut dyn Ledger, swap: &mut Swap) {
        if swap.release.code.is_some() {
            return self.code_roll_back(swap).await;
        }
        self.roll_back_new(ledger, swap).await
    }

    async fn finish(&mut self, swap: &mut Swap) {
        if swap.failed_requests.is_none() {
            if let (Some(start), Ok(end)) = (
                swap.lb_failures_at_start,
                self.balancer.backend_failures().await,
            ) {
                swap.failed_requests = Some(end.saturating_sub(start));
            }
        }
    }

    async fn tidy(&mut self, ledger: &mut dyn Ledger) -> bool {
        self.remove_leftovers(ledger).await
    }

    async fn reachable(&mut self) -> Result<(), StepError> {
        self.containers().await?;
        self.servers().await?;
        Ok(())
    }

    async fn may_finish_switch(&mut self, swap: &Swap) -> bool {
        self.new_release_whole(swap).await
    }

    async fn reconcile(&mut self, ledger: &mut dyn Ledger) -> Result<Vec<Dead>, StepError> {
        let died = std::mem::take(&mut self.died);
        self.reconcile_current(ledger, &died).await
    }

    fn died(&mut self, ids: Vec<String>) {
        self.died.extend(ids);
    }

    async fn observed_current(&mut self) -> Result<Option<Instance>, StepError> {
        Containers::observed_current(self).await
    }

    async fn repair(&mut self, ledger: &mut dyn Ledger, dead: &Dead) -> Result<Part, StepError> {
        let Part::Container(member) = &dead.part else {
            return Err(StepError::Missing(
                "a container service has only containers to repair",
            ));
        };
        self.replace(ledger, dead.index, member)
            .await
            .map(Part::Container)
    }
}
