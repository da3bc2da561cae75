//! Start-up recovery, the same for every kind of service: read the journal, finish or undo the
//! swap a previous run left in flight. What runs is then matched to the record by the walker's
//! supervision (supervise.rs), before READY.

use super::error::StepError;
use super::handle::State;
use super::journal::{JournalError, ServiceRecord};
use super::phase::{Event, Failure, Phase, Swap};
use super::steps::Steps;
use super::walker::Walker;
use crate::model::Cause;
use crate::report::Reporter;

/// What a restart does with a swap it finds in a phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// Walk on from where it is (nothing acted yet, or the phase is idempotent).
    Continue,
    /// Finish the switch if the new release is still whole and healthy, else roll back.
    CheckSwitch,
    /// The new release never took (all the) traffic: undo it.
    RollBack,
}

/// The one decision table of recovery.
pub fn resume(phase: &Phase) -> Resume {
    match phase {
        Phase::Accepted => Resume::Continue,
        Phase::Starting { .. }
        | Phase::HealthGate { .. }
        | Phase::Ramping { .. }
        | Phase::Watching { .. } => Resume::RollBack,
        Phase::Switching { .. } => Resume::CheckSwitch,
        Phase::Draining { .. }
        | Phase::Retiring { .. }
        | Phase::RollingBack { .. }
        | Phase::Succeeded
        | Phase::Failed => Resume::Continue,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Step(#[from] StepError),
}

impl<S: Steps, P: Reporter> Walker<S, P> {
    /// Brings the service's swap to an end after a start.
    pub(super) async fn recover(&mut self) -> Result<(), RecoverError> {
        let name = self.steps.service().to_string();
        self.book
            .publish(State::Recovering, Some("reading the journal".into()));
        self.book.record = match self.book.journal.load(&name) {
            Ok(record) => record,
            Err(e @ (JournalError::Corrupt { .. } | JournalError::Damaged { .. })) => {
                self.rebuilt(&name, &e).await?
            }
            Err(e) => return Err(e.into()),
        };
        if let Some(note) = self.book.handle.take_damaged() {
            self.book.record.damaged.push(note);
            self.book.store()?;
        }
        self.book.publish(State::Recovering, None);
        // fail fast when Docker or HAProxy are not there; `run` retries
        self.steps.reachable().await?;
        if let Some(swap) = self.book.record.swap.clone() {
            tracing::warn!(service = %name, deploy_id = %swap.release.deploy_id, phase = swap.phase.name(), "resuming swap left by a previous run");
            let swap = self.resumed(swap).await;
            self.walk(swap).await;
        }
        Ok(())
    }

    /// A journal that cannot be read as one: what serves is read from Docker and HAProxy
    /// (which must answer first: until they do the damaged journal stays where it is), the
    /// journal moved aside and a new one written naming it. Nothing serving is removed.
    async fn rebuilt(
        &mut self,
        name: &str,
        e: &JournalError,
    ) -> Result<ServiceRecord, RecoverError> {
        tracing::error!(service = name, error = %e, "journal damaged; rebuilding it from the containers and HAProxy");
        self.book.publish(
            State::Recovering,
            Some(format!(
                "{e}; rebuilding it from the containers and HAProxy"
            )),
        );
        self.steps.reachable().await?;
        let current = self.steps.observed_current().await?;
        let to = self
            .book
            .journal
            .move_aside(name)
            .map_err(|source| JournalError::Write {
                path: std::path::PathBuf::from(name),
                source,
            })?;
        let found = match &current {
            Some(c) => format!(
                "rebuilt from the containers and HAProxy: {} ({}) serves",
                c.release.image, c.release.deploy_id
            ),
            None => "nothing of this service was found serving to rebuild it from".into(),
        };
        tracing::warn!(service = name, moved_to = %to.display(), "{found}");
        let mut record = ServiceRecord {
            current,
            ..ServiceRecord::default()
        };
        record
            .damaged
            .push(format!("{e}; moved to {}; {found}", to.display()));
        self.book.record = record.clone();
        self.book.store()?;
        Ok(record)
    }

    async fn resumed(&mut self, swap: Swap) -> Swap {
        let why = match resume(&swap.phase) {
            Resume::Continue => return swap,
            Resume::RollBack => {
                format!(
                    "hotswapd restarted during phase {}; rolled back",
                    swap.phase
                )
            }
            Resume::CheckSwitch if self.steps.may_finish_switch(&swap).await => return swap,
            Resume::CheckSwitch => {
                "hotswapd restarted while switching and the new release is not healthy; rolled back"
                    .to_string()
            }
        };
        self.book
            .advance(swap, Event::Fail(Failure::new(Cause::Restarted, why)))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_phases_before_traffic_moved_roll_back() {
        assert_eq!(resume(&Phase::Accepted), Resume::Continue);
        assert_eq!(resume(&Phase::Starting { deadline: 1 }), Resume::RollBack);
        assert_eq!(resume(&Phase::HealthGate { deadline: 1 }), Resume::RollBack);
        assert_eq!(
            resume(&Phase::Switching { deadline: 1 }),
            Resume::CheckSwitch
        );
        assert_eq!(
            resume(&Phase::Ramping {
                step: 1,
                deadline: 1
            }),
            Resume::RollBack
        );
        assert_eq!(resume(&Phase::Watching { deadline: 1 }), Resume::RollBack);
        assert_eq!(resume(&Phase::Draining { deadline: 1 }), Resume::Continue);
        assert_eq!(resume(&Phase::Retiring { deadline: 1 }), Resume::Continue);
        assert_eq!(
            resume(&Phase::RollingBack { deadline: 1 }),
            Resume::Continue
        );
    }
}
