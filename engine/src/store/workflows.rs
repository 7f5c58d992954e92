//! Workflows and their versions, enrollments, step executions, durable
//! timers and schedule ticks.

use chrono::{DateTime, Utc};
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use uuid::Uuid;

use super::entities::{enrollment, schedule_tick, step_execution, timer, workflow, workflow_version};
use super::status::{EnrollmentStatus, StepState, TimerState};
use super::{Store, StoreError};
use crate::ids::{ContactId, EnrollmentId, StepExecutionId, TimerId, WorkflowId, WorkflowVersionId};

pub type Workflow = workflow::Model;
pub type WorkflowVersion = workflow_version::Model;
pub type Enrollment = enrollment::Model;
pub type StepExecution = step_execution::Model;
pub type Timer = timer::Model;

/// Whether a workflow takes new enrollments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WorkflowState {
    /// Triggers, schedules and the API enroll contacts.
    Active,
    /// An operator paused it: nothing new enrolls, schedules do not fire;
    /// running enrollments go on.
    Paused,
    /// Its file was removed: as paused, until a file with its id is back.
    Archived,
}

impl WorkflowState {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkflowState::Active => "active",
            WorkflowState::Paused => "paused",
            WorkflowState::Archived => "archived",
        }
    }

    /// The state a stored value names (anything unknown counts as paused:
    /// it enrolls nobody).
    pub fn of(workflow: &Workflow) -> WorkflowState {
        match workflow.state.as_str() {
            "active" => WorkflowState::Active,
            "archived" => WorkflowState::Archived,
            _ => WorkflowState::Paused,
        }
    }
}

/// What [`Store::save_workflow_version`] did.
#[derive(Debug, Clone)]
pub struct SavedVersion {
    pub workflow: Workflow,
    pub version: WorkflowVersion,
    /// False when this content was already stored: nothing new was written.
    pub created: bool,
}

#[derive(Debug, Clone)]
pub struct NewEnrollment {
    pub workflow_id: WorkflowId,
    pub workflow_version_id: WorkflowVersionId,
    pub contact_id: ContactId,
    pub trigger_kind: String,
    pub trigger_data: serde_json::Value,
}

#[derive(Debug, Clone)]
pub struct NewStepExecution {
    pub enrollment_id: EnrollmentId,
    pub step_id: String,
    pub attempt: i32,
    pub due_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct NewTimer {
    pub enrollment_id: EnrollmentId,
    pub step_execution_id: Option<StepExecutionId>,
    pub kind: String,
    pub wake_at: DateTime<Utc>,
}

impl Store {
    /// Sets a workflow's state. `None` when there is no workflow `key`.
    pub async fn set_workflow_state(
        &self,
        key: &str,
        state: WorkflowState,
        now: DateTime<Utc>,
    ) -> Result<Option<Workflow>, StoreError> {
        let _turn = self.write_turn().await;
        let Some(found) = self.workflow_by_key(key).await? else { return Ok(None) };
        let mut row: workflow::ActiveModel = found.into();
        row.state = Set(state.as_str().to_string());
        row.updated_at = Set(now);
        row.update(&self.db).await.map(Some).map_err(|e| self.query_error(e))
    }

    /// Records the file a workflow was loaded from; a workflow archived
    /// because its file was removed is active again.
    pub async fn note_workflow_file(&self, key: &str, path: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
        let _turn = self.write_turn().await;
        let Some(found) = self.workflow_by_key(key).await? else { return Ok(()) };
        let archived = WorkflowState::of(&found) == WorkflowState::Archived;
        if found.source_path.as_deref() == Some(path) && !archived {
            return Ok(());
        }
        let mut row: workflow::ActiveModel = found.into();
        row.source_path = Set(Some(path.to_string()));
        if archived {
            row.state = Set(WorkflowState::Active.as_str().to_string());
        }
        row.updated_at = Set(now);
        row.update(&self.db).await.map(|_| ()).map_err(|e| self.query_error(e))
    }

