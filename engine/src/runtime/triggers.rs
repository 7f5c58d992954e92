//! What moves enrollments besides steps: due timers, events from the log
//! (triggers, awaited events, exits, goals) and schedule ticks.
//!
//! Invariants:
//! - An event is read at least once and applied exactly once: its effects
//!   and its `applied_at` commit together; PostgreSQL appliers skip events
//!   another one holds.
//! - A timer fires once: firing is a conditional update from `pending`, and
//!   an event that resolves the same wait cancels it the same way, so only
//!   one of them moves the enrollment.
//! - A schedule tick fires once however many workers see it (a unique row
//!   per tick). Ticks missed while no worker ran are not replayed one by
//!   one: the latest missed tick fires once, the older ones are skipped.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::commit::{Claimed, Finished, outbound_record};
use super::context::{RunContext, contact_json};
use super::output::SendAttempt;
use super::plan::{Plan, resolve_number};
use super::send::{parse_callback_data, send_output};
use super::{Engine, EngineError};
use kairo_core::ids::PhoneNumberId;
use kairo_core::status::{EnrollmentStatus, StepState, TimerKind, TimerState};
use kairo_store::{DueTimer, EnrollmentChange, Event, MessageOrigin, StepExecution, StepRecord, Tx};
use kairo_workflow::compiled::{Action, Exit, WaitFor};

/// How a parked step was resumed.
enum Resume<'a> {
    Timer,
    Event { kind: &'a str, payload: &'a Value },
}

/// An event as the triggers see it.
struct Happening<'a> {
    /// `inbound_message`, `opt_in`, `opt_out`, or a delivery status
    /// (`sent`, `delivered`, `read`, `failed`).
    name: String,
    kind: &'a str,
    number: Option<PhoneNumberId>,
    payload: &'a Value,
}

impl Engine {
    /// Fires up to `limit` due timers in one transaction; returns how many
    /// fired. Timers, parked steps, enrollments and successors are each
    /// written with one statement for the batch.
    pub(super) async fn fire_timers(&self, limit: u64) -> Result<usize, EngineError> {
        let now = self.now();
        let tx = self.store.begin().await?;
        let due = tx.fire_due_timers(now, limit).await?;
        if due.is_empty() {
            return Ok(0);
        }
        let mut finishes = Vec::with_capacity(due.len());
        let mut targets = Vec::with_capacity(due.len());
        for timer in &due {
            let plan = self.plan(timer.enrollment.workflow_version_id).await?;
            targets.push(resume_target(&plan, &timer.step.step_id, &Resume::Timer));
            finishes.push((timer.step.id, resumed_record(timer, &Resume::Timer)));
        }
        let won = tx.finish_steps(None, &finishes, &[StepState::Waiting], now).await?;
        // Attempts matter only where a step follows (a loop back may run
        // one again); most timers end a wait that ends the workflow or
        // lead to a step not run before.
        let enrollments: Vec<_> =
            due.iter().zip(&targets).filter(|(_, next)| next.is_some()).map(|(d, _)| d.enrollment.id).collect();
        let attempts = if enrollments.is_empty() { HashMap::new() } else { tx.latest_attempts(&enrollments).await? };
        let mut changes = Vec::new();
        let mut successors = Vec::new();
        for (timer, next) in due.iter().zip(targets) {
            if !won.contains(&timer.step.id) {
                continue;
            }
            let enrollment = timer.enrollment.id;
            match next {
                Some(next) => {
                    let attempt = attempts.get(&(enrollment, next.clone())).copied().unwrap_or(0) + 1;
                    changes.push((enrollment, running(EnrollmentStatus::Active, &next)));
                    successors.push(pending_step(enrollment, &next, attempt, now));
                }
                None => changes.push((enrollment, running(EnrollmentStatus::Completed, &timer.step.step_id))),
            }
        }
        let changed = tx.change_enrollments(&changes, now).await?;
        successors.retain(|s| changed.contains(&s.enrollment_id));
        tx.insert_steps(&successors).await?;
        tx.commit().await?;
        if !successors.is_empty() {
            self.notify();
        }
        Ok(due.len())
    }

