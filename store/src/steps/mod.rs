//! Step executions: one row per attempt of a step of an enrollment; written
//! when a step is scheduled, finished, deferred or taken over, and read for
//! what a run needs. Claims and leases are in [`claims`].
//!
//! Invariant: a completion whose lease was lost changes nothing.

mod claims;

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Statement, Value};
use uuid::Uuid;

use crate::entities::{consent, contact, enrollment, step_execution};
use crate::{Backend, Consent, Contact, Enrollment, Store, StoreError, Tx};
use kairo_core::ids::{ContactId, EnrollmentId, StepExecutionId};
use kairo_core::status::StepState;

/// Everything a step needs to know about the enrollments it runs in.
#[derive(Debug, Clone, Default)]
pub struct RunRows {
    pub enrollments: Vec<Enrollment>,
    pub contacts: Vec<Contact>,
    pub consents: Vec<Consent>,
    /// Every step execution of those enrollments, oldest first.
    pub steps: Vec<StepExecution>,
}

/// What a finished step execution records.
#[derive(Debug, Clone)]
pub struct StepRecord {
    pub state: StepState,
    pub output: Option<serde_json::Value>,
    pub error: Option<String>,
}

/// Finished steps, the first start and the last finish.
pub type StepSpan = (u64, Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// The stored name of a step state (what the active enum writes).
pub(super) fn state_name(state: StepState) -> String {
    use sea_orm::ActiveEnum;
    state.to_value()
}

pub type StepExecution = step_execution::Model;

#[derive(Debug, Clone)]
pub struct NewStepExecution {
    pub enrollment_id: EnrollmentId,
    pub step_id: String,
    pub attempt: i32,
    pub due_at: DateTime<Utc>,
}

impl Store {
    /// The rows a batch of steps runs against.
    pub async fn run_rows(&self, enrollments: &[EnrollmentId]) -> Result<RunRows, StoreError> {
        if enrollments.is_empty() {
            return Ok(RunRows::default());
        }
        let q = |e| self.query_error(e);
        let enrollment_rows = enrollment::Entity::find()
            .filter(enrollment::Column::Id.is_in(enrollments.iter().copied()))
            .all(&self.db)
            .await
            .map_err(q)?;
        let contact_ids: Vec<ContactId> = enrollment_rows.iter().map(|e| e.contact_id).collect();
        let contacts = contact::Entity::find()
            .filter(contact::Column::Id.is_in(contact_ids.clone()))
            .all(&self.db)
            .await
            .map_err(q)?;
        let consents = consent::Entity::find()
            .filter(consent::Column::ContactId.is_in(contact_ids))
            .all(&self.db)
            .await
            .map_err(q)?;
        let steps = step_execution::Entity::find()
            .filter(step_execution::Column::EnrollmentId.is_in(enrollments.iter().copied()))
            .order_by_asc(step_execution::Column::Id)
            .all(&self.db)
            .await
            .map_err(q)?;
        Ok(RunRows { enrollments: enrollment_rows, contacts, consents, steps })
    }

    /// How many steps finished, from the first start to the last finish:
    /// what the throughput benchmark divides.
    pub async fn step_span(&self) -> Result<StepSpan, StoreError> {
        type Row = (i64, Option<DateTime<Utc>>, Option<DateTime<Utc>>); // count, first start, last finish
        let row: Option<Row> = step_execution::Entity::find()
            .select_only()
            .column_as(step_execution::Column::Id.count(), "n")
            .column_as(step_execution::Column::StartedAt.min(), "first")
            .column_as(step_execution::Column::FinishedAt.max(), "last")
            .filter(step_execution::Column::FinishedAt.is_not_null())
            .into_tuple()
            .one(&self.db)
            .await
            .map_err(|e| self.query_error(e))?;
        Ok(row.map_or((0, None, None), |(n, first, last)| (n.max(0) as u64, first, last)))
    }

    /// The earliest due time of a pending step.
    pub async fn next_due_step(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let row = step_execution::Entity::find()
            .filter(step_execution::Column::State.eq(StepState::Pending))
            .order_by_asc(step_execution::Column::DueAt)
            .limit(1)
            .one(&self.db)
            .await
            .map_err(|e| self.query_error(e))?;
        Ok(row.map(|r| r.due_at))
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
}

impl Tx {
    /// An enrollment's pending, parked and claimed steps become `cancelled`.
    pub(crate) async fn cancel_open_steps(&self, id: EnrollmentId, now: DateTime<Utc>) -> Result<(), StoreError> {
        step_execution::Entity::update_many()
            .col_expr(step_execution::Column::State, Expr::value(StepState::Cancelled))
            .col_expr(step_execution::Column::FinishedAt, Expr::value(Some(now)))
            .col_expr(step_execution::Column::LeaseOwner, Expr::value(Option::<String>::None))
            .col_expr(step_execution::Column::LeaseExpiresAt, Expr::value(Option::<DateTime<Utc>>::None))
            .filter(step_execution::Column::EnrollmentId.eq(id))
            .filter(step_execution::Column::State.is_in(StepState::OPEN))
            .exec(&self.txn)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Pending steps held for a paused number (`waiting: number_paused` in
    /// their output) are due now: the number was resumed.
    pub(crate) async fn release_held_steps(&self, display_number: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
        let held = match self.store.backend {
            Backend::Postgres => "output->>'waiting' = 'number_paused' AND output->>'number' = $2",
            Backend::Sqlite => {
                "json_extract(output, '$.waiting') = 'number_paused' AND json_extract(output, '$.number') = $2"
            }
        };
        let sql = format!("UPDATE step_executions SET due_at = $1 WHERE state = 'pending' AND due_at > $1 AND {held}");
        self.txn
            .execute_raw(sea_orm::Statement::from_sql_and_values(
                self.store.db_backend(),
                sql,
                [now.into(), display_number.into()],
            ))
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Finishes a step execution that is in one of `from` (and, when `owner`
    /// is given, still held by it). False: someone else moved it first, and
    /// the caller must drop the whole completion.
    pub async fn finish_step(
        &self,
        step: StepExecutionId,
        owner: Option<&str>,
        from: &[StepState],
        record: StepRecord,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        debug_assert!(from.iter().all(|f| f.may_become(record.state)), "{from:?} -> {:?}", record.state);
        let mut update = step_execution::Entity::update_many()
            .col_expr(step_execution::Column::State, Expr::value(record.state))
            .col_expr(step_execution::Column::Output, Expr::value(record.output))
            .col_expr(step_execution::Column::Error, Expr::value(record.error))
            .col_expr(step_execution::Column::LeaseOwner, Expr::value(Option::<String>::None))
            .col_expr(step_execution::Column::LeaseExpiresAt, Expr::value(Option::<DateTime<Utc>>::None))
            .col_expr(step_execution::Column::FinishedAt, Expr::value(Some(now)))
            .filter(step_execution::Column::Id.eq(step))
            .filter(step_execution::Column::State.is_in(from.iter().copied()));
        if let Some(owner) = owner {
            update = update.filter(step_execution::Column::LeaseOwner.eq(owner));
        }
        let res = update.exec(&self.txn).await.map_err(|e| self.err(e))?;
        Ok(res.rows_affected == 1)
    }

    /// [`Tx::finish_step`] for many steps in one statement: steps held by
    /// `owner`, or with `None` steps nobody holds (parked ones). Returns the
    /// steps this call finished; the others had moved on (a lost lease, a
    /// cancellation) and their completions must be dropped.
    pub async fn finish_steps(
        &self,
        owner: Option<&str>,
        finishes: &[(StepExecutionId, StepRecord)],
        from: &[StepState],
        now: DateTime<Utc>,
    ) -> Result<HashSet<StepExecutionId>, StoreError> {
        let mut won = HashSet::new();
        debug_assert!(
            finishes.iter().all(|(_, r)| from.iter().all(|f| f.may_become(r.state))),
            "a step moved where it may not: from {from:?}"
        );
        // Chunks keep the statement under SQLite's bound-parameter limit.
        // `id IN (SELECT id FROM v)` lets SQLite look rows up by key; with
        // the join alone it scans the whole table for every batch.
        for chunk in finishes.chunks(1000) {
            let pg = self.store.backend == Backend::Postgres;
            let mut values: Vec<Value> = vec![owner.unwrap_or_default().into(), now.into()];
            let mut rows = Vec::with_capacity(chunk.len());
            for (id, record) in chunk {
                let n = values.len();
                rows.push(if pg {
                    format!("(${}::uuid, ${}, ${}::jsonb, ${})", n + 1, n + 2, n + 3, n + 4)
                } else {
                    format!("(${}, ${}, ${}, ${})", n + 1, n + 2, n + 3, n + 4)
                });
                values.push(Value::Uuid(Some(id.as_uuid())));
                values.push(state_name(record.state).into());
                values.push(Value::Json(record.output.clone().map(Box::new)));
                values.push(record.error.clone().into());
            }
            let states = from.iter().map(|s| format!("'{}'", state_name(*s))).collect::<Vec<_>>().join(", ");
            let held = match owner {
                Some(_) => "step_executions.lease_owner = $1",
                // $1 is '' here; naming it keeps PostgreSQL able to type it.
                None => "step_executions.lease_owner IS NULL AND $1 = ''",
            };
            let sql = format!(
                "WITH v(id, state, output, error) AS (VALUES {}) \
                 UPDATE step_executions SET state = v.state, output = v.output, error = v.error, \
                 lease_owner = NULL, lease_expires_at = NULL, finished_at = $2 FROM v \
                 WHERE step_executions.id = v.id AND step_executions.id IN (SELECT id FROM v) AND {held} \
                 AND step_executions.state IN ({states}) RETURNING step_executions.id",
                rows.join(", ")
            );
            let rows = self
                .txn
                .query_all_raw(Statement::from_sql_and_values(self.txn.get_database_backend(), sql, values))
                .await
                .map_err(|e| self.err(e))?;
            for row in rows {
                let id: Uuid = row.try_get_by_index(0).map_err(|e| self.err(e))?;
                won.insert(StepExecutionId(id));
            }
        }
        Ok(won)
    }

    /// Inserts step executions built by the caller, in one statement per chunk.
    pub async fn insert_steps(&self, rows: &[StepExecution]) -> Result<(), StoreError> {
        if rows.iter().any(|row| row.state == StepState::Pending) {
            self.pending_steps.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        for chunk in rows.chunks(self.store.rows_per_insert()) {
            let models = chunk.iter().map(|row| step_execution::ActiveModel {
                id: Set(row.id),
                enrollment_id: Set(row.enrollment_id),
                step_id: Set(row.step_id.clone()),
                attempt: Set(row.attempt),
                state: Set(row.state),
                output: Set(row.output.clone()),
                error: Set(row.error.clone()),
                lease_owner: Set(row.lease_owner.clone()),
                lease_expires_at: Set(row.lease_expires_at),
                due_at: Set(row.due_at),
                started_at: Set(row.started_at),
                finished_at: Set(row.finished_at),
                created_at: Set(row.created_at),
            });
            step_execution::Entity::insert_many(models).exec_without_returning(&self.txn).await.map_err(|e| {
                self.store.insert_error(e, || "a step execution of this enrollment and attempt".to_string())
            })?;
        }
        Ok(())
    }

    /// Puts a claimed step back to pending, due at `due_at` (quiet hours, a
    /// paused number): the same attempt, not a new one.
    pub async fn defer_step(
        &self,
        step: StepExecutionId,
        owner: &str,
        due_at: DateTime<Utc>,
        output: Option<serde_json::Value>,
    ) -> Result<bool, StoreError> {
        let mut update = step_execution::Entity::update_many();
        if let Some(output) = output {
            update = update.col_expr(step_execution::Column::Output, Expr::value(output));
        }
        let res = update
            .col_expr(step_execution::Column::State, Expr::value(StepState::Pending))
            .col_expr(step_execution::Column::DueAt, Expr::value(due_at))
            .col_expr(step_execution::Column::LeaseOwner, Expr::value(Option::<String>::None))
            .col_expr(step_execution::Column::LeaseExpiresAt, Expr::value(Option::<DateTime<Utc>>::None))
            .filter(step_execution::Column::Id.eq(step))
            .filter(step_execution::Column::State.is_in(StepState::HELD))
            .filter(step_execution::Column::LeaseOwner.eq(owner))
            .exec(&self.txn)
            .await
            .map_err(|e| self.err(e))?;
        Ok(res.rows_affected == 1)
    }

    /// Inserts the next step execution: pending, or already claimed by
    /// `claimed_by` (a worker running the enrollment on at once).
    pub async fn insert_step(
        &self,
        enrollment: EnrollmentId,
        step_id: &str,
        attempt: i32,
        due_at: DateTime<Utc>,
        claimed_by: Option<(&str, DateTime<Utc>)>,
        now: DateTime<Utc>,
    ) -> Result<StepExecution, StoreError> {
        let (state, owner, lease, started) = match claimed_by {
            Some((owner, until)) => (StepState::Claimed, Some(owner.to_string()), Some(until), Some(now)),
            None => (StepState::Pending, None, None, None),
        };
        let row = step_execution::ActiveModel {
            id: Set(StepExecutionId::new()),
            enrollment_id: Set(enrollment),
            step_id: Set(step_id.to_string()),
            attempt: Set(attempt),
            state: Set(state),
            output: Set(None),
            error: Set(None),
            lease_owner: Set(owner),
            lease_expires_at: Set(lease),
            due_at: Set(due_at),
            started_at: Set(started),
            finished_at: Set(None),
            created_at: Set(now),
        };
        step_execution::Entity::insert(row).exec_with_returning(&self.txn).await.map_err(|e| {
            self.store.insert_error(e, || format!("enrollment {enrollment}, step {step_id}, attempt {attempt}"))
        })
    }

    /// The highest attempt of every step of these enrollments so far.
    pub async fn latest_attempts(
        &self,
        enrollments: &[EnrollmentId],
    ) -> Result<HashMap<(EnrollmentId, String), i32>, StoreError> {
        let mut latest = HashMap::new();
        for chunk in enrollments.chunks(1000) {
            let rows: Vec<(EnrollmentId, String, Option<i32>)> = step_execution::Entity::find()
                .select_only()
                .column(step_execution::Column::EnrollmentId)
                .column(step_execution::Column::StepId)
                .column_as(step_execution::Column::Attempt.max(), "attempt")
                .filter(step_execution::Column::EnrollmentId.is_in(chunk.iter().copied()))
                .group_by(step_execution::Column::EnrollmentId)
                .group_by(step_execution::Column::StepId)
                .into_tuple()
                .all(&self.txn)
                .await
                .map_err(|e| self.err(e))?;
            latest.extend(rows.into_iter().map(|(e, s, a)| ((e, s), a.unwrap_or(0))));
        }
        Ok(latest)
    }

    /// One attempt of a step in an enrollment.
    pub async fn execution(
        &self,
        enrollment: EnrollmentId,
        step_id: &str,
        attempt: i32,
    ) -> Result<Option<StepExecution>, StoreError> {
        step_execution::Entity::find()
            .filter(step_execution::Column::EnrollmentId.eq(enrollment))
            .filter(step_execution::Column::StepId.eq(step_id))
            .filter(step_execution::Column::Attempt.eq(attempt))
            .one(&self.txn)
            .await
            .map_err(|e| self.err(e))
    }

    /// The newest execution of a step in an enrollment.
    pub async fn last_execution(
        &self,
        enrollment: EnrollmentId,
        step_id: Option<&str>,
    ) -> Result<Option<StepExecution>, StoreError> {
        let mut query = step_execution::Entity::find()
            .filter(step_execution::Column::EnrollmentId.eq(enrollment))
            .order_by_desc(step_execution::Column::CreatedAt)
            .order_by_desc(step_execution::Column::Id);
        if let Some(step_id) = step_id {
            query = query.filter(step_execution::Column::StepId.eq(step_id));
        }
        query.one(&self.txn).await.map_err(|e| self.err(e))
    }

    /// Every step execution of these enrollments, oldest first.
    pub async fn steps_of(&self, enrollments: &[EnrollmentId]) -> Result<Vec<StepExecution>, StoreError> {
        if enrollments.is_empty() {
            return Ok(Vec::new());
        }
        step_execution::Entity::find()
            .filter(step_execution::Column::EnrollmentId.is_in(enrollments.iter().copied()))
            .order_by_asc(step_execution::Column::Id)
            .all(&self.txn)
            .await
            .map_err(|e| self.err(e))
    }
}
