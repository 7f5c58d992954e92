//! Running one claimed step: what each action does, decided as an
//! [`Outcome`] that the commit writes. Only sends and HTTP requests leave
//! the process; they write `attempting` first.

use std::time::Duration;

use chrono::{DateTime, NaiveTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::Engine;
use super::context::RunContext;
use super::outbound::{CallError, FailureKind, HttpCall, OutboundTemplate, OutboundText};
use super::pacing::{HORIZON, LATE, Pace};
use super::plan::resolve_number;
use super::quiet::{next_local_time, quiet_hours_wait};
use super::send_gate::{Held, RATE_LIMIT_HIT};
use crate::ids::PhoneNumberId;
use crate::store::status::{EnrollmentStatus, StepState};
use crate::store::{NewTimerRow, OwnerChoice, PhoneNumber, StepExecution, StepRecord};
use crate::workflow::duration::parse_duration;
use crate::workflow::model::{
    EventName, HeaderParam, HttpRequest, Owner, Params, RetryPolicy, SendTemplate, Step, UnknownOutcome, Wait,
    WaitForReply,
};

/// How late after its slot a send whose mark is written still goes: as
/// late as any send may leave (the headroom covers it).
const LATE_AFTER_MARK: chrono::Duration = LATE;
/// A wait for an event with no timeout ends this far in the future.
const FOREVER: chrono::Duration = chrono::Duration::days(365 * 100);
/// Default retries of a temporary failure: attempts in all, first delay.
const DEFAULT_ATTEMPTS: u32 = 3;
const DEFAULT_BACKOFF: Duration = Duration::from_secs(30);
/// WhatsApp's "too many messages to this recipient" error code.
const PAIR_RATE_LIMIT: i64 = 131056;
/// The first wait after a pair-rate answer; each further one doubles it.
const PAIR_RATE_WAIT: Duration = Duration::from_secs(6);
const MAX_PAIR_RATE_WAIT: Duration = Duration::from_secs(1800);
/// How old a template's cached catalogue status may be (a status webhook
/// or a sync reaches sends within this).
const TEMPLATE_TTL: Duration = Duration::from_secs(5);
/// Template statuses and categories by (account, name, language), with when
/// they were read.
pub(super) type TemplateCache = std::sync::Mutex<
    std::collections::HashMap<(crate::ids::AccountId, String, String), (std::time::Instant, Option<(String, String)>)>,
>;
/// How often a send held back by a paused number looks again.
const PAUSED_WAIT: Duration = Duration::from_secs(60);
/// No backoff between attempts grows past this.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// How long a send waits after a limit answer that named no wait.
const THROTTLED_WAIT: Duration = Duration::from_secs(2);
/// How long a send waits for an operator to fix credentials before it
/// looks again.
const AUTH_WAIT: Duration = Duration::from_secs(300);

/// What running a step decided; [`Engine::commit`] writes it.
#[derive(Debug, Clone)]
pub(super) enum Outcome {
    /// The step finished (succeeded, skipped, failed, uncertain, cancelled).
    Done { record: StepRecord, then: Then, effects: Vec<Effect> },
    /// Park on a timer (`wait`, `wait_for_reply`).
    Park { output: Value, timer_kind: String, wake_at: DateTime<Utc> },
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
    RecordSend(RecordedSend),
}

/// What a send is about to send, written on the step with `attempting`:
/// enough to record the message when a status webhook later proves that a
/// send whose answer never came did leave.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct SendAttempt {
    pub number: PhoneNumberId,
    pub message_type: String,
    pub body: Option<String>,
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
            template: self.template,
            message_status,
        }
    }

    /// The attempt a step wrote when its call left, if it was a send.
    pub(super) fn of(claim: &StepExecution) -> Option<SendAttempt> {
        serde_json::from_value(claim.output.as_ref()?.get("sending")?.clone()).ok()
    }
}

/// `biz_opaque_callback_data` of a send: its enrollment, step and attempt.
pub(super) fn callback_data(claim: &StepExecution) -> String {
    format!("kairo:{}:{}:{}", claim.enrollment_id, claim.step_id, claim.attempt)
}

/// The enrollment, step and attempt a send's callback data names.
pub(super) fn parse_callback_data(data: &str) -> Option<(crate::ids::EnrollmentId, String, i32)> {
    let rest = data.strip_prefix("kairo:")?;
    let (enrollment, rest) = rest.split_once(':')?;
    let (step, attempt) = rest.rsplit_once(':')?;
    Some((enrollment.parse().ok()?, step.to_string(), attempt.parse().ok()?))
}

