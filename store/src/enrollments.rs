//! Enrollments: a contact's run through one workflow version, its status and
//! current step, and the counts the re-enrollment rules look at.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Statement, Value};
use uuid::Uuid;

use super::entities::{contact, enrollment};
use super::paging::{Page, page};
use super::tx::{IN_LIST, On};
use super::{Backend, Store, StoreError, Tx};
use kairo_core::ids::{ContactId, EnrollmentId, WorkflowId, WorkflowVersionId};
use kairo_core::status::EnrollmentStatus;

/// A change of an enrollment that is still running.
#[derive(Debug, Clone)]
pub struct EnrollmentChange {
    pub status: EnrollmentStatus,
    pub current_step: Option<String>,
    pub exit_reason: Option<String>,
    pub error: Option<String>,
}

/// Who is already enrolled: what the re-enrollment rules look at.
#[derive(Debug, Clone, Default)]
pub struct EnrollmentHistory {
    /// Enrollments of this contact in this workflow, any status.
    pub total: u64,
    /// Of those, how many are still running (active or waiting).
    pub running: u64,
    pub last_enrolled_at: Option<DateTime<Utc>>,
}

pub(super) fn enrollment_status_name(status: EnrollmentStatus) -> String {
    use sea_orm::ActiveEnum;
    status.to_value()
}

/// Which enrollments to list.
#[derive(Debug, Clone, Default)]
pub struct EnrollmentFilter {
    pub workflow: Option<WorkflowId>,
    pub status: Option<EnrollmentStatus>,
    pub contact: Option<ContactId>,
    /// List enrollments older than this one.
    pub before: Option<EnrollmentId>,
    pub limit: u64,
}

pub type Enrollment = enrollment::Model;

#[derive(Debug, Clone)]
pub struct NewEnrollment {
    pub workflow_id: WorkflowId,
    pub workflow_version_id: WorkflowVersionId,
    pub contact_id: ContactId,
    pub trigger_kind: String,
    pub trigger_data: serde_json::Value,
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

async fn insert_enrollment(on: &impl On, new: NewEnrollment, now: DateTime<Utc>) -> Result<Enrollment, StoreError> {
    enrollment::Entity::insert(enrollment_row(new, now)).exec_with_returning(on.conn()).await.map_err(|e| on.error(e))
}

async fn enrollment_by_id(on: &impl On, id: EnrollmentId) -> Result<Option<Enrollment>, StoreError> {
    enrollment::Entity::find_by_id(id).one(on.conn()).await.map_err(|e| on.error(e))
}

impl Store {
    /// Counts of enrollments per status, for one workflow or all.
    pub async fn enrollment_counts(
        &self,
        workflow: Option<WorkflowId>,
    ) -> Result<Vec<(EnrollmentStatus, u64)>, StoreError> {
        let mut query = enrollment::Entity::find()
            .select_only()
            .column(enrollment::Column::Status)
            .column_as(enrollment::Column::Id.count(), "n")
            .group_by(enrollment::Column::Status);
        if let Some(workflow) = workflow {
            query = query.filter(enrollment::Column::WorkflowId.eq(workflow));
        }
        query
            .into_tuple::<(EnrollmentStatus, i64)>()
            .all(&self.db)
            .await
            .map_err(|e| self.query_error(e))
            .map(|rows| rows.into_iter().map(|(status, n)| (status, n.max(0) as u64)).collect())
    }

    /// Enrollments of a contact, oldest first.
    pub async fn enrollments_of(&self, contact: ContactId) -> Result<Vec<Enrollment>, StoreError> {
        enrollment::Entity::find()
            .filter(enrollment::Column::ContactId.eq(contact))
            .order_by_asc(enrollment::Column::Id)
            .all(&self.db)
            .await
            .map_err(|e| self.query_error(e))
    }

    /// Enrollments, newest first.
    pub async fn list_enrollments(&self, filter: EnrollmentFilter) -> Result<Page<Enrollment>, StoreError> {
        let mut query = enrollment::Entity::find().order_by_desc(enrollment::Column::Id);
        if let Some(workflow) = filter.workflow {
            query = query.filter(enrollment::Column::WorkflowId.eq(workflow));
        }
        if let Some(status) = filter.status {
            query = query.filter(enrollment::Column::Status.eq(status));
        }
        if let Some(contact) = filter.contact {
            query = query.filter(enrollment::Column::ContactId.eq(contact));
        }
        if let Some(before) = filter.before {
            query = query.filter(enrollment::Column::Id.lt(before));
        }
        let rows = query.limit(filter.limit + 1).all(&self.db).await.map_err(|e| self.query_error(e))?;
        Ok(page(rows, filter.limit, |e| e.id.to_string()))
    }

