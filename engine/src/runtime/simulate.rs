//! `kairo simulate`: one workflow, one contact, an in-memory database, a
//! fake clock and recording channels. Waits are skipped over (the clock
//! jumps to the moment each would end), nothing touches the network, and
//! the result is every step with what it did.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use super::recording::{RecordingHttp, RecordingOutbound};
use super::{Engine, EngineConfig, EngineError};
use crate::clock::{Clock, FakeClock};
use crate::store::status::{ConsentSource, ConsentStatus, EnrollmentStatus, StepState};
use crate::store::{ConsentChange, DatabaseUrl, NewAccount, NewContact, NewEnrollment, NewPhoneNumber, Store};
use crate::workflow::ValidWorkflow;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct Simulation {
    pub workflow: ValidWorkflow,
    /// `{name, phone, mobile_phone, wa_id, properties, opted_in}`; `opted_in`
    /// (default true) opts the contact in on every number the workflow names.
    pub contact: Value,
    /// The trigger data; its `kind` (default `api`) is the trigger kind.
    pub event: Option<Value>,
    /// When the enrollment starts.
    pub at: DateTime<Utc>,
}

/// What happened, in order.
#[derive(Debug, Clone, Serialize)]
pub struct SimulationReport {
    pub workflow: String,
    pub started_at: DateTime<Utc>,
    pub steps: Vec<SimulatedStep>,
    pub sent: Vec<Value>,
    pub http_calls: Vec<Value>,
    pub status: EnrollmentStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SimulatedStep {
    pub step: String,
    pub action: String,
    pub attempt: i32,
    pub state: StepState,
    pub at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("the contact file: {0}")]
    Contact(String),
    #[error("the workflow did not finish within {0} simulated steps: does it loop forever?")]
    Endless(usize),
}

const MAX_ROUNDS: usize = 10_000;

/// Runs a simulation to the end of the enrollment.
pub async fn simulate(simulation: Simulation) -> Result<SimulationReport, SimulateError> {
    let store = Store::open(&DatabaseUrl::new("sqlite::memory:")).await?;
    store.migrate().await?;
    let clock = FakeClock::new(simulation.at);
    let now = simulation.at;
    let account = store
        .upsert_account(NewAccount { waba_id: "simulation".into(), name: "Simulation".into(), portfolio_id: None }, now)
        .await?;
    let mut numbers = Vec::new();
    for written in named_numbers(&simulation.workflow) {
        let digits: String = written.chars().filter(char::is_ascii_digit).collect();
        let number = store
            .upsert_phone_number(
                NewPhoneNumber {
                    account_id: account.id,
                    graph_id: format!("sim-{digits}"),
                    display_number: written.clone(),
                    normalized_number: digits,
                    verified_name: None,
                    quality_rating: None,
                    throughput_mps: 80,
                    messaging_limit_tier: None,
                },
                now,
            )
            .await?;
        numbers.push(number);
    }
    let contact_json = &simulation.contact;
    let text = |key: &str| contact_json.get(key).and_then(Value::as_str).map(str::to_string);
    if !contact_json.is_object() {
        return Err(SimulateError::Contact("it must be a JSON object, e.g. {\"phone\": \"+1 555 0100\"}".into()));
    }
    let contact = store
        .insert_contact(
            NewContact {
                name: text("name"),
                phone: text("phone"),
                mobile_phone: text("mobile_phone"),
                wa_id: text("wa_id"),
                user_id: None,
                properties: contact_json.get("properties").cloned().unwrap_or(Value::Null),
            },
            now,
        )
        .await?;
    if contact_json.get("opted_in").and_then(Value::as_bool).unwrap_or(true) {
        for number in &numbers {
            let change = ConsentChange {
                contact_id: contact.id,
                phone_number_id: number.id,
                status: ConsentStatus::OptedIn,
                source: ConsentSource::Operator,
                keyword: None,
                wamid: None,
            };
            store.record_consent(change, now).await?;
        }
    }
    let saved = store.register_workflow(&simulation.workflow, now).await?;
    let outbound = RecordingOutbound::default();
    let http = RecordingHttp::default();
    let engine = Engine::new(
        store.clone(),
        Arc::new(clock.clone()),
        Arc::new(outbound.clone()),
        Arc::new(http.clone()),
        EngineConfig { owner: "simulation".into(), ..EngineConfig::default() },
    );
    engine.refresh().await?;
    let event = simulation.event.clone().unwrap_or_else(|| serde_json::json!({}));
    let kind = event.get("kind").and_then(Value::as_str).unwrap_or("api").to_string();
    let tx = store.begin().await?;
    let enrollment = tx
        .insert_enrollment(
            NewEnrollment {
                workflow_id: saved.workflow.id,
                workflow_version_id: saved.version.id,
                contact_id: contact.id,
                trigger_kind: kind,
                trigger_data: event,
            },
            now,
        )
        .await?;
    let plan = engine.plan(saved.version.id).await?;
    tx.insert_step(enrollment.id, plan.first_step(), 1, now, None, now).await?;
    tx.commit().await?;

    for _ in 0..MAX_ROUNDS {
        engine.tick().await?;
        let row = store.enrollment(enrollment.id).await?.expect("the simulated enrollment exists");
        if !matches!(row.status, EnrollmentStatus::Active | EnrollmentStatus::Waiting) {
            return report(&store, &plan, row, simulation.at, outbound, http).await;
        }
        let next_timer = store.next_timer().await?.map(|t| t.wake_at);
        let next_step = store.next_due_step().await?;
        match next_timer.into_iter().chain(next_step).min() {
            Some(at) if at > clock.now() => clock.set(at),
            Some(_) => {}
            None => break,
        }
    }
    Err(SimulateError::Endless(MAX_ROUNDS))
}

