//! Bulk enrollment: an NDJSON or CSV body streamed into a job, a chunk of
//! rows at a time, never all in memory; each row gets a result with its
//! line number; the job can be polled while the upload runs.
//!
//! Rows:
//! - NDJSON, one object per line: `{"key": "row-1", "contact": {"phone":
//!   "+44 7700 900123", "name": "Ada", "properties": {…}, "opt_in": […]},
//!   "trigger": {…}}` (the `contact` of a single enrollment).
//! - CSV with a header line: `key`, `contact_id`, `phone`, `mobile_phone`,
//!   `name`, `opt_in` (numbers separated by `;`), `properties.NAME` and
//!   `trigger.NAME` columns.
//!
//! A row with a `key` is enrolled once per key (for this token and
//! workflow): a repeat, in this upload or a later one, replays its first
//! result.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use utoipa::{IntoParams, ToSchema};

use super::ApiState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody};
use kairo_core::ids::{BulkJobId, ContactId, EnrollmentId};
use kairo_engine::runtime::{BulkTarget, EngineError};
use kairo_store::{BulkJob, BulkJobRow, BulkJobStatus};

mod rows;

use rows::{CHUNK, Format, ReadError, ReadRow, apply_rows, read_rows};

/// Errors listed in the upload's answer; the rest are at `/rows`.
const ERRORS_SHOWN: usize = 100;

#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BulkQuery {
    /// The workflow's `id`.
    pub workflow: String,
}

/// A bulk enrollment and its progress.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BulkJobView {
    pub id: BulkJobId,
    pub workflow: String,
    /// `ndjson` or `csv`.
    pub format: String,
    /// `running`, `completed` or `failed`.
    pub status: String,
    pub rows_seen: i64,
    pub rows_enrolled: i64,
    pub rows_skipped: i64,
    pub rows_replayed: i64,
    pub rows_failed: i64,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// The upload's answer: the job and its first row errors.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BulkUploadResult {
    #[serde(flatten)]
    pub job: BulkJobView,
    /// The first row errors, in line order (all of them at `/v1/bulk-jobs/{id}/rows?outcome=error`).
    pub errors: Vec<RowView>,
}

