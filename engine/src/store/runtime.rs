//! Durable runtime state: claiming due steps under a lease, completing them,
//! timers, the event log cursor and enrollment rules.
//!
//! Invariants:
//! - A step is claimed by one worker at most: a claim is a single conditional
//!   UPDATE (with `FOR UPDATE SKIP LOCKED` on PostgreSQL, under SQLite's one
//!   writer), never a read followed by a write.
//! - A step's result, the enrollment's next state and the next step (or the
//!   timer) commit in one transaction ([`Tx`]); a completion whose lease was
//!   lost changes nothing.
//! - A step with an external effect is written `attempting` (and committed)
//!   before the call leaves; a row still `attempting` after its lease ran out
//!   means "outcome unknown", never "run again".

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, LockBehavior, LockType, OnConflict};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, Statement, Value,
};
use uuid::Uuid;

use super::entities::{
    assignment_rule, consent, contact, enrollment, event, message, pending_status, phone_number, schedule_tick,
    step_execution, team, thread, timer, user, workflow, workflow_version,
};
use super::status::{ConsentStatus, EnrollmentStatus, StepState, ThreadStatus, TimerState};
use super::{Backend, Consent, Contact, Enrollment, Event, StepExecution, Store, StoreError, Timer};
use crate::ids::{
    ContactId, EnrollmentId, EventId, PhoneNumberId, StepExecutionId, TeamId, ThreadId, TimerId, UserId, Wamid,
    WorkflowId,
};

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

/// A change of an enrollment that is still running.
#[derive(Debug, Clone)]
pub struct EnrollmentChange {
    pub status: EnrollmentStatus,
    pub current_step: Option<String>,
    pub exit_reason: Option<String>,
    pub error: Option<String>,
}

