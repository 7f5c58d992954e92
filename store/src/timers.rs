//! Durable timers: waits, event waits and reply waits that park a step until
//! they fire or are settled.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::{Expr, LockType};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Statement, Value};

use super::entities::{enrollment, step_execution, timer};
use super::tx::take_sql;
use super::{Backend, Enrollment, StepExecution, Store, StoreError, Tx};
use kairo_core::ids::{ContactId, EnrollmentId, StepExecutionId, TimerId};
use kairo_core::status::{EnrollmentStatus, TimerKind, TimerState};

/// A timer a parked step waits on.
#[derive(Debug, Clone)]
pub struct NewTimerRow {
    pub enrollment_id: EnrollmentId,
    pub step_execution_id: StepExecutionId,
    pub kind: TimerKind,
    pub wake_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

/// A pending timer, the step execution it belongs to and its enrollment.
#[derive(Debug, Clone)]
pub struct DueTimer {
    pub timer: Timer,
    pub step: StepExecution,
    pub enrollment: Enrollment,
}

/// The pending-timer condition as `ix_timers_pending` spells it: a literal,
/// so the planners can use the partial index.
pub(super) const PENDING_TIMER: &str = "timers.state = 'pending'";

pub type Timer = timer::Model;

#[derive(Debug, Clone)]
pub struct NewTimer {
    pub enrollment_id: EnrollmentId,
    pub step_execution_id: Option<StepExecutionId>,
    pub kind: TimerKind,
    pub wake_at: DateTime<Utc>,
}

impl Store {
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

    /// Timers of one enrollment, oldest first.
    pub async fn timers_of(&self, enrollment: EnrollmentId) -> Result<Vec<Timer>, StoreError> {
        timer::Entity::find()
            .filter(timer::Column::EnrollmentId.eq(enrollment))
            .order_by_asc(timer::Column::Id)
            .all(&self.db)
            .await
            .map_err(|e| self.query_error(e))
    }

    pub async fn insert_timer(&self, new: NewTimer, now: DateTime<Utc>) -> Result<Timer, StoreError> {
        let row = timer::ActiveModel {
            id: Set(TimerId::new()),
            enrollment_id: Set(new.enrollment_id),
            step_execution_id: Set(new.step_execution_id),
            kind: Set(new.kind.to_string()),
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
}

impl Tx {
    /// An enrollment's pending timers are cancelled.
    pub(crate) async fn cancel_pending_timers(&self, id: EnrollmentId) -> Result<(), StoreError> {
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
                kind: Set(t.kind.to_string()),
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
            .filter(timer::Column::Kind.ne(TimerKind::Wait.to_string()));
        if self.store.backend == Backend::Postgres {
            query = query.lock(LockType::Update);
        }
        let timers = query.all(&self.txn).await.map_err(|e| self.err(e))?;
        self.with_steps(timers).await
    }

    pub(super) async fn with_steps(&self, timers: Vec<Timer>) -> Result<Vec<DueTimer>, StoreError> {
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
}
