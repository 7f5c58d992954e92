//! `exit`: end the enrollment as `exited`, with the step's reason.

use serde_json::json;

use crate::runtime::outcome::{Outcome, Then, record};
use kairo_core::status::{EnrollmentStatus, StepState};

pub(in crate::runtime) fn exit(reason: &Option<String>) -> Outcome {
    Outcome::Done {
        record: record(StepState::Succeeded, json!({ "reason": reason }), None),
        then: Then::Finish { status: EnrollmentStatus::Exited, reason: reason.clone(), error: None },
        effects: vec![],
    }
}
