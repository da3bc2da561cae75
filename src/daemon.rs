//! Wires the daemon: config → Docker, HAProxy, reporter, one driver per service, control socket.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;

use crate::balancer::Haproxy;
use crate::config::Settings;
use crate::control::server::{serve, Control};
use crate::engine::journal::Journal;
use crate::engine::{Driver, ServiceHandle};
use crate::report::FileReporter;
use crate::runtime::Docker;

pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let d = &settings.daemon;
    std::fs::create_dir_all(&d.state_dir)
        .with_context(|| format!("creating state directory {}", d.state_dir.display()))?;
    if let Some(dir) = d.reports_file.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating reports directory {}", dir.display()))?;
    }
    let journal = Journal::open(&d.state_dir.join("journal"))?;
    let docker = Arc::new(
        Docker::connect(d.docker_socket.as_deref())
            .await
            .context("hotswapd needs the Docker engine")?,
    );
    let reporter = Arc::new(FileReporter::new(d.reports_file.clone()));

    let mut handles = BTreeMap::new();
    for (name, service) in &settings.services {
        let handle = Arc::new(ServiceHandle::new(name));
        let driver = Driver::new(
            service.clone(),
            d.instance_id.clone(),
            docker.clone(),
            Haproxy::new(&service.haproxy),
            reporter.clone(),
            journal.clone(),
            handle.clone(),
        );
        tokio::spawn(driver.run());
        handles.insert(name.clone(), handle);
    }
    let control = Arc::new(Control {
        services: handles,
        instance_id: d.instance_id.clone(),
        started: Instant::now(),
    });
    let server = serve(control, &d.socket)
        .await
        .with_context(|| format!("listening on control socket {}", d.socket.display()))?;
    tracing::info!(socket = %d.socket.display(), services = settings.services.len(), instance = %d.instance_id, "hotswapd ready");

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    // Swaps in flight stop where they are: each phase is journaled, the next start finishes or undoes it.
    tracing::info!("stopping");
    server.abort();
    let _ = std::fs::remove_file(&d.socket);
    Ok(())
}
