//! The one phase loop. A walker owns one service: it takes releases from the service's queue and
//! walks each swap through `phase::Swap`, asking the service's `Steps` for each phase's work,
//! journaling every phase change (through the `Book`) before that phase acts, and reporting the
//! end. The same walker drives containers, containers with mounted code and local processes.

use std::time::Duration;

use super::book::Book;
use super::error::StepError;
use super::phase::{Event, Phase, Swap};
use super::steps::Steps;
use crate::clock::{instant_of, within};
use crate::report::Reporter;

/// How often containers Docker could not remove are tried again, while any are left.
const LEFTOVER_RETRY: Duration = Duration::from_secs(10);

pub struct Walker<S, P> {
    pub(super) steps: S,
    pub(super) book: Book<P>,
}

impl<S: Steps, P: Reporter> Walker<S, P> {
    pub fn new(steps: S, book: Book<P>) -> Self {
        Walker { steps, book }
    }

    /// Recovers (retrying with backoff while Docker or HAProxy do not answer), then swaps
    /// releases as they come, one at a time, for ever.
    pub async fn run(mut self) {
        let mut wait = Duration::from_millis(200);
        let state = loop {
            match self.recover().await {
                Ok(state) => break state,
                Err(e) => {
                    tracing::error!(service = self.steps.service(), error = %e, "recovery failed; retrying");
                    self.book
                        .publish(&format!("degraded: recovery failed: {e}"));
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(10));
                }
            }
        };
        self.book.publish(&state);
        loop {
            let tidy_due = !self.book.record.leftovers.is_empty();
            let steps = &mut self.steps;
            let next = self.book.next_swap(|| {
                steps.refresh();
                steps.budgets()
            });
            let next = if tidy_due {
                // work Docker could not do is tried again while no release comes; the queue is
                // read first on every turn, so a release is never lost to the timer
                tokio::select! {
                    next = next => Some(next),
                    () = tokio::time::sleep(LEFTOVER_RETRY) => None,
                }
            } else {
                Some(next.await)
            };
            let Some(next) = next else {
                self.steps.tidy(&mut self.book).await;
                self.publish_idle();
                continue;
            };
            if let Some(swap) = next {
                let swap = self.accept(swap).await;
                self.walk(swap).await;
            }
            // also when the release was already handled (journaled before a crash): `next_swap`
            // showed it as swapping
            self.publish_idle();
        }
    }

    /// Idle, or degraded while containers that should be gone are still there.
    fn publish_idle(&self) {
        match self.book.record.leftovers.as_slice() {
            [] => self.book.publish("idle"),
            left => {
                let ids: Vec<&str> = left
                    .iter()
                    .map(|l| &l.container_id[..12.min(l.container_id.len())])
                    .collect();
                self.book.publish(&format!(
                    "degraded: container(s) {} not removed yet ({}); retrying",
                    ids.join(", "),
                    left[0].why
                ));
            }
        }
    }

    /// A release just taken from the queue: its plan is fixed and it is journaled as accepted
    /// (a restart from here on runs it as planned).
    pub async fn accept(&mut self, swap: Swap) -> Swap {
        let swap = self.steps.plan(swap).await;
        self.book.begin(&swap).await;
        swap
    }

    /// Walks an accepted swap from whatever phase it is in to its end, then reports it.
    pub async fn walk(&mut self, mut swap: Swap) {
        while !swap.phase.is_terminal() {
            swap = self.step(swap).await;
        }
        self.steps.finish(&mut swap).await;
        self.book.settle(swap).await;
    }

    /// Does the work of the swap's phase, then journals the phase it leads to (a failed step
    /// leads to rolling back). A terminal swap is returned as it is.
    pub async fn step(&mut self, mut swap: Swap) -> Swap {
        let (steps, book) = (&mut self.steps, &mut self.book);
        let event = match swap.phase.clone() {
            Phase::Accepted => Ok(Event::Begin),
            Phase::Starting { deadline } => {
                let work = steps.start(&mut swap);
                within(deadline, work, || StepError::Deadline {
                    what: "starting the new release",
                })
                .await
                .map(Event::Started)
            }
            Phase::HealthGate { deadline } => steps.gate(&swap, deadline).await.map(|passed| {
                swap.health_response = Some(passed.body);
                Event::GatePassed
            }),
            Phase::Switching { deadline } => {
                let work = steps.switch(book, &mut swap);
                within(deadline, work, || StepError::Deadline {
                    what: "switching HAProxy",
                })
                .await
                .map(|()| Event::Switched)
            }
            Phase::Ramping { step, deadline } => {
                let work = steps.ramp(book, &mut swap, step);
                within(deadline, work, || StepError::Deadline {
                    what: "the ramp step",
                })
                .await
                .map(|()| Event::StepPassed)
            }
            Phase::Watching { deadline } => {
                let work = steps.watch(book, &mut swap);
                within(deadline, work, || StepError::Deadline {
                    what: "the watch window",
                })
                .await
                .map(|()| Event::Watched)
            }
            Phase::Draining { deadline } => {
                steps.drain(&mut swap, deadline).await;
                Ok(Event::Drained)
            }
            Phase::Retiring { .. } => {
                steps.retire(book, &mut swap).await;
                Ok(Event::Retired)
            }
            Phase::RollingBack { deadline } => {
                let work = steps.roll_back(book, &mut swap);
                if tokio::time::timeout_at(instant_of(deadline), work)
                    .await
                    .is_err()
                {
                    swap.warnings
                        .push("rolling back did not finish in time".into());
                }
                Ok(Event::RolledBack)
            }
            Phase::Succeeded | Phase::Failed => return swap,
        };
        let event = event.unwrap_or_else(|e| Event::Fail(e.to_string()));
        self.book.advance(swap, event).await
    }
}
