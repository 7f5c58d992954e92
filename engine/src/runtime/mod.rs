//! The durable runtime: enrollments run through workflow versions one step
//! at a time, every step a claimed row in the database.
//!
//! Bird's-eye view: a trigger (an event from the log, a schedule tick, an API
//! call) [`Engine::enroll`]s a contact: an enrollment row and its first step
//! execution (`pending`) commit together. Workers claim due steps in batches
//! under a lease, run them, and commit each step's result with the
//! enrollment's next state and the next step in one transaction; a worker
//! that commits a step whose successor is due at once keeps running that
//! successor itself, without a second claim. Waits park the step on a timer
//! row; the timer (or the awaited event) moves the enrollment on.
//!
//! Invariants:
//! - All of an enrollment's state is in the database; nothing waits in memory.
//! - No step runs without a claim, and a claim is lost only by a lease
//!   running out; a completion from a worker that lost its lease is dropped.
//! - An external call (a send, an HTTP request) is preceded by a committed
//!   `attempting` row; finding one after a crash means "outcome unknown",
//!   handled by the step's `on_unknown_outcome` (default: never repeat).
//! - Enrollments finish on the version they started on.
//! - Time comes from the [`Clock`](kairo_core::clock::Clock).

mod actions;
mod attempts;
mod bulk;
mod commit;
pub mod context;
mod country_zones;
mod enroll;
mod enroll_queue;
mod estimate;
mod failures;
pub mod http_client;
mod outcome;
mod output;
mod pacing;
pub mod plan;
mod quiet;
pub mod recording;
mod reply;
mod send;
mod send_gate;
pub mod simulate;
mod step;
mod triggers;
mod worker;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use kairo_core::outbound::{HttpCaller, Outbound};
use tokio::sync::Notify;

pub use self::bulk::{BulkContact, BulkRow, BulkTarget, ROW_KEY_TTL};
pub use self::enroll::{EnrollRequest, Enrolled, SkipReason};
pub use self::enroll_queue::{EnrollQueue, QueueError};
pub use self::estimate::SendEstimate;
pub use self::plan::Plan;
pub use self::recording::{RecordingHttp, RecordingOutbound};
pub use self::reply::{ReplyContent, ReplyError, template_as_seen, template_needs};
pub use self::worker::{TickReport, WorkerConfig, WorkerReport};
use kairo_core::clock::Clock;
use kairo_core::ids::{EnrollmentId, WorkflowVersionId};
use kairo_core::status::{EnrollmentStatus, StepState};
use kairo_store::{EnrollmentChange, PhoneNumber, Store, StoreError, Tx};
use kairo_workflow::expr::Renderer;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no workflow `{0}` is loaded: check the id, or run `kairo validate` on its file")]
    UnknownWorkflow(String),
    #[error("workflow `{workflow}` is {}: it takes no new enrollments; {}", state.as_str(), match state {
        kairo_store::WorkflowState::Archived => "its file was removed: put it back in the workflow folder to use it again",
        _ => "resume it (`kairo workflows resume` or POST /v1/workflows/{key}/resume) to enroll again",
    })]
    WorkflowNotActive { workflow: String, state: kairo_store::WorkflowState },
    #[error("workflow `{workflow}` has no `api` trigger: it cannot be enrolled into through the API")]
    NotApiEnrollable { workflow: String },
    #[error("workflow `{workflow}` needs trigger data field(s) {missing:?}")]
    MissingTriggerData { workflow: String, missing: Vec<String> },
    #[error("no contact {0}")]
    UnknownContact(kairo_core::ids::ContactId),
    #[error("no enrollment {0}")]
    UnknownEnrollment(EnrollmentId),
    #[error("enrollment {id} is {status:?}: {what}")]
    WrongState { id: EnrollmentId, status: EnrollmentStatus, what: &'static str },
    #[error("workflow version {0} cannot be read: {1}")]
    BrokenVersion(WorkflowVersionId, plan::PlanError),
}

/// How this engine identifies itself and holds its claims.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Written on every claim (`lease_owner`); unique per worker process.
    pub owner: String,
    /// How long a claim lasts without renewal. A worker that dies loses its
    /// claims after this long and another worker takes them over.
    pub lease: Duration,
    /// Most steps claimed (and committed) in one transaction.
    pub batch: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self { owner: default_owner(), lease: Duration::from_secs(30), batch: 256 }
    }
}

/// A name for this process: host, pid and a random suffix.
pub fn default_owner() -> String {
    let host = std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "kairo".into());
    let suffix = uuid::Uuid::now_v7().simple().to_string();
    format!("{host}-{}-{}", std::process::id(), &suffix[suffix.len() - 6..])
}

