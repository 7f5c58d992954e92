//! Enrolling a contact: the workflow's enrollment rules (suppression,
//! re-enrollment, one running enrollment at a time), then the enrollment
//! and its first step in the caller's transaction.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::context::{RunContext, contact_json};
use super::plan::Plan;
use super::{Engine, EngineError};
use kairo_core::ids::{ContactId, EnrollmentId};
use kairo_core::status::EnrollmentStatus;
use kairo_store::{Consent, Contact, Enrollment, EnrollmentHistory, Tx};
use kairo_workflow::compiled::{Action, Reenrollment};

/// An enrollment through the API (or any caller that names the workflow).
#[derive(Debug, Clone)]
pub struct EnrollRequest {
    pub workflow: String,
    pub contact: ContactId,
    pub trigger_data: serde_json::Value,
}

/// What enrolling did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Enrolled {
    Enrolled { enrollment: EnrollmentId },
    Skipped { reason: SkipReason },
}

/// Why a contact was not enrolled: not an error, a rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// The workflow's `suppress` condition holds for the contact.
    Suppressed,
    /// `reenroll: never` and the contact was enrolled before.
    AlreadyEnrolled,
    /// `reenroll: {after: …}` and the last enrollment is more recent.
    TooSoon,
    /// The contact is still going through the workflow (`concurrent: false`).
    StillRunning,
}

impl Engine {
    /// Enrolls a contact through the API trigger of the newest version of a
    /// workflow. The trigger's required fields must be in `trigger_data`.
    pub async fn enroll(&self, request: EnrollRequest) -> Result<Enrolled, EngineError> {
        let now = self.now();
        let tx = self.store.begin().await?;
        let plan = self.enrollable_plan_in(&tx, &request.workflow).await?;
        let Some(api) = plan.model.triggers.iter().find_map(|t| t.api.as_ref()) else {
            return Err(EngineError::NotApiEnrollable { workflow: request.workflow });
        };
        let missing: Vec<String> = api
            .required
            .iter()
            .filter(|f| request.trigger_data.get(f.as_str()).is_none_or(|v| v.is_null()))
            .cloned()
            .collect();
        if !missing.is_empty() {
            return Err(EngineError::MissingTriggerData { workflow: request.workflow, missing });
        }
        let contact = tx.contact(request.contact).await?.ok_or(EngineError::UnknownContact(request.contact))?;
        let result = self.enroll_in(&tx, &plan, &contact, "api", request.trigger_data, now).await?;
        tx.commit().await?;
        self.notify();
        Ok(result)
    }

    /// Enrolls many contacts through the API trigger, in transactions of a
    /// few hundred; each contact gets the same trigger data. Returns what
    /// happened to each, in order.
    pub async fn enroll_many(
        &self,
        workflow: &str,
        contacts: &[ContactId],
        trigger_data: serde_json::Value,
    ) -> Result<Vec<Enrolled>, EngineError> {
        let mut results = Vec::with_capacity(contacts.len());
        for chunk in contacts.chunks(500) {
            let now = self.now();
            let tx = self.store.begin().await?;
            let plan = self.enrollable_plan_in(&tx, workflow).await?;
            if !plan.model.triggers.iter().any(|t| t.api.is_some()) {
                return Err(EngineError::NotApiEnrollable { workflow: workflow.to_string() });
            }
            for id in chunk {
                let contact = tx.contact(*id).await?.ok_or(EngineError::UnknownContact(*id))?;
                results.push(self.enroll_in(&tx, &plan, &contact, "api", trigger_data.clone(), now).await?);
            }
            tx.commit().await?;
            self.notify();
        }
        Ok(results)
    }

