//! The one phase loop. A walker owns one service: it takes releases from the service's queue and
//! walks each swap through `phase::Swap`, asking the service's `Steps` for each phase's work,
//! journaling every phase change (through the `Book`) before that phase acts, and reporting the
//! end. The same walker drives containers, containers with mounted code and local processes.
//! Between swaps it supervises (supervise.rs): woken by a nudge (a Docker event, HAProxy's files
//! changing, the safety sweep), it makes what runs match the record and repairs what died.

use std::time::Duration;

use super::book::Book;
use super::error::StepError;
use super::handle::State;
use super::hooks;
use super::phase::{Event, Failure, Phase, Swap, UnixMs};
use super::repairs::Repairs;
use super::steps::{Activity, Ledger, Steps};
use crate::clock::{instant_of, within, Backoff};
use crate::config::Hook;
use crate::report::Reporter;

/// How often containers Docker could not remove are tried again, while any are left.
const LEFTOVER_RETRY: Duration = Duration::from_secs(10);

pub struct Walker<S, P> {
    pub(super) steps: S,
    pub(super) book: Book<P>,
    /// What the last look between swaps found: the state to show, and why.
    pub(super) health: (State, Option<String>),
    pub(super) repairs: Repairs,
}

impl<S: Steps, P: Reporter> Walker<S, P> {
    pub fn new(steps: S, book: Book<P>) -> Self {
        Walker {
            steps,
            book,
            health: (State::Serving, None),
            repairs: Repairs::default(),
        }
    }

    /// Recovers (retrying with backoff while Docker or HAProxy do not answer) and brings the
    /// current release back where it does not run, then swaps releases as they come, one at a
    /// time, and supervises between them, for ever. Beside it, in the same task (so both stop
    /// together), superseded deploys are answered with their reports.
    pub async fn run(self) {
        let answer = super::superseded::answer(
            self.book.handle.clone(),
            self.book.reporter.clone(),
            self.book.identity.clone(),
        );
        tokio::join!(answer, self.serve());
    }

    async fn serve(mut self) {
        let mut wait = Backoff::doubling(Duration::from_millis(200), Duration::from_secs(10));
        loop {
            match self.recover().await {
                Ok(()) => break,
                Err(e) => {
                    tracing::error!(service = self.steps.service(), error = %e, "recovery failed; retrying");
                    self.book.publish(
                        State::Recovering,
                        Some(format!("recovery failed: {e}; retrying")),
                    );
                    tokio::time::sleep(wait.next()).await;
                }
            }
        }
        // at start-up, before READY: the current release runs and serves, or the service shows
        // why not
        self.supervise().await;
        self.book.handle.publish(|v| v.started = true);
        loop {
            let tidy_due = !self.book.record.leftovers.is_empty();
            let retry_at = self.repairs.next_try;
            let handle = self.book.handle.clone();
            let steps = &mut self.steps;
            let next = self.book.next_swap(|| {
                steps.refresh();
                steps.budgets()
            });
            let drift = async {
                tokio::select! {
                    () = handle.drifted() => {}
                    () = sleep_until(retry_at) => {}
                    () = tokio::time::sleep(LEFTOVER_RETRY), if tidy_due => {}
                }
            };
            // the queue is read first on every turn, so a release is never lost to a nudge
            let next = tokio::select! {
                biased;
                next = next => Some(next),
                () = drift => None,
            };
            match next {
                None => self.supervise().await,
                Some(next) => {
                    if let Some(swap) = next {
                        let swap = self.accept(swap).await;
                        self.walk(swap).await;
                        // what the swap left is looked at once more (a container that died
                        // meanwhile, leftovers)
                        self.supervise().await;
                    } else {
                        // the release was already handled (journaled before a crash):
                        // `next_swap` showed it as swapping
                        self.show_health();
                    }
                }
            }
        }
    }

    /// Shows what the last look found.
    pub(super) fn show_health(&self) {
        let (state, reason) = self.health.clone();
        self.book.publish(state, reason);
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
        // a warning at worst: the swap's result stands
        let _ = hooks::run(&self.steps.hooks(), Hook::AfterSwap, &mut swap).await;
        self.book.settle(swap).await;
        // a new release (or the old one, rolled back) starts with a clean repair record
        self.repairs = Repairs::default();
    }

