//! A journal that could not be read is rebuilt from what runs: the containers' labels name
//! their service, release and deploy; HAProxy's servers say which of them takes traffic.
//! Where they agree (a running container whose address a ready `hs-*` server points at), that
//! release is current; failing that, the release whose containers run, when only one does.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use super::{server_name, Containers};
use crate::balancer::{AdminState, Balancer, ServerStatus};
use crate::engine::error::StepError;
use crate::engine::phase::{Instance, Release, Replica};
use crate::health::Prober;
use crate::runtime::{Found, Runtime, LABEL_DEPLOY_ID, LABEL_RELEASE, LABEL_VERSION};

/// How well what Docker runs and what HAProxy routes to agree on one release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Agreement {
    /// Its containers run; HAProxy routes nothing to them.
    DockerOnly,
    /// HAProxy has a server at each of its containers, some draining or in maintenance.
    InHaproxy,
    /// Every container has a ready server at its address.
    Serving,
}

impl<R: Runtime, B: Balancer, H: Prober> Containers<R, B, H> {
    /// The release Docker and HAProxy show serving, as an instance the journal can hold; None
    /// when nothing of this service runs, or several releases run and HAProxy routes to none.
    pub(super) async fn observed_current(&self) -> Result<Option<Instance>, StepError> {
        let found = self.containers().await?;
        let servers = self.servers().await?;
        let mut groups: BTreeMap<&str, Vec<&Found>> = BTreeMap::new();
        for f in found.iter().filter(|f| f.running) {
            if let Some(id) = f.labels.get(LABEL_DEPLOY_ID) {
                groups.entry(id.as_str()).or_default().push(f);
            }
        }
        let mut ranked: Vec<(Agreement, Instance)> = groups
            .into_iter()
            .map(|(deploy_id, members)| self.instance_of(deploy_id, &members, &servers))
            .collect();
        ranked.sort_by(|a, b| b.0.cmp(&a.0));
        let best = match ranked.as_slice() {
            [] => return Ok(None),
            [(_, only)] => only.clone(),
            [(a, first), (b, _), ..] if a > b => first.clone(),
            // two releases agree as well as each other: nothing says which is current
            _ => return Ok(None),
        };
        Ok(Some(best))
    }

    fn instance_of(
        &self,
        deploy_id: &str,
        members: &[&Found],
        servers: &[ServerStatus],
    ) -> (Agreement, Instance) {
        let first = members[0];
        let image = first
            .labels
            .get(LABEL_RELEASE)
            .cloned()
            .unwrap_or_else(|| first.image.clone());
        let release = Release {
            service: self.settings.name.clone(),
            version: first.labels.get(LABEL_VERSION).cloned().unwrap_or_default(),
            image,
            deploy_id: deploy_id.to_string(),
            archive: None,
            code: None,
            no_ramp: false,
            requested_by: None,
        };
        let base = self.container_spec(&release).name;
        let mut replicas: Vec<(usize, Replica, Agreement)> = members
            .iter()
            .map(|f| {
                let index = index_in(&f.name, &base);
                // nowhere to reach it: 0.0.0.0:0, which no server of ours has
                let (addr, port) = self
                    .reached_at(f)
                    .unwrap_or((IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0));
                let server = servers
                    .iter()
                    .find(|s| s.name.starts_with("hs-") && s.addr == addr && s.port == port);
                let agreement = match server {
                    Some(s) if s.admin == AdminState::Ready => Agreement::Serving,
                    Some(_) => Agreement::InHaproxy,
                    None => Agreement::DockerOnly,
                };
                let name = match server {
                    Some(s) => s.name.clone(),
                    None if index == 0 => server_name(deploy_id),
                    None => format!("{}-{}", server_name(deploy_id), index + 1),
                };
                let replica = Replica {
                    container_id: f.id.clone(),
                    server: name,
                    addr,
                    host_port: port,
                };
                (index, replica, agreement)
            })
            .collect();
        replicas.sort_by_key(|(i, _, _)| *i);
        let agreement = replicas
            .iter()
            .map(|(_, _, a)| *a)
            .min()
            .unwrap_or(Agreement::DockerOnly);
        let mut instance =
            Instance::containers(release, replicas.into_iter().map(|(_, r, _)| r).collect());
        if let (Some(code), crate::engine::phase::Runs::Containers { code_dir, .. }) =
            (&self.settings.code, &mut instance.runs)
        {
            *code_dir = crate::code::layout::Layout::new(&code.app_root).current();
        }
        (agreement, instance)
    }
}

/// A container's place in its release from its name: `<base>` is the first, `<base>-N` the Nth.
fn index_in(name: &str, base: &str) -> usize {
    name.strip_prefix(base)
        .and_then(|rest| rest.strip_prefix('-'))
        .and_then(|n| n.parse::<usize>().ok())
        .map_or(0, |n| n.saturating_sub(1))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_container_s_place_comes_from_its_name() {
        let base = "hotswap-i-web-d1";
        assert_eq!(super::index_in(base, base), 0);
        assert_eq!(super::index_in("hotswap-i-web-d1-3", base), 2);
        assert_eq!(super::index_in("something-else", base), 0);
    }
}
