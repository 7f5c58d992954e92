//! Writing what steps decided: a batch of outcomes in one transaction, each
//! outcome conditional on this worker still holding its step.

use chrono::{DateTime, Utc};

use super::Engine;
use super::context::RunContext;
use super::outcome::{Effect, Outcome, RecordedSend, Then};
use kairo_core::ids::{ContactId, EnrollmentId, StepExecutionId};
use kairo_core::status::{DeliveryStatus, Direction, EnrollmentStatus, StepState};
use kairo_store::{
    EnrollmentChange, NewMessage, NewTimerRow, OutboundRecord, StepExecution, StepRecord, StoreError, Tx,
};

/// A step that ran, with what it decided.
#[derive(Debug)]
pub(super) struct Finished {
    pub claim: StepExecution,
    pub ctx: RunContext,
    pub outcome: Outcome,
}

/// A step this worker holds and can run at once: the successor of a step it
/// just committed, or a fresh claim.
#[derive(Debug)]
pub(super) struct Claimed {
    pub claim: StepExecution,
    pub ctx: RunContext,
}

impl Engine {
    /// Commits a batch of outcomes; returns the successors to run now. When
    /// the batch cannot commit, each outcome is tried alone so one bad row
    /// does not hold back the others; one that still fails goes to
    /// `unsaved`, for the caller to write again: its step stays claimed
    /// (`attempting` when its call left) under this worker's lease, so it is
    /// neither run twice nor, when it never called out, made uncertain.
    pub(super) async fn commit(&self, batch: Vec<Finished>, unsaved: &mut Vec<Finished>) -> Vec<Claimed> {
        if batch.is_empty() {
            return Vec::new();
        }
        let chained = self.commit_all(batch, unsaved).await;
        self.hold(chained.iter().map(|c| c.claim.id));
        chained
    }

    async fn commit_all(&self, batch: Vec<Finished>, unsaved: &mut Vec<Finished>) -> Vec<Claimed> {
        match self.commit_batch(&batch).await {
            Ok(chained) => {
                count_finished(&batch);
                self.let_go(batch.iter().map(|f| f.claim.id));
                chained
            }
            Err(err) => {
                tracing::warn!(%err, steps = batch.len(), "committing a batch of steps failed; committing them one by one");
                let mut chained = Vec::new();
                for finished in batch {
                    match self.commit_batch(std::slice::from_ref(&finished)).await {
                        Ok(next) => {
                            count_finished(std::slice::from_ref(&finished));
                            self.let_go([finished.claim.id]);
                            chained.extend(next)
                        }
                        Err(err) => {
                            tracing::error!(
                                %err,
                                enrollment = %finished.claim.enrollment_id,
                                step = %finished.claim.step_id,
                                "cannot commit a step's result; it is written again in a moment"
                            );
                            unsaved.push(finished);
                        }
                    }
                }
                chained
            }
        }
    }

    /// One transaction for the whole batch. Step results, enrollment
    /// changes and successor steps are each written with one statement for
    /// the batch; the rare outcomes (parking on a timer, deferring) row by row.
    async fn commit_batch(&self, batch: &[Finished]) -> Result<Vec<Claimed>, StoreError> {
        let now = self.now();
        let owner = self.owner();
        let tx = self.store.begin().await?;
        let won = tx.finish_steps(Some(owner), &step_records(batch), &StepState::HELD, now).await?;
        let mut w = Writes::default();
        for finished in batch {
            let claim = &finished.claim;
            let enrollment = claim.enrollment_id;
            match &finished.outcome {
                Outcome::Lost => {}
                Outcome::Defer { due_at, output } => {
                    tx.defer_step(claim.id, owner, *due_at, output.clone()).await?;
                }
                Outcome::Park { timer_kind, wake_at, .. } if won.contains(&claim.id) => {
                    w.changes.push((enrollment, running(EnrollmentStatus::Waiting, &claim.step_id)));
                    w.timers.push(NewTimerRow {
                        enrollment_id: enrollment,
                        step_execution_id: claim.id,
                        kind: timer_kind.clone(),
                        wake_at: *wake_at,
                        created_at: now,
                    });
                }
                Outcome::Retry { due_at, .. } if won.contains(&claim.id) => {
                    w.changes.push((enrollment, running(EnrollmentStatus::Active, &claim.step_id)));
                    let attempt = finished.ctx.last_attempt(&claim.step_id).max(claim.attempt) + 1;
                    w.successors.push((new_step(claim, &claim.step_id, attempt, *due_at, None, now), None));
                }
                Outcome::Done { record, then, effects } if won.contains(&claim.id) => {
                    self.done(&tx, finished, record, then, effects, &mut w, now).await?;
                }
                Outcome::Retry { .. } | Outcome::Done { .. } | Outcome::Park { .. } => {}
            }
        }
        let Writes { mut timers, changes, mut successors, sends, patches } = w;
        tx.record_sends(sends, now).await?;
        tx.set_properties_many(&patches, now).await?;
        let changed = tx.change_enrollments(&changes, now).await?;
        // A parked step whose enrollment ended meanwhile gets no timer; its
        // step is cancelled with the rest of what the enrollment scheduled.
        for timer in &timers {
            if !changed.contains(&timer.enrollment_id) {
                tx.cancel_scheduled(timer.enrollment_id, now).await?;
            }
        }
        timers.retain(|t| changed.contains(&t.enrollment_id));
        tx.insert_timers(&timers).await?;
        // A successor is written only when its enrollment is still running
        // (it may have been cancelled, or have exited on an event).
        successors.retain(|(row, _)| changed.contains(&row.enrollment_id));
        let rows: Vec<StepExecution> = successors.iter().map(|(row, _)| row.clone()).collect();
        tx.insert_steps(&rows).await?;
        tx.commit().await?;
        Ok(successors.into_iter().filter_map(|(claim, ctx)| ctx.map(|ctx| Claimed { claim, ctx })).collect())
    }

