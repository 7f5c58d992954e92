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
use crate::ids::PhoneNumberId;
use crate::store::PauseScope;

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
    /// What bounds the estimate: `throughput` or `messaging_limit`.
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
        for (version, step_id, n) in self.store.unfinished_steps().await? {
            let plan = self.plan(version).await?;
            let send = plan.step(&step_id).and_then(|step| step.send_template.as_ref());
            if let Some(number) = send.and_then(|send| resolve_number(&numbers, &send.number)) {
                *queued.entry(number.id).or_default() += n;
            }
        }
        let mut estimates = Vec::new();
        for number in numbers.iter() {
            let budget = self.store.send_budget(number, now).await?;
            let throughput =
                if number.throughput_mps > 0 { f64::from(number.throughput_mps) } else { DEFAULT_THROUGHPUT };
            let rate = throughput * HEADROOM * f64::from(budget.pace_percent) / 100.0;
            let n = queued.get(&number.id).copied().unwrap_or(0);
            let paced_until = budget.next_slot + seconds(n as f64 / rate);
            let (last_send_at, bound_by) = match (budget.messaging_limit, budget.reached) {
                (Some(limit), Some(reached)) if n as i64 > limit - reached && limit > 0 => {
                    // What today's budget leaves goes now; the rest a
                    // limit's worth per further day.
                    let beyond = n as i64 - (limit - reached);
                    let days = (beyond + limit - 1) / limit;
                    let day_batch = seconds(limit.min(beyond) as f64 / rate);
                    (now + chrono::Duration::days(days) + day_batch, "messaging_limit")
                }
                _ => (paced_until, "throughput"),
            };
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

fn seconds(s: f64) -> chrono::Duration {
    chrono::Duration::milliseconds((s * 1000.0).ceil() as i64)
}
