//! What running a step decides, before anything is written: an
//! [`Outcome`] (done and where next, parked on a timer, deferred, retried,
//! or lost) with the [`Effect`]s its commit makes. The actions decide;
//! [`super::commit`] writes.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use kairo_core::ids::PhoneNumberId;
use kairo_core::status::{EnrollmentStatus, StepState, TimerKind};
use kairo_store::{OwnerChoice, StepRecord};

/// A wait for an event with no timeout ends this far in the future.
pub(super) const FOREVER: chrono::Duration = chrono::Duration::days(365 * 100);

/// What running a step decided; [`Engine::commit`] writes it.
#[derive(Debug, Clone)]
pub(super) enum Outcome {
    /// The step finished (succeeded, skipped, failed, uncertain, cancelled).
    Done { record: StepRecord, then: Then, effects: Vec<Effect> },
    /// Park on a timer (`wait`, `wait_for_reply`).
    Park { output: Value, timer_kind: TimerKind, wake_at: DateTime<Utc> },
    /// Run this same attempt later (quiet hours, a limit, a paused number);
    /// `output` notes why on the pending row, for the history and for a
    /// wait that grows each time.
    Defer { due_at: DateTime<Utc>, output: Option<Value> },
    /// A temporary failure: this attempt failed, a new one is due at `due_at`.
    Retry { record: StepRecord, due_at: DateTime<Utc> },
    /// The claim was lost before anything happened: write nothing.
    Lost,
}

/// Where the enrollment goes after a finished step.
#[derive(Debug, Clone)]
pub(super) enum Then {
    Step(String),
    Finish { status: EnrollmentStatus, reason: Option<String>, error: Option<String> },
}

/// Database changes a step makes, committed with its result.
#[derive(Debug, Clone)]
pub(super) enum Effect {
    SetProperties(Map<String, Value>),
    EnsureThread {
        number: PhoneNumberId,
        owner: Option<OwnerChoice>,
    },
    /// The owner of the contact's open thread on this number.
    AssignOwner {
        owner: OwnerChoice,
        number: PhoneNumberId,
    },
    RecordSend(Box<RecordedSend>),
}

impl Outcome {
    pub(super) fn defer(due_at: DateTime<Utc>) -> Outcome {
        Outcome::Defer { due_at, output: None }
    }
}

pub(super) fn record(state: StepState, output: Value, error: Option<String>) -> StepRecord {
    StepRecord { state, output: Some(output), error }
}

pub(super) fn failed(output: Value, error: String) -> Outcome {
    Outcome::Done {
        record: record(StepState::Failed, output, Some(error.clone())),
        then: Then::Finish { status: EnrollmentStatus::Failed, reason: None, error: Some(error) },
        effects: vec![],
    }
}

/// An outbound message that left, for the inbox.
#[derive(Debug, Clone)]
pub(super) struct RecordedSend {
    pub number: PhoneNumberId,
    pub wamid: String,
    pub message_type: String,
    pub body: Option<String>,
    pub content: Option<kairo_core::content::MessageContent>,
    pub template: Option<(String, String, Value)>,
    /// How the channel took it (`accepted`, `held_for_quality_assessment`).
    pub message_status: Option<String>,
}