    /// A step done: its effects (sends and property patches gathered for the
    /// whole batch) and what comes next, the next step or the end.
    #[allow(clippy::too_many_arguments)] // one finished step's parts and the batch's writes
    async fn done(
        &self,
        tx: &Tx,
        finished: &Finished,
        record: &StepRecord,
        then: &Then,
        effects: &[Effect],
        w: &mut Writes,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let claim = &finished.claim;
        let enrollment = claim.enrollment_id;
        let (owner, lease_until) = (self.owner(), now + self.lease());
        let mut ctx = finished.ctx.clone();
        for effect in effects {
            match effect {
                // Written for the whole batch by `commit_batch`.
                Effect::RecordSend(send) => w.sends.push(outbound_record(&ctx.contact, claim, send, now)),
                Effect::SetProperties(patch) => {
                    w.patches.push((ctx.contact.id, patch.clone()));
                    merge_into(&mut ctx.contact.properties, patch);
                }
                other => self.apply_effect(tx, &mut ctx, claim, other, now).await?,
            }
        }
        match then {
            Then::Step(next) => {
                w.changes.push((enrollment, running(EnrollmentStatus::Active, next)));
                let attempt = ctx.last_attempt(next) + 1;
                let row = new_step(claim, next, attempt, now, Some((owner, lease_until)), now);
                ctx.record(claim, record.output.clone());
                ctx.record_attempt(&row);
                w.successors.push((row, Some(ctx)));
            }
            Then::Finish { status, reason, error } => {
                let change = EnrollmentChange {
                    status: *status,
                    current_step: Some(claim.step_id.clone()),
                    exit_reason: reason.clone(),
                    error: error.clone(),
                };
                w.changes.push((enrollment, change));
            }
        }
        Ok(())
    }

    pub(super) fn lease(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.config.lease).expect("a lease is a few seconds or minutes")
    }

    async fn apply_effect(
        &self,
        tx: &Tx,
        ctx: &mut RunContext,
        claim: &StepExecution,
        effect: &Effect,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        match effect {
            Effect::SetProperties(patch) => {
                tx.set_contact_properties(ctx.contact.id, patch, now).await?;
                merge_into(&mut ctx.contact.properties, patch);
            }
            Effect::EnsureThread { number, owner } => {
                let (thread, _) = tx.ensure_thread(&ctx.contact, *number, now).await?;
                if let Some(owner) = owner
                    && let Err(problem) = tx.assign_owner(thread.id, owner, now).await?
                {
                    tracing::warn!(enrollment = %claim.enrollment_id, step = %claim.step_id, "{problem}");
                }
            }
            Effect::AssignOwner { owner, number } => {
                match tx.open_threads(ctx.contact.id).await?.iter().find(|t| t.phone_number_id == *number) {
                    Some(thread) => {
                        if let Err(problem) = tx.assign_owner(thread.id, owner, now).await? {
                            tracing::warn!(enrollment = %claim.enrollment_id, step = %claim.step_id, "{problem}");
                        }
                    }
                    None => tracing::info!(
                        enrollment = %claim.enrollment_id,
                        step = %claim.step_id,
                        "assign_owner: the contact has no open thread on the number; nothing to assign"
                    ),
                }
            }
            Effect::RecordSend(send) => {
                tx.record_sends(vec![outbound_record(&ctx.contact, claim, send, now)], now).await?
            }
        }
        Ok(())
    }
}

