//! When will the last queued message go out? For a broadcast (a schedule
//! enrolling an audience, a bulk enrollment) Kairo estimates, per business
//! number, from what is queued, the pace the number keeps (its throughput
//! at [`HEADROOM`], slowed after a rate-limit answer) and what is left of
//! its portfolio's messaging limit.
//!
//! The estimate counts every queued send as reaching a new recipient
//! outside a service window, so with a messaging limit it is an upper
//! bound: sends past the day's budget go as the moving 24 hours frees it,
//! a limit's worth per day.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::pacing::{DEFAULT_THROUGHPUT, HEADROOM};
use super::plan::resolve_number;
use super::{Engine, EngineError};
use kairo_core::ids::PhoneNumberId;
use kairo_store::PauseScope;
use kairo_workflow::compiled::Action;

/// When the sends queued on one number will have gone out.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SendEstimate {
    /// The number as displayed.
    pub number: String,
    /// Send steps not finished yet (due now or later).
    pub queued: u64,
    /// Messages per second the number is paced at now.
    pub rate_per_second: f64,
    /// Recipients allowed per moving 24 hours, and reached in the last 24.
    pub messaging_limit: Option<i64>,
    pub reached: Option<i64>,
    /// When the last queued message should go out (now when none is queued).
    pub last_send_at: DateTime<Utc>,
    /// What bounds the estimate: `throughput`, `messaging_limit`, or
    /// `paused` (nothing goes until the number is resumed; the time is then
    /// counted from its resumption being now).
    pub bound_by: &'static str,
    /// Why the number's sends are paused, when they are: the estimate
    /// holds from when an operator resumes it.
    pub paused: Option<String>,
}

impl Engine {
    /// The estimate for every business number, from the database as it is now.
    pub async fn send_estimates(&self) -> Result<Vec<SendEstimate>, EngineError> {
        self.refresh().await?;
        let now = self.now();
        let numbers = self.numbers();
        let mut queued: HashMap<PhoneNumberId, u64> = HashMap::new();
        let mut spans: HashMap<PhoneNumberId, Vec<Span>> = HashMap::new();
        for group in self.store.unfinished_step_spans().await? {
            let plan = self.plan(group.version).await?;
            let send = plan.step(&group.step_id).and_then(|step| match &step.action {
                Action::SendTemplate(send) => Some(send),
                _ => None,
            });
            if let Some(number) = send.and_then(|send| resolve_number(&numbers, &send.number)) {
                *queued.entry(number.id).or_default() += group.count;
                spans.entry(number.id).or_default().push((group.count, group.first_due, group.last_due));
            }
        }
        let mut estimates = Vec::new();
        for number in numbers.iter() {
            let budget = self.store.send_budget(number, now).await?;
            let throughput =
                if number.throughput_mps > 0 { f64::from(number.throughput_mps) } else { DEFAULT_THROUGHPUT };
            let rate = throughput * HEADROOM * f64::from(budget.pace_percent) / 100.0;
            let n = queued.get(&number.id).copied().unwrap_or(0);
            // Sends go at the number's pace, none before it is due: a send
            // held by quiet hours (or any wait) is due when they end.
            let mut groups = spans.remove(&number.id).unwrap_or_default();
            groups.sort_by_key(|(_, first, _)| *first);
            let mut paced_until = budget.next_slot.max(now);
            for (count, first, last) in groups {
                paced_until = paced_until.max(first) + seconds(count as f64 / rate);
                paced_until = paced_until.max(last);
            }
            let (last_send_at, bound_by) = match (budget.messaging_limit, budget.reached) {
                (Some(limit), Some(reached)) if n as i64 > limit - reached && limit > 0 => {
                    // What today's budget leaves goes now; the rest a
                    // limit's worth per further day.
                    let beyond = n as i64 - (limit - reached);
                    let days = (beyond + limit - 1) / limit;
                    let day_batch = seconds(limit.min(beyond) as f64 / rate);
                    ((now + chrono::Duration::days(days) + day_batch).max(paced_until), "messaging_limit")
                }
                _ => (paced_until, "throughput"),
            };
            // A paused number sends nothing until it is resumed.
            let bound_by = if PauseScope::of(number).is_some() && n > 0 { "paused" } else { bound_by };
            estimates.push(SendEstimate {
                number: number.display_number.clone(),
                queued: n,
                rate_per_second: (rate * 10.0).round() / 10.0,
                messaging_limit: budget.messaging_limit,
                reached: budget.reached,
                last_send_at: if n == 0 { now } else { last_send_at },
                bound_by,
                paused: PauseScope::of(number).and(number.pause_reason.clone()),
            });
        }
        Ok(estimates)
    }
}

/// Sends of one step: how many, the first and the last time one is due.
type Span = (u64, DateTime<Utc>, DateTime<Utc>);

fn seconds(s: f64) -> chrono::Duration {
    chrono::Duration::milliseconds((s * 1000.0).ceil() as i64)
}
