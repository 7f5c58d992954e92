//! What a step writes on its row (`output`), typed where the runtime reads
//! it back or other code matches on it; serialised as the JSON it always was,
//! so rows written before read the same (no migration).
//!
//! The rest of an output is for people (`kairo status`, the API's run
//! history) and stays free-form JSON built by each action.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::outcome::RecordedSend;
use kairo_core::ids::PhoneNumberId;
use kairo_store::StepExecution;

/// Why a deferred step waits, under the output's `waiting` key. The store
/// wakes `number_paused` steps when their number is resumed, by these same
/// words (`Tx::release_held_steps`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "waiting", rename_all = "snake_case")]
pub(super) enum Waiting {
    /// The number is paused (by Meta, a quality drop, bad credentials or an
    /// operator) until someone resumes it.
    NumberPaused { number: String, reason: String },
    /// The business portfolio's messaging limit is used up until then.
    MessagingLimit { until: DateTime<Utc> },
    /// The workflow's quiet hours last until then.
    QuietHours { until: DateTime<Utc> },
}

impl Waiting {
    pub(super) fn output(&self) -> Value {
        serde_json::to_value(self).expect("a wait serialises")
    }
}

/// What a send is about to send, written on the step with `attempting`:
/// enough to record the message when a status webhook later proves that a
/// send whose answer never came did leave.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SendAttempt {
    pub number: PhoneNumberId,
    pub message_type: String,
    pub body: Option<String>,
    /// What the message holds as the customer sees it (a template with its
    /// parameters filled in); absent on marks written before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<kairo_core::content::MessageContent>,
    /// Name, language and rendered parameters.
    pub template: Option<(String, String, Value)>,
    /// What the send puts in `biz_opaque_callback_data`.
    pub callback_data: String,
    /// Which worker wrote the mark, and when: on an `uncertain` send, the
    /// worker that went silent after it (an operator's first question).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub marked: Option<Marked>,
}

/// The worker that marked a send `attempting`, and when it wrote the mark.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Marked {
    pub by: String,
    pub at: DateTime<Utc>,
}

impl SendAttempt {
    pub(super) fn recorded(self, wamid: String, message_status: Option<String>) -> RecordedSend {
        RecordedSend {
            number: self.number,
            wamid,
            message_type: self.message_type,
            body: self.body,
            content: self.content,
            template: self.template,
            message_status,
        }
    }

    /// The attempt a step wrote when its call left, if it was a send.
    pub(super) fn of(claim: &StepExecution) -> Option<SendAttempt> {
        sending(claim.output.as_ref())
    }
}

/// The keys of an output the runtime reads back.
const SENDING: &str = "sending";
const PAIR_RATE_WAITS: &str = "pair_rate_waits";

/// The send a step wrote with `attempting` (under `sending`), if any.
pub(super) fn sending(output: Option<&Value>) -> Option<SendAttempt> {
    serde_json::from_value(output?.get(SENDING)?.clone()).ok()
}

/// `output` (an object, or a new one) with the send about to leave.
pub(super) fn with_sending(output: Option<&Value>, send: &SendAttempt) -> Value {
    let mut output = object(output);
    output[SENDING] = json!(send);
    output
}

/// The output of a step whose outcome is unknown: the policy followed and,
/// for a send, what was being sent (so that a status webhook arriving later
/// can settle it).
pub(super) fn unknown_outcome(policy: impl Serialize, send: Option<&SendAttempt>) -> Value {
    match send {
        Some(send) => json!({ "policy": policy, SENDING: send }),
        None => json!({ "policy": policy }),
    }
}

/// How many times WhatsApp already said this recipient got too many
/// messages, and the output counting one more.
pub(super) fn pair_rate_wait(output: Option<&Value>) -> (u32, Value) {
    let mut output = object(output);
    let waits = output.get(PAIR_RATE_WAITS).and_then(Value::as_u64).unwrap_or(0) as u32;
    output[PAIR_RATE_WAITS] = json!(waits + 1);
    (waits, output)
}

fn object(output: Option<&Value>) -> Value {
    output.cloned().filter(Value::is_object).unwrap_or_else(|| json!({}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_read_as_they_were_written() {
        let until: DateTime<Utc> = "2026-12-01T09:00:00Z".parse().expect("a time");
        let paused = Waiting::NumberPaused { number: "+1 555-000-1111".into(), reason: "quality".into() };
        assert_eq!(
            paused.output(),
            json!({"waiting": "number_paused", "number": "+1 555-000-1111", "reason": "quality"})
        );
        assert_eq!(
            Waiting::MessagingLimit { until }.output(),
            json!({"waiting": "messaging_limit", "until": "2026-12-01T09:00:00Z"})
        );
        assert_eq!(
            Waiting::QuietHours { until }.output(),
            json!({"waiting": "quiet_hours", "until": "2026-12-01T09:00:00Z"})
        );
        let (waits, output) = pair_rate_wait(Some(&json!({"pair_rate_waits": 2, "other": 1})));
        assert_eq!((waits, output), (2, json!({"pair_rate_waits": 3, "other": 1})));
        assert_eq!(pair_rate_wait(None), (0, json!({"pair_rate_waits": 1})));
    }
}