    pub async fn insert_enrollment(&self, new: NewEnrollment, now: DateTime<Utc>) -> Result<Enrollment, StoreError> {
        insert_enrollment(self, new, now).await
    }

    pub async fn enrollment(&self, id: EnrollmentId) -> Result<Option<Enrollment>, StoreError> {
        enrollment_by_id(self, id).await
    }
}

impl Tx {
    /// [`Tx::change_enrollment`] for many running enrollments in one
    /// statement. Returns the enrollments it changed (those still running).
    pub async fn change_enrollments(
        &self,
        changes: &[(EnrollmentId, EnrollmentChange)],
        now: DateTime<Utc>,
    ) -> Result<HashSet<EnrollmentId>, StoreError> {
        let mut changed = HashSet::new();
        for chunk in changes.chunks(1000) {
            let pg = self.store.backend == Backend::Postgres;
            let mut values: Vec<Value> = vec![now.into()];
            let mut rows = Vec::with_capacity(chunk.len());
            for (id, change) in chunk {
                let n = values.len();
                rows.push(if pg {
                    format!(
                        "(${}::uuid, ${}, ${}, ${}::timestamptz, ${}, ${})",
                        n + 1,
                        n + 2,
                        n + 3,
                        n + 4,
                        n + 5,
                        n + 6
                    )
                } else {
                    format!("(${}, ${}, ${}, ${}, ${}, ${})", n + 1, n + 2, n + 3, n + 4, n + 5, n + 6)
                });
                let finished = !change.status.is_running();
                values.push(Value::Uuid(Some(id.as_uuid())));
                values.push(enrollment_status_name(change.status).into());
                values.push(change.current_step.clone().into());
                values.push(if finished { Some(now) } else { None }.into());
                values.push(change.exit_reason.clone().into());
                values.push(change.error.clone().into());
            }
            let sql = format!(
                "WITH v(id, status, current_step, finished_at, exit_reason, error) AS (VALUES {}) \
                 UPDATE enrollments SET status = v.status, current_step = v.current_step, updated_at = $1, \
                 finished_at = COALESCE(v.finished_at, enrollments.finished_at), \
                 exit_reason = COALESCE(v.exit_reason, enrollments.exit_reason), \
                 error = COALESCE(v.error, enrollments.error) FROM v \
                 WHERE enrollments.id = v.id AND enrollments.id IN (SELECT id FROM v) \
                 AND enrollments.status IN ('active', 'waiting') \
                 RETURNING enrollments.id",
                rows.join(", ")
            );
            let rows = self
                .txn
                .query_all_raw(Statement::from_sql_and_values(self.txn.get_database_backend(), sql, values))
                .await
                .map_err(|e| self.err(e))?;
            for row in rows {
                let id: Uuid = row.try_get_by_index(0).map_err(|e| self.err(e))?;
                changed.insert(EnrollmentId(id));
            }
        }
        Ok(changed)
    }

    /// Moves a running enrollment to its next state. False when it had
    /// already finished (cancelled by an operator, exited on an event).
    pub async fn change_enrollment(
        &self,
        id: EnrollmentId,
        change: EnrollmentChange,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let finished = !change.status.is_running();
        let mut update = enrollment::Entity::update_many()
            .col_expr(enrollment::Column::Status, Expr::value(change.status))
            .col_expr(enrollment::Column::CurrentStep, Expr::value(change.current_step))
            .col_expr(enrollment::Column::UpdatedAt, Expr::value(now))
            .filter(enrollment::Column::Id.eq(id))
            .filter(enrollment::Column::Status.is_in(EnrollmentStatus::RUNNING));
        if finished {
            update = update
                .col_expr(enrollment::Column::FinishedAt, Expr::value(Some(now)))
                .col_expr(enrollment::Column::ExitReason, Expr::value(change.exit_reason))
                .col_expr(enrollment::Column::Error, Expr::value(change.error));
        }
        let res = update.exec(&self.txn).await.map_err(|e| self.err(e))?;
        Ok(res.rows_affected == 1)
    }

