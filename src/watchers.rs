//! What wakes the supervisor between swaps (`engine::supervise`): Docker's events about our
//! containers, changes to HAProxy's config file and runtime socket (a re-render, a reload, a
//! restart), and a slow safety sweep as a backstop. Each nudges the services concerned; an idle
//! daemon wakes for nothing else.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use notify::{RecursiveMode, Watcher};

use crate::clock::Backoff;
use crate::config::ReloadVia;
use crate::runtime::Docker;
use crate::services::Services;

/// When to look again after a container event: Docker sends `die` a moment before its list
/// shows the container exited, a moment that grows on a loaded host.
const EVENT_SETTLE: [Duration; 4] = [
    Duration::from_millis(50),
    Duration::from_millis(200),
    Duration::from_secs(1),
    Duration::from_secs(3),
];

/// Subscribes to Docker's events for our containers for ever: each event nudges the service it
/// names; when the stream breaks (Docker restarting), every service is nudged once it is back,
/// since events were missed meanwhile.
pub fn docker_events(registry: Arc<Services>, docker: Arc<Docker>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut wait = Backoff::doubling(Duration::from_secs(1), Duration::from_secs(10));
        let mut first = true;
        loop {
            let mut events = std::pin::pin!(docker.container_events(&registry.instance_id));
            if !first {
                nudge_all(&registry);
            }
            first = false;
            while let Some(event) = events.next().await {
                match event {
                    Ok((service, action, id)) => {
                        wait.reset();
                        tracing::debug!(service, action, "docker event");
                        if let Some(h) = registry.handle(&service) {
                            // `kill` is any signal (a drain notice, a code reload): only `die`
                            // says the container is gone (`oom` may name a child process)
                            if action == "die" && !id.is_empty() {
                                h.died(&id);
                            } else {
                                h.nudge();
                            }
                            if action != "start" {
                                tokio::spawn(async move {
                                    let mut slept = Duration::ZERO;
                                    for at in EVENT_SETTLE {
                                        tokio::time::sleep(at - slept).await;
                                        slept = at;
                                        h.nudge();
                                    }
                                });
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "Docker's event stream broke; subscribing again");
                        break;
                    }
                }
            }
            tokio::time::sleep(wait.next()).await;
        }
    })
}

/// Nudges every service now and then, whatever happened (a backstop for a missed event).
pub fn sweep(registry: Arc<Services>, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            nudge_all(&registry);
            registry.reapply_maintenance().await;
        }
    })
}

fn nudge_all(registry: &Services) {
    for h in registry.handles() {
        h.nudge();
    }
}

/// The files of HAProxy the services use: config files, runtime and master sockets, pidfiles.
fn haproxy_files(registry: &Services) -> BTreeSet<PathBuf> {
    let settings = registry.settings.lock().expect("settings lock");
    settings
        .services
        .values()
        .flat_map(|s| {
            let reload = match &s.haproxy.reload {
                Some(ReloadVia::MasterSocket(socket)) => Some(socket.clone()),
                Some(ReloadVia::Signal { pidfile, .. }) => Some(pidfile.clone()),
                None => None,
            };
            [
                s.haproxy.config_file.clone(),
                Some(s.haproxy.runtime_socket.clone()),
                reload,
            ]
        })
        .flatten()
        .collect()
}

/// Watches the directories of HAProxy's config files, sockets and pidfile (inotify): a config
/// file rewritten, a socket or pidfile made again (HAProxy reloaded or restarted), nudges every
/// service, now and once more a second later (a new HAProxy process may take that long to load
/// its servers).
/// Returns the watcher, which stops when dropped.
pub fn haproxy_files_changed(
    registry: Arc<Services>,
) -> notify::Result<notify::RecommendedWatcher> {
    let files = haproxy_files(&registry);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
    let watched = files.clone();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(event) = res else { return };
        if event.kind.is_access() {
            return;
        }
        if event.paths.iter().any(|p| is_ours(&watched, p)) {
            let _ = tx.try_send(());
        }
    })?;
    let dirs: BTreeSet<PathBuf> = files
        .iter()
        .filter_map(|f| f.parent().map(PathBuf::from))
        .collect();
    for dir in &dirs {
        if let Err(e) = watcher.watch(dir, RecursiveMode::NonRecursive) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot watch HAProxy's files there; the sweep will notice changes");
        }
    }
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            tracing::debug!("HAProxy's files changed");
            nudge_all(&registry);
            tokio::time::sleep(Duration::from_secs(1)).await;
            // what came during the second is folded into this nudge
            while rx.try_recv().is_ok() {}
            nudge_all(&registry);
            registry.reapply_maintenance().await;
        }
    });
    Ok(watcher)
}

/// Whether `path` is one of `files`, or a temporary file HAProxy or an editor makes beside one
/// and renames over it (`haproxy.sock.1234.tmp`, `haproxy.cfg.new`).
fn is_ours(files: &BTreeSet<PathBuf>, path: &std::path::Path) -> bool {
    files.iter().any(|f| {
        f.parent() == path.parent()
            && path
                .file_name()
                .zip(f.file_name())
                .is_some_and(|(p, f)| p.as_encoded_bytes().starts_with(f.as_encoded_bytes()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn haproxy_files_and_their_temporaries_are_ours() {
        let files = BTreeSet::from([
            PathBuf::from("/etc/haproxy/haproxy.cfg"),
            PathBuf::from("/run/haproxy/admin.sock"),
        ]);
        assert!(is_ours(&files, "/etc/haproxy/haproxy.cfg".as_ref()));
        assert!(is_ours(&files, "/run/haproxy/admin.sock.4242.tmp".as_ref()));
        assert!(!is_ours(&files, "/etc/haproxy/errors.http".as_ref()));
        assert!(!is_ours(&files, "/etc/other/haproxy.cfg".as_ref()));
    }
}