    /// Does the work of the swap's phase, then journals the phase it leads to (a failed step
    /// leads to rolling back). A terminal swap is returned as it is.
    pub async fn step(&mut self, mut swap: Swap) -> Swap {
        let event = match swap.phase.clone() {
            // preflight: a swap that cannot succeed for a reason it cannot fix (Docker or
            // HAProxy not answering, the backend missing) fails now, naming it
            Phase::Accepted => self.steps.reachable().await.map(|()| Event::Begin),
            Phase::Starting { deadline } => self.start(&mut swap, deadline).await,
            Phase::HealthGate { deadline } => self.gate(&mut swap, deadline).await,
            Phase::Switching { deadline } => self.switch(&mut swap, deadline).await,
            Phase::Ramping { step, deadline } => {
                let work = self.steps.ramp(&mut self.book, &mut swap, step);
                within(deadline, work, || StepError::Deadline {
                    what: "the ramp step",
                })
                .await
                .map(|()| Event::StepPassed)
            }
            Phase::Watching { deadline } => {
                let work = self.steps.watch(&mut self.book, &mut swap);
                within(deadline, work, || StepError::Deadline {
                    what: "the watch window",
                })
                .await
                .map(|()| Event::Watched)
            }
            Phase::Draining { deadline } => {
                let (board, shown) = (self.steps.activity(), swap.clone());
                let work = self.steps.drain(&mut swap, deadline);
                showing(&mut self.book, &shown, &board, work).await;
                Ok(Event::Drained)
            }
            Phase::Retiring { .. } => {
                self.steps.retire(&mut self.book, &mut swap).await;
                Ok(Event::Retired)
            }
            Phase::RollingBack { deadline } => self.roll_back(&mut swap, deadline).await,
            Phase::Succeeded | Phase::Failed => return swap,
        };
        let event = event.unwrap_or_else(|e| Event::Fail(Failure::from(&e)));
        self.book.advance(swap, event).await
    }

    /// The `before_start` hook, then the new release started, within the phase's deadline.
    async fn start(&mut self, swap: &mut Swap, deadline: UnixMs) -> Result<Event, StepError> {
        let (steps, book) = (&mut self.steps, &mut self.book);
        let hooks = steps.hooks();
        let work = async {
            hooks::run(&hooks, Hook::BeforeStart, swap).await?;
            steps.start(book, swap).await
        };
        within(deadline, work, || StepError::Deadline {
            what: "starting the new release",
        })
        .await
        .map(Event::Started)
    }

    /// The health gate, then the `before_switch` hook: the new release runs, no traffic yet.
    async fn gate(&mut self, swap: &mut Swap, deadline: UnixMs) -> Result<Event, StepError> {
        let board = self.steps.activity();
        let passed = showing(
            &mut self.book,
            swap,
            &board,
            self.steps.gate(swap, deadline),
        )
        .await?;
        swap.health_response = Some(passed.body);
        hooks::run(&self.steps.hooks(), Hook::BeforeSwitch, swap)
            .await
            .map(|()| Event::GatePassed)
    }

    /// HAProxy switched within the phase's deadline, then the `after_switch` hook.
    async fn switch(&mut self, swap: &mut Swap, deadline: UnixMs) -> Result<Event, StepError> {
        let work = self.steps.switch(&mut self.book, swap);
        within(deadline, work, || StepError::Deadline {
            what: "switching HAProxy",
        })
        .await?;
        hooks::run(&self.steps.hooks(), Hook::AfterSwitch, swap)
            .await
            .map(|()| Event::Switched)
    }

    /// Rolling back never fails the swap twice: past its deadline it is a warning.
    async fn roll_back(&mut self, swap: &mut Swap, deadline: UnixMs) -> Result<Event, StepError> {
        let work = self.steps.roll_back(&mut self.book, swap);
        if tokio::time::timeout_at(instant_of(deadline), work)
            .await
            .is_err()
        {
            swap.warnings
                .push("rolling back did not finish in time".into());
        }
        Ok(Event::RolledBack)
    }
}

/// How often what a step waits on is shown.
const SHOW_EVERY: Duration = Duration::from_secs(1);

/// Runs a step that has no ledger, showing what it waits on (`board`) about once a second as
/// the swap's `activity` (not journaled); the board is cleared when the step ends.
async fn showing<T>(
    ledger: &mut dyn Ledger,
    swap: &Swap,
    board: &Activity,
    work: impl std::future::Future<Output = T>,
) -> T {
    board.clear();
    tokio::pin!(work);
    let mut shown = swap.clone();
    let mut tick = tokio::time::interval(SHOW_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is now
    loop {
        tokio::select! {
            out = &mut work => {
                board.clear();
                return out;
            }
            _ = tick.tick() => {
                let now = board.get();
                if now.is_some() && now != shown.activity {
                    shown.activity = now;
                    ledger.show(&shown);
                }
            }
        }
    }
}

/// Sleeps until `at`, or for ever when there is no `at`.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
