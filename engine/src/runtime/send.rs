//! The send pipeline of a workflow step, from its slot to its answer:
//! the number's pace, the `attempting` mark written just before the call
//! leaves (with what is sent, so that a status webhook can later prove an
//! unanswered send left), the template catalogue cache, and what each
//! answer of the channel makes of the step.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::Engine;
use super::attempts::Stamp;
use super::context::RunContext;
use super::outcome::{Effect, FOREVER, Outcome, RecordedSend, record};
use super::output::{Marked, SendAttempt, Waiting};
use super::pacing::{HORIZON, LATE, Pace};
use super::send_gate::Held;
use kairo_core::ids::PhoneNumberId;
use kairo_core::outbound::CallError;
use kairo_core::status::StepState;
use kairo_store::{PhoneNumber, StepExecution};
use kairo_workflow::compiled::CompiledStep;

/// How late after its slot a send whose mark is written still goes: as
/// late as any send may leave (the headroom covers it).
const LATE_AFTER_MARK: chrono::Duration = LATE;
/// How old a template's cached catalogue status may be (a status webhook
/// or a sync reaches sends within this).
const TEMPLATE_TTL: Duration = Duration::from_secs(5);
/// Templates by (account, name, language), with when they were read.
pub(super) type TemplateCache = std::sync::Mutex<
    std::collections::HashMap<
        (kairo_core::ids::AccountId, String, String),
        (std::time::Instant, Option<std::sync::Arc<kairo_store::Template>>),
    >,
>;
/// How often a send held back by a paused number looks again.
const PAUSED_WAIT: Duration = Duration::from_secs(60);

/// `biz_opaque_callback_data` of a send: its enrollment, step and attempt.
pub(super) fn callback_data(claim: &StepExecution) -> String {
    format!("kairo:{}:{}:{}", claim.enrollment_id, claim.step_id, claim.attempt)
}

/// The enrollment, step and attempt a send's callback data names.
pub(super) fn parse_callback_data(data: &str) -> Option<(kairo_core::ids::EnrollmentId, String, i32)> {
    let rest = data.strip_prefix("kairo:")?;
    let (enrollment, rest) = rest.split_once(':')?;
    let (step, attempt) = rest.rsplit_once(':')?;
    Some((enrollment.parse().ok()?, step.to_string(), attempt.parse().ok()?))
}

/// Whether a step may make its call, after writing `attempting`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Attempt {
    Held,
    /// The claim was lost (its lease ran out and another worker took it).
    Gone,
    /// The mark could not be written: the claim is still this worker's.
    NotWritten,
    /// The mark was written, but this worker was held up so long after it
    /// that the claim may be gone: the call is not made, and the step is
    /// given back (when the claim still holds) or left to whoever took it.
    Stale,
}

impl Attempt {
    /// What the step does instead of calling: nothing when the claim is
    /// gone, back to the queue in a second when the mark was not written
    /// (dropping it would leave the claim held, and renewed, forever).
    pub(super) fn refused(self, now: DateTime<Utc>) -> Option<Outcome> {
        match self {
            Attempt::Held => None,
            Attempt::Gone => Some(Outcome::Lost),
            Attempt::NotWritten | Attempt::Stale => Some(Outcome::defer(now + chrono::Duration::seconds(1))),
        }
    }
}

impl Engine {
    /// Takes a slot in the number's pace, sleeps until it, and only then
    /// writes `attempting` with what is about to be sent: a worker that
    /// dies while it waits for its slot leaves a claimed step, which runs
    /// again (once), never an uncertain one. `Err` holds what the step does
    /// instead of sending now.
    pub(super) async fn ready_to_send(
        &self,
        claim: &StepExecution,
        number: &PhoneNumber,
        attempt: &SendAttempt,
        now: DateTime<Utc>,
    ) -> Result<(), Outcome> {
        let slot = self.pace(claim, number, now).await?;
        if !self.sleep_until(slot).await {
            return Err(Outcome::defer(self.now()));
        }
        // The mark is written at the slot and the request leaves as soon
        // as it is durable: a crash can leave a send `uncertain` only in
        // the instant between the two. Every send is late by about the time
        // a mark takes, so the spacing between sends holds.
        if let Some(not_held) = self.attempt(claim, attempt).await.refused(self.now()) {
            return Err(not_held);
        }
        let Some(slot) = slot else { return Ok(()) };
        // The mark took so long that the slot is gone: the send takes a new
        // one rather than crowd the slots after it (a number's second must
        // never hold more than its throughput). Nothing left, so the mark is
        // taken back.
        let late = self.now() - slot;
        if late > LATE_AFTER_MARK {
            tracing::debug!(
                late_ms = late.num_milliseconds(),
                "writing the mark missed the send's slot; it takes a new one"
            );
            if let Err(err) = self.store.unmark_attempting(claim.id, self.owner()).await {
                tracing::warn!(%err, step = %claim.id, "cannot take back the attempt's mark; the commit does");
            }
            return Err(Outcome::defer(self.now()));
        }
        Ok(())
    }