/// An outbound message that left, for the inbox.
#[derive(Debug, Clone)]
pub(super) struct RecordedSend {
    pub number: PhoneNumberId,
    pub wamid: String,
    pub message_type: String,
    pub body: Option<String>,
    pub template: Option<(String, String, Value)>,
    /// How the channel took it (`accepted`, `held_for_quality_assessment`).
    pub message_status: Option<String>,
}

/// Whether a step may make its call, after writing `attempting`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attempt {
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
    fn refused(self, now: DateTime<Utc>) -> Option<Outcome> {
        match self {
            Attempt::Held => None,
            Attempt::Gone => Some(Outcome::Lost),
            Attempt::NotWritten | Attempt::Stale => Some(Outcome::defer(now + chrono::Duration::seconds(1))),
        }
    }
}

impl Outcome {
    pub(super) fn defer(due_at: DateTime<Utc>) -> Outcome {
        Outcome::Defer { due_at, output: None }
    }
}

fn record(state: StepState, output: Value, error: Option<String>) -> StepRecord {
    StepRecord { state, output: Some(output), error }
}

impl Engine {
    /// Runs one claimed step of one enrollment.
    pub(super) async fn run_step(&self, claim: &StepExecution, ctx: &RunContext) -> Outcome {
        let now = self.now();
        let Some(step) = ctx.plan.step(&claim.step_id) else {
            let error = format!("step `{}` is not in version {} of the workflow", claim.step_id, ctx.plan.version);
            return failed(Value::Null, error);
        };
        if let Some(then) = self.exit_check(ctx, now) {
            let reason = match &then {
                Then::Finish { reason, .. } => reason.clone(),
                Then::Step(_) => None,
            };
            return Outcome::Done {
                record: record(StepState::Cancelled, json!({ "reason": reason }), None),
                then,
                effects: vec![],
            };
        }
        let after = |output: Value, effects: Vec<Effect>| Outcome::Done {
            record: record(StepState::Succeeded, output, None),
            then: self.then_after(ctx, &step.id),
            effects,
        };
        if let Some(send) = &step.send_template {
            return self.send_template(claim, ctx, step, send, now).await;
        }
        if let Some(http) = &step.http {
            return self.http_step(claim, ctx, step, http, now).await;
        }
        if let Some(ensure) = &step.ensure_thread {
            let Some(number) = resolve_number(&self.numbers(), &ensure.number).cloned() else {
                return failed(Value::Null, format!("business number `{}` is not connected", *ensure.number));
            };
            let owner = ensure.owner.as_ref().and_then(owner_choice);
            if let Some(owner) = &owner
                && let Some(problem) = self.owner_problem(owner).await
            {
                return failed(Value::Null, format!("ensure_thread: {problem}"));
            }
            let output = json!({ "number": number.display_number });
            return after(output, vec![Effect::EnsureThread { number: number.id, owner }]);
        }
        if let Some(owner) = &step.assign_owner {
            let Some(choice) = owner_choice(owner) else {
                return failed(Value::Null, "assign_owner names no user, team or round_robin".into());
            };
            if let Some(problem) = self.owner_problem(&choice).await {
                return failed(Value::Null, format!("assign_owner: {problem}"));
            }
            let Some(number) = self.conversation_number(ctx, owner) else {
                return failed(
                    Value::Null,
                    "assign_owner: the enrollment has no conversation to assign: it did not start from a message \
                     and no step before it ran on a number; add an ensure_thread step before it, or name the `number`"
                        .into(),
                );
            };
            let output = json!({ "number": number.display_number });
            return after(output, vec![Effect::AssignOwner { owner: choice, number: number.id }]);
        }
        if let Some(wait) = &step.wait {
            return self.wait_step(wait, now);
        }
        if let Some(reply) = &step.wait_for_reply {
            return self.wait_for_reply(reply, now);
        }
        if let Some(arms) = &step.branch {
            let context = ctx.json(now);
            let mut taken = None;
            for (i, arm) in arms.iter().enumerate() {
                if let (Some(condition), Some(then)) = (&arm.condition, &arm.then) {
                    if ctx.plan.holds(condition, &context) {
                        taken = Some((i, then.value.clone()));
                        break;
                    }
                } else if let Some(otherwise) = &arm.otherwise {
                    taken = Some((i, otherwise.value.clone()));
                    break;
                }
            }
            return match taken {
                Some((arm, to)) => Outcome::Done {
                    record: record(StepState::Succeeded, json!({ "arm": arm, "next": to }), None),
                    then: Then::Step(to),
                    effects: vec![],
                },
                None => after(json!({ "arm": null, "next": ctx.plan.after(&step.id) }), vec![]),
            };
        }
        if let Some(arms) = &step.split {
            let bucket = split_bucket(&ctx.enrollment.id.to_string(), &step.id);
            let mut upto = 0;
            for arm in arms.iter() {
                upto += *arm.percent;
                if bucket < upto {
                    return Outcome::Done {
                        record: record(StepState::Succeeded, json!({ "bucket": bucket, "next": *arm.then }), None),
                        then: Then::Step(arm.then.value.clone()),
                        effects: vec![],
                    };
                }
            }
            return after(json!({ "bucket": bucket }), vec![]);
        }
        if let Some(properties) = &step.set_property {
            let context = ctx.json(now);
            let mut patch = Map::new();
            for (name, expression) in properties {
                match self.renderer.render(expression, &context) {
                    Ok(value) => patch.insert(name.clone(), Value::String(value)),
                    Err(e) => return failed(Value::Null, format!("set_property `{name}`: {e}")),
                };
            }
            return after(Value::Object(patch.clone()), vec![Effect::SetProperties(patch)]);
        }
        if let Some(exit) = &step.exit {
            return Outcome::Done {
                record: record(StepState::Succeeded, json!({ "reason": exit.reason }), None),
                then: Then::Finish { status: EnrollmentStatus::Exited, reason: exit.reason.clone(), error: None },
                effects: vec![],
            };
        }
        failed(Value::Null, format!("step `{}` names no action", *step.id))
    }

