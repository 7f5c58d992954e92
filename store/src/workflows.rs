//! Workflows and their versions, as loaded from the workflow folder.

use chrono::{DateTime, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::entities::{workflow, workflow_version};
use super::tx::On;
use super::{Store, StoreError, Tx};
use kairo_core::ids::{WorkflowId, WorkflowVersionId};

pub type Workflow = workflow::Model;

pub type WorkflowVersion = workflow_version::Model;

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

async fn by_key(on: &impl On, key: &str) -> Result<Option<Workflow>, StoreError> {
    workflow::Entity::find().filter(workflow::Column::Key.eq(key)).one(on.conn()).await.map_err(|e| on.error(e))
}

async fn version_by_id(on: &impl On, id: WorkflowVersionId) -> Result<Option<WorkflowVersion>, StoreError> {
    workflow_version::Entity::find_by_id(id).one(on.conn()).await.map_err(|e| on.error(e))
}

impl Store {
    /// Workflows with their newest version id: what the runtime keeps loaded.
    pub async fn workflows(&self) -> Result<Vec<super::Workflow>, StoreError> {
        workflow::Entity::find().all(&self.db).await.map_err(|e| self.query_error(e))
    }

    pub async fn workflow(&self, id: WorkflowId) -> Result<Option<Workflow>, StoreError> {
        workflow::Entity::find_by_id(id).one(&self.db).await.map_err(|e| self.query_error(e))
    }

    /// A workflow's versions, newest first.
    pub async fn workflow_versions(&self, id: WorkflowId) -> Result<Vec<WorkflowVersion>, StoreError> {
        workflow_version::Entity::find()
            .filter(workflow_version::Column::WorkflowId.eq(id))
            .order_by_desc(workflow_version::Column::Version)
            .all(&self.db)
            .await
            .map_err(|e| self.query_error(e))
    }

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
        by_key(self, key).await
    }

    pub async fn workflow_version(&self, id: WorkflowVersionId) -> Result<Option<WorkflowVersion>, StoreError> {
        version_by_id(self, id).await
    }
}

impl Tx {
    /// The workflow `key` as this transaction sees it: enrolling reads its
    /// current version and state here, so a version the database already
    /// shows is the one new enrollments take, whatever this process cached.
    pub async fn workflow_by_key(&self, key: &str) -> Result<Option<Workflow>, StoreError> {
        by_key(self, key).await
    }

    /// The version an enrollment runs on.
    pub async fn workflow_version(&self, id: WorkflowVersionId) -> Result<Option<WorkflowVersion>, StoreError> {
        version_by_id(self, id).await
    }
}
