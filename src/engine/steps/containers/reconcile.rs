//! Between swaps, at start-up and whenever something may have drifted: containers of ours that
//! are not the current release are orphans and go; the current release's running containers are
//! put back in HAProxy (with a new host port if Docker restarted them) and in the config file;
//! stray `hs-*` servers are deleted. Current containers that do not serve are returned, with
//! how they ended, for `repair` (repair.rs).

use std::net::{IpAddr, Ipv4Addr};

use super::{member_spec, specs_of, Containers};
use crate::balancer::Balancer;
use crate::engine::error::StepError;
use crate::engine::phase::{Instance, Replica};
use crate::engine::steps::{Dead, Ledger, Part};
use crate::health::Prober;
use crate::runtime::{Death, Found, Runtime};

impl<R: Runtime, B: Balancer, H: Prober> Containers<R, B, H> {
    pub(super) async fn reconcile_current(
        &self,
        ledger: &mut dyn Ledger,
        died: &[String],
    ) -> Result<Vec<Dead>, StepError> {
        let found = self.containers().await?;
        let current = ledger.record().current.clone();
        let members = current.as_ref().map(Instance::members).unwrap_or_default();
        self.remove_orphans(&found, &members).await?;
        // every container of ours that is not current is gone now, leftovers included
        if !ledger.record().leftovers.is_empty() {
            ledger.record().leftovers.clear();
            ledger.store()?;
        }
        let servers = self.servers().await?;
        let mut dead = Vec::new();
        if let Some(mut cur) = current {
            let mut moved = false;
            for (index, m) in cur.members().into_iter().enumerate() {
                match found.iter().find(|f| f.id == m.container_id) {
                    Some(f) if f.running && !f.unhealthy && !died.contains(&f.id) => {
                        let mut m = m;
                        if let Some((addr, port)) = self.moved(f, &m) {
                            tracing::warn!(service = self.name(), server = %m.server, %addr, port, "current container answers somewhere new");
                            cur.set_endpoint(index, addr, port);
                            (m.addr, m.host_port, moved) = (addr, port, true);
                        }
                        self.balancer.put_in(&member_spec(&m, None)).await.map_err(
                            StepError::haproxy(format!("putting {} back in HAProxy", m.server)),
                        )?;
                    }
                    f => dead.push(self.dead(index, m, f, died).await),
                }
            }
            if moved {
                ledger.record().current = Some(cur.clone());
                ledger.store()?;
            }
            self.balancer
                .persist(&specs_of(&cur))
                .await
                .map_err(StepError::haproxy(
                    "writing the current servers into HAProxy's config file",
                ))?;
        }
        for s in servers {
            let is_current = members.iter().any(|m| m.server == s.name);
            if s.name.starts_with("hs-") && !is_current {
                tracing::warn!(service = self.name(), server = %s.name, "removing stray HAProxy server");
                self.balancer
                    .take_out(&s.name)
                    .await
                    .map_err(StepError::haproxy(format!(
                        "removing stray server {}",
                        s.name
                    )))?;
            }
        }
        Ok(dead)
    }

    /// Containers of ours that are not the current release's.
    async fn remove_orphans(&self, found: &[Found], members: &[Replica]) -> Result<(), StepError> {
        for f in found {
            if !members.iter().any(|m| m.container_id == f.id) {
                tracing::warn!(service = self.name(), container = %f.name, "removing orphan container");
                self.runtime
                    .stop_and_remove(&f.id, self.settings.container.stop_grace)
                    .await
                    .map_err(StepError::docker(format!(
                        "removing orphan container {}",
                        f.name
                    )))?;
            }
        }
        Ok(())
    }

    /// Where a running current container answers now, when that is not where it did (Docker
    /// restarted it on another port or address).
    fn moved(&self, f: &Found, m: &Replica) -> Option<(IpAddr, u16)> {
        self.reached_at(f)
            .filter(|&(a, p)| (a, p) != (m.addr, m.host_port))
    }

    /// Where a container found in Docker answers: 127.0.0.1 and its published port, or its
    /// address on its network and the container port (None: Docker shows neither).
    pub(super) fn reached_at(&self, f: &Found) -> Option<(IpAddr, u16)> {
        if self.settings.container.options.publish {
            f.host_port.map(|p| (IpAddr::V4(Ipv4Addr::LOCALHOST), p))
        } else {
            f.ip.map(|ip| (ip, self.settings.container_port))
        }
    }

    /// A current container that does not serve, with how it ended, for `repair`.
    async fn dead(&self, index: usize, m: Replica, f: Option<&Found>, died: &[String]) -> Dead {
        let death = match f {
            Some(_) => self
                .runtime
                .death(&m.container_id)
                .await
                .unwrap_or_default(),
            None => Death::default(),
        };
        // Docker said it died, though its list may still say running
        let f = f.map(|f| Found {
            running: f.running && !died.contains(&f.id),
            ..f.clone()
        });
        Dead {
            index,
            why: why_dead(f.as_ref(), &death),
            part: Part::Container(m),
            death,
        }
    }
}

/// Why a current container does not serve, in a few words.
fn why_dead(found: Option<&Found>, death: &Death) -> String {
    match found {
        None => "gone (removed outside hotswapd)".into(),
        Some(f) if f.running => "unhealthy (its HEALTHCHECK)".into(),
        Some(_) if death.oom_killed => "killed by the OOM killer".into(),
        Some(_) => match death.exit_code {
            Some(code) => format!("exited with code {code}"),
            None => "not running".into(),
        },
    }
}