    /// The goal and the exit conditions, checked before every step.
    pub(super) fn exit_check(&self, ctx: &RunContext, now: DateTime<Utc>) -> Option<Then> {
        let model = &ctx.plan.model;
        if model.goal.is_none() && model.exit_when.is_empty() {
            return None;
        }
        let context = ctx.json(now);
        if let Some(goal) = &model.goal
            && ctx.plan.holds(&goal.condition, &context)
        {
            return Some(Then::Finish {
                status: EnrollmentStatus::GoalMet,
                reason: Some("goal met".into()),
                error: None,
            });
        }
        for exit in &model.exit_when {
            if exit.opted_out == Some(true) && ctx.opted_out_anywhere() {
                return Some(Then::Finish {
                    status: EnrollmentStatus::Exited,
                    reason: Some("opted out".into()),
                    error: None,
                });
            }
            if let Some(condition) = &exit.condition
                && ctx.plan.holds(condition, &context)
            {
                let reason = format!("exit condition `{}` held", condition.value);
                return Some(Then::Finish { status: EnrollmentStatus::Exited, reason: Some(reason), error: None });
            }
        }
        None
    }

    /// The step after `id`, or the end of the workflow.
    pub(super) fn then_after(&self, ctx: &RunContext, id: &str) -> Then {
        match ctx.plan.after(id) {
            Some(next) => Then::Step(next.to_string()),
            None => Then::Finish { status: EnrollmentStatus::Completed, reason: None, error: None },
        }
    }

    /// An enrollment's first step when it is a `wait`, run at enrollment as
    /// a worker would run it: the step written `waiting` with its output,
    /// and the timer it parks on. `None` when a worker must run the step
    /// (it is not a wait, the goal or an exit condition holds, the wait
    /// cannot be worked out): it then stays pending, due now.
    pub(super) fn park_at_start(
        &self,
        ctx: &RunContext,
        step: &mut StepExecution,
        now: DateTime<Utc>,
    ) -> Option<NewTimerRow> {
        let wait = ctx.plan.step(&step.step_id)?.wait.as_ref()?;
        if self.exit_check(ctx, now).is_some() {
            return None;
        }
        let Outcome::Park { output, timer_kind, wake_at } = self.wait_step(wait, now) else { return None };
        step.state = StepState::Waiting;
        step.output = Some(output);
        step.started_at = Some(now);
        step.finished_at = Some(now);
        Some(NewTimerRow {
            enrollment_id: step.enrollment_id,
            step_execution_id: step.id,
            kind: timer_kind,
            wake_at,
            created_at: now,
        })
    }

    fn wait_step(&self, wait: &Wait, now: DateTime<Utc>) -> Outcome {
        let wake_at = match wait_until(wait, now) {
            Ok(at) => at,
            Err(e) => return failed(Value::Null, e),
        };
        let (kind, output) = match &wait.event {
            Some(event) => {
                (format!("event:{}", event_name(**event)), json!({ "until": wake_at, "event": event_name(**event) }))
            }
            None => ("wait".to_string(), json!({ "until": wake_at })),
        };
        Outcome::Park { output, timer_kind: kind, wake_at }
    }

