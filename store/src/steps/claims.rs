//! Claims on step executions: taking due steps under a lease, renewing and
//! giving leases back, and marking a step `attempting` before its external
//! effect leaves.
//!
//! Invariants:
//! - A step is claimed by one worker at most: a claim is a single conditional
//!   UPDATE (with `FOR UPDATE SKIP LOCKED` on PostgreSQL, under SQLite's one
//!   writer), never a read followed by a write.
//! - A step with an external effect is written `attempting` (and committed)
//!   before the call leaves; a row still `attempting` after its lease ran out
//!   means "outcome unknown", never "run again".

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, LockBehavior, LockType, Query};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Statement, Value};
use uuid::Uuid;

use super::StepExecution;
use crate::entities::step_execution;
use crate::tx::{BATCH_CHUNK, take_sql};
use crate::{Backend, Store, StoreError};
use kairo_core::ids::StepExecutionId;
use kairo_core::status::StepState;

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
        let set = "state = 'claimed', lease_owner = $1, lease_expires_at = $2, started_at = COALESCE(started_at, $3)";
        self.take_steps(
            set,
            "state = 'pending' AND due_at <= $3 ORDER BY due_at LIMIT $4",
            owner,
            now,
            lease_until,
            limit,
        )
        .await
    }

    /// One statement that hands `owner` the steps `pick` chooses (`$3` is
    /// now, `$4` the limit) with the lease `set` writes (`$1` the owner, `$2`
    /// the lease's end).
    async fn take_steps(
        &self,
        set: &str,
        pick: &str,
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u64,
    ) -> Result<Vec<StepExecution>, StoreError> {
        let _turn = self.write_turn().await;
        let sql = take_sql(self.backend, "step_executions", set, pick);
        let values: Vec<Value> =
            vec![owner.into(), lease_until.into(), now.into(), Value::BigInt(Some(limit.min(i64::MAX as u64) as i64))];
        step_execution::Entity::find()
            .from_raw_sql(Statement::from_sql_and_values(self.db_backend(), sql, values))
            .all(&self.db)
            .await
            .map_err(|e| self.query_error(e))
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
            .filter(step_execution::Column::State.is_in(StepState::HELD))
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
            // On PostgreSQL the renewal never waits for a row another
            // statement holds (this worker's mark or commit, which write the
            // lease themselves): waiting, it locked rows in another order
            // than they do, and each deadlock held a send's mark for the
            // second PostgreSQL takes to detect it (deadlock_timeout), long
            // enough for a fault in that second to leave the send
            // `uncertain` without its request having left.
            let mut held = Query::select();
            held.column(step_execution::Column::Id)
                .from(step_execution::Entity)
                .and_where(step_execution::Column::LeaseOwner.eq(owner))
                .and_where(step_execution::Column::Id.is_in(chunk.iter().copied()))
                .and_where(step_execution::Column::State.is_in(StepState::HELD));
            if self.backend == Backend::Postgres {
                // The lock a plain UPDATE of non-key columns takes, so rows
                // whose foreign keys are being checked (a timer inserted for
                // the step) are not skipped.
                held.lock_with_behavior(LockType::NoKeyUpdate, LockBehavior::SkipLocked);
            }
            let res = step_execution::Entity::update_many()
                .col_expr(step_execution::Column::LeaseExpiresAt, Expr::value(until))
                .filter(step_execution::Column::Id.in_subquery(held.to_owned()))
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
        let pick = "state = 'attempting' AND lease_expires_at < $3 ORDER BY lease_expires_at LIMIT $4";
        self.take_steps("lease_owner = $1, lease_expires_at = $2", pick, owner, now, lease_until, limit).await
    }
}

impl crate::Tx {
    /// [`Store::mark_attempting`] for many steps, in this transaction (one
    /// commit instead of one per send). Returns the steps marked.
    pub async fn mark_attempting_many(
        &self,
        owner: &str,
        steps: &[(StepExecutionId, Option<serde_json::Value>)],
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<HashSet<StepExecutionId>, StoreError> {
        // One statement per chunk: a send waits for its mark right before
        // its request, so the mark must be quick.
        let pg = self.store.backend == Backend::Postgres;
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
                .txn
                .query_all_raw(Statement::from_sql_and_values(self.store.db_backend(), sql, values))
                .await
                .map_err(|e| self.err(e))?;
            for row in found {
                let id: Uuid = row.try_get_by_index(0).map_err(|e| self.err(e))?;
                marked.insert(StepExecutionId(id));
            }
        }
        Ok(marked)
    }
}
