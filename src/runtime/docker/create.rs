//! What a container is created with: the release's image, env and command, our labels, the
//! stop signal and grace, and the `[services.X.container]` options as Docker's HostConfig.

use std::collections::HashMap;

use bollard::models::{
    ContainerCreateBody, HostConfig, HostConfigLogConfig, PortBinding, ResourcesUlimits,
};

use crate::runtime::ContainerSpec;

pub(super) fn create_body(spec: &ContainerSpec) -> ContainerCreateBody {
    let port_key = format!("{}/tcp", spec.container_port);
    let o = &spec.options;
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        env: Some(spec.env.clone()),
        cmd: (!spec.command.is_empty()).then(|| spec.command.clone()),
        labels: Some(spec.labels.clone().into_iter().collect()),
        exposed_ports: Some(HashMap::from([(port_key.clone(), HashMap::new())])),
        stop_signal: Some(spec.stop_signal.clone()),
        stop_timeout: Some(spec.stop_grace.as_secs() as i64),
        user: o.user.clone(),
        host_config: Some(HostConfig {
            memory: o.memory_bytes,
            // no swap beyond the limit: an app over it is OOM-killed, and reported so
            memory_swap: o.memory_bytes,
            nano_cpus: o.nano_cpus,
            log_config: Some(HostConfigLogConfig {
                typ: Some(o.log_driver.clone()),
                config: Some(o.log_options.clone().into_iter().collect()),
            }),
            ulimits: (!o.ulimits.is_empty()).then(|| {
                o.ulimits
                    .iter()
                    .map(|u| ResourcesUlimits {
                        name: Some(u.name.clone()),
                        soft: Some(u.soft),
                        hard: Some(u.hard),
                    })
                    .collect()
            }),
            extra_hosts: (!o.extra_hosts.is_empty()).then(|| o.extra_hosts.clone()),
            readonly_rootfs: o.read_only.then_some(true),
            tmpfs: (!o.tmpfs.is_empty())
                .then(|| o.tmpfs.iter().map(|t| (t.clone(), String::new())).collect()),
            cap_drop: (!o.cap_drop.is_empty()).then(|| o.cap_drop.clone()),
            cap_add: (!o.cap_add.is_empty()).then(|| o.cap_add.clone()),
            network_mode: o.network.clone(),
            binds: (!spec.volumes.is_empty()).then(|| spec.volumes.clone()),
            port_bindings: o.publish.then(|| {
                HashMap::from([(
                    port_key,
                    Some(vec![PortBinding {
                        host_ip: Some("127.0.0.1".into()),
                        host_port: Some(String::new()),
                    }]),
                )])
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}
