//! What a step sees: its enrollment, the contact, the contact's consents and
//! the outputs of the steps before it, as the JSON that conditions and
//! expressions read.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};

use super::plan::Plan;
use kairo_core::ids::{EnrollmentId, PhoneNumberId, WorkflowVersionId};
use kairo_core::status::{ConsentStatus, StepState};
use kairo_store::{Consent, Contact, Enrollment, RunRows, StepExecution};

/// One enrollment as a step runs it.
#[derive(Debug, Clone)]
pub struct RunContext {
    pub plan: Arc<Plan>,
    pub enrollment: Enrollment,
    pub contact: Contact,
    pub consents: Vec<Consent>,
    /// `steps.<id>.output`, for the steps that finished so far.
    pub outputs: BTreeMap<String, Value>,
    /// The highest attempt number of each step so far: a step visited again
    /// (a loop, a retry) gets the next one.
    pub attempts: HashMap<String, i32>,
}

impl RunContext {
    /// The context object of conditions and expressions.
    pub fn json(&self, now: DateTime<Utc>) -> Value {
        let steps: Map<String, Value> =
            self.outputs.iter().map(|(id, output)| (id.clone(), json!({ "output": output }))).collect();
        json!({
            "contact": contact_json(&self.contact),
            "trigger": self.enrollment.trigger_data,
            "steps": steps,
            "workflow": {
                "id": self.plan.key(),
                "name": self.plan.model.name,
                "version": self.plan.version,
            },
            "enrollment": { "id": self.enrollment.id.to_string() },
            "now": now.to_rfc3339_opts(SecondsFormat::Secs, true),
        })
    }

    /// Builds the context of each enrollment from the rows of a batch.
    pub fn from_rows(
        rows: RunRows,
        plans: &HashMap<WorkflowVersionId, Arc<Plan>>,
    ) -> HashMap<EnrollmentId, RunContext> {
        let mut contexts = HashMap::new();
        for enrollment in rows.enrollments {
            let Some(plan) = plans.get(&enrollment.workflow_version_id) else { continue };
            let Some(contact) = rows.contacts.iter().find(|c| c.id == enrollment.contact_id) else { continue };
            let consents = rows.consents.iter().filter(|c| c.contact_id == contact.id).cloned().collect();
            let mut ctx = RunContext {
                plan: plan.clone(),
                contact: contact.clone(),
                consents,
                outputs: BTreeMap::new(),
                attempts: HashMap::new(),
                enrollment,
            };
            let id = ctx.enrollment.id;
            for step in rows.steps.iter().filter(|s| s.enrollment_id == id) {
                ctx.record_attempt(step);
                if matches!(step.state, StepState::Succeeded | StepState::Skipped | StepState::Uncertain) {
                    ctx.outputs.insert(step.step_id.clone(), step.output.clone().unwrap_or(Value::Null));
                }
            }
            contexts.insert(ctx.enrollment.id, ctx);
        }
        contexts
    }

    pub fn last_attempt(&self, step: &str) -> i32 {
        self.attempts.get(step).copied().unwrap_or(0)
    }

    pub fn record_attempt(&mut self, step: &StepExecution) {
        let highest = self.attempts.entry(step.step_id.clone()).or_insert(0);
        *highest = (*highest).max(step.attempt);
    }

    /// Notes a finished step's output for the steps after it.
    pub fn record(&mut self, step: &StepExecution, output: Option<Value>) {
        self.record_attempt(step);
        self.outputs.insert(step.step_id.clone(), output.unwrap_or(Value::Null));
    }

    pub fn opted_in(&self, number: PhoneNumberId) -> bool {
        self.consents.iter().any(|c| c.phone_number_id == number && c.status == ConsentStatus::OptedIn)
    }

    pub fn opted_out_anywhere(&self) -> bool {
        self.consents.iter().any(|c| c.status == ConsentStatus::OptedOut)
    }
}

/// A contact as `contact.*`: its fields, and its properties' keys beside them.
pub fn contact_json(contact: &Contact) -> Value {
    let mut map = match &contact.properties {
        Value::Object(properties) => properties.clone(),
        _ => Map::new(),
    };
    map.insert("id".into(), json!(contact.id.to_string()));
    map.insert("name".into(), json!(contact.name));
    map.insert("phone".into(), json!(contact.phone));
    map.insert("mobile_phone".into(), json!(contact.mobile_phone));
    map.insert("wa_id".into(), json!(contact.wa_id));
    map.insert("properties".into(), contact.properties.clone());
    Value::Object(map)
}