    /// Stores a workflow's content as its newest version, unless this exact
    /// content (same hash) is already a version of it. The workflow row is
    /// created on first sight and points at its newest version.
    pub async fn save_workflow_version(
        &self,
        key: &str,
        name: &str,
        content_hash: &str,
        definition: serde_json::Value,
        source: &str,
        now: DateTime<Utc>,
    ) -> Result<SavedVersion, StoreError> {
        let txn = self.begin_write().await.map_err(|e| self.query_error(e))?;
        let existing = workflow::Entity::find()
            .filter(workflow::Column::Key.eq(key))
            .one(&txn)
            .await
            .map_err(|e| self.query_error(e))?;
        let wf = match existing {
            Some(wf) => wf,
            None => workflow::ActiveModel {
                id: Set(WorkflowId::new()),
                key: Set(key.to_string()),
                name: Set(name.to_string()),
                source_path: Set(None),
                current_version_id: Set(None),
                state: Set(WorkflowState::Active.as_str().to_string()),
                created_at: Set(now),
                updated_at: Set(now),
            }
            .insert(&txn)
            .await
            .map_err(|e| self.insert_error(e, || format!("workflow {key}")))?,
        };
        let same = workflow_version::Entity::find()
            .filter(workflow_version::Column::WorkflowId.eq(wf.id))
            .filter(workflow_version::Column::ContentHash.eq(content_hash))
            .one(&txn)
            .await
            .map_err(|e| self.query_error(e))?;
        if let Some(version) = same {
            txn.commit().await.map_err(|e| self.query_error(e))?;
            return Ok(SavedVersion { workflow: wf, version, created: false });
        }
        let last = workflow_version::Entity::find()
            .filter(workflow_version::Column::WorkflowId.eq(wf.id))
            .order_by_desc(workflow_version::Column::Version)
            .limit(1)
            .one(&txn)
            .await
            .map_err(|e| self.query_error(e))?;
        let version = workflow_version::ActiveModel {
            id: Set(WorkflowVersionId::new()),
            workflow_id: Set(wf.id),
            version: Set(last.map_or(1, |v| v.version + 1)),
            content_hash: Set(content_hash.to_string()),
            definition: Set(definition),
            source: Set(source.to_string()),
            created_at: Set(now),
        }
        .insert(&txn)
        .await
        .map_err(|e| self.insert_error(e, || format!("version {content_hash} of workflow {key}")))?;
        let mut current: workflow::ActiveModel = wf.into();
        current.name = Set(name.to_string());
        current.current_version_id = Set(Some(version.id));
        current.updated_at = Set(now);
        let wf = current.update(&txn).await.map_err(|e| self.query_error(e))?;
        txn.commit().await.map_err(|e| self.query_error(e))?;
        Ok(SavedVersion { workflow: wf, version, created: true })
    }

    pub async fn workflow_by_key(&self, key: &str) -> Result<Option<Workflow>, StoreError> {
        workflow::Entity::find()
            .filter(workflow::Column::Key.eq(key))
            .one(&self.db)
            .await
            .map_err(|e| self.query_error(e))
    }

    pub async fn workflow_version(&self, id: WorkflowVersionId) -> Result<Option<WorkflowVersion>, StoreError> {
        workflow_version::Entity::find_by_id(id).one(&self.db).await.map_err(|e| self.query_error(e))
    }

    pub async fn insert_enrollment(&self, new: NewEnrollment, now: DateTime<Utc>) -> Result<Enrollment, StoreError> {
        enrollment::Entity::insert(enrollment_row(new, now))
            .exec_with_returning(&self.db)
            .await
            .map_err(|e| self.query_error(e))
    }

    pub async fn enrollment(&self, id: EnrollmentId) -> Result<Option<Enrollment>, StoreError> {
        enrollment::Entity::find_by_id(id).one(&self.db).await.map_err(|e| self.query_error(e))
    }