    /// Moves a parked step on when an event it awaits arrives: the timer is
    /// cancelled, the step succeeds, the enrollment goes to the next step
    /// (due now) or finishes.
    async fn resume(&self, tx: &Tx, due: &DueTimer, by: Resume<'_>, now: DateTime<Utc>) -> Result<bool, EngineError> {
        if !tx.settle_timer(due.timer.id, TimerState::Cancelled, now).await? {
            return Ok(false);
        }
        let plan = self.plan(due.enrollment.workflow_version_id).await?;
        let next = resume_target(&plan, &due.step.step_id, &by);
        if !tx.finish_step(due.step.id, None, &[StepState::Waiting], resumed_record(due, &by), now).await? {
            return Ok(false);
        }
        let enrollment = due.enrollment.id;
        match next {
            Some(next) => {
                if tx.change_enrollment(enrollment, running(EnrollmentStatus::Active, &next), now).await? {
                    let attempt = tx.last_execution(enrollment, Some(&next)).await?.map_or(0, |s| s.attempt) + 1;
                    tx.insert_step(enrollment, &next, attempt, now, None, now).await?;
                }
            }
            None => {
                tx.change_enrollment(enrollment, running(EnrollmentStatus::Completed, &due.step.step_id), now).await?;
            }
        }
        Ok(true)
    }

    /// Applies up to `limit` events from the log; returns how many.
    pub(super) async fn apply_events(&self, limit: u64) -> Result<usize, EngineError> {
        let now = self.now();
        let tx = self.store.begin().await?;
        let events = tx.lock_unapplied_events(limit).await?;
        for event in &events {
            self.apply_event(&tx, event, now).await?;
            tx.mark_event_applied(event.id, now).await?;
        }
        tx.commit().await?;
        Ok(events.len())
    }

    async fn apply_event(&self, tx: &Tx, event: &Event, now: DateTime<Utc>) -> Result<(), EngineError> {
        let (name, contact, number) = match event.kind.as_str() {
            "inbound_message" | "opt_in" | "opt_out" => (event.kind.clone(), event.contact_id, event.phone_number_id),
            "message_status" => {
                let status = event.payload.get("status").and_then(Value::as_str).unwrap_or_default().to_string();
                let wamid = event.payload.get("wamid").and_then(Value::as_str).unwrap_or_default();
                let origin = match tx.message_origin(wamid).await? {
                    Some(origin) => Some(origin),
                    None => self.settle_uncertain_send(tx, &event.payload, wamid, now).await?,
                };
                match origin {
                    Some(origin) => (status, Some(origin.contact_id), Some(origin.phone_number_id)),
                    None => return Ok(()),
                }
            }
            _ => return Ok(()),
        };
        let Some(contact) = (match contact {
            Some(id) => tx.contact(id).await?,
            None => None,
        }) else {
            return Ok(());
        };
        let happening = Happening { name, kind: &event.kind, number, payload: &event.payload };

        for due in tx.event_timers(contact.id).await? {
            if timer_awaits(&due.timer.kind, &happening) {
                let by = Resume::Event { kind: &happening.name, payload: happening.payload };
                self.resume(tx, &due, by, now).await?;
            }
        }
        self.exit_on_event(tx, &contact, &happening, now).await?;
        for plan in self.current_plans() {
            if self.triggered_by(&plan, &happening) {
                let data = trigger_data(&happening, &self.numbers());
                self.enroll_in(tx, &plan, &contact, &happening.name, data, now).await?;
            }
        }
        Ok(())
    }