/// `patch` set on a contact's properties in memory (what the store writes).
fn merge_into(properties: &mut serde_json::Value, patch: &serde_json::Map<String, serde_json::Value>) {
    if let serde_json::Value::Object(properties) = properties {
        properties.extend(patch.clone());
    } else {
        *properties = serde_json::Value::Object(patch.clone());
    }
}

/// Step executions finished, by the state they were written in
/// (`kairo_steps_total`).
fn count_finished(batch: &[Finished]) {
    for finished in batch {
        let state = match &finished.outcome {
            Outcome::Done { record, .. } | Outcome::Retry { record, .. } => record.state,
            Outcome::Park { .. } => StepState::Waiting,
            Outcome::Lost | Outcome::Defer { .. } => continue,
        };
        let label = serde_json::to_value(state).ok().and_then(|v| v.as_str().map(str::to_string));
        metrics::counter!("kairo_steps_total", "state" => label.unwrap_or_default()).increment(1);
    }
}

/// A send to record in the contact's thread on its number (opened when
/// there is none), as the message of `execution`.
pub(super) fn outbound_record(
    contact: &kairo_store::Contact,
    execution: &StepExecution,
    send: &RecordedSend,
    now: DateTime<Utc>,
) -> OutboundRecord {
    let (template_name, template_language, template_params) = match &send.template {
        Some((name, language, params)) => (Some(name.clone()), Some(language.clone()), Some(params.clone())),
        None => (None, None, None),
    };
    let message = NewMessage {
        thread_id: kairo_core::ids::ThreadId::default(),
        direction: Direction::Outbound,
        wamid: Some(kairo_core::ids::Wamid(send.wamid.clone())),
        message_type: send.message_type.clone(),
        body: send.body.clone(),
        payload: match &send.message_status {
            Some(status) => serde_json::json!({ "message_status": status }),
            None => serde_json::json!({}),
        },
        status: DeliveryStatus::Sent,
        template_name,
        template_language,
        template_params,
        enrollment_id: Some(execution.enrollment_id),
        step_execution_id: Some(execution.id),
        occurred_at: now,
        sent_by: None,
        content: send.content.clone(),
    };
    OutboundRecord { contact: contact.clone(), number: send.number, message }
}

fn running(status: EnrollmentStatus, step: &str) -> EnrollmentChange {
    EnrollmentChange { status, current_step: Some(step.to_string()), exit_reason: None, error: None }
}

/// A new step execution of `claim`'s enrollment: pending, or claimed by
/// `claimed_by` until its lease ends.
fn new_step(
    claim: &StepExecution,
    step_id: &str,
    attempt: i32,
    due_at: DateTime<Utc>,
    claimed_by: Option<(&str, DateTime<Utc>)>,
    now: DateTime<Utc>,
) -> StepExecution {
    let (state, owner, lease, started) = match claimed_by {
        Some((owner, until)) => (StepState::Claimed, Some(owner.to_string()), Some(until), Some(now)),
        None => (StepState::Pending, None, None, None),
    };
    StepExecution {
        id: kairo_core::ids::StepExecutionId::new(),
        enrollment_id: claim.enrollment_id,
        step_id: step_id.to_string(),
        attempt,
        state,
        output: None,
        error: None,
        lease_owner: owner,
        lease_expires_at: lease,
        due_at,
        started_at: started,
        finished_at: None,
        created_at: now,
    }
}

/// What a batch writes besides its steps' records, gathered as its steps are
/// looked at and written in a few statements.
#[derive(Default)]
struct Writes {
    timers: Vec<NewTimerRow>,
    changes: Vec<(EnrollmentId, EnrollmentChange)>,
    successors: Vec<(StepExecution, Option<RunContext>)>,
    sends: Vec<OutboundRecord>,
    patches: Vec<(ContactId, serde_json::Map<String, serde_json::Value>)>,
}

/// The record each finished step is written with; a parked step is written
/// `waiting` the same way (its finished_at is set again when it is resumed).
fn step_records(batch: &[Finished]) -> Vec<(StepExecutionId, StepRecord)> {
    batch
        .iter()
        .filter_map(|f| match &f.outcome {
            Outcome::Done { record, .. } | Outcome::Retry { record, .. } => Some((f.claim.id, record.clone())),
            Outcome::Park { output, .. } => {
                Some((f.claim.id, StepRecord { state: StepState::Waiting, output: Some(output.clone()), error: None }))
            }
            Outcome::Lost | Outcome::Defer { .. } => None,
        })
        .collect()
}