    /// A template of the catalogue (its status, category and components),
    /// from a cache that is at most [`TEMPLATE_TTL`] old: a broadcast reads
    /// it once, not once per message.
    pub(super) async fn catalog_template(
        &self,
        number: &PhoneNumber,
        name: &str,
        language: &str,
    ) -> Result<Option<std::sync::Arc<kairo_store::Template>>, kairo_store::StoreError> {
        let key = (number.account_id, name.to_string(), language.to_string());
        let now = std::time::Instant::now();
        if let Some((at, found)) = self.templates.lock().expect("template cache lock is never poisoned").get(&key)
            && now.duration_since(*at) < TEMPLATE_TTL
        {
            return Ok(found.clone());
        }
        let found = self.store.template(number.account_id, name, language).await?.map(std::sync::Arc::new);
        self.templates.lock().expect("template cache lock is never poisoned").insert(key, (now, found.clone()));
        Ok(found)
    }

    /// The send's slot in the number's pace (None: not paced), or the
    /// deferral that puts the step back until a slot is free. Deferred
    /// sends wake spread over a second, not all at the same instant.
    async fn pace(
        &self,
        claim: &StepExecution,
        number: &PhoneNumber,
        now: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, Outcome> {
        if !self.outbound.paced() {
            return Ok(None);
        }
        match self.pacer.slot(&self.store, self.clock.as_ref(), number).await {
            Ok(Pace::At(at)) => Ok(Some(at)),
            Ok(Pace::Wait(until)) => {
                metrics::counter!("kairo_pacing_waits_total").increment(1);
                let spread = chrono::Duration::microseconds((claim.id.as_uuid().as_u128() % 1_000_000) as i64);
                Err(Outcome::defer(until + spread))
            }
            Err(err) => {
                tracing::warn!(%err, step = %claim.id, "cannot reserve a send slot; the send waits");
                Err(Outcome::defer(now + chrono::Duration::seconds(1)))
            }
        }
    }

    /// Sleeps until a send's slot (at most the pacing horizon). False when
    /// the send would leave too late after it ([`LATE`]): the slots after it
    /// belong to other sends, so sending now could crowd a second; the send
    /// goes back to the queue for a new slot instead.
    pub(super) async fn sleep_until(&self, slot: Option<DateTime<Utc>>) -> bool {
        let Some(slot) = slot else { return true };
        if let Ok(wait) = (slot - self.now()).to_std() {
            tokio::time::sleep(wait.min(HORIZON)).await;
        }
        let late = self.now() - slot;
        if late > LATE {
            tracing::debug!(late_ms = late.num_milliseconds(), "a send missed its slot; it takes a new one");
        }
        late <= LATE
    }

    /// Writes `attempting`, with what is about to be sent, before a call
    /// leaves; false when the claim is gone.
    async fn attempt(&self, claim: &StepExecution, send: &SendAttempt) -> Attempt {
        let output = claim.output.clone();
        let (send, by) = (send.clone(), self.owner().to_string());
        let stamp: Stamp = Box::new(move |at| {
            let marked = Marked { by: by.clone(), at };
            super::output::with_sending(output.as_ref(), &SendAttempt { marked: Some(marked), ..send.clone() })
        });
        self.mark_attempting(claim, Some(stamp)).await
    }

    /// Writes `attempting` under this worker's claim, renewing its lease.
    /// The claim must still hold when the call leaves: a worker paused
    /// (SIGSTOP, a stalled machine) between the mark and the call past half
    /// its lease may have lost the step to another worker, and never calls.
    pub(super) async fn mark_attempting(&self, claim: &StepExecution, output: Option<Stamp>) -> Attempt {
        let lease = self.lease();
        match self.attempts.mark(&self.store, self.clock.as_ref(), self.owner(), claim.id, output, lease).await {
            Ok(Some(at)) if self.now() < at + lease / 2 => Attempt::Held,
            Ok(Some(_)) => {
                tracing::warn!(step = %claim.id, "this worker was held up past half its lease after marking the attempt; the call is not made");
                if let Err(err) = self.store.unmark_attempting(claim.id, self.owner()).await {
                    tracing::warn!(%err, step = %claim.id, "cannot take back the attempt's mark; the commit does");
                }
                Attempt::Stale
            }
            Ok(None) => Attempt::Gone,
            Err(err) => {
                tracing::warn!(%err, step = %claim.id, "cannot record the attempt; the call is not made and the step goes back to the queue");
                Attempt::NotWritten
            }
        }
    }

    /// The outcome of a send the channel answered, or failed to.
    pub(super) async fn sent(
        &self,
        claim: &StepExecution,
        ctx: &RunContext,
        step: &CompiledStep,
        number: &PhoneNumber,
        sent: Result<kairo_core::outbound::SendReceipt, CallError>,
        attempt: SendAttempt,
    ) -> Outcome {
        let error = match sent {
            Ok(receipt) => {
                metrics::counter!("kairo_sends_total", "outcome" => "accepted", "code" => "").increment(1);
                return self.send_done(ctx, &step.id, attempt.recorded(receipt.wamid, receipt.message_status), None);
            }
            Err(error) => error,
        };
        let outcome = serde_json::to_value(error.kind).ok().and_then(|v| v.as_str().map(str::to_string));
        let code = error.code.map(|c| c.to_string()).unwrap_or_default();
        metrics::counter!("kairo_sends_total", "outcome" => outcome.unwrap_or_default(), "code" => code).increment(1);
        self.send_failed(claim, ctx, step, number, attempt, error).await
    }

    /// A send that left: the step succeeds with its wamid, and the message
    /// is recorded in the contact's thread with the step's commit.
    fn send_done(&self, ctx: &RunContext, step_id: &str, send: RecordedSend, settled_by: Option<&str>) -> Outcome {
        Outcome::Done {
            record: record(StepState::Succeeded, send_output(&send, settled_by), None),
            then: self.then_after(ctx, step_id),
            effects: vec![Effect::RecordSend(Box::new(send))],
        }
    }

    /// A send whose answer never came: when a status webhook for its
    /// callback data has arrived meanwhile, it left and is recorded so;
    /// otherwise the step's unknown-outcome policy decides.
    pub(super) async fn settle_or_unknown(
        &self,
        claim: &StepExecution,
        ctx: &RunContext,
        attempt: Option<SendAttempt>,
        why: &str,
    ) -> Outcome {
        if let Some(attempt) = attempt {
            match self.store.wamid_for_callback(&attempt.callback_data).await {
                Ok(Some(wamid)) => {
                    tracing::info!(step = %claim.id, wamid = %wamid.0, "a status webhook shows the send left");
                    return self.send_done(
                        ctx,
                        &claim.step_id,
                        attempt.recorded(wamid.0, None),
                        Some("status_webhook"),
                    );
                }
                Ok(None) => return self.unknown_outcome(claim, ctx, why, Some(&attempt)),
                Err(err) => tracing::warn!(%err, step = %claim.id, "cannot look for the send's status"),
            }
        }
        self.unknown_outcome(claim, ctx, why, None)
    }

    pub(super) async fn window_open(&self, ctx: &RunContext, number: PhoneNumberId, now: DateTime<Utc>) -> bool {
        match self.store.open_thread_of(ctx.contact.id, number).await {
            Ok(Some(thread)) => thread.window_closes_at.is_some_and(|closes| closes > now),
            _ => false,
        }
    }
}

/// A step's output for a send that left.
pub(super) fn send_output(send: &RecordedSend, settled_by: Option<&str>) -> Value {
    let mut output = json!({ "wamid": send.wamid, "type": send.message_type });
    if let Some(status) = &send.message_status {
        output["message_status"] = json!(status);
    }
    if let Some((template, language, params)) = &send.template {
        output["template"] = json!(template);
        output["language"] = json!(language);
        output["params"] = params.clone();
    }
    if let Some(body) = &send.body {
        output["text"] = json!(body);
    }
    if let Some(by) = settled_by {
        output["settled_by"] = json!(by);
    }
    output
}

/// What a held send does: it waits, with the reason and until when on its
/// output (`kairo status`, the API's run history).
pub(super) fn held_outcome(number: &PhoneNumber, held: Held, now: DateTime<Utc>) -> Outcome {
    match held {
        Held::Paused { reason } => Outcome::Defer {
            due_at: now + chrono::Duration::from_std(PAUSED_WAIT).unwrap_or(FOREVER),
            output: Some(Waiting::NumberPaused { number: number.display_number.clone(), reason }.output()),
        },
        Held::MessagingLimit { until } => {
            Outcome::Defer { due_at: until, output: Some(Waiting::MessagingLimit { until }.output()) }
        }
        Held::Unreadable => Outcome::defer(now + chrono::Duration::seconds(5)),
    }
}