    /// Ends running enrollments of the contact whose exit conditions or goal
    /// the event makes true.
    async fn exit_on_event(
        &self,
        tx: &Tx,
        contact: &kairo_store::Contact,
        happening: &Happening<'_>,
        now: DateTime<Utc>,
    ) -> Result<(), EngineError> {
        let numbers = self.numbers();
        let running = tx.running_enrollments(contact.id).await?;
        if running.is_empty() {
            return Ok(());
        }
        let mut plans = HashMap::new();
        for enrollment in &running {
            plans.insert(enrollment.workflow_version_id, self.plan(enrollment.workflow_version_id).await?);
        }
        // The goal and exit conditions see what a step sees: the contact,
        // the enrollment's trigger, the earlier steps' outputs.
        let with_conditions: Vec<_> = running
            .iter()
            .filter(|e| plans.get(&e.workflow_version_id).is_some_and(|p| has_conditions(p)))
            .map(|e| e.id)
            .collect();
        let steps = tx.steps_of(&with_conditions).await?;
        let rows = kairo_store::RunRows {
            enrollments: running.clone(),
            contacts: vec![contact.clone()],
            consents: Vec::new(),
            steps,
        };
        let contexts = RunContext::from_rows(rows, &plans);
        for enrollment in running {
            let Some(plan) = plans.get(&enrollment.workflow_version_id) else { continue };
            let context = contexts.get(&enrollment.id).map(|ctx| ctx.json(now)).unwrap_or(Value::Null);
            let mut finish = None;
            if plan.compiled.goal.as_ref().is_some_and(|goal| goal.evaluate(&context)) {
                finish = Some((EnrollmentStatus::GoalMet, "goal met".to_string()));
            }
            for exit in &plan.compiled.exits {
                if finish.is_some() {
                    break;
                }
                finish = match exit {
                    Exit::OptedOut if happening.name == "opt_out" => {
                        Some((EnrollmentStatus::Exited, "opted out".into()))
                    }
                    Exit::RepliedOn(on) => {
                        let number = resolve_number(&numbers, on).map(|n| n.id);
                        let replied =
                            happening.name == "inbound_message" && number.is_some() && number == happening.number;
                        replied.then(|| (EnrollmentStatus::Exited, format!("replied on {on}")))
                    }
                    Exit::When(text, condition) if condition.evaluate(&context) => {
                        Some((EnrollmentStatus::Exited, format!("exit condition `{text}` held")))
                    }
                    _ => None,
                };
            }
            if let Some((status, reason)) = finish {
                let change = EnrollmentChange {
                    status,
                    current_step: enrollment.current_step.clone(),
                    exit_reason: Some(reason),
                    error: None,
                };
                if tx.change_enrollment(enrollment.id, change, now).await? {
                    tx.cancel_scheduled(enrollment.id, now).await?;
                }
            }
        }
        Ok(())
    }

    fn triggered_by(&self, plan: &Plan, happening: &Happening<'_>) -> bool {
        let numbers = self.numbers();
        let on = |written: &str| {
            let number = resolve_number(&numbers, written).map(|n| n.id);
            number.is_some() && number == happening.number
        };
        plan.model.triggers.iter().any(|trigger| {
            if let Some(t) = &trigger.inbound_message {
                let text = happening.payload.get("text").and_then(Value::as_str).unwrap_or_default();
                if happening.name == "inbound_message" && on(&t.number) && t.matches(text) {
                    return true;
                }
            }
            if let Some(t) = &trigger.opt_in
                && happening.name == "opt_in"
                && on(&t.number)
            {
                return true;
            }
            if let Some(t) = &trigger.opt_out
                && happening.name == "opt_out"
                && on(&t.number)
            {
                return true;
            }
            if let Some(t) = &trigger.message_status {
                let status_named = t.statuses.iter().any(|s| {
                    serde_json::to_value(s).ok().and_then(|v| v.as_str().map(str::to_string)).as_deref()
                        == Some(happening.name.as_str())
                });
                if happening.kind == "message_status" && status_named && on(&t.number) {
                    return true;
                }
            }
            false
        })
    }

    /// Fires the schedule ticks that are due; returns how many fired.
    pub(super) async fn fire_schedules(&self) -> Result<usize, EngineError> {
        let now = self.now();
        let mut fired = 0;
        for plan in self.current_plans() {
            for (i, trigger) in plan.model.triggers.iter().enumerate() {
                let Some(schedule) = &trigger.schedule else { continue };
                if self.fire_schedule(&plan, i, schedule, now).await? {
                    fired += 1;
                }
            }
        }
        Ok(fired)
    }

