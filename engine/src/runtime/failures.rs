//! What a failed call does next, for sends and HTTP requests alike:
//! temporary failures retry with backoff while attempts remain, limits and
//! credential problems wait (the same attempt, none spent), a call that may
//! have reached the other side follows the step's unknown-outcome policy,
//! and the rest fail the step and the enrollment.

use std::time::Duration;

use serde_json::{Value, json};

use super::Engine;
use super::context::RunContext;
use super::outcome::{FOREVER, Outcome, Then, failed, record};
use super::output::{self, SendAttempt, Waiting};
use super::send_gate::credentials_reason;
use kairo_core::outbound::{CallError, FailureKind, ThrottleScope};
use kairo_core::status::{EnrollmentStatus, StepState};
use kairo_store::{PhoneNumber, StepExecution};
use kairo_workflow::compiled::CompiledStep;
use kairo_workflow::model::UnknownOutcome;

/// No backoff between attempts grows past this.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// How long a send waits after a limit answer that named no wait.
const THROTTLED_WAIT: Duration = Duration::from_secs(2);
/// How long a send waits for an operator to fix credentials before it
/// looks again.
const AUTH_WAIT: Duration = Duration::from_secs(300);
/// The first wait after a recipient's too-many-messages answer; each
/// further one doubles it.
const PAIR_RATE_WAIT: Duration = Duration::from_secs(6);
const MAX_PAIR_RATE_WAIT: Duration = Duration::from_secs(1800);

impl Engine {
    /// A send the channel refused or did not answer: an unanswered one may
    /// have left (a status webhook may prove it did); bad credentials hold
    /// the number's sends; a number going too fast slows down; a recipient
    /// who got too many messages waits longer each time; the rest is any
    /// failed call's.
    pub(super) async fn send_failed(
        &self,
        claim: &StepExecution,
        ctx: &RunContext,
        step: &CompiledStep,
        number: &PhoneNumber,
        attempt: SendAttempt,
        error: CallError,
    ) -> Outcome {
        match (error.kind, error.throttle) {
            (FailureKind::Unknown, _) => self.settle_or_unknown(claim, ctx, Some(attempt), &error.message).await,
            (FailureKind::Auth, _) => {
                self.note_send_error(number, &error).await;
                // Held as a paused number's sends are, so that resuming the
                // number wakes it at once.
                let wait = error.retry_after.unwrap_or(AUTH_WAIT);
                Outcome::Defer {
                    due_at: self.now() + chrono::Duration::from_std(wait).unwrap_or(FOREVER),
                    output: Some(
                        Waiting::NumberPaused {
                            number: number.display_number.clone(),
                            reason: credentials_reason(&error),
                        }
                        .output(),
                    ),
                }
            }
            (FailureKind::Throttled, Some(ThrottleScope::Number)) => {
                self.note_send_error(number, &error).await;
                self.call_failed(claim, ctx, step, error)
            }
            (FailureKind::Throttled, Some(ThrottleScope::Recipient)) => {
                // Each answer for the same recipient doubles the wait.
                let (waits, output) = output::pair_rate_wait(claim.output.as_ref());
                let wait = PAIR_RATE_WAIT.saturating_mul(1 << waits.min(12)).min(MAX_PAIR_RATE_WAIT);
                let due_at = self.now() + chrono::Duration::from_std(backoff(wait, claim)).unwrap_or(FOREVER);
                tracing::info!(step = %claim.id, %due_at, "WhatsApp says this recipient got too many messages; the send waits");
                Outcome::Defer { due_at, output: Some(output) }
            }
            _ => self.call_failed(claim, ctx, step, error),
        }
    }

    /// A failed external call, by its kind: temporary ones retry with
    /// backoff while attempts remain; limits and credential problems wait
    /// (the same attempt, none spent); a maybe-sent call follows the step's
    /// unknown-outcome policy; the rest fail the step and the enrollment.
    pub(super) fn call_failed(
        &self,
        claim: &StepExecution,
        ctx: &RunContext,
        step: &CompiledStep,
        error: CallError,
    ) -> Outcome {
        let now = self.now();
        let wait = |default: Duration| {
            now + chrono::Duration::from_std(error.retry_after.unwrap_or(default)).unwrap_or(FOREVER)
        };
        match error.kind {
            FailureKind::Temporary => {
                if (claim.attempt as u32) < step.retry.max_attempts {
                    let due_at = wait(backoff(step.retry.backoff, claim));
                    return Outcome::Retry {
                        record: record(StepState::Failed, json!({ "retry_at": due_at }), Some(error.message)),
                        due_at,
                    };
                }
            }
            FailureKind::Throttled => {
                tracing::info!(step = %claim.id, error = %error.message, "a limit was hit; the send waits");
                return Outcome::defer(wait(THROTTLED_WAIT));
            }
            FailureKind::Auth => {
                tracing::error!(step = %claim.id, error = %error.message, "an operator must fix the channel's credentials or account; the send waits");
                return Outcome::defer(wait(AUTH_WAIT));
            }
            FailureKind::Unknown => return self.unknown_outcome(claim, ctx, &error.message, None),
            FailureKind::Permanent => {}
        }
        failed(Value::Null, format!("step `{}` failed: {}", step.id, error.message))
    }

    /// What to do with a step found `attempting` after its worker's lease
    /// ran out: the call may or may not have reached the other side.
    pub(super) fn unknown_outcome(
        &self,
        claim: &StepExecution,
        ctx: &RunContext,
        why: &str,
        attempt: Option<&SendAttempt>,
    ) -> Outcome {
        let policy = ctx.plan.step(&claim.step_id).map(|s| s.on_unknown_outcome).unwrap_or_default();
        let error = format!("outcome unknown: {why}");
        // What was being sent stays on the row, so that a status webhook
        // arriving later can settle it.
        let output = output::unknown_outcome(policy, attempt);
        match policy {
            UnknownOutcome::Continue => Outcome::Done {
                record: record(StepState::Uncertain, output, Some(error)),
                then: self.then_after(ctx, &claim.step_id),
                effects: vec![],
            },
            UnknownOutcome::Fail => Outcome::Done {
                record: record(StepState::Uncertain, output, Some(error.clone())),
                then: Then::Finish { status: EnrollmentStatus::Failed, reason: None, error: Some(error) },
                effects: vec![],
            },
            UnknownOutcome::Repeat => {
                Outcome::Retry { record: record(StepState::Uncertain, output, Some(error)), due_at: self.now() }
            }
        }
    }
}

/// The wait before attempt N+1: `first`, doubled per attempt so far, at
/// most [`MAX_BACKOFF`], plus up to a quarter more so that steps failing
/// together do not come back together. The jitter comes from the step
/// execution's id: the same attempt always waits the same.
fn backoff(first: Duration, claim: &StepExecution) -> Duration {
    let doublings = (claim.attempt.max(1) as u32 - 1).min(20);
    let base = first.saturating_mul(1 << doublings).min(MAX_BACKOFF);
    let jitter = (claim.id.as_uuid().as_u128() % 1000) as f64 / 4000.0;
    base.mul_f64(1.0 + jitter)
}