/// A timer a parked step waits on.
#[derive(Debug, Clone)]
pub struct NewTimerRow {
    pub enrollment_id: EnrollmentId,
    pub step_execution_id: StepExecutionId,
    /// `wait`, `event:<name>` or `reply:<number id>`.
    pub kind: String,
    pub wake_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
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

/// A pending timer, the step execution it belongs to and its enrollment.
#[derive(Debug, Clone)]
pub struct DueTimer {
    pub timer: Timer,
    pub step: StepExecution,
    pub enrollment: Enrollment,
}

/// Where an outbound message sits: what a status event resolves to.
#[derive(Debug, Clone)]
pub struct MessageOrigin {
    pub contact_id: ContactId,
    pub phone_number_id: PhoneNumberId,
    pub enrollment_id: Option<EnrollmentId>,
}

/// Finished steps, the first start and the last finish.
pub type StepSpan = (u64, Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// The running statuses: what "not finished" means.
pub(super) const RUNNING: [EnrollmentStatus; 2] = [EnrollmentStatus::Active, EnrollmentStatus::Waiting];

impl Store {
    /// Claims up to `limit` due pending steps for `owner` until `lease_until`,
    /// earliest due first.
    pub async fn claim_due_steps(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u64,
    ) -> Result<Vec<StepExecution>, StoreError> {
        let _turn = self.write_turn().await;
        let sql = take_sql(
            self.backend,
            "step_executions",
            "state = 'claimed', lease_owner = $1, lease_expires_at = $2, started_at = COALESCE(started_at, $3)",
            "state = 'pending' AND due_at <= $3 ORDER BY due_at LIMIT $4",
        );
        let values: Vec<Value> =
            vec![owner.into(), lease_until.into(), now.into(), Value::BigInt(Some(limit.min(i64::MAX as u64) as i64))];
        step_execution::Entity::find()
            .from_raw_sql(Statement::from_sql_and_values(self.db_backend(), sql, values))
            .all(&self.db)
            .await
            .map_err(|e| self.query_error(e))
    }

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

    /// Records that a step's external call is about to leave. False when the
    /// claim was lost (the lease ran out and another worker took the step):
    /// then the call must not be made.
    pub async fn mark_attempting(
        &self,
        step: StepExecutionId,
        owner: &str,
        output: Option<serde_json::Value>,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let _turn = self.write_turn().await;
        let mut update = step_execution::Entity::update_many();
        if let Some(output) = output {
            update = update.col_expr(step_execution::Column::Output, Expr::value(output));
        }
        let res = update
            .col_expr(step_execution::Column::State, Expr::value(StepState::Attempting))
            .col_expr(step_execution::Column::LeaseExpiresAt, Expr::value(lease_until))
            .filter(step_execution::Column::Id.eq(step))
            // Already `attempting` under this owner: its own mark, written by
            // a group whose answer was lost (a cut connection). Only the
            // owner marks its steps, so the mark holds.
            .filter(step_execution::Column::State.is_in([StepState::Claimed, StepState::Attempting]))
            .filter(step_execution::Column::LeaseOwner.eq(owner))
            .filter(step_execution::Column::LeaseExpiresAt.gt(now))
            .exec(&self.db)
            .await
            .map_err(|e| self.query_error(e))?;
        Ok(res.rows_affected == 1)
    }

    /// Takes back an `attempting` mark of `owner` whose call was not made:
    /// the step is claimed again, as before the mark.
    pub async fn unmark_attempting(&self, step: StepExecutionId, owner: &str) -> Result<bool, StoreError> {
        let _turn = self.write_turn().await;
        let res = step_execution::Entity::update_many()
            .col_expr(step_execution::Column::State, Expr::value(StepState::Claimed))
            .filter(step_execution::Column::Id.eq(step))
            .filter(step_execution::Column::State.eq(StepState::Attempting))
            .filter(step_execution::Column::LeaseOwner.eq(owner))
            .exec(&self.db)
            .await
            .map_err(|e| self.query_error(e))?;
        Ok(res.rows_affected == 1)
    }

    /// [`Store::mark_attempting`] for many steps in one transaction (one
    /// commit instead of one per send). Returns the steps marked.
    pub async fn mark_attempting_many(
        &self,
        owner: &str,
        steps: &[(StepExecutionId, Option<serde_json::Value>)],
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<HashSet<StepExecutionId>, StoreError> {
        // One statement (one commit) per chunk: a send waits for its mark
        // right before its request, so the mark must be quick.
        let _turn = self.write_turn().await;
        let pg = self.backend == Backend::Postgres;
        let mut marked = HashSet::new();
        for chunk in steps.chunks(500) {
            let mut values: Vec<Value> = vec![owner.into(), now.into(), lease_until.into()];
            let mut rows = Vec::with_capacity(chunk.len());
            for (id, output) in chunk {
                let n = values.len();
                rows.push(if pg {
                    format!("(${}::uuid, ${}::jsonb)", n + 1, n + 2)
                } else {
                    format!("(${}, ${})", n + 1, n + 2)
                });
                values.push(Value::Uuid(Some(id.as_uuid())));
                values.push(Value::Json(output.clone().map(Box::new)));
            }
            let sql = format!(
                "WITH v(id, output) AS (VALUES {}) \
                 UPDATE step_executions SET state = 'attempting', lease_expires_at = $3, \
                 output = COALESCE(v.output, step_executions.output) FROM v \
                 WHERE step_executions.id = v.id AND step_executions.id IN (SELECT id FROM v) \
                 AND step_executions.lease_owner = $1 AND step_executions.lease_expires_at > $2 \
                 AND step_executions.state IN ('claimed', 'attempting') RETURNING step_executions.id",
                rows.join(", ")
            );
            let found = self
                .db
                .query_all_raw(Statement::from_sql_and_values(self.db_backend(), sql, values))
                .await
                .map_err(|e| self.query_error(e))?;
            for row in found {
                let id: Uuid = row.try_get_by_index(0).map_err(|e| self.query_error(e))?;
                marked.insert(StepExecutionId(id));
            }
        }
        Ok(marked)
    }

    /// Extends the lease of `steps`, those of them `owner` still holds. A
    /// worker renews only the steps it knows it holds: a claim whose answer
    /// it never got (a cut connection) runs out and is taken by another.
    pub async fn renew_leases(
        &self,
        owner: &str,
        steps: &[StepExecutionId],
        until: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let _turn = self.write_turn().await;
        let mut renewed = 0;
        for chunk in steps.chunks(BATCH_CHUNK) {
            let res = step_execution::Entity::update_many()
                .col_expr(step_execution::Column::LeaseExpiresAt, Expr::value(until))
                .filter(step_execution::Column::LeaseOwner.eq(owner))
                .filter(step_execution::Column::Id.is_in(chunk.iter().copied()))
                .filter(step_execution::Column::State.is_in([StepState::Claimed, StepState::Attempting]))
                .exec(&self.db)
                .await
                .map_err(|e| self.query_error(e))?;
            renewed += res.rows_affected;
        }
        Ok(renewed)
    }

    /// Gives back the steps `owner` claimed but did not start an external
    /// call for (at shutdown): they are pending again, due at once.
    pub async fn release_claims(&self, owner: &str) -> Result<u64, StoreError> {
        let _turn = self.write_turn().await;
        let res = step_execution::Entity::update_many()
            .col_expr(step_execution::Column::State, Expr::value(StepState::Pending))
            .col_expr(step_execution::Column::LeaseOwner, Expr::value(Option::<String>::None))
            .col_expr(step_execution::Column::LeaseExpiresAt, Expr::value(Option::<DateTime<Utc>>::None))
            .filter(step_execution::Column::LeaseOwner.eq(owner))
            .filter(step_execution::Column::State.eq(StepState::Claimed))
            .exec(&self.db)
            .await
            .map_err(|e| self.query_error(e))?;
        Ok(res.rows_affected)
    }

    /// Gives up `owner`'s hold on `steps` at once, leaving them in their
    /// state with an expired lease: a claimed one is queued again, an
    /// `attempting` one is taken over by whoever settles unknown outcomes.
    pub async fn abandon_claims(&self, owner: &str, steps: &[StepExecutionId]) -> Result<u64, StoreError> {
        let _turn = self.write_turn().await;
        let res = step_execution::Entity::update_many()
            .col_expr(step_execution::Column::LeaseOwner, Expr::value(""))
            .col_expr(step_execution::Column::LeaseExpiresAt, Expr::value(DateTime::<Utc>::UNIX_EPOCH))
            .filter(step_execution::Column::LeaseOwner.eq(owner))
            .filter(step_execution::Column::Id.is_in(steps.iter().copied()))
            .exec(&self.db)
            .await
            .map_err(|e| self.query_error(e))?;
        Ok(res.rows_affected)
    }

    /// Claimed steps whose worker stopped renewing its lease go back to
    /// pending: nothing external happened for them, so running them again is
    /// running them once.
    pub async fn requeue_expired_claims(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let _turn = self.write_turn().await;
        // Rows another session holds are skipped (they are being finished or
        // claimed right now) and looked at again next time: maintenance
        // never waits behind a lock.
        let sql = take_sql(
            self.backend,
            "step_executions",
            "state = 'pending', lease_owner = NULL, lease_expires_at = NULL",
            "state = 'claimed' AND lease_expires_at < $1 LIMIT 10000",
        );
        let res = self
            .db
            .execute_raw(Statement::from_sql_and_values(self.db_backend(), sql, [now.into()]))
            .await
            .map_err(|e| self.query_error(e))?;
        Ok(res.rows_affected())
    }

    /// Takes over steps left `attempting` by a worker whose lease ran out, so
    /// that `owner` settles them by the step's unknown-outcome policy.
    pub async fn take_over_unknown_outcomes(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u64,
    ) -> Result<Vec<StepExecution>, StoreError> {
        let _turn = self.write_turn().await;
        let sql = take_sql(
            self.backend,
            "step_executions",
            "lease_owner = $1, lease_expires_at = $2",
            "state = 'attempting' AND lease_expires_at < $3 ORDER BY lease_expires_at LIMIT $4",
        );
        let values: Vec<Value> =
            vec![owner.into(), lease_until.into(), now.into(), Value::BigInt(Some(limit.min(i64::MAX as u64) as i64))];
        step_execution::Entity::find()
            .from_raw_sql(Statement::from_sql_and_values(self.db_backend(), sql, values))
            .all(&self.db)
            .await
            .map_err(|e| self.query_error(e))
    }

    /// Starts a write transaction; on SQLite it waits for this process's turn.
    pub async fn begin(&self) -> Result<Tx, StoreError> {
        let turn = match self.backend {
            Backend::Sqlite => Some(self.write_gate.clone().lock_owned().await),
            Backend::Postgres => None,
        };
        let txn = self.begin_write().await.map_err(|e| self.query_error(e))?;
        Ok(Tx { txn, store: self.clone(), _turn: turn, pending_steps: Default::default() })
    }

    /// Workflows with their newest version id: what the runtime keeps loaded.
    pub async fn workflows(&self) -> Result<Vec<super::Workflow>, StoreError> {
        workflow::Entity::find().all(&self.db).await.map_err(|e| self.query_error(e))
    }

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

    /// Timers that fired, with how late each fired (fired_at - wake_at), in
    /// milliseconds: what the timer benchmark reports.
    pub async fn timer_lateness_ms(&self) -> Result<Vec<i64>, StoreError> {
        let rows: Vec<(DateTime<Utc>, Option<DateTime<Utc>>)> = timer::Entity::find()
            .select_only()
            .column(timer::Column::WakeAt)
            .column(timer::Column::FiredAt)
            .filter(timer::Column::State.eq(TimerState::Fired))
            .into_tuple()
            .all(&self.db)
            .await
            .map_err(|e| self.query_error(e))?;
        Ok(rows.into_iter().filter_map(|(wake, fired)| fired.map(|f| (f - wake).num_milliseconds())).collect())
    }

    /// The earliest pending timer: where a simulation jumps to.
    pub async fn next_timer(&self) -> Result<Option<Timer>, StoreError> {
        timer::Entity::find()
            .filter(Expr::cust(PENDING_TIMER))
            .order_by_asc(timer::Column::WakeAt)
            .limit(1)
            .one(&self.db)
            .await
            .map_err(|e| self.query_error(e))
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

    /// Timers of one enrollment, oldest first.
    pub async fn timers_of(&self, enrollment: EnrollmentId) -> Result<Vec<Timer>, StoreError> {
        timer::Entity::find()
            .filter(timer::Column::EnrollmentId.eq(enrollment))
            .order_by_asc(timer::Column::Id)
            .all(&self.db)
            .await
            .map_err(|e| self.query_error(e))
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

    pub(super) fn db_backend(&self) -> sea_orm::DbBackend {
        self.db.get_database_backend()
    }
}

/// A write transaction with the runtime's domain operations. Dropping it
/// without [`Tx::commit`] rolls everything back.
#[derive(Debug)]
pub struct Tx {
    pub(super) txn: DatabaseTransaction,
    pub(super) store: Store,
    _turn: Option<tokio::sync::OwnedMutexGuard<()>>,
    /// Set when [`Tx::insert_steps`] wrote a pending step.
    pending_steps: std::sync::atomic::AtomicBool,
}

impl Store {
    /// Why `owner` cannot own a thread: no active user with that e-mail, no
    /// active team with that name. None when it can.
    pub async fn owner_problem(&self, owner: &OwnerChoice) -> Result<Option<String>, StoreError> {
        let q = |e| self.query_error(e);
        Ok(match owner {
            OwnerChoice::User(email) => {
                let found = user::Entity::find()
                    .filter(user::Column::Email.eq(email.as_str()))
                    .filter(user::Column::DeactivatedAt.is_null())
                    .one(&self.db)
                    .await
                    .map_err(q)?;
                found.is_none().then(|| format!("no active user with e-mail `{email}`"))
            }
            OwnerChoice::Team(name) | OwnerChoice::RoundRobin(name) => {
                let found = team::Entity::find()
                    .filter(team::Column::Name.eq(name.as_str()))
                    .filter(team::Column::DeactivatedAt.is_null())
                    .one(&self.db)
                    .await
                    .map_err(q)?;
                found.is_none().then(|| format!("no active team named `{name}`"))
            }
        })
    }
}

impl Tx {
    /// Whether [`Tx::insert_steps`] wrote a step for a worker to run: when
    /// not, there is no need to wake the workers after the commit.
    pub fn wrote_pending_steps(&self) -> bool {
        self.pending_steps.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub async fn commit(self) -> Result<(), StoreError> {
        self.txn.commit().await.map_err(|e| self.store.query_error(e))
    }

    pub(super) fn err(&self, e: sea_orm::DbErr) -> StoreError {
        self.store.query_error(e)
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
                let finished = !RUNNING.contains(&change.status);
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
            .filter(step_execution::Column::State.is_in([StepState::Claimed, StepState::Attempting]))
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

    /// Moves a running enrollment to its next state. False when it had
    /// already finished (cancelled by an operator, exited on an event).
    pub async fn change_enrollment(
        &self,
        id: EnrollmentId,
        change: EnrollmentChange,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let finished = !RUNNING.contains(&change.status);
        let mut update = enrollment::Entity::update_many()
            .col_expr(enrollment::Column::Status, Expr::value(change.status))
            .col_expr(enrollment::Column::CurrentStep, Expr::value(change.current_step))
            .col_expr(enrollment::Column::UpdatedAt, Expr::value(now))
            .filter(enrollment::Column::Id.eq(id))
            .filter(enrollment::Column::Status.is_in(RUNNING));
        if finished {
            update = update
                .col_expr(enrollment::Column::FinishedAt, Expr::value(Some(now)))
                .col_expr(enrollment::Column::ExitReason, Expr::value(change.exit_reason))
                .col_expr(enrollment::Column::Error, Expr::value(change.error));
        }
        let res = update.exec(&self.txn).await.map_err(|e| self.err(e))?;
        Ok(res.rows_affected == 1)
    }

    /// Ends what an enrollment still has scheduled: pending or parked steps
    /// become `cancelled` and pending timers are cancelled.
    pub async fn cancel_scheduled(&self, id: EnrollmentId, now: DateTime<Utc>) -> Result<(), StoreError> {
        step_execution::Entity::update_many()
            .col_expr(step_execution::Column::State, Expr::value(StepState::Cancelled))
            .col_expr(step_execution::Column::FinishedAt, Expr::value(Some(now)))
            .col_expr(step_execution::Column::LeaseOwner, Expr::value(Option::<String>::None))
            .col_expr(step_execution::Column::LeaseExpiresAt, Expr::value(Option::<DateTime<Utc>>::None))
            .filter(step_execution::Column::EnrollmentId.eq(id))
            .filter(step_execution::Column::State.is_in([StepState::Pending, StepState::Waiting, StepState::Claimed]))
            .exec(&self.txn)
            .await
            .map_err(|e| self.err(e))?;
        timer::Entity::update_many()
            .col_expr(timer::Column::State, Expr::value(TimerState::Cancelled))
            .filter(timer::Column::EnrollmentId.eq(id))
            .filter(timer::Column::State.eq(TimerState::Pending))
            .exec(&self.txn)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Inserts many pending timers in one statement per chunk.
    pub async fn insert_timers(&self, timers: &[NewTimerRow]) -> Result<(), StoreError> {
        for chunk in timers.chunks(500) {
            let rows = chunk.iter().map(|t| timer::ActiveModel {
                id: Set(TimerId::new()),
                enrollment_id: Set(t.enrollment_id),
                step_execution_id: Set(Some(t.step_execution_id)),
                kind: Set(t.kind.clone()),
                state: Set(TimerState::Pending),
                wake_at: Set(t.wake_at),
                lease_owner: Set(None),
                lease_expires_at: Set(None),
                fired_at: Set(None),
                created_at: Set(t.created_at),
            });
            timer::Entity::insert_many(rows).exec_without_returning(&self.txn).await.map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// Fires up to `limit` pending timers due at `now`, earliest first, and
    /// returns them with their steps and enrollments. Other PostgreSQL
    /// workers skip the timers this transaction holds; a rollback leaves
    /// them pending.
    pub async fn fire_due_timers(&self, now: DateTime<Utc>, limit: u64) -> Result<Vec<DueTimer>, StoreError> {
        let sql = take_sql(
            self.store.backend,
            "timers",
            "state = 'fired', fired_at = $1",
            "state = 'pending' AND wake_at <= $1 ORDER BY wake_at LIMIT $2",
        );
        let values: Vec<Value> = vec![now.into(), Value::BigInt(Some(limit.min(i64::MAX as u64) as i64))];
        let timers = timer::Entity::find()
            .from_raw_sql(Statement::from_sql_and_values(self.txn.get_database_backend(), sql, values))
            .all(&self.txn)
            .await
            .map_err(|e| self.err(e))?;
        self.with_steps(timers).await
    }

    /// Pending timers of a contact's running enrollments that an event may
    /// resolve, locked for this transaction.
    pub async fn event_timers(&self, contact: ContactId) -> Result<Vec<DueTimer>, StoreError> {
        let enrollments: Vec<EnrollmentId> = enrollment::Entity::find()
            .select_only()
            .column(enrollment::Column::Id)
            .filter(enrollment::Column::ContactId.eq(contact))
            .filter(enrollment::Column::Status.eq(EnrollmentStatus::Waiting))
            .into_tuple()
            .all(&self.txn)
            .await
            .map_err(|e| self.err(e))?;
        if enrollments.is_empty() {
            return Ok(Vec::new());
        }
        let mut query = timer::Entity::find()
            .filter(timer::Column::EnrollmentId.is_in(enrollments))
            .filter(timer::Column::State.eq(TimerState::Pending))
            .filter(timer::Column::Kind.ne("wait"));
        if self.store.backend == Backend::Postgres {
            query = query.lock(LockType::Update);
        }
        let timers = query.all(&self.txn).await.map_err(|e| self.err(e))?;
        self.with_steps(timers).await
    }

    async fn with_steps(&self, timers: Vec<Timer>) -> Result<Vec<DueTimer>, StoreError> {
        let step_ids: Vec<StepExecutionId> = timers.iter().filter_map(|t| t.step_execution_id).collect();
        let enrollment_ids: Vec<EnrollmentId> = timers.iter().map(|t| t.enrollment_id).collect();
        let steps =
            step_execution::Entity::find().filter(step_execution::Column::Id.is_in(step_ids)).all(&self.txn).await;
        let mut steps: HashMap<StepExecutionId, StepExecution> =
            steps.map_err(|e| self.err(e))?.into_iter().map(|s| (s.id, s)).collect();
        let enrollments =
            enrollment::Entity::find().filter(enrollment::Column::Id.is_in(enrollment_ids)).all(&self.txn).await;
        let enrollments: HashMap<EnrollmentId, Enrollment> =
            enrollments.map_err(|e| self.err(e))?.into_iter().map(|e| (e.id, e)).collect();
        Ok(timers
            .into_iter()
            .filter_map(|timer| {
                let step = steps.remove(&timer.step_execution_id?)?;
                let enrollment = enrollments.get(&timer.enrollment_id)?.clone();
                Some(DueTimer { timer, step, enrollment })
            })
            .collect())
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

    /// Marks a pending timer fired or cancelled. False when it was not pending.
    pub async fn settle_timer(&self, id: TimerId, to: TimerState, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let res = timer::Entity::update_many()
            .col_expr(timer::Column::State, Expr::value(to))
            .col_expr(timer::Column::FiredAt, Expr::value(Some(now)))
            .filter(timer::Column::Id.eq(id))
            .filter(timer::Column::State.eq(TimerState::Pending))
            .exec(&self.txn)
            .await
            .map_err(|e| self.err(e))?;
        Ok(res.rows_affected == 1)
    }

    pub async fn insert_enrollment(
        &self,
        new: super::NewEnrollment,
        now: DateTime<Utc>,
    ) -> Result<Enrollment, StoreError> {
        let row = super::workflows::enrollment_row(new, now);
        enrollment::Entity::insert(row).exec_with_returning(&self.txn).await.map_err(|e| self.err(e))
    }

    pub async fn enrollment(&self, id: EnrollmentId) -> Result<Option<Enrollment>, StoreError> {
        enrollment::Entity::find_by_id(id).one(&self.txn).await.map_err(|e| self.err(e))
    }

    pub async fn contact(&self, id: ContactId) -> Result<Option<Contact>, StoreError> {
        contact::Entity::find_by_id(id).one(&self.txn).await.map_err(|e| self.err(e))
    }

    pub async fn consents(&self, contact: ContactId) -> Result<Vec<Consent>, StoreError> {
        consent::Entity::find()
            .filter(consent::Column::ContactId.eq(contact))
            .all(&self.txn)
            .await
            .map_err(|e| self.err(e))
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

    /// Running enrollments of a contact.
    pub async fn running_enrollments(&self, contact: ContactId) -> Result<Vec<Enrollment>, StoreError> {
        enrollment::Entity::find()
            .filter(enrollment::Column::ContactId.eq(contact))
            .filter(enrollment::Column::Status.is_in(RUNNING))
            .all(&self.txn)
            .await
            .map_err(|e| self.err(e))
    }

    /// Merges `patch` into a contact's properties.
    pub async fn set_contact_properties(
        &self,
        id: ContactId,
        patch: &serde_json::Map<String, serde_json::Value>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let Some(row) = self.contact(id).await? else { return Ok(()) };
        let mut properties = match row.properties {
            serde_json::Value::Object(map) => map,
            _ => serde_json::Map::new(),
        };
        for (k, v) in patch {
            properties.insert(k.clone(), v.clone());
        }
        contact::Entity::update_many()
            .col_expr(contact::Column::Properties, Expr::value(serde_json::Value::Object(properties)))
            .col_expr(contact::Column::UpdatedAt, Expr::value(now))
            .filter(contact::Column::Id.eq(id))
            .exec(&self.txn)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Unapplied events, oldest first, locked for this transaction (other
    /// PostgreSQL appliers skip them).
    pub async fn unapplied_events(&self, limit: u64) -> Result<Vec<Event>, StoreError> {
        let mut query = event::Entity::find()
            .filter(event::Column::AppliedAt.is_null())
            .order_by_asc(event::Column::CreatedAt)
            .order_by_asc(event::Column::Id)
            .limit(limit);
        if self.store.backend == Backend::Postgres {
            query = query.lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
        }
        query.all(&self.txn).await.map_err(|e| self.err(e))
    }

    pub async fn mark_event_applied(&self, id: EventId, now: DateTime<Utc>) -> Result<(), StoreError> {
        event::Entity::update_many()
            .col_expr(event::Column::AppliedAt, Expr::value(Some(now)))
            .filter(event::Column::Id.eq(id))
            .exec(&self.txn)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Who an outbound message went to, found by its wamid.
    pub async fn message_origin(&self, wamid: &str) -> Result<Option<MessageOrigin>, StoreError> {
        let Some(found) = message::Entity::find()
            .filter(message::Column::Wamid.eq(crate::ids::Wamid(wamid.to_string())))
            .one(&self.txn)
            .await
            .map_err(|e| self.err(e))?
        else {
            return Ok(None);
        };
        let thread = thread::Entity::find_by_id(found.thread_id).one(&self.txn).await.map_err(|e| self.err(e))?;
        Ok(thread.map(|t| MessageOrigin {
            contact_id: t.contact_id,
            phone_number_id: t.phone_number_id,
            enrollment_id: found.enrollment_id,
        }))
    }

    /// Every business number, for resolving the numbers workflows name.
    pub async fn phone_numbers(&self) -> Result<Vec<super::PhoneNumber>, StoreError> {
        phone_number::Entity::find().all(&self.txn).await.map_err(|e| self.err(e))
    }

    /// Records a schedule tick; false when another worker already fired it.
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
        let inserted = schedule_tick::Entity::insert(row)
            .on_conflict(
                OnConflict::columns([
                    schedule_tick::Column::WorkflowId,
                    schedule_tick::Column::TriggerKey,
                    schedule_tick::Column::TickAt,
                ])
                .do_nothing()
                .to_owned(),
            )
            .exec_without_returning(&self.txn)
            .await
            .map_err(|e| self.err(e))?;
        Ok(inserted == 1)
    }

    /// The latest tick recorded for a schedule trigger.
    pub async fn last_schedule_tick(
        &self,
        workflow: WorkflowId,
        trigger_key: &str,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let row = schedule_tick::Entity::find()
            .filter(schedule_tick::Column::WorkflowId.eq(workflow))
            .filter(schedule_tick::Column::TriggerKey.eq(trigger_key))
            .order_by_desc(schedule_tick::Column::TickAt)
            .limit(1)
            .one(&self.txn)
            .await
            .map_err(|e| self.err(e))?;
        Ok(row.map(|r| r.tick_at))
    }

    /// Contacts opted in on a number (all contacts when `number` is None).
    pub async fn audience(&self, number: Option<PhoneNumberId>) -> Result<Vec<Contact>, StoreError> {
        match number {
            None => contact::Entity::find().all(&self.txn).await.map_err(|e| self.err(e)),
            Some(number) => {
                let ids: Vec<ContactId> = consent::Entity::find()
                    .select_only()
                    .column(consent::Column::ContactId)
                    .filter(consent::Column::PhoneNumberId.eq(number))
                    .filter(consent::Column::Status.eq(ConsentStatus::OptedIn))
                    .into_tuple()
                    .all(&self.txn)
                    .await
                    .map_err(|e| self.err(e))?;
                contact::Entity::find()
                    .filter(contact::Column::Id.is_in(ids))
                    .order_by_asc(contact::Column::Id)
                    .all(&self.txn)
                    .await
                    .map_err(|e| self.err(e))
            }
        }
    }

    /// The version an enrollment runs on.
    pub async fn workflow_version(
        &self,
        id: crate::ids::WorkflowVersionId,
    ) -> Result<Option<super::WorkflowVersion>, StoreError> {
        workflow_version::Entity::find_by_id(id).one(&self.txn).await.map_err(|e| self.err(e))
    }

    /// Records an outbound message (a send), once per wamid, and applies the
    /// statuses that arrived for it before this commit.
    pub async fn record_message(&self, new: super::NewMessage, now: DateTime<Utc>) -> Result<(), StoreError> {
        let wamid = new.wamid.clone();
        let row = super::inbox::message_row(new, now);
        message::Entity::insert(row)
            .on_conflict(OnConflict::column(message::Column::Wamid).do_nothing().to_owned())
            .exec_without_returning(&self.txn)
            .await
            .map_err(|e| self.err(e))?;
        if let Some(wamid) = wamid {
            super::ingest::apply_pending_statuses(&self.txn, &wamid, now).await.map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// The contact's open thread on the number, opened now when there is
    /// none (owned by the number's assignment rules). True when opened now.
    pub async fn ensure_thread(
        &self,
        contact: &Contact,
        number: PhoneNumberId,
        now: DateTime<Utc>,
    ) -> Result<(super::Thread, bool), StoreError> {
        let open = thread::Entity::find()
            .filter(thread::Column::ContactId.eq(contact.id))
            .filter(thread::Column::PhoneNumberId.eq(number))
            .filter(thread::Column::Status.eq(ThreadStatus::Open))
            .one(&self.txn)
            .await
            .map_err(|e| self.err(e))?;
        if let Some(open) = open {
            return Ok((open, false));
        }
        let owners = self.store.assign_new_thread(&self.txn, number).await?;
        let customer = contact.wa_id.clone().or_else(|| contact.phone.clone()).unwrap_or_default();
        let row = super::inbox::new_thread_row(contact.id, number, customer, owners, now, now);
        Ok((row.insert(&self.txn).await.map_err(|e| self.err(e))?, true))
    }

    /// The contact's open threads (on any number), newest first.
    pub async fn open_threads(&self, contact: ContactId) -> Result<Vec<super::Thread>, StoreError> {
        thread::Entity::find()
            .filter(thread::Column::ContactId.eq(contact))
            .filter(thread::Column::Status.eq(ThreadStatus::Open))
            .order_by_desc(thread::Column::Id)
            .all(&self.txn)
            .await
            .map_err(|e| self.err(e))
    }

    /// Gives a thread an owner: a user by e-mail, a team by name, or the next
    /// member of a team in turn. Returns the owner set, or an error message
    /// naming what was not found.
    pub async fn assign_owner(
        &self,
        thread_id: ThreadId,
        owner: &OwnerChoice,
        now: DateTime<Utc>,
    ) -> Result<Result<(Option<UserId>, Option<TeamId>), String>, StoreError> {
        let found = match owner {
            OwnerChoice::User(email) => {
                let found = user::Entity::find()
                    .filter(user::Column::Email.eq(email.as_str()))
                    .one(&self.txn)
                    .await
                    .map_err(|e| self.err(e))?;
                match found {
                    Some(u) => (Some(u.id), None),
                    None => return Ok(Err(format!("no user with e-mail `{email}`"))),
                }
            }
            OwnerChoice::Team(name) | OwnerChoice::RoundRobin(name) => {
                let found = team::Entity::find()
                    .filter(team::Column::Name.eq(name.as_str()))
                    .one(&self.txn)
                    .await
                    .map_err(|e| self.err(e))?;
                let Some(team) = found else { return Ok(Err(format!("no team named `{name}`"))) };
                match owner {
                    OwnerChoice::RoundRobin(_) => self.store.round_robin(&self.txn, team.id).await?,
                    _ => (None, Some(team.id)),
                }
            }
        };
        thread::Entity::update_many()
            .col_expr(thread::Column::OwnerUserId, Expr::value(found.0))
            .col_expr(thread::Column::OwnerTeamId, Expr::value(found.1))
            .col_expr(thread::Column::UpdatedAt, Expr::value(now))
            .filter(thread::Column::Id.eq(thread_id))
            .exec(&self.txn)
            .await
            .map_err(|e| self.err(e))?;
        Ok(Ok(found))
    }

    /// Notes an outbound message on its thread (last outbound time, first response).
    /// Records a batch of outbound messages (sends), each in its contact's
    /// open thread on its number (opened now when there is none, owned by
    /// the number's assignment rules), once per wamid, with the statuses
    /// that arrived for them before this commit; the threads' last outbound
    /// time is now. A handful of statements for the whole batch.
    pub async fn record_sends(&self, sends: Vec<OutboundRecord>, now: DateTime<Utc>) -> Result<(), StoreError> {
        if sends.is_empty() {
            return Ok(());
        }
        let contacts: HashSet<ContactId> = sends.iter().map(|s| s.contact.id).collect();
        let mut threads: HashMap<(ContactId, PhoneNumberId), ThreadId> = HashMap::new();
        for chunk in contacts.into_iter().collect::<Vec<_>>().chunks(BATCH_CHUNK) {
            let open = thread::Entity::find()
                .filter(thread::Column::ContactId.is_in(chunk.iter().copied()))
                .filter(thread::Column::Status.eq(ThreadStatus::Open))
                .all(&self.txn)
                .await
                .map_err(|e| self.err(e))?;
            threads.extend(open.into_iter().map(|t| ((t.contact_id, t.phone_number_id), t.id)));
        }
        let mut has_rules: HashMap<PhoneNumberId, bool> = HashMap::new();
        let mut new_threads = Vec::new();
        for send in &sends {
            let key = (send.contact.id, send.number);
            if threads.contains_key(&key) {
                continue;
            }
            let ruled = match has_rules.get(&send.number) {
                Some(ruled) => *ruled,
                None => {
                    let ruled = assignment_rule::Entity::find()
                        .filter(assignment_rule::Column::PhoneNumberId.eq(send.number))
                        .one(&self.txn)
                        .await
                        .map_err(|e| self.err(e))?
                        .is_some();
                    has_rules.insert(send.number, ruled);
                    ruled
                }
            };
            let owners = if ruled { self.store.assign_new_thread(&self.txn, send.number).await? } else { (None, None) };
            let customer = send.contact.wa_id.clone().or_else(|| send.contact.phone.clone()).unwrap_or_default();
            let row = super::inbox::new_thread_row(send.contact.id, send.number, customer, owners, now, now);
            threads.insert(key, *row.id.as_ref());
            new_threads.push(row);
        }
        for chunk in new_threads.chunks(BATCH_CHUNK) {
            thread::Entity::insert_many(chunk.to_vec())
                .exec_without_returning(&self.txn)
                .await
                .map_err(|e| self.err(e))?;
        }
        let touched: HashSet<ThreadId> = sends.iter().map(|s| threads[&(s.contact.id, s.number)]).collect();
        let wamids: Vec<Wamid> = sends.iter().filter_map(|s| s.message.wamid.clone()).collect();
        let rows: Vec<message::ActiveModel> = sends
            .into_iter()
            .map(|s| {
                let thread_id = threads[&(s.contact.id, s.number)];
                super::inbox::message_row(super::NewMessage { thread_id, ..s.message }, now)
            })
            .collect();
        for chunk in rows.chunks(BATCH_CHUNK) {
            message::Entity::insert_many(chunk.to_vec())
                .on_conflict(OnConflict::column(message::Column::Wamid).do_nothing().to_owned())
                .exec_without_returning(&self.txn)
                .await
                .map_err(|e| self.err(e))?;
        }
        for chunk in wamids.chunks(BATCH_CHUNK) {
            let early: Vec<Wamid> = pending_status::Entity::find()
                .select_only()
                .column(pending_status::Column::Wamid)
                .filter(pending_status::Column::Wamid.is_in(chunk.iter().cloned()))
                .into_tuple()
                .all(&self.txn)
                .await
                .map_err(|e| self.err(e))?;
            for wamid in early.into_iter().collect::<HashSet<_>>() {
                super::ingest::apply_pending_statuses(&self.txn, &wamid, now).await.map_err(|e| self.err(e))?;
            }
        }
        for chunk in touched.into_iter().collect::<Vec<_>>().chunks(BATCH_CHUNK) {
            thread::Entity::update_many()
                .col_expr(thread::Column::LastOutboundAt, Expr::value(Some(now)))
                .col_expr(thread::Column::UpdatedAt, Expr::value(now))
                .filter(thread::Column::Id.is_in(chunk.iter().copied()))
                .exec(&self.txn)
                .await
                .map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    pub async fn touch_outbound(&self, thread_id: ThreadId, at: DateTime<Utc>) -> Result<(), StoreError> {
        thread::Entity::update_many()
            .col_expr(thread::Column::LastOutboundAt, Expr::value(Some(at)))
            .col_expr(thread::Column::UpdatedAt, Expr::value(at))
            .filter(thread::Column::Id.eq(thread_id))
            .exec(&self.txn)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}

/// Rows per statement in batched writes: well under SQLite's limit of
/// bound parameters for the widest row.
const BATCH_CHUNK: usize = 100;

/// An outbound message for [`Tx::record_sends`]: its `thread_id` is
/// filled in from the contact's thread on `number`.
#[derive(Debug, Clone)]
pub struct OutboundRecord {
    pub contact: Contact,
    pub number: PhoneNumberId,
    pub message: super::NewMessage,
}

/// Who a thread goes to (the `assign_owner` step).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnerChoice {
    User(String),
    Team(String),
    RoundRobin(String),
}

/// The stored name of a step state (what the active enum writes).
fn state_name(state: StepState) -> String {
    use sea_orm::ActiveEnum;
    state.to_value()
}

fn enrollment_status_name(status: EnrollmentStatus) -> String {
    use sea_orm::ActiveEnum;
    status.to_value()
}

/// The pending-timer condition as `ix_timers_pending` spells it: a literal,
/// so the planners can use the partial index.
const PENDING_TIMER: &str = "timers.state = 'pending'";

/// One statement that takes work: an UPDATE (`set`) of the rows a subquery
/// picks (`pick`: condition, order and limit), returning them. PostgreSQL
/// takers skip rows another one holds; SQLite runs one writer at a time, so
/// there is nothing to skip.
fn take_sql(backend: Backend, table: &str, set: &str, pick: &str) -> String {
    let lock = match backend {
        Backend::Postgres => " FOR UPDATE SKIP LOCKED",
        Backend::Sqlite => "",
    };
    format!("UPDATE {table} SET {set} WHERE id IN (SELECT id FROM {table} WHERE {pick}{lock}) RETURNING *")
}