    pub async fn insert_step_execution(
        &self,
        new: NewStepExecution,
        now: DateTime<Utc>,
    ) -> Result<StepExecution, StoreError> {
        let (enrollment, step, attempt) = (new.enrollment_id, new.step_id.clone(), new.attempt);
        let row = step_execution::ActiveModel {
            id: Set(StepExecutionId::new()),
            enrollment_id: Set(new.enrollment_id),
            step_id: Set(new.step_id),
            attempt: Set(new.attempt),
            state: Set(StepState::Pending),
            output: Set(None),
            error: Set(None),
            lease_owner: Set(None),
            lease_expires_at: Set(None),
            due_at: Set(new.due_at),
            started_at: Set(None),
            finished_at: Set(None),
            created_at: Set(now),
        };
        step_execution::Entity::insert(row)
            .exec_with_returning(&self.db)
            .await
            .map_err(|e| self.insert_error(e, || format!("enrollment {enrollment}, step {step}, attempt {attempt}")))
    }

    /// An enrollment's step executions in the order they were created.
    pub async fn step_executions(&self, enrollment: EnrollmentId) -> Result<Vec<StepExecution>, StoreError> {
        step_execution::Entity::find()
            .filter(step_execution::Column::EnrollmentId.eq(enrollment))
            .order_by_asc(step_execution::Column::CreatedAt)
            .order_by_asc(step_execution::Column::Id)
            .all(&self.db)
            .await
            .map_err(|e| self.query_error(e))
    }

    pub async fn insert_timer(&self, new: NewTimer, now: DateTime<Utc>) -> Result<Timer, StoreError> {
        let row = timer::ActiveModel {
            id: Set(TimerId::new()),
            enrollment_id: Set(new.enrollment_id),
            step_execution_id: Set(new.step_execution_id),
            kind: Set(new.kind),
            state: Set(TimerState::Pending),
            wake_at: Set(new.wake_at),
            lease_owner: Set(None),
            lease_expires_at: Set(None),
            fired_at: Set(None),
            created_at: Set(now),
        };
        timer::Entity::insert(row).exec_with_returning(&self.db).await.map_err(|e| self.query_error(e))
    }

    /// Pending timers whose time has come, earliest first.
    pub async fn due_timers(&self, now: DateTime<Utc>, limit: u64) -> Result<Vec<Timer>, StoreError> {
        timer::Entity::find()
            .filter(timer::Column::State.eq(TimerState::Pending))
            .filter(timer::Column::WakeAt.lte(now))
            .order_by_asc(timer::Column::WakeAt)
            .limit(limit)
            .all(&self.db)
            .await
            .map_err(|e| self.query_error(e))
    }

    /// Records that a schedule's tick fired. Returns false when that tick was
    /// already recorded (by this or another worker), so a tick fires once.
    pub async fn record_schedule_tick(
        &self,
        workflow: WorkflowId,
        trigger_key: &str,
        tick_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let row = schedule_tick::ActiveModel {
            id: Set(Uuid::now_v7()),
            workflow_id: Set(workflow),
            trigger_key: Set(trigger_key.to_string()),
            tick_at: Set(tick_at),
            fired_at: Set(now),
        };
        match schedule_tick::Entity::insert(row).exec_without_returning(&self.db).await {
            Ok(_) => Ok(true),
            Err(e) => match self.insert_error(e, String::new) {
                StoreError::Duplicate { .. } => Ok(false),
                other => Err(other),
            },
        }
    }
}

/// A new enrollment row: active, nothing run yet. The one constructor, so
/// the store and the runtime's transactions write the same row.
pub(super) fn enrollment_row(new: NewEnrollment, now: DateTime<Utc>) -> enrollment::ActiveModel {
    enrollment::ActiveModel {
        id: Set(EnrollmentId::new()),
        workflow_id: Set(new.workflow_id),
        workflow_version_id: Set(new.workflow_version_id),
        contact_id: Set(new.contact_id),
        status: Set(EnrollmentStatus::Active),
        trigger_kind: Set(new.trigger_kind),
        trigger_data: Set(new.trigger_data),
        current_step: Set(None),
        exit_reason: Set(None),
        error: Set(None),
        enrolled_at: Set(now),
        updated_at: Set(now),
        finished_at: Set(None),
    }
}