    fn wait_for_reply(&self, reply: &WaitForReply, now: DateTime<Utc>) -> Outcome {
        let numbers = self.numbers();
        let Some(number) = resolve_number(&numbers, &reply.number) else {
            return failed(Value::Null, format!("business number `{}` is not connected", *reply.number));
        };
        let timeout = match parse_duration(&reply.timeout) {
            Ok(d) => chrono::Duration::from_std(d).unwrap_or(FOREVER),
            Err(e) => return failed(Value::Null, e),
        };
        let wake_at = now + timeout;
        Outcome::Park {
            output: json!({ "until": wake_at, "number": number.display_number }),
            timer_kind: format!("reply:{}", number.id),
            wake_at,
        }
    }

    async fn send_template(
        &self,
        claim: &StepExecution,
        ctx: &RunContext,
        step: &Step,
        send: &SendTemplate,
        now: DateTime<Utc>,
    ) -> Outcome {
        let Some(number) = resolve_number(&self.numbers(), &send.number).cloned() else {
            return failed(Value::Null, format!("business number `{}` is not connected", *send.number));
        };
        if !ctx.opted_in(number.id) {
            return Outcome::Done {
                record: record(
                    StepState::Skipped,
                    json!({ "reason": "not_opted_in", "number": number.display_number }),
                    None,
                ),
                then: self.then_after(ctx, &step.id),
                effects: vec![],
            };
        }
        let Some(recipient) = recipient(ctx) else {
            return Outcome::Done {
                record: record(StepState::Skipped, json!({ "reason": "no_phone_number" }), None),
                then: self.then_after(ctx, &step.id),
                effects: vec![],
            };
        };
        let by_user_id = matches!(recipient, Recipient::UserId(_));
        let to = recipient.address();
        if let Some(quiet) = &ctx.plan.model.quiet_hours
            && let Some(due_at) = quiet_hours_wait(quiet, ctx, now)
        {
            return Outcome::Defer { due_at, output: Some(json!({ "waiting": "quiet_hours", "until": due_at })) };
        }
        let context = ctx.json(now);
        let window_open = self.window_open(ctx, number.id, now).await;
        let window_text = send.when_window_open.as_ref().filter(|_| window_open);
        let key = format!("{}:{}", claim.enrollment_id, claim.id);
        let callback_data = callback_data(claim);
        if let Some(text) = window_text {
            let text = match self.renderer.render(&text.text, &context) {
                Ok(text) => text,
                Err(e) => return failed(Value::Null, format!("when_window_open text: {e}")),
            };
            let message = OutboundText {
                idempotency_key: key,
                number_id: number.graph_id.clone(),
                to,
                text: text.clone(),
                reply_to: None,
                callback_data: callback_data.clone(),
            };
            let attempt = SendAttempt {
                number: number.id,
                message_type: "text".into(),
                body: Some(text),
                template: None,
                callback_data,
                marked: None,
            };
            if let Err(held) = self.may_send(&number, None, true, &message.to, now).await {
                return held_outcome(&number, held, now);
            }
            if let Err(instead) = self.ready_to_send(claim, &number, &attempt, now).await {
                return instead;
            }
            let sent = self.outbound.send_text(&message).await;
            return self.sent(claim, ctx, step, &number, sent, attempt).await;
        }
        let category = match self.template_status(&number, &send.template.value, &send.language.value).await {
            Ok(Some((status, _))) if status != "APPROVED" => {
                return failed(
                    Value::Null,
                    format!(
                        "template `{}` ({}) is {status} in the catalogue: only APPROVED templates can be sent; fix it in WhatsApp Manager, run `kairo sync`, then retry the enrollment",
                        *send.template, *send.language
                    ),
                );
            }
            Ok(found) => found.map(|(_, category)| category),
            Err(err) => {
                tracing::warn!(%err, step = %claim.id, "cannot read the template's status; the send waits");
                return Outcome::defer(now + chrono::Duration::seconds(5));
            }
        };
        // A template the catalogue does not know yet counts as marketing:
        // a paused number holds it back rather than guess. Outside the
        // service window a template reaches a recipient and counts against
        // the portfolio's messaging limit; a used-up limit makes the send
        // wait for the moving window, never fail.
        let category = category.as_deref().unwrap_or("MARKETING");
        if by_user_id && category.eq_ignore_ascii_case("AUTHENTICATION") {
            return failed(
                Value::Null,
                format!(
                    "template `{}` is an authentication template, which WhatsApp sends only to a phone number (error 131062), and this contact is known only by its WhatsApp user id",
                    *send.template
                ),
            );
        }
        if let Err(held) = self.may_send(&number, Some(category), window_open, &to, now).await {
            return held_outcome(&number, held, now);
        }
        let rendered = match self.render_template_params(send, &context) {
            Ok(r) => r,
            Err(e) => return failed(Value::Null, e),
        };
        let message = OutboundTemplate {
            idempotency_key: key,
            number_id: number.graph_id.clone(),
            to,
            template: send.template.value.clone(),
            language: send.language.value.clone(),
            header: rendered.0,
            body: rendered.1,
            buttons: rendered.2,
            callback_data: callback_data.clone(),
        };
        let params = json!({ "header": message.header, "body": message.body, "buttons": message.buttons });
        let attempt = SendAttempt {
            number: number.id,
            message_type: "template".into(),
            body: None,
            template: Some((message.template.clone(), message.language.clone(), params)),
            callback_data,
            marked: None,
        };
        if let Err(instead) = self.ready_to_send(claim, &number, &attempt, now).await {
            return instead;
        }
        let sent = self.outbound.send_template(&message).await;
        self.sent(claim, ctx, step, &number, sent, attempt).await
    }

