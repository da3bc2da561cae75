//! starting: the image is there (loaded from an archive when the release carries one), then the
//! first batch of the new release's containers runs, published on 127.0.0.1, out of traffic.
//! Later batches (`add_batch`) are started, journaled, gated and put in by switch and ramp.

use std::time::Duration;

use super::{member_spec, server_name, Containers};
use crate::balancer::Balancer;
use crate::clock::now_ms;
use crate::engine::error::StepError;
use crate::engine::phase::{Instance, Release, Replica, Swap};
use crate::engine::steps::Ledger;
use crate::health::Prober;
use crate::runtime::{
    ContainerSpec, Runtime, LABEL_DEPLOY_ID, LABEL_INSTANCE, LABEL_RELEASE, LABEL_SERVICE,
    LABEL_VERSION,
};

/// How often a pull's progress is shown while it lasts.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

impl<R: Runtime, B: Balancer, H: Prober> Containers<R, B, H> {
    pub(super) fn container_spec(&self, release: &Release) -> ContainerSpec {
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
            options: c.options.clone(),
        }
    }

    pub(super) async fn start_new(
        &self,
        ledger: &mut dyn Ledger,
        swap: &mut Swap,
    ) -> Result<Instance, StepError> {
        self.load_archive(&swap.release).await?;
        let image = swap.release.image.clone();
        // a pull's progress is shown (not journaled) about once a second
        let mut shown: Option<std::time::Instant> = None;
        let mut progress = |line: &str| {
            if shown.map_or(true, |t| t.elapsed() >= PROGRESS_EVERY) {
                shown = Some(std::time::Instant::now());
                swap.activity = Some(line.to_string());
                ledger.show(swap);
            }
        };
        let pulled = self.runtime.ensure_image(&image, &mut progress).await;
        swap.activity = None;
        pulled.map_err(StepError::docker(format!(
            "preparing image for service {:?}",
            self.name()
        )))?;
        let release = &swap.release;
        // the first batch: the canary when the service ramps
        let first = self.settings.batch.min(self.settings.replicas).max(1);
        let mut members = Vec::new();
        for index in 0..first {
            members.push(self.start_member(release, index).await?);
        }
        Ok(Instance::containers(release.clone(), members))
    }

    /// The release's image archive, if it has one: fetched (S3), digest-checked, loaded, deleted
    /// when it was downloaded.
    async fn load_archive(&self, release: &Release) -> Result<(), StepError> {
        let Some(archive) = &release.archive else {
            return Ok(());
        };
        let location = archive.path.to_string_lossy().into_owned();
        let (file, downloaded) = if location.starts_with("s3://") {
            let file = self
                .archives
                .fetch(&location, &release.deploy_id)
                .await
                .map_err(|message| StepError::Archive {
                    location: location.clone(),
                    message,
                })?;
            (file, true)
        } else {
            (archive.path.clone(), false)
        };
        let loaded = async {
            if let Some(want) = &archive.sha256 {
                let got =
                    crate::fsutil::sha256_file(&file)
                        .await
                        .map_err(|e| StepError::Archive {
                            location: location.clone(),
                            message: format!("reading it: {e}"),
                        })?;
                if !got.eq_ignore_ascii_case(want) {
                    return Err(StepError::ArchiveDigest {
                        location: location.clone(),
                        got,
                        want: want.clone(),
                    });
                }
            }
            self.runtime
                .load_archive(&file)
                .await
                .map_err(StepError::docker(format!(
                    "loading image archive {location} for service {:?}",
                    self.name()
                )))
        }
        .await;
        if downloaded {
            let _ = tokio::fs::remove_file(&file).await;
        }
        loaded
    }

    /// Starts container number `index` (0: the first) of a release.
    pub(super) async fn start_member(
        &self,
        release: &Release,
        index: usize,
    ) -> Result<Replica, StepError> {
        let mut spec = self.container_spec(release);
        let c = &self.settings.container;
        if !c.env_files.is_empty() || !c.secrets.is_empty() {
            spec.env
                .extend(self.secrets.resolve(&c.env_files, &c.secrets).await?);
        }
        let mut server = server_name(&release.deploy_id);
        if index > 0 {
            spec.name = format!("{}-{}", spec.name, index + 1);
            server = format!("{server}-{}", index + 1);
        }
        let started = self
            .runtime
            .start(&spec)
            .await
            .map_err(StepError::docker(format!(
                "starting container {} of service {:?} (image {})",
                index + 1,
                self.name(),
                release.image
            )))?;
        Ok(Replica {
            container_id: started.id,
            server,
            addr: started.addr,
            host_port: started.port,
        })
    }

    /// Starts the next batch of new containers (at most `count`), journals them, gates them, and
    /// puts them in HAProxy at `weight`. Returns the servers added.
    pub(super) async fn add_batch(
        &self,
        ledger: &mut dyn Ledger,
        swap: &mut Swap,
        count: usize,
        weight: Option<u16>,
    ) -> Result<Vec<Replica>, StepError> {
        let mut added = Vec::new();
        for _ in 0..count {
            let new = swap
                .new
                .as_mut()
                .ok_or(StepError::Missing("no new release to add containers to"))?;
            let index = new.count();
            let member = self.start_member(&swap.release, index).await?;
            new.push(member.clone());
            added.push(member);
            // journaled before it serves: a restart removes it with the rest of the release
            ledger.note(swap)?;
        }
        let deadline = now_ms() + swap.health_deadline_ms;
        self.gate_members(&added, &swap.release, deadline).await?;
        for m in &added {
            self.balancer
                .put_in(&member_spec(m, weight))
                .await
                .map_err(StepError::haproxy(format!(
                    "putting {} in HAProxy",
                    m.server
                )))?;
        }
        Ok(added)
    }
}
