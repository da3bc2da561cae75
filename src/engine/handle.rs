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

use serde::Serialize;
use tokio::sync::{watch, Notify};

use super::phase::Release;
pub use super::queue_file::QueueError;
use super::queue_file::{read_queue, QueueFile};
pub use super::view::{DeployState, Maintenance, ServiceView, State, Superseded};
use crate::clock::now_ms;
use crate::fsutil::write_atomic;

/// Superseded deploys waiting for their report, at most (count; each is one release's worth of
/// bytes, which intake bounds).
pub const UNANSWERED_MAX: usize = 256;
/// Answered deploys remembered in memory for `deploy --wait` (older ones are looked up in the
/// reports file).
const ANSWERED_KEPT: usize = 10_000;

/// Superseded deploys: those still to be reported, and the answers given since start-up.
#[derive(Debug, Default)]
struct Answers {
    unanswered: Vec<Superseded>,
    /// deploy id → the deploy that superseded it, oldest first in `order`.
    answered: std::collections::HashMap<String, String>,
    order: VecDeque<String>,
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
    /// The queue file could not be read at start-up: moved aside, and why (for the walker to
    /// journal and show).
    damaged: Mutex<Option<String>>,
    /// Locked after `queue` when both are.
    answers: Mutex<Answers>,
    /// Something was superseded: the answerer has work.
    to_answer: Notify,
}

impl Answers {
    fn knows(&self, deploy_id: &str) -> bool {
        self.answered.contains_key(deploy_id)
            || self
                .unanswered
                .iter()
                .any(|s| s.release.deploy_id == deploy_id)
    }

    fn remember(&mut self, deploy_id: &str, by: &str) {
        if self
            .answered
            .insert(deploy_id.to_string(), by.to_string())
            .is_none()
        {
            self.order.push_back(deploy_id.to_string());
        }
        while self.order.len() > ANSWERED_KEPT {
            if let Some(old) = self.order.pop_front() {
                self.answered.remove(&old);
            }
        }
    }
}

