//! Where a container answers: its address on its Docker network, or the host port its container
//! port is published on (`[services.X.container] reach`).

use std::collections::HashMap;

use bollard::models::PortBinding;
use bollard::query_parameters::InspectContainerOptions;

use super::Docker;
use crate::runtime::RuntimeError;

impl Docker {
    /// Where a started container answers: (address, port) on its Docker network, or 127.0.0.1
    /// and the host port its container port is published on.
    pub(super) async fn inspect_endpoint(
        &self,
        id: &str,
        container_port: u16,
        published: bool,
    ) -> Result<Option<(std::net::IpAddr, u16)>, RuntimeError> {
        let info = self
            .client
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
            .map_err(|e| self.container_err(id, "inspecting", &e))?;
        let net = info.network_settings;
        Ok(if published {
            published_port(net.and_then(|n| n.ports), container_port)
                .map(|p| (std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), p))
        } else {
            first_ip(
                net.and_then(|n| n.networks)
                    .unwrap_or_default()
                    .into_values(),
            )
            .map(|ip| (ip, container_port))
        })
    }
}

/// The first non-empty IPv4 address among a container's networks.
pub(super) fn first_ip(
    networks: impl IntoIterator<Item = bollard::models::EndpointSettings>,
) -> Option<std::net::IpAddr> {
    networks
        .into_iter()
        .filter_map(|e| e.ip_address)
        .find_map(|ip| ip.parse().ok())
}

fn published_port(
    ports: Option<HashMap<String, Option<Vec<PortBinding>>>>,
    container_port: u16,
) -> Option<u16> {
    ports?
        .get(&format!("{container_port}/tcp"))?
        .as_ref()?
        .iter()
        .find_map(|b| b.host_port.as_deref()?.parse().ok())
}
