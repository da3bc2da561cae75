//! The shared face of one service: the queue of releases waiting to swap and a view of its state
//! for status queries. The service's walker task is the only writer of the view's swap fields;
//! the queue is written by intake and journaled to disk before a release counts as accepted.
//!
//! Queue policy: one swap at a time per service. A release that arrives while another swaps is
//! queued; only the latest queued one is kept: older queued releases are superseded (their
//! deploys end as `superseded`, naming the deploy that replaced them) and the caller is told.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Notify};

use super::phase::Release;
pub use super::view::{DeployState, Maintenance, ServiceView, State, Superseded};
use crate::clock::now_ms;
use crate::fsutil::write_atomic;

/// The queue file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("reading queue file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("queue file {} is not valid: {source}", path.display())]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("journaling the queue to {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Superseded deploys remembered for status queries.
const SUPERSEDED_KEPT: usize = 50;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Submitted {
    Accepted {
        deploy_id: String,
        /// The swap this release waits for, if one is running.
        queued_behind: Option<String>,
        /// Queued deploys this release replaced.
        superseded: Vec<String>,
    },
    /// The same deploy id was submitted before: nothing new happens.
    Existing { deploy_id: String },
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct QueueFile {
    queued: Vec<Release>,
    superseded: Vec<Superseded>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    maintenance: Option<Maintenance>,
}

pub struct ServiceHandle {
    pub name: String,
    queue: Mutex<VecDeque<Release>>,
    work: Notify,
    /// Something may have drifted from the record (a container died, HAProxy reloaded): the
    /// walker looks when it is not swapping. A nudge while it swaps is kept for after.
    drift: Notify,
    view: watch::Sender<ServiceView>,
    /// Where the queue is journaled; None in unit tests.
    queue_file: Option<PathBuf>,
    /// Containers Docker said died (its `die` event) since the walker last looked.
    died: Mutex<Vec<String>>,
}

impl ServiceHandle {
    /// A handle whose queue is journaled in `queue_file` (and read back from it).
    pub fn open(name: &str, queue_file: Option<PathBuf>) -> Result<ServiceHandle, QueueError> {
        let saved: QueueFile = match &queue_file {
            Some(path) => match std::fs::read(path) {
                Ok(bytes) => {
                    serde_json::from_slice(&bytes).map_err(|source| QueueError::Corrupt {
                        path: path.clone(),
                        source,
                    })?
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => QueueFile::default(),
                Err(source) => {
                    return Err(QueueError::Read {
                        path: path.clone(),
                        source,
                    })
                }
            },
            None => QueueFile::default(),
        };
        let view = ServiceView {
            service: name.to_string(),
            state: State::Recovering,
            since_ms: now_ms(),
            queued: saved.queued.clone(),
            superseded: saved.superseded,
            maintenance: saved.maintenance,
            ..Default::default()
        };
        Ok(ServiceHandle {
            name: name.to_string(),
            queue: Mutex::new(saved.queued.into()),
            work: Notify::new(),
            drift: Notify::new(),
            view: watch::Sender::new(view),
            queue_file,
            died: Mutex::new(Vec::new()),
        })
    }

    pub fn new(name: &str) -> ServiceHandle {
        ServiceHandle::open(name, None).expect("no file to read")
    }

    fn save(
        &self,
        queue: &VecDeque<Release>,
        superseded: &[Superseded],
        maintenance: Option<&Maintenance>,
    ) -> Result<(), QueueError> {
        let Some(path) = &self.queue_file else {
            return Ok(());
        };
        let file = QueueFile {
            queued: queue.iter().cloned().collect(),
            superseded: superseded.to_vec(),
            maintenance: maintenance.cloned(),
        };
        let bytes = serde_json::to_vec_pretty(&file).expect("queue serializes");
        write_atomic(path, &bytes).map_err(|source| QueueError::Write {
            path: path.clone(),
            source,
        })
    }

    /// Queues a release under the policy above. The release is journaled before this returns Ok.
    pub fn submit(&self, release: Release) -> Result<Submitted, QueueError> {
        let mut queue = self.queue.lock().expect("queue lock");
        let deploy_id = release.deploy_id.clone();
        let view = self.view.borrow().clone();
        if view.deploy(&deploy_id).is_some() {
            return Ok(Submitted::Existing { deploy_id });
        }
        let now = now_ms();
        let mut superseded = view.superseded.clone();
        let replaced: Vec<Release> = queue.drain(..).collect();
        for r in &replaced {
            superseded.push(Superseded {
                release: r.clone(),
                by: deploy_id.clone(),
                at_ms: now,
            });
        }
        let extra = superseded.len().saturating_sub(SUPERSEDED_KEPT);
        superseded.drain(..extra);
        let mut new_queue = VecDeque::from([release]);
        if let Err(e) = self.save(&new_queue, &superseded, view.maintenance.as_ref()) {
            // nothing changed: put the replaced releases back
            new_queue.clear();
            queue.extend(replaced);
            return Err(e);
        }
        *queue = new_queue;
        let queued: Vec<Release> = queue.iter().cloned().collect();
        self.view.send_modify(|v| {
            v.queued = queued;
            v.superseded = superseded;
        });
        self.work.notify_one();
        Ok(Submitted::Accepted {
            deploy_id,
            queued_behind: view.running().map(String::from),
            superseded: replaced.into_iter().map(|r| r.deploy_id).collect(),
        })
    }

    /// Waits for the next release; `on_take` runs under the queue lock so no status query sees
    /// the release in neither the queue nor the swap. The walker journals the swap right after.
    pub(super) async fn next<T>(&self, on_take: impl FnOnce(&Release, &mut ServiceView) -> T) -> T {
        let mut on_take = Some(on_take);
        loop {
            {
                let mut queue = self.queue.lock().expect("queue lock");
                if let Some(release) = queue.pop_front() {
                    // The queue file still holds the release until `taken`: a crash before the
                    // walker journals the swap runs it again on restart.
                    let queued: Vec<Release> = queue.iter().cloned().collect();
                    let mut taken = None;
                    self.view.send_modify(|v| {
                        v.queued = queued;
                        let f = on_take.take().expect("called once");
                        taken = Some(f(&release, v));
                    });
                    return taken.expect("send_modify runs its closure");
                }
            }
            self.work.notified().await;
        }
    }

    /// Drops the release the walker took from the queue file, once its swap is journaled.
    pub(super) fn taken(&self, deploy_id: &str) {
        let queue = self.queue.lock().expect("queue lock");
        let (superseded, maintenance) = {
            let v = self.view.borrow();
            (v.superseded.clone(), v.maintenance.clone())
        };
        if let Err(e) = self.save(&queue, &superseded, maintenance.as_ref()) {
            tracing::error!(service = %self.name, deploy_id, error = %e, "queue journal");
        }
    }

    /// Journals maintenance mode on (Some) or off (None), then shows it.
    pub fn set_maintenance(&self, maintenance: Option<Maintenance>) -> Result<(), QueueError> {
        let queue = self.queue.lock().expect("queue lock");
        let superseded = self.view.borrow().superseded.clone();
        self.save(&queue, &superseded, maintenance.as_ref())?;
        self.view.send_modify(|v| v.maintenance = maintenance);
        Ok(())
    }

    /// Asks the walker to compare what runs with the record (see `drift`).
    pub fn nudge(&self) {
        self.drift.notify_one();
    }

    /// Docker said container `id` died: the walker's next look takes it as dead at once, before
    /// Docker's list shows it exited (a moment that grows on a loaded host), and its server goes
    /// out of HAProxy with the repair.
    pub fn died(&self, id: &str) {
        {
            let mut died = self.died.lock().expect("died lock");
            if died.len() < 256 && !died.iter().any(|d| d == id) {
                died.push(id.to_string());
            }
        }
        self.nudge();
    }

    pub(super) fn take_died(&self) -> Vec<String> {
        std::mem::take(&mut *self.died.lock().expect("died lock"))
    }

    pub(super) async fn drifted(&self) {
        self.drift.notified().await;
    }

    pub(super) fn publish(&self, f: impl FnOnce(&mut ServiceView)) {
        self.view.send_modify(f);
    }

    pub fn view(&self) -> ServiceView {
        self.view.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<ServiceView> {
        self.view.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(id: &str) -> Release {
        Release {
            service: "web".into(),
            image: format!("web:{id}"),
            version: id.into(),
            deploy_id: id.into(),
            archive: None,
            code: None,
            no_ramp: false,
            requested_by: None,
        }
    }

    #[test]
    fn latest_queued_release_wins_and_the_caller_is_told() {
        let h = ServiceHandle::new("web");
        let a = h.submit(release("a")).unwrap();
        assert_eq!(
            a,
            Submitted::Accepted {
                deploy_id: "a".into(),
                queued_behind: None,
                superseded: vec![]
            }
        );
        let b = h.submit(release("b")).unwrap();
        assert_eq!(
            b,
            Submitted::Accepted {
                deploy_id: "b".into(),
                queued_behind: None,
                superseded: vec!["a".into()]
            }
        );
        let v = h.view();
        assert_eq!(v.queued, vec![release("b")]);
        assert_eq!(
            v.deploy("a"),
            Some(DeployState::Superseded {
                release: release("a"),
                by: "b".into()
            })
        );
        assert!(v.deploy("a").unwrap().is_finished());
        assert_eq!(
            h.submit(release("a")).unwrap(),
            Submitted::Existing {
                deploy_id: "a".into()
            }
        );
        assert_eq!(
            h.submit(release("b")).unwrap(),
            Submitted::Existing {
                deploy_id: "b".into()
            }
        );
    }

    #[test]
    fn a_queued_deploy_says_what_it_waits_for() {
        let h = ServiceHandle::new("web");
        h.submit(release("a")).unwrap();
        let behind = |h: &ServiceHandle| match h.view().deploy("a") {
            Some(DeployState::Queued { behind, .. }) => behind,
            other => panic!("{other:?}"),
        };
        assert_eq!(behind(&h), Some("start-up recovery".into()));
        h.publish(|v| {
            v.set_state(
                State::Repairing,
                Some("container 1a2b exited with code 137".into()),
            )
        });
        assert_eq!(
            behind(&h),
            Some("a repair (container 1a2b exited with code 137)".into())
        );
        h.publish(|v| v.set_state(State::Serving, None));
        assert_eq!(behind(&h), None);
    }

    #[test]
    fn queue_survives_a_restart_through_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.queue.json");
        {
            let h = ServiceHandle::open("web", Some(path.clone())).unwrap();
            h.submit(release("a")).unwrap();
            h.submit(release("b")).unwrap();
        }
        let h = ServiceHandle::open("web", Some(path)).unwrap();
        let v = h.view();
        assert_eq!(v.queued, vec![release("b")]);
        assert_eq!(v.superseded.len(), 1);
    }

    #[test]
    fn a_queue_that_cannot_be_journaled_refuses_the_release() {
        let dir = tempfile::tempdir().unwrap();
        let h = ServiceHandle::open("web", Some(dir.path().join("missing-dir/web.json"))).unwrap();
        let err = h.submit(release("a")).unwrap_err().to_string();
        assert!(err.contains("missing-dir"), "{err}");
        assert!(h.view().queued.is_empty());
    }
}