/// What happened to one row.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RowView {
    pub line: i64,
    pub key: Option<String>,
    /// `enrolled`, `skipped`, `replayed` or `error`.
    pub outcome: String,
    pub contact: Option<ContactId>,
    pub enrollment: Option<EnrollmentId>,
    pub reason: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BulkJobList {
    pub items: Vec<BulkJobView>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RowPage {
    pub items: Vec<RowView>,
    /// Pass as `after` to read on.
    pub next_after: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RowQuery {
    /// Only rows with this outcome.
    pub outcome: Option<String>,
    /// Rows after this line.
    pub after: Option<u64>,
    /// Rows per page (default 500, at most 5,000).
    #[param(minimum = 1, maximum = 5000)]
    pub limit: Option<u64>,
}

/// Enroll many contacts from an NDJSON or CSV body.
#[utoipa::path(post, path = "/v1/enrollments/bulk", tag = "enrollments", params(BulkQuery),
    request_body(description = "Rows, one per line: NDJSON objects `{\"key\", \"contact\": {\"phone\"|\"id\", \"name\", \"mobile_phone\", \"properties\", \"opt_in\"}, \"trigger\"}`, or CSV with a header of `key`, `contact_id`, `phone`, `mobile_phone`, `name`, `opt_in`, `properties.NAME`, `trigger.NAME`",
        content((String = "application/x-ndjson"), (String = "text/csv"))),
    responses((status = 200, description = "Every row read; results per row", body = BulkUploadResult),
        (status = 400, description = "Not NDJSON or CSV, or a CSV header that cannot be read", body = ErrorBody),
        (status = 404, description = "Unknown workflow", body = ErrorBody),
        (status = 413, description = "Body over the limit: rows read before it stay applied", body = ErrorBody),
        (status = 422, description = "The workflow takes no API enrollments", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn upload(
    State(state): State<ApiState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<BulkQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<ApiJson<BulkUploadResult>, ApiError> {
    let format = body_format(&headers)?;
    let plan = state.engine.enrollable_plan_now(&query.workflow).await?;
    if !plan.model.triggers.iter().any(|t| t.api.is_some()) {
        return Err(EngineError::NotApiEnrollable { workflow: query.workflow.clone() }.into());
    }
    let store = state.engine.store();
    let job = store.create_bulk_job(&query.workflow, format.name(), Some(caller.token), state.engine.now()).await?;
    tracing::info!(job = %job.id, workflow = %query.workflow, format = format.name(), "bulk enrollment started");
    let (rows_tx, rows_rx) = mpsc::channel::<ReadRow>(CHUNK * 2);
    let limit = state.settings.max_bulk_bytes;
    let reader = tokio::spawn(read_rows(body, format, limit, rows_tx));
    let key_scope = format!("bulk:{}:{}", caller.token, query.workflow);
    let target = BulkTarget { workflow: &query.workflow, job: job.id, key_scope: &key_scope };
    let applied = apply_rows(&state, &target, rows_rx).await;
    let read = reader.await.unwrap_or_else(|e| Err(ReadError::Body(format!("the reader stopped: {e}"))));
    let now = state.engine.now();
    let outcome = match (applied, read) {
        (Err(err), _) => {
            store.finish_bulk_job(job.id, BulkJobStatus::Failed, Some(err.message.clone()), now).await?;
            return Err(err);
        }
        (Ok(()), Err(err)) => {
            let message = err.to_string();
            store.finish_bulk_job(job.id, BulkJobStatus::Failed, Some(message.clone()), now).await?;
            return Err(match err {
                ReadError::TooLarge(limit) => ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    format!("the body is over {limit} bytes: the rows before it were applied (job {}); send the rest in another upload", job.id),
                ),
                ReadError::Header(message) => ApiError::bad_request("invalid_csv", message),
                ReadError::Body(message) => ApiError::bad_request("body_unreadable", message),
            }
            .with_details(serde_json::json!({ "job": job.id })));
        }
        (Ok(()), Ok(())) => store.finish_bulk_job(job.id, BulkJobStatus::Completed, None, now).await?,
    };
    let job = outcome.ok_or_else(|| ApiError::internal(&"the bulk job disappeared"))?;
    tracing::info!(job = %job.id, rows = job.rows_seen, enrolled = job.rows_enrolled, failed = job.rows_failed, "bulk enrollment finished");
    let errors = store.bulk_job_rows(job.id, Some("error"), 0, ERRORS_SHOWN as u64).await?;
    Ok(ApiJson(BulkUploadResult { job: job_view(job), errors: errors.into_iter().map(row_view).collect() }))
}

fn body_format(headers: &HeaderMap) -> Result<Format, ApiError> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let mime = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    match mime.as_str() {
        "application/x-ndjson" | "application/ndjson" | "application/jsonl" | "application/json-lines" => {
            Ok(Format::Ndjson)
        }
        "text/csv" => Ok(Format::Csv),
        _ => Err(ApiError::bad_request(
            "content_type",
            "send rows as NDJSON (Content-Type: application/x-ndjson) or CSV (Content-Type: text/csv)",
        )),
    }
}

/// Bulk jobs, newest first (a running upload shows here).
#[utoipa::path(get, path = "/v1/bulk-jobs", tag = "enrollments", responses((status = 200, body = BulkJobList)),
    security(("bearer" = [])))]
pub async fn list(State(state): State<ApiState>, _caller: Caller) -> Result<ApiJson<BulkJobList>, ApiError> {
    let jobs = state.engine.store().bulk_jobs(100).await?;
    Ok(ApiJson(BulkJobList { items: jobs.into_iter().map(job_view).collect() }))
}

/// One bulk job and its progress.
#[utoipa::path(get, path = "/v1/bulk-jobs/{id}", tag = "enrollments", params(("id" = BulkJobId, Path)),
    responses((status = 200, body = BulkJobView), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn show(
    State(state): State<ApiState>,
    _caller: Caller,
    ApiPath(id): ApiPath<BulkJobId>,
) -> Result<ApiJson<BulkJobView>, ApiError> {
    let job =
        state.engine.store().bulk_job(id).await?.ok_or_else(|| ApiError::not_found(format_args!("bulk job {id}")))?;
    Ok(ApiJson(job_view(job)))
}

/// A bulk job's row results, in line order.
#[utoipa::path(get, path = "/v1/bulk-jobs/{id}/rows", tag = "enrollments", params(("id" = BulkJobId, Path), RowQuery),
    responses((status = 200, body = RowPage), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn rows(
    State(state): State<ApiState>,
    _caller: Caller,
    ApiPath(id): ApiPath<BulkJobId>,
    ApiQuery(query): ApiQuery<RowQuery>,
) -> Result<ApiJson<RowPage>, ApiError> {
    let store = state.engine.store();
    store.bulk_job(id).await?.ok_or_else(|| ApiError::not_found(format_args!("bulk job {id}")))?;
    let limit = super::checked_limit(query.limit, 500, 5_000)?;
    let rows = store.bulk_job_rows(id, query.outcome.as_deref(), query.after.unwrap_or(0), limit).await?;
    let next_after = if rows.len() as u64 == limit { rows.last().map(|r| r.line) } else { None };
    Ok(ApiJson(RowPage { items: rows.into_iter().map(row_view).collect(), next_after }))
}

fn job_view(job: BulkJob) -> BulkJobView {
    BulkJobView {
        id: job.id,
        workflow: job.workflow_key,
        format: job.format,
        status: job.status,
        rows_seen: job.rows_seen,
        rows_enrolled: job.rows_enrolled,
        rows_skipped: job.rows_skipped,
        rows_replayed: job.rows_replayed,
        rows_failed: job.rows_failed,
        error: job.error,
        created_at: job.created_at,
        updated_at: job.updated_at,
        finished_at: job.finished_at,
    }
}

fn row_view(row: BulkJobRow) -> RowView {
    RowView {
        line: row.line,
        key: row.row_key,
        outcome: row.outcome,
        contact: row.contact_id,
        enrollment: row.enrollment_id,
        reason: row.reason,
        error: row.error,
    }
}