    async fn fire_schedule(
        &self,
        plan: &Arc<Plan>,
        index: usize,
        schedule: &kairo_workflow::model::ScheduleTrigger,
        now: DateTime<Utc>,
    ) -> Result<bool, EngineError> {
        let (Ok(cron), Ok(zone)) = (schedule.cron.parse::<croner::Cron>(), schedule.timezone.parse::<chrono_tz::Tz>())
        else {
            return Ok(false);
        };
        let Ok(latest) = cron.find_previous_occurrence(&now.with_timezone(&zone), true) else { return Ok(false) };
        let tick_at = latest.to_utc();
        let key = format!("schedule:{index}");
        let tx = self.store.begin().await?;
        let since = tx.last_schedule_tick(plan.workflow_id, &key).await?.unwrap_or(plan.registered_at);
        if tick_at <= since || !tx.record_schedule_tick(plan.workflow_id, &key, tick_at, now).await? {
            return Ok(false);
        }
        let numbers = self.numbers();
        let number = match &schedule.contacts.opted_in_on {
            Some(written) => match resolve_number(&numbers, written) {
                Some(n) => Some(n.id),
                None => {
                    tracing::warn!(
                        workflow = plan.key(),
                        number = written.value,
                        "schedule audience names a number that is not connected"
                    );
                    tx.commit().await?;
                    return Ok(true);
                }
            },
            None => None,
        };
        let filter = plan.compiled.audience_filter(index);
        let data = json!({ "tick_at": tick_at, "cron": schedule.cron.value, "timezone": schedule.timezone.value });
        for contact in tx.audience(number).await? {
            let selected = filter.as_ref().is_none_or(|f| f.evaluate(&json!({ "contact": contact_json(&contact) })));
            if selected {
                self.enroll_in(&tx, plan, &contact, "schedule", data.clone(), now).await?;
            }
        }
        tx.commit().await?;
        Ok(true)
    }