async fn report(
    store: &Store,
    plan: &super::Plan,
    enrollment: crate::store::Enrollment,
    started_at: DateTime<Utc>,
    outbound: RecordingOutbound,
    http: RecordingHttp,
) -> Result<SimulationReport, SimulateError> {
    let steps = store
        .step_executions(enrollment.id)
        .await?
        .into_iter()
        .map(|s| SimulatedStep {
            action: plan.step(&s.step_id).map_or("unknown", action_of).to_string(),
            at: s.started_at.unwrap_or(s.created_at),
            step: s.step_id,
            attempt: s.attempt,
            state: s.state,
            output: s.output,
            error: s.error,
        })
        .collect();
    Ok(SimulationReport {
        workflow: plan.key().to_string(),
        started_at,
        steps,
        sent: outbound.sent(),
        http_calls: http.calls().into_iter().map(|c| serde_json::to_value(c).expect("calls serialise")).collect(),
        status: enrollment.status,
        reason: enrollment.exit_reason,
        error: enrollment.error,
        finished_at: enrollment.finished_at,
    })
}

/// The action a step names, as written in the file.
pub fn action_of(step: &crate::workflow::model::Step) -> &'static str {
    if step.send_template.is_some() {
        "send_template"
    } else if step.ensure_thread.is_some() {
        "ensure_thread"
    } else if step.assign_owner.is_some() {
        "assign_owner"
    } else if step.wait.is_some() {
        "wait"
    } else if step.wait_for_reply.is_some() {
        "wait_for_reply"
    } else if step.branch.is_some() {
        "branch"
    } else if step.split.is_some() {
        "split"
    } else if step.set_property.is_some() {
        "set_property"
    } else if step.http.is_some() {
        "http"
    } else if step.exit.is_some() {
        "exit"
    } else {
        "unknown"
    }
}

/// Every business number the workflow names, as written.
fn named_numbers(workflow: &ValidWorkflow) -> BTreeSet<String> {
    fn walk(value: &Value, found: &mut BTreeSet<String>) {
        match value {
            Value::Object(map) => {
                for (key, value) in map {
                    match (key.as_str(), value) {
                        ("number" | "replied_on" | "opted_in_on", Value::String(s)) => {
                            found.insert(s.clone());
                        }
                        _ => walk(value, found),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, found)),
            _ => {}
        }
    }
    let mut found = BTreeSet::new();
    walk(&serde_json::to_value(&workflow.workflow).expect("a workflow serialises"), &mut found);
    found
}
