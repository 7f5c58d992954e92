//! `wait_for_reply`: park the step until the contact writes on the
//! number, or the timeout passes.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::runtime::Engine;
use crate::runtime::outcome::{FOREVER, Outcome, failed};
use crate::runtime::plan::resolve_number;
use kairo_core::status::TimerKind;
use kairo_workflow::compiled::ReplyWait;

impl Engine {
    pub(in crate::runtime) fn wait_for_reply(&self, reply: &ReplyWait, now: DateTime<Utc>) -> Outcome {
        let numbers = self.numbers();
        let Some(number) = resolve_number(&numbers, &reply.number) else {
            return failed(Value::Null, format!("business number `{}` is not connected", reply.number));
        };
        let wake_at = now + chrono::Duration::from_std(reply.timeout).unwrap_or(FOREVER);
        Outcome::Park {
            output: json!({ "until": wake_at, "number": number.display_number }),
            timer_kind: TimerKind::Reply(number.id),
            wake_at,
        }
    }
}
