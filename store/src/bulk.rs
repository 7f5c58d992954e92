//! Bulk enrollments: the job a streamed upload becomes and what happened to
//! each of its rows. The row keys that make a row idempotent live with the
//! other idempotency keys (`idempotency.rs`), the contacts and enrollments
//! an upload writes with theirs.
//!
//! Invariant: a chunk of rows commits in one transaction with its
//! enrollments, its row results, its row keys and the job's counters, so a
//! crash mid-upload leaves either all of a chunk or none of it, and a row key
//! is recorded exactly when its enrollment is.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::Serialize;
use uuid::Uuid;

use super::entities::{bulk_job, bulk_job_row};
use super::{Store, StoreError, Tx};
use kairo_core::ids::{ApiTokenId, BulkJobId, ContactId, EnrollmentId};

pub type BulkJob = bulk_job::Model;
pub type BulkJobRow = bulk_job_row::Model;

/// Where a bulk job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BulkJobStatus {
    /// Rows are being read and applied (moved in by the upload's start).
    Running,
    /// Every row was read; each has a result (moved in by the upload's end).
    Completed,
    /// The upload stopped before its end (a broken connection, a body over
    /// the limit, a database failure): the rows applied so far stay applied.
    Failed,
}

impl BulkJobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BulkJobStatus::Running => "running",
            BulkJobStatus::Completed => "completed",
            BulkJobStatus::Failed => "failed",
        }
    }
}

/// What happened to one row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RowResult {
    pub line: u64,
    pub row_key: Option<String>,
    /// `enrolled`, `skipped`, `replayed` or `error`.
    pub outcome: &'static str,
    pub contact_id: Option<ContactId>,
    pub enrollment_id: Option<EnrollmentId>,
    pub reason: Option<String>,
    pub error: Option<String>,
}

/// A row key and what its row did, kept so that a repeat replays it.
#[derive(Debug, Clone)]
pub struct RowKey {
    pub key: String,
    pub request_hash: String,
    pub result: serde_json::Value,
}

impl Store {
    pub async fn create_bulk_job(
        &self,
        workflow_key: &str,
        format: &str,
        token: Option<ApiTokenId>,
        now: DateTime<Utc>,
    ) -> Result<BulkJob, StoreError> {
        let row = bulk_job::ActiveModel {
            id: Set(BulkJobId::new()),
            workflow_key: Set(workflow_key.to_string()),
            format: Set(format.to_string()),
            status: Set(BulkJobStatus::Running.as_str().to_string()),
            token_id: Set(token),
            rows_seen: Set(0),
            rows_enrolled: Set(0),
            rows_skipped: Set(0),
            rows_replayed: Set(0),
            rows_failed: Set(0),
            error: Set(None),
            created_at: Set(now),
            updated_at: Set(now),
            finished_at: Set(None),
        };
        bulk_job::Entity::insert(row).exec_with_returning(&self.db).await.map_err(|e| self.query_error(e))
    }

    pub async fn finish_bulk_job(
        &self,
        id: BulkJobId,
        status: BulkJobStatus,
        error: Option<String>,
        now: DateTime<Utc>,
    ) -> Result<Option<BulkJob>, StoreError> {
        bulk_job::Entity::update_many()
            .col_expr(bulk_job::Column::Status, Expr::value(status.as_str()))
            .col_expr(bulk_job::Column::Error, Expr::value(error))
            .col_expr(bulk_job::Column::FinishedAt, Expr::value(now))
            .col_expr(bulk_job::Column::UpdatedAt, Expr::value(now))
            .filter(bulk_job::Column::Id.eq(id))
            .exec(&self.db)
            .await
            .map_err(|e| self.query_error(e))?;
        self.bulk_job(id).await
    }

    pub async fn bulk_job(&self, id: BulkJobId) -> Result<Option<BulkJob>, StoreError> {
        bulk_job::Entity::find_by_id(id).one(&self.db).await.map_err(|e| self.query_error(e))
    }

    /// Bulk jobs, newest first.
    pub async fn bulk_jobs(&self, limit: u64) -> Result<Vec<BulkJob>, StoreError> {
        bulk_job::Entity::find()
            .order_by_desc(bulk_job::Column::CreatedAt)
            .limit(limit)
            .all(&self.db)
            .await
            .map_err(|e| self.query_error(e))
    }

    /// A job's row results after `after_line`, in line order; only one
    /// outcome when `outcome` is given.
    pub async fn bulk_job_rows(
        &self,
        id: BulkJobId,
        outcome: Option<&str>,
        after_line: u64,
        limit: u64,
    ) -> Result<Vec<BulkJobRow>, StoreError> {
        let mut query = bulk_job_row::Entity::find()
            .filter(bulk_job_row::Column::JobId.eq(id))
            .filter(bulk_job_row::Column::Line.gt(after_line as i64))
            .order_by_asc(bulk_job_row::Column::Line)
            .limit(limit);
        if let Some(outcome) = outcome {
            query = query.filter(bulk_job_row::Column::Outcome.eq(outcome));
        }
        query.all(&self.db).await.map_err(|e| self.query_error(e))
    }
}

impl Tx {
    /// Stores a chunk's row results and adds them to the job's counters.
    pub async fn record_bulk_rows(
        &self,
        job: BulkJobId,
        rows: &[RowResult],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let count = |outcome: &str| rows.iter().filter(|r| r.outcome == outcome).count() as i64;
        let models: Vec<bulk_job_row::ActiveModel> = rows
            .iter()
            .map(|r| bulk_job_row::ActiveModel {
                id: Set(Uuid::now_v7()),
                job_id: Set(job),
                line: Set(r.line as i64),
                row_key: Set(r.row_key.clone()),
                outcome: Set(r.outcome.to_string()),
                contact_id: Set(r.contact_id),
                enrollment_id: Set(r.enrollment_id),
                reason: Set(r.reason.clone()),
                error: Set(r.error.clone()),
            })
            .collect();
        for chunk in models.chunks(self.store.rows_per_insert()) {
            bulk_job_row::Entity::insert_many(chunk.to_vec())
                .exec_without_returning(&self.txn)
                .await
                .map_err(|e| self.err(e))?;
        }
        use bulk_job::Column as C;
        use sea_orm::sea_query::ExprTrait;
        bulk_job::Entity::update_many()
            .col_expr(C::RowsSeen, Expr::col(C::RowsSeen).add(rows.len() as i64))
            .col_expr(C::RowsEnrolled, Expr::col(C::RowsEnrolled).add(count("enrolled")))
            .col_expr(C::RowsSkipped, Expr::col(C::RowsSkipped).add(count("skipped")))
            .col_expr(C::RowsReplayed, Expr::col(C::RowsReplayed).add(count("replayed")))
            .col_expr(C::RowsFailed, Expr::col(C::RowsFailed).add(count("error")))
            .col_expr(C::UpdatedAt, Expr::value(now))
            .filter(C::Id.eq(job))
            .exec(&self.txn)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}