    /// Ends what an enrollment still has scheduled: its open steps (pending,
    /// parked or claimed) become `cancelled` and pending timers are cancelled.
    pub async fn cancel_scheduled(&self, id: EnrollmentId, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.cancel_open_steps(id, now).await?;
        self.cancel_pending_timers(id).await
    }

    /// Makes a failed enrollment active again at `step` (an operator retry).
    pub async fn reopen_enrollment(&self, id: EnrollmentId, step: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
        enrollment::Entity::update_many()
            .col_expr(enrollment::Column::Status, Expr::value(EnrollmentStatus::Active))
            .col_expr(enrollment::Column::CurrentStep, Expr::value(Some(step.to_string())))
            .col_expr(enrollment::Column::Error, Expr::value(Option::<String>::None))
            .col_expr(enrollment::Column::FinishedAt, Expr::value(Option::<DateTime<Utc>>::None))
            .col_expr(enrollment::Column::UpdatedAt, Expr::value(now))
            .filter(enrollment::Column::Id.eq(id))
            .filter(enrollment::Column::Status.eq(EnrollmentStatus::Failed))
            .exec(&self.txn)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub async fn insert_enrollment(&self, new: NewEnrollment, now: DateTime<Utc>) -> Result<Enrollment, StoreError> {
        insert_enrollment(self, new, now).await
    }

    pub async fn enrollment(&self, id: EnrollmentId) -> Result<Option<Enrollment>, StoreError> {
        enrollment_by_id(self, id).await
    }

    /// Running enrollments of a contact.
    pub async fn running_enrollments(&self, contact: ContactId) -> Result<Vec<Enrollment>, StoreError> {
        enrollment::Entity::find()
            .filter(enrollment::Column::ContactId.eq(contact))
            .filter(enrollment::Column::Status.is_in(EnrollmentStatus::RUNNING))
            .all(&self.txn)
            .await
            .map_err(|e| self.err(e))
    }
}

impl Tx {
    /// Each contact's enrollments in `workflow`, read at once; on
    /// PostgreSQL the contacts are locked first (in id order, so two
    /// uploads never deadlock), as one enrollment locks its contact.
    pub async fn enrollment_histories(
        &self,
        contacts: &[ContactId],
        workflow: WorkflowId,
    ) -> Result<HashMap<ContactId, EnrollmentHistory>, StoreError> {
        let mut ids = contacts.to_vec();
        ids.sort();
        ids.dedup();
        let mut histories: HashMap<ContactId, EnrollmentHistory> = HashMap::new();
        for chunk in ids.chunks(IN_LIST) {
            if self.store.backend == Backend::Postgres {
                contact::Entity::find()
                    .filter(contact::Column::Id.is_in(chunk.iter().copied()))
                    .order_by_asc(contact::Column::Id)
                    .lock(sea_orm::sea_query::LockType::Update)
                    .all(&self.txn)
                    .await
                    .map_err(|e| self.err(e))?;
            }
            let rows: Vec<(ContactId, EnrollmentStatus, DateTime<Utc>)> = enrollment::Entity::find()
                .select_only()
                .column(enrollment::Column::ContactId)
                .column(enrollment::Column::Status)
                .column(enrollment::Column::EnrolledAt)
                .filter(enrollment::Column::ContactId.is_in(chunk.iter().copied()))
                .filter(enrollment::Column::WorkflowId.eq(workflow))
                .into_tuple()
                .all(&self.txn)
                .await
                .map_err(|e| self.err(e))?;
            for (contact, status, at) in rows {
                let history = histories.entry(contact).or_default();
                history.total += 1;
                history.running += u64::from(status.is_running());
                history.last_enrolled_at = history.last_enrolled_at.max(Some(at));
            }
        }
        Ok(histories)
    }

    /// Inserts new enrollments, built by the caller, in multi-row statements.
    pub async fn insert_started_enrollments(&self, rows: Vec<Enrollment>) -> Result<(), StoreError> {
        let models: Vec<enrollment::ActiveModel> = rows.into_iter().map(enrollment::ActiveModel::from).collect();
        for chunk in models.chunks(self.store.rows_per_insert()) {
            enrollment::Entity::insert_many(chunk.to_vec())
                .exec_without_returning(&self.txn)
                .await
                .map_err(|e| self.err(e))?;
        }
        Ok(())
    }
}