    /// Applies the enrollment rules and, when they allow it, writes the
    /// enrollment and its first step in `tx` (see [`Engine::enroll_many_in`]).
    pub(super) async fn enroll_in(
        &self,
        tx: &Tx,
        plan: &Arc<Plan>,
        contact: &Contact,
        trigger_kind: &str,
        trigger_data: serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<Enrolled, EngineError> {
        let mut results = self.enroll_many_in(tx, plan, &[(contact, trigger_data)], trigger_kind, now).await?;
        Ok(results.pop().expect("enroll_many_in answers once for each contact"))
    }

    /// Enrolls many contacts at once: their histories read together, the
    /// enrollment rules applied, the admitted enrollments and their first
    /// steps written with one statement each. A contact named twice is
    /// judged the second time with the first enrollment counted.
    ///
    /// The first step is due now for a worker, unless it is a `wait`: that
    /// one runs here (as a worker would: goal and exit conditions first)
    /// and the enrollment starts parked on its timer, so a large enrollment
    /// into a workflow that begins by waiting leaves the workers nothing to
    /// do until the timers fall due.
    pub(super) async fn enroll_many_in(
        &self,
        tx: &Tx,
        plan: &Arc<Plan>,
        items: &[(&Contact, serde_json::Value)],
        trigger_kind: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<Enrolled>, EngineError> {
        let contacts: Vec<ContactId> = items.iter().map(|(c, _)| c.id).collect();
        let mut histories = tx.enrollment_histories(&contacts, plan.workflow_id).await?;
        let first = plan.first_step();
        let starts_waiting = plan.step(first).is_some_and(|s| matches!(s.action, Action::Wait(_)));
        // Consents matter to the exit conditions checked before the wait.
        let mut consents: HashMap<ContactId, Vec<Consent>> = HashMap::new();
        if starts_waiting && !plan.model.exit_when.is_empty() {
            for consent in tx.consents_of_contacts(&contacts).await? {
                consents.entry(consent.contact_id).or_default().push(consent);
            }
        }
        let mut results = Vec::with_capacity(items.len());
        let mut enrollments = Vec::new();
        let mut steps = Vec::new();
        let mut timers = Vec::new();
        for (contact, trigger_data) in items {
            let history = histories.entry(contact.id).or_default();
            if let Some(reason) = admit(plan, contact, trigger_data, history, now)? {
                results.push(Enrolled::Skipped { reason });
                continue;
            }
            history.total += 1;
            history.running += 1;
            history.last_enrolled_at = Some(now);
            let mut enrollment = started_enrollment(plan, contact.id, trigger_kind, trigger_data.clone(), now);
            let mut step = super::triggers::pending_step(enrollment.id, first, 1, now);
            if starts_waiting {
                let ctx = RunContext {
                    plan: plan.clone(),
                    enrollment: enrollment.clone(),
                    contact: (*contact).clone(),
                    consents: consents.get(&contact.id).cloned().unwrap_or_default(),
                    outputs: Default::default(),
                    attempts: Default::default(),
                };
                if let Some(timer) = self.park_at_start(&ctx, &mut step, now) {
                    enrollment.status = EnrollmentStatus::Waiting;
                    timers.push(timer);
                }
            }
            results.push(Enrolled::Enrolled { enrollment: enrollment.id });
            enrollments.push(enrollment);
            steps.push(step);
        }
        tx.insert_started_enrollments(enrollments).await?;
        tx.insert_steps(&steps).await?;
        tx.insert_timers(&timers).await?;
        if !timers.is_empty() {
            metrics::counter!("kairo_steps_total", "state" => "waiting").increment(timers.len() as u64);
        }
        Ok(results)
    }
}

/// A new enrollment at its first step, active.
fn started_enrollment(
    plan: &Plan,
    contact: ContactId,
    trigger_kind: &str,
    trigger_data: serde_json::Value,
    now: DateTime<Utc>,
) -> Enrollment {
    Enrollment {
        id: EnrollmentId::new(),
        workflow_id: plan.workflow_id,
        workflow_version_id: plan.version_id,
        contact_id: contact,
        status: EnrollmentStatus::Active,
        trigger_kind: trigger_kind.to_string(),
        trigger_data,
        current_step: Some(plan.first_step().to_string()),
        exit_reason: None,
        error: None,
        enrolled_at: now,
        updated_at: now,
        finished_at: None,
    }
}

/// Whether the workflow's enrollment rules let `contact` in now; the
/// reason when they do not.
fn admit(
    plan: &Plan,
    contact: &Contact,
    trigger_data: &serde_json::Value,
    history: &EnrollmentHistory,
    now: DateTime<Utc>,
) -> Result<Option<SkipReason>, EngineError> {
    let compiled = &plan.compiled;
    if let Some(suppress) = &compiled.suppress {
        let context = serde_json::json!({ "contact": contact_json(contact), "trigger": trigger_data });
        if suppress.evaluate(&context) {
            return Ok(Some(SkipReason::Suppressed));
        }
    }
    match compiled.reenroll {
        Reenrollment::Never if history.total > 0 => return Ok(Some(SkipReason::AlreadyEnrolled)),
        Reenrollment::After(period) => {
            let period = chrono::Duration::from_std(period).unwrap_or(chrono::Duration::MAX);
            if history.last_enrolled_at.is_some_and(|last| last + period > now) {
                return Ok(Some(SkipReason::TooSoon));
            }
        }
        Reenrollment::Never | Reenrollment::Always => {}
    }
    if !plan.model.enrollment.concurrent && history.running > 0 {
        return Ok(Some(SkipReason::StillRunning));
    }
    Ok(None)
}
