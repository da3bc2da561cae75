//! Between swaps, at start-up and whenever something may have drifted: containers of ours that
//! are not the current release are orphans and go; the current release's running containers are
//! put back in HAProxy (with a new host port if Docker restarted them) and in the config file;
//! stray `hs-*` servers are deleted. Current containers that do not serve are returned, with
//! how they ended, for `repair` (repair.rs).

use super::{member_spec, specs_of, Containers};
use crate::balancer::Balancer;
use crate::engine::error::StepError;
use crate::engine::phase::Instance;
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
        for f in &found {
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
                        let now = if self.settings.container.options.publish {
                            f.host_port.map(|p| ("127.0.0.1".to_string(), p))
                        } else {
                            f.ip.clone().map(|ip| (ip, self.settings.container_port))
                        };
                        if let Some((addr, port)) =
                            now.filter(|(a, p)| (a.as_str(), *p) != (m.addr.as_str(), m.host_port))
                        {
                            tracing::warn!(service = self.name(), server = %m.server, %addr, port, "current container answers somewhere new");
                            m.addr = addr.clone();
                            m.host_port = port;
                            moved = true;
                            cur.set_endpoint(index, &addr, port);
                        }
                        self.balancer.put_in(&member_spec(&m, None)).await.map_err(
                            StepError::haproxy(format!("putting {} back in HAProxy", m.server)),
                        )?;
                    }
                    f => {
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
                        let why = why_dead(f.as_ref(), &death);
                        dead.push(Dead {
                            index,
                            why,
                            part: Part::Container(m),
                            death,
                        });
                    }
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