/// The runtime: shared by the worker loop, the triggers and the API.
#[derive(Debug)]
pub struct Engine {
    store: Store,
    clock: Arc<dyn Clock>,
    outbound: Arc<dyn Outbound>,
    http: Arc<dyn HttpCaller>,
    renderer: Renderer,
    config: EngineConfig,
    plans: RwLock<HashMap<WorkflowVersionId, Arc<Plan>>>,
    /// The newest version of every active workflow, keyed by workflow id (key).
    current: RwLock<HashMap<String, Arc<Plan>>>,
    /// Workflows that take no new enrollments (paused, archived).
    inactive: RwLock<HashMap<String, kairo_store::WorkflowState>>,
    refreshing: tokio::sync::Mutex<()>,
    numbers: RwLock<Arc<Vec<PhoneNumber>>>,
    /// Woken when work is created in this process, so idle workers do not
    /// wait for their next poll.
    wakeup: Notify,
    /// This process's share of the send slots of each number.
    pacer: pacing::Pacer,
    /// Template status and category, read at most every [`TEMPLATE_TTL`].
    templates: send::TemplateCache,
    /// `attempting` marks, written together.
    attempts: attempts::AttemptMarks,
    /// The steps this worker holds and knows of (claimed, running, waiting
    /// to be committed): only these leases are renewed.
    held: std::sync::Mutex<std::collections::HashSet<kairo_core::ids::StepExecutionId>>,
}

impl Engine {
    pub fn new(
        store: Store,
        clock: Arc<dyn Clock>,
        outbound: Arc<dyn Outbound>,
        http: Arc<dyn HttpCaller>,
        config: EngineConfig,
    ) -> Arc<Engine> {
        Arc::new(Engine {
            store,
            clock,
            outbound,
            http,
            renderer: Renderer::new(),
            config,
            plans: RwLock::default(),
            current: RwLock::default(),
            inactive: RwLock::default(),
            refreshing: tokio::sync::Mutex::new(()),
            numbers: RwLock::default(),
            wakeup: Notify::new(),
            pacer: pacing::Pacer::default(),
            templates: send::TemplateCache::default(),
            attempts: attempts::AttemptMarks::default(),
            held: Default::default(),
        })
    }

    /// Notes steps this worker now holds.
    pub(super) fn hold(&self, steps: impl IntoIterator<Item = kairo_core::ids::StepExecutionId>) {
        self.held.lock().expect("held set lock is never poisoned").extend(steps);
    }

    /// Notes steps this worker no longer holds.
    pub(super) fn let_go(&self, steps: impl IntoIterator<Item = kairo_core::ids::StepExecutionId>) {
        let mut held = self.held.lock().expect("held set lock is never poisoned");
        for step in steps {
            held.remove(&step);
        }
    }