impl ServiceHandle {
    /// A handle whose queue is journaled in `queue_file` (and read back from it).
    pub fn open(name: &str, queue_file: Option<PathBuf>) -> Result<ServiceHandle, QueueError> {
        let (saved, damaged) = match &queue_file {
            Some(path) => read_queue(path)?,
            None => (QueueFile::default(), None),
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
            damaged: Mutex::new(damaged),
            answers: Mutex::new(Answers {
                unanswered: saved.unanswered,
                ..Default::default()
            }),
            to_answer: Notify::new(),
        })
    }

    /// What was wrong with the queue file at start-up (moved aside, named), once.
    pub(super) fn take_damaged(&self) -> Option<String> {
        self.damaged.lock().expect("damaged lock").take()
    }

    pub fn new(name: &str) -> ServiceHandle {
        ServiceHandle::open(name, None).expect("no file to read")
    }

    fn save(
        &self,
        queue: &VecDeque<Release>,
        superseded: &[Superseded],
        unanswered: &[Superseded],
        maintenance: Option<&Maintenance>,
    ) -> Result<(), QueueError> {
        let Some(path) = &self.queue_file else {
            return Ok(());
        };
        let file = QueueFile {
            queued: queue.iter().cloned().collect(),
            superseded: superseded.to_vec(),
            unanswered: unanswered.to_vec(),
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
        let mut answers = self.answers.lock().expect("answers lock");
        let deploy_id = release.deploy_id.clone();
        let view = self.view.borrow().clone();
        if view.deploy(&deploy_id).is_some() || answers.knows(&deploy_id) {
            return Ok(Submitted::Existing { deploy_id });
        }
        if answers.unanswered.len() + queue.len() > UNANSWERED_MAX {
            return Err(QueueError::Full {
                service: self.name.clone(),
                waiting: answers.unanswered.len(),
            });
        }
        let now = now_ms();
        let mut superseded = view.superseded.clone();
        let mut unanswered = answers.unanswered.clone();
        let replaced: Vec<Release> = queue.drain(..).collect();
        for r in &replaced {
            let s = Superseded {
                release: r.clone(),
                by: deploy_id.clone(),
                at_ms: now,
            };
            superseded.push(s.clone());
            unanswered.push(s);
        }
        let extra = superseded.len().saturating_sub(SUPERSEDED_KEPT);
        superseded.drain(..extra);
        let new_queue = VecDeque::from([release]);
        if let Err(e) = self.save(
            &new_queue,
            &superseded,
            &unanswered,
            view.maintenance.as_ref(),
        ) {
            // nothing changed: put the replaced releases back
            queue.extend(replaced);
            return Err(e);
        }
        if unanswered.len() > answers.unanswered.len() {
            self.to_answer.notify_one();
        }
        answers.unanswered = unanswered;
        drop(answers);
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
        let unanswered = self
            .answers
            .lock()
            .expect("answers lock")
            .unanswered
            .clone();
        let (superseded, maintenance) = {
            let v = self.view.borrow();
            (v.superseded.clone(), v.maintenance.clone())
        };
        if let Err(e) = self.save(&queue, &superseded, &unanswered, maintenance.as_ref()) {
            tracing::error!(service = %self.name, deploy_id, error = %e, "queue journal");
        }
    }

    /// Journals maintenance mode on (Some) or off (None), then shows it.
    pub fn set_maintenance(&self, maintenance: Option<Maintenance>) -> Result<(), QueueError> {
        let queue = self.queue.lock().expect("queue lock");
        let unanswered = self
            .answers
            .lock()
            .expect("answers lock")
            .unanswered
            .clone();
        let superseded = self.view.borrow().superseded.clone();
        self.save(&queue, &superseded, &unanswered, maintenance.as_ref())?;
        self.view.send_modify(|v| v.maintenance = maintenance);
        Ok(())
    }

    /// Where a deploy is: what the view shows, else a superseded deploy waiting for its report
    /// or answered since start-up. None: not known in memory (its report may be on disk).
    pub fn deploy(&self, deploy_id: &str) -> Option<DeployState> {
        if let Some(state) = self.view.borrow().deploy(deploy_id) {
            return Some(state);
        }
        let answers = self.answers.lock().expect("answers lock");
        if let Some(s) = answers
            .unanswered
            .iter()
            .find(|s| s.release.deploy_id == deploy_id)
        {
            return Some(DeployState::Superseded {
                release: Some(s.release.clone()),
                by: s.by.clone(),
            });
        }
        answers
            .answered
            .get(deploy_id)
            .map(|by| DeployState::Superseded {
                release: None,
                by: by.clone(),
            })
    }

    /// Waits until superseded deploys wait for their report, and returns the oldest (at most
    /// `max`), still journaled as unanswered.
    pub async fn unanswered(&self, max: usize) -> Vec<Superseded> {
        loop {
            let waiting: Vec<Superseded> = {
                let answers = self.answers.lock().expect("answers lock");
                answers.unanswered.iter().take(max).cloned().collect()
            };
            if !waiting.is_empty() {
                return waiting;
            }
            self.to_answer.notified().await;
        }
    }

    /// Superseded deploys whose report is written: journaled as answered (dropped from the
    /// queue file), remembered for `deploy --wait`.
    pub fn answered(&self, done: &[Superseded]) -> Result<(), QueueError> {
        let queue = self.queue.lock().expect("queue lock");
        let mut answers = self.answers.lock().expect("answers lock");
        let left: Vec<Superseded> = answers
            .unanswered
            .iter()
            .filter(|s| {
                !done
                    .iter()
                    .any(|d| d.release.deploy_id == s.release.deploy_id)
            })
            .cloned()
            .collect();
        let (superseded, maintenance) = {
            let v = self.view.borrow();
            (v.superseded.clone(), v.maintenance.clone())
        };
        self.save(&queue, &superseded, &left, maintenance.as_ref())?;
        answers.unanswered = left;
        for d in done {
            answers.remember(&d.release.deploy_id, &d.by);
        }
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
#[path = "handle_tests.rs"]
mod tests;
