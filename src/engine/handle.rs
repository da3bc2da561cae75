//! The shared face of one service: the queue of releases waiting to swap and a view of its state
//! for status queries. The service's driver task is the only writer of the view.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;
use tokio::sync::{watch, Notify};

use super::phase::{Instance, Release, Swap};

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ServiceView {
    pub service: String,
    /// "idle", "swapping", "recovering" or "degraded: <why>".
    pub state: String,
    pub current: Option<Instance>,
    pub previous: Option<Release>,
    pub swap: Option<Swap>,
    pub queued: Vec<Release>,
    /// Recent finished swaps, newest last.
    pub history: Vec<Swap>,
}

/// Where a deploy is, as the control API shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum DeployState {
    Queued { release: Release },
    Running { swap: Swap },
    Finished { swap: Swap },
}

impl DeployState {
    pub fn is_finished(&self) -> bool {
        matches!(self, DeployState::Finished { .. })
    }
}

impl ServiceView {
    pub fn deploy(&self, deploy_id: &str) -> Option<DeployState> {
        if let Some(r) = self.queued.iter().find(|r| r.deploy_id == deploy_id) {
            return Some(DeployState::Queued { release: r.clone() });
        }
        if let Some(s) = self.swap.iter().find(|s| s.release.deploy_id == deploy_id) {
            return Some(if s.phase.is_terminal() {
                DeployState::Finished { swap: s.clone() }
            } else {
                DeployState::Running { swap: s.clone() }
            });
        }
        self.history
            .iter()
            .rev()
            .find(|s| s.release.deploy_id == deploy_id)
            .map(|s| DeployState::Finished { swap: s.clone() })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Submitted {
    Accepted {
        deploy_id: String,
    },
    /// The same deploy id was submitted before: nothing new happens.
    Existing {
        deploy_id: String,
    },
}

pub struct ServiceHandle {
    pub name: String,
    queue: Mutex<VecDeque<Release>>,
    work: Notify,
    view: watch::Sender<ServiceView>,
}

impl ServiceHandle {
    pub fn new(name: &str) -> ServiceHandle {
        let view = ServiceView {
            service: name.to_string(),
            state: "recovering".into(),
            ..Default::default()
        };
        ServiceHandle {
            name: name.to_string(),
            queue: Mutex::new(VecDeque::new()),
            work: Notify::new(),
            view: watch::Sender::new(view),
        }
    }

    /// Queues a release (first come, first swapped). A deploy id seen before is not queued again.
    pub fn submit(&self, release: Release) -> Submitted {
        let mut queue = self.queue.lock().expect("queue lock");
        let deploy_id = release.deploy_id.clone();
        if self.view.borrow().deploy(&deploy_id).is_some() {
            return Submitted::Existing { deploy_id };
        }
        queue.push_back(release);
        let queued: Vec<Release> = queue.iter().cloned().collect();
        self.view.send_modify(|v| v.queued = queued);
        self.work.notify_one();
        Submitted::Accepted { deploy_id }
    }

    /// Waits for the next release; `on_take` runs under the queue lock so no status query sees
    /// the release in neither the queue nor the swap.
    pub(super) async fn next<T>(&self, on_take: impl FnOnce(&Release, &mut ServiceView) -> T) -> T {
        let mut on_take = Some(on_take);
        loop {
            {
                let mut queue = self.queue.lock().expect("queue lock");
                if let Some(release) = queue.pop_front() {
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