    pub(super) fn held_steps(&self) -> Vec<kairo_core::ids::StepExecutionId> {
        self.held.lock().expect("held set lock is never poisoned").iter().copied().collect()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    pub fn owner(&self) -> &str {
        &self.config.owner
    }

    /// Reloads the newest version of every workflow and the business numbers.
    /// Cheap: versions already parsed are kept.
    pub async fn refresh(&self) -> Result<(), EngineError> {
        // One refresh at a time: a refresh that read the database before a
        // change must not write its older view after one that read it after.
        let _one_at_a_time = self.refreshing.lock().await;
        let workflows = self.store.workflows().await?;
        let mut current = HashMap::new();
        let mut inactive = HashMap::new();
        for wf in workflows {
            let state = kairo_store::WorkflowState::of(&wf);
            if state != kairo_store::WorkflowState::Active {
                inactive.insert(wf.key.clone(), state);
                continue;
            }
            let Some(version) = wf.current_version_id else { continue };
            let plan = self.plan(version).await?;
            current.insert(wf.key.clone(), plan);
        }
        *self.current.write().expect("plan cache lock is never poisoned") = current;
        *self.inactive.write().expect("plan cache lock is never poisoned") = inactive;
        // A read of the pool: no write transaction (on SQLite it would wait
        // for the write turn the workers' commits hold).
        let numbers = self.store.phone_numbers().await?;
        *self.numbers.write().expect("number cache lock is never poisoned") = Arc::new(numbers);
        Ok(())
    }

    /// The parsed plan of a version, from the cache or the database.
    pub async fn plan(&self, id: WorkflowVersionId) -> Result<Arc<Plan>, EngineError> {
        if let Some(plan) = self.plans.read().expect("plan cache lock is never poisoned").get(&id) {
            return Ok(plan.clone());
        }
        let version = self
            .store
            .workflow_version(id)
            .await?
            .ok_or_else(|| EngineError::BrokenVersion(id, plan::PlanError::Missing))?;
        let registered_at = self
            .store
            .workflows()
            .await?
            .into_iter()
            .find(|w| w.id == version.workflow_id)
            .map_or(version.created_at, |w| w.created_at);
        let plan =
            Arc::new(Plan::from_version(&version, registered_at).map_err(|e| EngineError::BrokenVersion(id, e))?);
        self.plans.write().expect("plan cache lock is never poisoned").insert(id, plan.clone());
        Ok(plan)
    }

    /// The newest version of the workflow `key`, when it is active.
    pub fn current_plan(&self, key: &str) -> Option<Arc<Plan>> {
        self.current.read().expect("plan cache lock is never poisoned").get(key).cloned()
    }

    /// [`Engine::enrollable_plan`], reading the workflows again first when
    /// `key` is not known to this process yet (a file loaded a moment ago by
    /// another task or process).
    pub async fn enrollable_plan_now(&self, key: &str) -> Result<Arc<Plan>, EngineError> {
        match self.enrollable_plan(key) {
            Err(EngineError::UnknownWorkflow(_)) => {
                self.refresh().await?;
                self.enrollable_plan(key)
            }
            found => found,
        }
    }

    /// The version new enrollments of `key` go into: unknown, paused and
    /// archived workflows take none.
    pub fn enrollable_plan(&self, key: &str) -> Result<Arc<Plan>, EngineError> {
        if let Some(plan) = self.current_plan(key) {
            return Ok(plan);
        }
        match self.inactive.read().expect("plan cache lock is never poisoned").get(key) {
            Some(state) => Err(EngineError::WorkflowNotActive { workflow: key.to_string(), state: *state }),
            None => Err(EngineError::UnknownWorkflow(key.to_string())),
        }
    }

    /// The version new enrollments of `key` go into, as `tx` sees the
    /// workflow: the cache may lag a version the database already shows (a
    /// file loaded a moment ago, here or by another process), and the API
    /// must not answer with a version older than `GET /v1/workflows` names.
    pub(super) async fn enrollable_plan_in(&self, tx: &Tx, key: &str) -> Result<Arc<Plan>, EngineError> {
        let Some(workflow) = tx.workflow_by_key(key).await? else {
            return Err(EngineError::UnknownWorkflow(key.to_string()));
        };
        let state = kairo_store::WorkflowState::of(&workflow);
        if state != kairo_store::WorkflowState::Active {
            return Err(EngineError::WorkflowNotActive { workflow: key.to_string(), state });
        }
        let Some(version) = workflow.current_version_id else {
            return Err(EngineError::UnknownWorkflow(key.to_string()));
        };
        match self.current_plan(key) {
            Some(plan) if plan.version_id == version => Ok(plan),
            _ => self.plan(version).await,
        }
    }

    fn current_plans(&self) -> Vec<Arc<Plan>> {
        self.current.read().expect("plan cache lock is never poisoned").values().cloned().collect()
    }

    fn numbers(&self) -> Arc<Vec<PhoneNumber>> {
        self.numbers.read().expect("number cache lock is never poisoned").clone()
    }

    /// Wakes idle workers of this process (new work was created).
    pub fn notify(&self) {
        self.wakeup.notify_waiters();
    }

    /// Cancels a running enrollment: what it has scheduled is cancelled; a
    /// step already calling out finishes, but nothing runs after it.
    pub async fn cancel(&self, id: EnrollmentId, reason: &str) -> Result<(), EngineError> {
        let now = self.now();
        let tx = self.store.begin().await?;
        let enrollment = tx.enrollment(id).await?.ok_or(EngineError::UnknownEnrollment(id))?;
        let change = EnrollmentChange {
            status: EnrollmentStatus::Cancelled,
            current_step: enrollment.current_step.clone(),
            exit_reason: Some(reason.to_string()),
            error: None,
        };
        if !tx.change_enrollment(id, change, now).await? {
            return Err(EngineError::WrongState {
                id,
                status: enrollment.status,
                what: "only a running enrollment can be cancelled",
            });
        }
        tx.cancel_scheduled(id, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Retries the failed step of a failed enrollment: a new attempt of that
    /// step, due now, and the enrollment active again.
    pub async fn retry(&self, id: EnrollmentId) -> Result<(), EngineError> {
        let now = self.now();
        let tx = self.store.begin().await?;
        let enrollment = tx.enrollment(id).await?.ok_or(EngineError::UnknownEnrollment(id))?;
        if enrollment.status != EnrollmentStatus::Failed {
            return Err(EngineError::WrongState {
                id,
                status: enrollment.status,
                what: "only a failed enrollment can be retried",
            });
        }
        let last = tx.last_execution(id, None).await?;
        let Some(last) = last.filter(|s| matches!(s.state, StepState::Failed | StepState::Uncertain)) else {
            return Err(EngineError::WrongState {
                id,
                status: enrollment.status,
                what: "it has no failed step to retry",
            });
        };
        tx.insert_step(id, &last.step_id, last.attempt + 1, now, None, now).await?;
        tx.reopen_enrollment(id, &last.step_id, now).await?;
        tx.commit().await?;
        self.notify();
        Ok(())
    }
}
