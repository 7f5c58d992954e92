//! `wait`: park the step on a timer until a duration has passed, a
//! date-time or local time of day comes, or an event arrives for the
//! contact (or its timeout passes).

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::runtime::outcome::{FOREVER, Outcome};
use crate::runtime::quiet::next_local_time;
use kairo_core::status::TimerKind;
use kairo_workflow::compiled::WaitFor;
use kairo_workflow::model::EventName;

/// Parks on the wait's timer.
pub(in crate::runtime) fn wait_step(wait: &WaitFor, now: DateTime<Utc>) -> Outcome {
    let wake_at = wait_until(wait, now);
    let (kind, output) = match wait {
        WaitFor::Event { event, .. } => {
            let name = event_name(*event);
            (TimerKind::Event(name.to_string()), json!({ "until": wake_at, "event": name }))
        }
        _ => (TimerKind::Wait, json!({ "until": wake_at })),
    };
    Outcome::Park { output, timer_kind: kind, wake_at }
}

pub(in crate::runtime) fn event_name(event: EventName) -> &'static str {
    match event {
        EventName::InboundMessage => "inbound_message",
        EventName::OptIn => "opt_in",
        EventName::OptOut => "opt_out",
        EventName::Delivered => "delivered",
        EventName::Read => "read",
        EventName::Failed => "failed",
    }
}

/// When a `wait` ends.
fn wait_until(wait: &WaitFor, now: DateTime<Utc>) -> DateTime<Utc> {
    let after = |d: std::time::Duration| now + chrono::Duration::from_std(d).unwrap_or(FOREVER);
    match wait {
        WaitFor::Duration(d) => after(*d),
        WaitFor::Until(at) => *at,
        WaitFor::TimeOfDay { zone, at } => next_local_time(*zone, *at, now),
        WaitFor::Event { timeout: Some(t), .. } => after(*t),
        WaitFor::Event { timeout: None, .. } => now + FOREVER,
    }
}
