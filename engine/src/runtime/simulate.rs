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
use super::{Engine, EngineConfig, EngineError, Plan};
use kairo_core::clock::{Clock, FakeClock};
use kairo_core::content::MessageContent;
use kairo_core::ids::AccountId;
use kairo_core::status::{ConsentSource, ConsentStatus, DeliveryStatus, EnrollmentStatus, StepState};
use kairo_store::delivery_status_name as status_name;
use kairo_store::{
    ConsentChange, Contact, DatabaseUrl, Enrollment, NewAccount, NewContact, NewEnrollment, NewPhoneNumber,
    PhoneNumber, SavedVersion, Store,
};
use kairo_workflow::ValidWorkflow;

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
    /// What the contact (or WhatsApp) does meanwhile, so that reply,
    /// button and status paths can be tried offline.
    pub injections: Vec<Injection>,
}

/// Something that happens during a simulation, this long after the start
/// (or as soon as the workflow has run up to a wait, for `after` zero).
#[derive(Debug, Clone, PartialEq)]
pub struct Injection {
    pub after: std::time::Duration,
    pub what: Injected,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Injected {
    /// The contact writes this text.
    Reply(String),
    /// The contact taps a quick-reply button with this title.
    Button(String),
    /// WhatsApp reports this status for the last message sent.
    Status(DeliveryStatus),
}

/// What happened, in order.
#[derive(Debug, Clone, Serialize)]
pub struct SimulationReport {
    pub workflow: String,
    pub started_at: DateTime<Utc>,
    pub steps: Vec<SimulatedStep>,
    pub sent: Vec<Value>,
    pub http_calls: Vec<Value>,
    /// What was injected (`--reply`, `--button`, `--status`), when.
    pub injected: Vec<InjectedAt>,
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
    Store(#[from] kairo_store::StoreError),
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
    let numbers = seed_numbers(&store, &simulation.workflow, account.id, now).await?;
    let contact = seed_contact(&store, &simulation.contact, &numbers, now).await?;
    seed_owners(&store, &simulation.workflow, now).await?;
    let saved = crate::registry::register_workflow(&store, &simulation.workflow, now).await?;
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
    let (enrollment, plan) = start(&store, &engine, &saved, &contact, simulation.event.clone(), now).await?;
    let mut injections = simulation.injections.clone();
    injections.sort_by_key(|i| i.after);
    let mut injections: std::collections::VecDeque<Injection> = injections.into();
    let mut injected = Vec::new();
    for _ in 0..MAX_ROUNDS {
        engine.tick().await?;
        let row = store.enrollment(enrollment.id).await?.expect("the simulated enrollment exists");
        if !row.status.is_running() {
            return report(&store, &plan, row, simulation.at, outbound, http, injected).await;
        }
        let next_timer = store.next_timer().await?.map(|t| t.wake_at);
        let next_step = store.next_due_step().await?;
        let next = next_timer.into_iter().chain(next_step).min();
        // What was injected happens before whatever falls due after it.
        if let Some(injection) = injections.front()
            && let Ok(after) = chrono::Duration::from_std(injection.after)
            && next.is_none_or(|n| simulation.at + after <= n)
        {
            let injection = injections.pop_front().expect("looked at just now");
            if simulation.at + after > clock.now() {
                clock.set(simulation.at + after);
            }
            let at = clock.now();
            inject(&store, &plan, &contact, &numbers, &outbound, &injection.what, at).await?;
            injected.push(InjectedAt { at, what: describe_injection(&injection.what) });
            continue;
        }
        match next {
            Some(at) if at > clock.now() => clock.set(at),
            Some(_) => {}
            None => break,
        }
    }
    Err(SimulateError::Endless(MAX_ROUNDS))
}

/// The numbers the workflow names, connected to the simulation's account.
async fn seed_numbers(
    store: &Store,
    workflow: &ValidWorkflow,
    account: AccountId,
    now: DateTime<Utc>,
) -> Result<Vec<PhoneNumber>, SimulateError> {
    let mut numbers = Vec::new();
    for written in named_numbers(workflow) {
        let digits = kairo_core::phone::PhoneDigits::of(&written).into_string();
        let number = store
            .upsert_phone_number(
                NewPhoneNumber {
                    account_id: account,
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
    Ok(numbers)
}

/// The simulated contact, stored as the API stores one, opted in on every
/// number unless `opted_in` is false.
async fn seed_contact(
    store: &Store,
    contact_json: &Value,
    numbers: &[PhoneNumber],
    now: DateTime<Utc>,
) -> Result<Contact, SimulateError> {
    let text = |key: &str| contact_json.get(key).and_then(Value::as_str).map(str::to_string);
    if !contact_json.is_object() {
        return Err(SimulateError::Contact("it must be a JSON object, e.g. {\"phone\": \"+1 555 0100\"}".into()));
    }
    let contact = store
        .insert_contact(
            NewContact {
                name: text("name"),
                // Stored as the API stores them: the digits of the
                // international form, so that injected replies find the contact.
                phone: normalized(text("phone"), "phone")?,
                mobile_phone: normalized(text("mobile_phone"), "mobile_phone")?,
                wa_id: text("wa_id"),
                user_id: None,
                properties: contact_json.get("properties").cloned().unwrap_or(Value::Null),
            },
            now,
        )
        .await?;
    if contact_json.get("opted_in").and_then(Value::as_bool).unwrap_or(true) {
        for number in numbers {
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
    Ok(contact)
}

/// The users and teams the workflow assigns to exist here, as they do where
/// it really runs (validation checks them there).
async fn seed_owners(store: &Store, workflow: &ValidWorkflow, now: DateTime<Utc>) -> Result<(), SimulateError> {
    for owner in workflow
        .workflow
        .steps
        .iter()
        .flat_map(|s| s.assign_owner.iter().chain(s.ensure_thread.as_ref().and_then(|e| e.owner.as_ref())))
    {
        if let Some(email) = &owner.user
            && store.list_users().await?.iter().all(|u| u.email != email.value)
        {
            let new = kairo_store::NewUser {
                email: email.value.clone(),
                name: email.value.clone(),
                role: kairo_core::status::UserRole::Agent,
            };
            store.insert_user(new, now).await?;
        }
        for team in [&owner.team, &owner.round_robin].into_iter().flatten() {
            if store.list_teams().await?.iter().all(|(t, _)| t.name != team.value) {
                let team = store.insert_team(&team.value, now).await?;
                let agent = kairo_store::NewUser {
                    email: format!("agent@{}.simulation", team.name.to_lowercase().replace(' ', "-")),
                    name: format!("{} agent", team.name),
                    role: kairo_core::status::UserRole::Agent,
                };
                let agent = store.insert_user(agent, now).await?;
                store.add_team_member(team.id, agent.id, now).await?;
            }
        }
    }
    Ok(())
}

/// The enrollment the simulation follows, with its first step due now.
async fn start(
    store: &Store,
    engine: &Engine,
    saved: &SavedVersion,
    contact: &Contact,
    event: Option<Value>,
    now: DateTime<Utc>,
) -> Result<(Enrollment, Arc<Plan>), SimulateError> {
    let event = event.unwrap_or_else(|| serde_json::json!({}));
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

    Ok((enrollment, plan))
}

fn normalized(phone: Option<String>, field: &str) -> Result<Option<String>, SimulateError> {
    phone
        .map(|p| kairo_core::phone::normalize_phone(&p).map_err(|e| SimulateError::Contact(format!("`{field}`: {e}"))))
        .transpose()
}

/// What was injected when, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct InjectedAt {
    pub at: DateTime<Utc>,
    pub what: String,
}

fn describe_injection(what: &Injected) -> String {
    match what {
        Injected::Reply(text) => format!("the contact replies \"{text}\""),
        Injected::Button(title) => format!("the contact taps the button \"{title}\""),
        Injected::Status(status) => format!("WhatsApp reports the last message {}", status_name(*status)),
    }
}

/// Feeds an injection through the inbox rules, as the webhook would.
/// Replies come in on the number the workflow waits for a reply on (else
/// the one its trigger names, else the first it names).
async fn inject(
    store: &Store,
    plan: &super::Plan,
    contact: &kairo_store::Contact,
    numbers: &[kairo_store::PhoneNumber],
    outbound: &RecordingOutbound,
    what: &Injected,
    at: DateTime<Utc>,
) -> Result<(), SimulateError> {
    use kairo_core::channel::{InboundEvent, InboundMessage, StatusUpdate};
    let written =
        plan.model.steps.iter().find_map(|s| s.wait_for_reply.as_ref().map(|r| r.number.value.clone())).or_else(|| {
            plan.model.triggers.iter().find_map(|t| t.inbound_message.as_ref().map(|m| m.number.value.clone()))
        });
    let number =
        written.and_then(|w| super::plan::resolve_number(numbers, &w).cloned()).or_else(|| numbers.first().cloned());
    let Some(number) = number else { return Ok(()) };
    let written = contact.wa_id.clone().or_else(|| contact.phone.clone()).unwrap_or_else(|| "15550100".into());
    let from = kairo_core::phone::PhoneDigits::of(&written).into_string();
    let wamid = format!("wamid.simulated.{}", at.timestamp_micros());
    let event = match what {
        Injected::Reply(text) => InboundEvent::Message(InboundMessage {
            number_id: number.graph_id.clone(),
            wamid,
            from: Some(from),
            from_user_id: None,
            profile_name: contact.name.clone(),
            message_type: "text".into(),
            text: Some(text.clone()),
            payload: serde_json::json!({ "type": "text", "text": { "body": text } }),
            content: Some(MessageContent::Text { body: text.clone() }),
            occurred_at: at,
            identity_change: None,
        }),
        Injected::Button(title) => InboundEvent::Message(InboundMessage {
            number_id: number.graph_id.clone(),
            wamid,
            from: Some(from),
            from_user_id: None,
            profile_name: contact.name.clone(),
            message_type: "button".into(),
            text: Some(title.clone()),
            payload: serde_json::json!({ "type": "button", "button": { "text": title, "payload": title } }),
            content: Some(MessageContent::Reply {
                reply: "button".into(),
                title: title.clone(),
                description: None,
                id: Some(title.clone()),
            }),
            occurred_at: at,
            identity_change: None,
        }),
        Injected::Status(status) => {
            let sent = outbound.sent().len();
            if sent == 0 {
                return Ok(());
            }
            InboundEvent::Status(StatusUpdate {
                number_id: number.graph_id.clone(),
                wamid: format!("wamid.test.{sent}"),
                status: *status,
                recipient: Some(from),
                error: None,
                callback_data: None,
                payload: serde_json::json!({ "status": status_name(*status) }),
                occurred_at: at,
            })
        }
    };
    crate::inbox::ingest(store, &[vec![event]], &crate::inbox::Keywords::default(), at).await?;
    Ok(())
}

async fn report(
    store: &Store,
    plan: &super::Plan,
    enrollment: kairo_store::Enrollment,
    started_at: DateTime<Utc>,
    outbound: RecordingOutbound,
    http: RecordingHttp,
    injected: Vec<InjectedAt>,
) -> Result<SimulationReport, SimulateError> {
    let steps = store
        .step_executions(enrollment.id)
        .await?
        .into_iter()
        .map(|s| SimulatedStep {
            action: plan.step(&s.step_id).map_or("unknown", |step| step.action.name()).to_string(),
            // A send held back (quiet hours, a limit) is shown when it
            // really goes: when it finished.
            at: match plan.step(&s.step_id).map(|step| step.action.name()) {
                Some("send_template") => s.finished_at.or(s.started_at).unwrap_or(s.created_at),
                _ => s.started_at.unwrap_or(s.created_at),
            },
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
        injected,
        status: enrollment.status,
        reason: enrollment.exit_reason,
        error: enrollment.error,
        finished_at: enrollment.finished_at,
    })
}

/// The action a step names, as written in the file.
pub fn action_of(step: &kairo_workflow::model::Step) -> &'static str {
    step.action().map_or("unknown", |action| action.name())
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