    /// A status for a wamid no send recorded, whose callback data names an
    /// uncertain send step (its answer never came): the send did leave. The
    /// step becomes succeeded with the wamid, and the message is recorded
    /// in the contact's thread with the statuses that came for it. The
    /// enrollment already went on (or stopped) by the step's policy and is
    /// not moved. Returns the message's origin when it settled one.
    async fn settle_uncertain_send(
        &self,
        tx: &Tx,
        payload: &Value,
        wamid: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<MessageOrigin>, EngineError> {
        let Some((enrollment_id, step_id, attempt)) =
            payload.get("callback_data").and_then(Value::as_str).and_then(parse_callback_data)
        else {
            return Ok(None);
        };
        let Some(execution) = tx.execution(enrollment_id, &step_id, attempt).await? else { return Ok(None) };
        let Some(sending) = SendAttempt::of(&execution).filter(|_| execution.state == StepState::Uncertain) else {
            return Ok(None);
        };
        let Some(enrollment) = tx.enrollment(enrollment_id).await? else { return Ok(None) };
        let Some(contact) = tx.contact(enrollment.contact_id).await? else { return Ok(None) };
        let send = sending.recorded(wamid.to_string(), None);
        let mut output = send_output(&send, Some("status_webhook"));
        output["was_uncertain"] = json!(execution.error);
        let settled = StepRecord { state: StepState::Succeeded, output: Some(output), error: None };
        if !tx.finish_step(execution.id, None, &[StepState::Uncertain], settled, now).await? {
            return Ok(None);
        }
        tx.record_sends(vec![outbound_record(&contact, &execution, &send, now)], now).await?;
        tracing::info!(enrollment = %enrollment_id, step = %step_id, %wamid, "an uncertain send was settled by its status webhook: it left");
        Ok(Some(MessageOrigin {
            contact_id: contact.id,
            phone_number_id: send.number,
            enrollment_id: Some(enrollment_id),
        }))
    }

    /// Settles steps whose worker died mid-call, by each step's policy.
    /// Returns the successors this worker now holds.
    pub(super) async fn settle_unknown_outcomes(&self, limit: u64) -> Result<Vec<Claimed>, EngineError> {
        let now = self.now();
        let taken = self.store.take_over_unknown_outcomes(self.owner(), now, now + self.lease(), limit).await?;
        if taken.is_empty() {
            return Ok(Vec::new());
        }
        self.hold(taken.iter().map(|c| c.id));
        let contexts = match self.contexts(&taken).await {
            Ok(contexts) => contexts,
            Err(err) => {
                self.give_back(&taken.iter().map(|c| c.id).collect::<Vec<_>>()).await;
                return Err(err);
            }
        };
        let mut finished = Vec::new();
        for claim in taken {
            let Some(ctx) = contexts.get(&claim.enrollment_id).cloned() else {
                self.give_back(&[claim.id]).await;
                continue;
            };
            tracing::warn!(enrollment = %claim.enrollment_id, step = %claim.step_id, "a call's outcome is unknown: its worker stopped mid-call");
            let attempt = SendAttempt::of(&claim);
            let outcome =
                self.settle_or_unknown(&claim, &ctx, attempt, "the worker stopped while the call was in flight").await;
            finished.push(Finished { claim, ctx, outcome });
        }
        let mut unsaved = Vec::new();
        let chained = self.commit(finished, &mut unsaved).await;
        // Left for the next taker rather than renewed by this worker forever.
        let ids: Vec<_> = unsaved.iter().map(|f| f.claim.id).collect();
        self.give_back(&ids).await;
        Ok(chained)
    }
}

/// Whether a workflow has a goal or exit conditions to check on events.
fn has_conditions(plan: &Plan) -> bool {
    plan.compiled.has_conditions()
}

/// Whether a parked step's timer kind waits for this event.
fn timer_awaits(kind: &str, happening: &Happening<'_>) -> bool {
    match TimerKind::parse(kind) {
        Some(TimerKind::Event(event)) => event == happening.name,
        Some(TimerKind::Reply(number)) => happening.name == "inbound_message" && happening.number == Some(number),
        Some(TimerKind::Wait) | None => false,
    }
}

/// The trigger data of an enrollment an event starts.
fn trigger_data(happening: &Happening<'_>, numbers: &[kairo_store::PhoneNumber]) -> Value {
    let mut data = match happening.payload {
        Value::Object(map) => map.clone(),
        other => {
            let mut map = serde_json::Map::new();
            map.insert("payload".into(), other.clone());
            map
        }
    };
    data.insert("event".into(), json!(happening.name));
    if let Some(number) = happening.number.and_then(|id| numbers.iter().find(|n| n.id == id)) {
        data.insert("number".into(), json!(number.display_number));
    }
    Value::Object(data)
}

/// Where a parked step goes when resumed: after a timer, a wait's
/// `on_timeout` (or the next step); after an awaited reply, `on_reply` (or
/// the next step). `None`: the end of the workflow.
fn resume_target(plan: &Plan, step_id: &str, by: &Resume<'_>) -> Option<String> {
    let after = plan.after(step_id).map(str::to_string);
    let Some(step) = plan.step(step_id) else { return after };
    match by {
        Resume::Timer => match &step.action {
            Action::Wait(WaitFor::Event { on_timeout, .. }) => on_timeout.clone().or(after),
            Action::WaitForReply(reply) => Some(reply.on_timeout.clone()),
            _ => after,
        },
        Resume::Event { .. } => match &step.action {
            Action::WaitForReply(reply) => reply.on_reply.clone().or(after),
            _ => after,
        },
    }
}

/// A parked step's final record: its output plus how it was resumed.
fn resumed_record(due: &DueTimer, by: &Resume<'_>) -> StepRecord {
    let mut output = match due.step.output.clone() {
        Some(Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    match by {
        Resume::Timer => {
            output.insert("resumed_by".into(), json!("timer"));
        }
        Resume::Event { kind, payload } => {
            output.insert("resumed_by".into(), json!("event"));
            output.insert("event".into(), json!({ "kind": kind, "data": payload }));
            if let Some(text) = payload.get("text") {
                output.insert("reply".into(), text.clone());
            }
        }
    }
    StepRecord { state: StepState::Succeeded, output: Some(Value::Object(output)), error: None }
}

/// The enrollment now at `step` with `status` (running, or finished there).
fn running(status: EnrollmentStatus, step: &str) -> EnrollmentChange {
    EnrollmentChange { status, current_step: Some(step.to_string()), exit_reason: None, error: None }
}

/// A new pending step execution, due now.
pub(super) fn pending_step(
    enrollment: kairo_core::ids::EnrollmentId,
    step_id: &str,
    attempt: i32,
    now: DateTime<Utc>,
) -> StepExecution {
    StepExecution {
        id: kairo_core::ids::StepExecutionId::new(),
        enrollment_id: enrollment,
        step_id: step_id.to_string(),
        attempt,
        state: StepState::Pending,
        output: None,
        error: None,
        lease_owner: None,
        lease_expires_at: None,
        due_at: now,
        started_at: None,
        finished_at: None,
        created_at: now,
    }
}