    /// Takes a slot in the number's pace, sleeps until it, and only then
    /// writes `attempting` with what is about to be sent: a worker that
    /// dies while it waits for its slot leaves a claimed step, which runs
    /// again (once), never an uncertain one. `Err` holds what the step does
    /// instead of sending now.
    async fn ready_to_send(
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
        if let Some(not_held) = self.attempt(claim, attempt, self.now()).await.refused(self.now()) {
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

    /// A template's catalogue status and category, from a cache that is
    /// at most [`TEMPLATE_TTL`] old: a broadcast reads it once, not once per
    /// message.
    async fn template_status(
        &self,
        number: &PhoneNumber,
        name: &str,
        language: &str,
    ) -> Result<Option<(String, String)>, crate::store::StoreError> {
        let key = (number.account_id, name.to_string(), language.to_string());
        let now = std::time::Instant::now();
        if let Some((at, found)) = self.templates.lock().expect("template cache lock is never poisoned").get(&key)
            && now.duration_since(*at) < TEMPLATE_TTL
        {
            return Ok(found.clone());
        }
        let found = self.store.template_status(number.account_id, name, language).await?;
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
    async fn attempt(&self, claim: &StepExecution, send: &SendAttempt, now: DateTime<Utc>) -> Attempt {
        let mut output = claim.output.clone().filter(Value::is_object).unwrap_or_else(|| json!({}));
        let marked = Marked { by: self.owner().to_string(), at: now };
        output["sending"] = json!(SendAttempt { marked: Some(marked), ..send.clone() });
        self.mark_attempting(claim, Some(output), now).await
    }

    /// Writes `attempting` under this worker's claim, renewing its lease.
    /// The claim must still hold when the call leaves: a worker paused
    /// (SIGSTOP, a stalled machine) between the mark and the call past half
    /// its lease may have lost the step to another worker, and never calls.
    async fn mark_attempting(&self, claim: &StepExecution, output: Option<Value>, now: DateTime<Utc>) -> Attempt {
        let lease = self.lease();
        match self.attempts.mark(&self.store, self.owner(), claim.id, output, now, now + lease).await {
            Ok(true) if self.now() < now + lease / 2 => Attempt::Held,
            Ok(true) => {
                tracing::warn!(step = %claim.id, "this worker was held up past half its lease after marking the attempt; the call is not made");
                if let Err(err) = self.store.unmark_attempting(claim.id, self.owner()).await {
                    tracing::warn!(%err, step = %claim.id, "cannot take back the attempt's mark; the commit does");
                }
                Attempt::Stale
            }
            Ok(false) => Attempt::Gone,
            Err(err) => {
                tracing::warn!(%err, step = %claim.id, "cannot record the attempt; the call is not made and the step goes back to the queue");
                Attempt::NotWritten
            }
        }
    }

    /// The outcome of a send the channel answered, or failed to.
    async fn sent(
        &self,
        claim: &StepExecution,
        ctx: &RunContext,
        step: &Step,
        number: &PhoneNumber,
        sent: Result<super::SendReceipt, CallError>,
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
        match (error.kind, error.code) {
            (FailureKind::Unknown, _) => self.settle_or_unknown(claim, ctx, Some(attempt), &error.message).await,
            (FailureKind::Auth, _) => {
                self.note_send_error(number, &error).await;
                // Held as a paused number's sends are, so that resuming the
                // number wakes it at once.
                let wait = error.retry_after.unwrap_or(AUTH_WAIT);
                Outcome::Defer {
                    due_at: self.now() + chrono::Duration::from_std(wait).unwrap_or(FOREVER),
                    output: Some(json!({
                        "waiting": "number_paused",
                        "number": number.display_number,
                        "reason": super::send_gate::credentials_reason(&error),
                    })),
                }
            }
            (FailureKind::Throttled, Some(RATE_LIMIT_HIT)) => {
                self.note_send_error(number, &error).await;
                self.call_failed(claim, ctx, step, error)
            }
            (FailureKind::Throttled, Some(PAIR_RATE_LIMIT)) => {
                // Each answer for the same recipient doubles the wait.
                let mut output = claim.output.clone().filter(Value::is_object).unwrap_or_else(|| json!({}));
                let waits = output.get("pair_rate_waits").and_then(Value::as_u64).unwrap_or(0) as u32;
                let wait = PAIR_RATE_WAIT.saturating_mul(1 << waits.min(12)).min(MAX_PAIR_RATE_WAIT);
                let due_at = self.now() + chrono::Duration::from_std(backoff(wait, claim)).unwrap_or(FOREVER);
                output["pair_rate_waits"] = json!(waits + 1);
                tracing::info!(step = %claim.id, %due_at, "WhatsApp says this recipient got too many messages; the send waits");
                Outcome::Defer { due_at, output: Some(output) }
            }
            _ => self.call_failed(claim, ctx, step, error),
        }
    }

    /// A send that left: the step succeeds with its wamid, and the message
    /// is recorded in the contact's thread with the step's commit.
    fn send_done(&self, ctx: &RunContext, step_id: &str, send: RecordedSend, settled_by: Option<&str>) -> Outcome {
        Outcome::Done {
            record: record(StepState::Succeeded, send_output(&send, settled_by), None),
            then: self.then_after(ctx, step_id),
            effects: vec![Effect::RecordSend(send)],
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

    /// A failed external call, by its kind: temporary ones retry with
    /// backoff while attempts remain; limits and credential problems wait
    /// (the same attempt, none spent); a maybe-sent call follows the step's
    /// unknown-outcome policy; the rest fail the step and the enrollment.
    fn call_failed(&self, claim: &StepExecution, ctx: &RunContext, step: &Step, error: CallError) -> Outcome {
        let now = self.now();
        let wait = |default: Duration| {
            now + chrono::Duration::from_std(error.retry_after.unwrap_or(default)).unwrap_or(FOREVER)
        };
        match error.kind {
            FailureKind::Temporary => {
                let policy =
                    step.retry.clone().unwrap_or(RetryPolicy { max_attempts: DEFAULT_ATTEMPTS, backoff: None });
                if (claim.attempt as u32) < policy.max_attempts {
                    let first =
                        policy.backoff.as_deref().and_then(|b| parse_duration(b).ok()).unwrap_or(DEFAULT_BACKOFF);
                    let due_at = wait(backoff(first, claim));
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
        failed(Value::Null, format!("step `{}` failed: {}", *step.id, error.message))
    }

    async fn window_open(&self, ctx: &RunContext, number: PhoneNumberId, now: DateTime<Utc>) -> bool {
        match self.store.open_thread_of(ctx.contact.id, number).await {
            Ok(Some(thread)) => thread.window_closes_at.is_some_and(|closes| closes > now),
            _ => false,
        }
    }

    /// Header, body and button parameters, rendered.
    #[allow(clippy::type_complexity)] // the three parts of one template message
    fn render_template_params(
        &self,
        send: &SendTemplate,
        context: &Value,
    ) -> Result<(Option<Value>, Option<Value>, Vec<Value>), String> {
        let render =
            |what: &str, text: &str| self.renderer.render(text, context).map_err(|e| format!("rendering {what}: {e}"));
        let header = match send.header.as_deref() {
            None => None,
            Some(HeaderParam::Text(text)) => Some(json!({ "text": render("the header", text)? })),
            Some(HeaderParam::Media(media)) => {
                let mut out = Map::new();
                for (kind, link) in [("image", &media.image), ("video", &media.video), ("document", &media.document)] {
                    if let Some(link) = link {
                        out.insert(kind.into(), json!({ "link": render("the header link", link)? }));
                    }
                }
                Some(Value::Object(out))
            }
        };
        let body = match send.body.as_deref() {
            None => None,
            Some(Params::Positional(list)) => {
                let mut out = Vec::new();
                for (i, text) in list.iter().enumerate() {
                    out.push(Value::String(render(&format!("body parameter {}", i + 1), text)?));
                }
                Some(Value::Array(out))
            }
            Some(Params::Named(map)) => {
                let mut out = Map::new();
                for (name, text) in map {
                    out.insert(name.clone(), Value::String(render(&format!("body parameter `{name}`"), text)?));
                }
                Some(Value::Object(out))
            }
        };
        let mut buttons = Vec::new();
        for button in &send.buttons {
            let mut out = Map::new();
            out.insert("index".into(), json!(button.index));
            for (kind, value) in
                [("text", &button.text), ("payload", &button.payload), ("coupon_code", &button.coupon_code)]
            {
                if let Some(value) = value {
                    out.insert(kind.into(), Value::String(render(&format!("button {}", button.index), value)?));
                }
            }
            buttons.push(Value::Object(out));
        }
        Ok((header, body, buttons))
    }

    async fn http_step(
        &self,
        claim: &StepExecution,
        ctx: &RunContext,
        step: &Step,
        http: &HttpRequest,
        now: DateTime<Utc>,
    ) -> Outcome {
        let context = ctx.json(now);
        let render = |what: &str, text: &str| self.renderer.render(text, &context).map_err(|e| format!("{what}: {e}"));
        let call = (|| -> Result<HttpCall, String> {
            let url = render("url", &http.url)?;
            let mut headers = Vec::new();
            for (name, value) in &http.headers {
                headers.push((name.clone(), render(&format!("header `{name}`"), value)?));
            }
            let body = match &http.body {
                Some(body) => Some(render_json(body, &|t| render("body", t))?),
                None => None,
            };
            let timeout = match &http.timeout {
                Some(t) => parse_duration(t)?,
                None => Duration::from_secs(10),
            };
            Ok(HttpCall { method: format!("{:?}", http.method).to_uppercase(), url, headers, body, timeout })
        })();
        let call = match call {
            Ok(call) => call,
            Err(e) => return failed(Value::Null, e),
        };
        if let Some(not_held) = self.mark_attempting(claim, None, now).await.refused(now) {
            return not_held;
        }
        match self.http.call(&call).await {
            Ok(answer) if (200..300).contains(&answer.status) => Outcome::Done {
                record: record(StepState::Succeeded, json!({ "status": answer.status, "body": answer.body }), None),
                then: self.then_after(ctx, &step.id),
                effects: vec![],
            },
            Ok(answer) => {
                let kind = if answer.status == 429 || answer.status >= 500 {
                    FailureKind::Temporary
                } else {
                    FailureKind::Permanent
                };
                let message = format!("{} {} answered {}", call.method, call.url, answer.status);
                self.call_failed(claim, ctx, step, CallError::new(kind, message))
            }
            Err(error) => self.call_failed(claim, ctx, step, error),
        }
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
        let output = match attempt {
            Some(sending) => json!({ "policy": policy, "sending": sending }),
            None => json!({ "policy": policy }),
        };
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
fn held_outcome(number: &PhoneNumber, held: Held, now: DateTime<Utc>) -> Outcome {
    match held {
        Held::Paused { reason } => Outcome::Defer {
            due_at: now + chrono::Duration::from_std(PAUSED_WAIT).unwrap_or(FOREVER),
            output: Some(json!({ "waiting": "number_paused", "number": number.display_number, "reason": reason })),
        },
        Held::MessagingLimit { until } => {
            Outcome::Defer { due_at: until, output: Some(json!({ "waiting": "messaging_limit", "until": until })) }
        }
        Held::Unreadable => Outcome::defer(now + chrono::Duration::seconds(5)),
    }
}

fn failed(output: Value, error: String) -> Outcome {
    Outcome::Done {
        record: record(StepState::Failed, output, Some(error.clone())),
        then: Then::Finish { status: EnrollmentStatus::Failed, reason: None, error: Some(error) },
        effects: vec![],
    }
}

fn owner_choice(owner: &Owner) -> Option<OwnerChoice> {
    let name = |field: &Option<crate::workflow::located::Located<String>>| field.as_ref().map(|v| v.value.clone());
    name(&owner.user)
        .map(OwnerChoice::User)
        .or_else(|| name(&owner.team).map(OwnerChoice::Team))
        .or_else(|| name(&owner.round_robin).map(OwnerChoice::RoundRobin))
}

impl Engine {
    /// Why `owner` cannot own a thread (no such user or team), if so.
    async fn owner_problem(&self, owner: &OwnerChoice) -> Option<String> {
        match self.store.owner_problem(owner).await {
            Ok(problem) => problem,
            Err(err) => {
                tracing::warn!(%err, "cannot look up the owner; assigning as written");
                None
            }
        }
    }

    /// The business number of the enrollment's own conversation: the one
    /// the step names, else the one of the latest step that ran on a number
    /// (`ensure_thread`, `wait_for_reply`, `send_template`, latest in the
    /// file first), else the one its trigger came in on.
    fn conversation_number(&self, ctx: &RunContext, owner: &Owner) -> Option<PhoneNumber> {
        let numbers = self.numbers();
        if let Some(number) = &owner.number {
            return resolve_number(&numbers, number).cloned();
        }
        for step in ctx.plan.model.steps.iter().rev() {
            if !ctx.outputs.contains_key(&step.id.value) {
                continue;
            }
            let written = step
                .ensure_thread
                .as_ref()
                .map(|e| &e.number)
                .or(step.wait_for_reply.as_ref().map(|r| &r.number))
                .or(step.send_template.as_ref().map(|s| &s.number));
            if let Some(number) = written.and_then(|w| resolve_number(&numbers, w)) {
                return Some(number.clone());
            }
        }
        let trigger = &ctx.enrollment.trigger_data;
        ["number_id", "number"]
            .iter()
            .filter_map(|key| trigger.get(*key).and_then(Value::as_str))
            .find_map(|written| resolve_number(&numbers, written).cloned())
    }
}

pub(super) fn event_name(event: EventName) -> &'static str {
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
fn wait_until(wait: &Wait, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    if let Some(duration) = &wait.duration {
        let d = parse_duration(duration)?;
        return Ok(now + chrono::Duration::from_std(d).unwrap_or(FOREVER));
    }
    if let Some(until) = &wait.until {
        return DateTime::parse_from_rfc3339(until)
            .map(|t| t.to_utc())
            .map_err(|e| format!("wait until `{}`: {e}", until.value));
    }
    if let Some(time) = &wait.until_time {
        let zone: chrono_tz::Tz = match &wait.timezone {
            Some(zone) => zone.parse().map_err(|_| format!("unknown time zone `{}`", zone.value))?,
            None => chrono_tz::UTC,
        };
        let at = NaiveTime::parse_from_str(time, "%H:%M").map_err(|e| format!("until_time `{}`: {e}", time.value))?;
        return Ok(next_local_time(zone, at, now));
    }
    if wait.event.is_some() {
        let timeout = match &wait.timeout {
            Some(t) => chrono::Duration::from_std(parse_duration(t)?).unwrap_or(FOREVER),
            None => FOREVER,
        };
        return Ok(now + timeout);
    }
    Err("`wait` needs `for`, `until`, `until_time` or `event`".into())
}

/// Where a send to the contact goes: the WhatsApp id its inbound messages
/// came from, else the digits of its phone, then of its mobile phone, else
/// its business-scoped user id (sent as `recipient`).
fn recipient(ctx: &RunContext) -> Option<Recipient> {
    let digits = |s: &String| s.chars().filter(char::is_ascii_digit).collect::<String>();
    let number = ctx
        .contact
        .wa_id
        .clone()
        .filter(|w| !w.is_empty())
        .or_else(|| ctx.contact.phone.as_ref().map(digits).filter(|d| !d.is_empty()))
        .or_else(|| ctx.contact.mobile_phone.as_ref().map(digits))
        .filter(|d| !d.is_empty());
    match number {
        Some(number) => Some(Recipient::Number(number)),
        None => ctx.contact.user_id.clone().filter(|u| !u.is_empty()).map(Recipient::UserId),
    }
}

/// A contact's WhatsApp address.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Recipient {
    /// The digits of its number.
    Number(String),
    /// Its business-scoped user id: it hides its number behind a username.
    UserId(String),
}

impl Recipient {
    fn address(self) -> String {
        match self {
            Recipient::Number(n) | Recipient::UserId(n) => n,
        }
    }
}

/// A stable bucket in 0..100 for a split: the same enrollment always takes
/// the same arm.
fn split_bucket(enrollment: &str, step: &str) -> u32 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{enrollment}:{step}").as_bytes());
    let first = u64::from_be_bytes(digest[..8].try_into().expect("a SHA-256 digest has 32 bytes"));
    (first % 100) as u32
}

/// Renders every string inside a JSON value.
fn render_json(value: &Value, render: &dyn Fn(&str) -> Result<String, String>) -> Result<Value, String> {
    Ok(match value {
        Value::String(s) => Value::String(render(s)?),
        Value::Array(items) => Value::Array(items.iter().map(|v| render_json(v, render)).collect::<Result<_, _>>()?),
        Value::Object(map) => Value::Object(
            map.iter().map(|(k, v)| Ok((k.clone(), render_json(v, render)?))).collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}
