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

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;
use utoipa::{IntoParams, ToSchema};

use super::contacts::ContactInput;
use super::{ApiState, body_hash, resolve_number};
use crate::api::auth::Caller;
use crate::api::error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody};
use crate::ids::{BulkJobId, ContactId, EnrollmentId, PhoneNumberId};
use crate::phone::normalize_phone;
use crate::runtime::{BulkContact, BulkRow, BulkTarget, EngineError};
use crate::store::{BulkJob, BulkJobRow, BulkJobStatus, RowResult};

/// Rows per transaction: large enough that a commit carries many rows,
/// small enough that progress shows and SQLite's writer is not held long.
const CHUNK: usize = 500;
/// The longest NDJSON line accepted.
const MAX_LINE: usize = 64 * 1024;
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Ndjson,
    Csv,
}

impl Format {
    fn name(self) -> &'static str {
        match self {
            Format::Ndjson => "ndjson",
            Format::Csv => "csv",
        }
    }
}

/// A row read from the body: its line, its content, or why it is unreadable.
type ReadRow = (u64, Result<RowInput, Unreadable>);

/// Why a row cannot be taken, with its key when it could be read.
#[derive(Debug, Clone)]
struct Unreadable {
    key: Option<String>,
    error: String,
}

impl Unreadable {
    fn new(key: Option<String>, error: impl Into<String>) -> Unreadable {
        Unreadable {
            key: key.filter(|k| !k.trim().is_empty() && k.len() <= 255 && !k.contains('\0')),
            error: error.into(),
        }
    }
}

/// An NDJSON line as a row: an object, with no U+0000 in its text, of the
/// row's shape.
fn ndjson_row(text: &str) -> Result<RowInput, Unreadable> {
    let value: Value = serde_json::from_str(text).map_err(|e| Unreadable::new(None, format!("not JSON: {e}")))?;
    let key = value.get("key").and_then(Value::as_str).map(str::to_string);
    if !value.is_object() {
        let kind = crate::api::error::json_kind(&value);
        return Err(Unreadable::new(key, format!("a row is a JSON object, not {kind}")));
    }
    if let Some(field) = crate::api::error::nul_field(&value) {
        return Err(Unreadable::new(
            key,
            format!("`{field}` holds the character U+0000 (NUL), which cannot be stored: remove it"),
        ));
    }
    serde_path_to_error::deserialize(value).map_err(|err| {
        let field = err.path().to_string();
        Unreadable::new(key, format!("not a row: at `{field}`: {}", err.into_inner()))
    })
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RowInput {
    #[serde(default)]
    key: Option<String>,
    contact: ContactInput,
    #[serde(default)]
    trigger: Option<Map<String, Value>>,
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

/// Takes rows as they are read and enrolls them a chunk at a time; the
/// next chunk is prepared (phones normalised, rows hashed) while the one
/// before it commits, so the database's writer waits on neither.
async fn apply_rows(state: &ApiState, target: &BulkTarget<'_>, rows: mpsc::Receiver<ReadRow>) -> Result<(), ApiError> {
    let (prepared_tx, mut prepared) = mpsc::channel::<Result<PreparedChunk, String>>(1);
    let preparer = tokio::spawn(prepare_chunks(state.clone(), rows, prepared_tx));
    while let Some(chunk) = prepared.recv().await {
        // On an error the receiver is dropped: the preparer and the reader stop.
        let chunk = chunk.map_err(|e| ApiError::internal(&e))?;
        state.engine.enroll_chunk(target, chunk.rows, chunk.failed).await?;
    }
    preparer.await.map_err(|e| ApiError::internal(&format!("the bulk preparer stopped: {e}")))?;
    Ok(())
}

/// A chunk ready for the engine: its rows, and those that failed to read.
struct PreparedChunk {
    rows: Vec<BulkRow>,
    failed: Vec<RowResult>,
}

/// Gathers read rows into chunks of [`CHUNK`] and prepares each.
async fn prepare_chunks(
    state: ApiState,
    mut rows: mpsc::Receiver<ReadRow>,
    out: mpsc::Sender<Result<PreparedChunk, String>>,
) {
    let mut numbers: HashMap<String, Result<PhoneNumberId, String>> = HashMap::new();
    let mut chunk = Vec::with_capacity(CHUNK);
    loop {
        let row = rows.recv().await;
        let end = row.is_none();
        chunk.extend(row);
        if chunk.len() >= CHUNK || (end && !chunk.is_empty()) {
            let prepared = prepare_chunk(&state, std::mem::take(&mut chunk), &mut numbers).await;
            if out.send(prepared).await.is_err() {
                return;
            }
        }
        if end {
            return;
        }
    }
}

/// Prepares a chunk: business numbers named for the first time are looked
/// up here; the rest (phones parsed and normalised, rows hashed) is CPU
/// work done on a blocking thread, so the async threads stay free for the
/// chunk committing meanwhile.
async fn prepare_chunk(
    state: &ApiState,
    chunk: Vec<ReadRow>,
    numbers: &mut HashMap<String, Result<PhoneNumberId, String>>,
) -> Result<PreparedChunk, String> {
    for (_, read) in &chunk {
        for name in read.iter().flat_map(|input| &input.contact.opt_in) {
            if !numbers.contains_key(name) {
                let found = resolve_number(state, name).await.map(|n| n.id).map_err(|e| e.message);
                numbers.insert(name.clone(), found);
            }
        }
    }
    let numbers = numbers.clone();
    tokio::task::spawn_blocking(move || prepare_rows(chunk, &numbers))
        .await
        .map_err(|err| format!("preparing rows stopped: {err}"))
}

fn prepare_rows(chunk: Vec<ReadRow>, numbers: &HashMap<String, Result<PhoneNumberId, String>>) -> PreparedChunk {
    let mut rows = Vec::with_capacity(chunk.len());
    let mut failed = Vec::new();
    for (line, read) in chunk {
        match read.and_then(|input| {
            let key = input.key.clone();
            bulk_row(line, input, numbers).map_err(|error| Unreadable::new(key, error))
        }) {
            Ok(row) => rows.push(row),
            Err(Unreadable { key, error }) => failed.push(RowResult {
                line,
                row_key: key,
                outcome: "error",
                contact_id: None,
                enrollment_id: None,
                reason: None,
                error: Some(error),
            }),
        }
    }
    PreparedChunk { rows, failed }
}

/// A read row as the engine takes it, or what is wrong with it.
fn bulk_row(
    line: u64,
    input: RowInput,
    numbers: &HashMap<String, Result<PhoneNumberId, String>>,
) -> Result<BulkRow, String> {
    let content_hash = body_hash(&serde_json::to_value(&input).map_err(|e| e.to_string())?);
    let contact = match (input.contact.id, &input.contact.phone) {
        (Some(id), _) => BulkContact::Id(id),
        (None, Some(phone)) => BulkContact::Phone {
            phone: normalize_phone(phone).map_err(|e| format!("contact.phone: {e}"))?,
            name: input.contact.name.clone(),
            mobile_phone: input
                .contact
                .mobile_phone
                .as_deref()
                .map(normalize_phone)
                .transpose()
                .map_err(|e| format!("contact.mobile_phone: {e}"))?,
            properties: input.contact.properties.clone(),
        },
        (None, None) => return Err("the row names no contact: give `contact.id` or `contact.phone`".into()),
    };
    let mut opt_in = Vec::new();
    for name in &input.contact.opt_in {
        let found = numbers.get(name).cloned().unwrap_or_else(|| Err(format!("no business number `{name}`")));
        opt_in.push(found.map_err(|e| format!("contact.opt_in: {e}"))?);
    }
    let key = input.key.filter(|k| !k.trim().is_empty());
    if key.as_ref().is_some_and(|k| k.len() > 255) {
        return Err("key: at most 255 characters".into());
    }
    Ok(BulkRow { line, key, content_hash, contact, trigger: Value::Object(input.trigger.unwrap_or_default()), opt_in })
}

/// Why the body could not be read to its end.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("the body is over the bulk limit of {0} bytes")]
    TooLarge(u64),
    #[error("{0}")]
    Header(String),
    #[error("the body could not be read: {0}")]
    Body(String),
}

/// Reads the body into rows, in order, counting its bytes against `limit`.
async fn read_rows(body: Body, format: Format, limit: u64, rows: mpsc::Sender<ReadRow>) -> Result<(), ReadError> {
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = seen.clone();
    let stream = body.into_data_stream().map_err(std::io::Error::other).and_then(move |bytes| {
        let total = counted.fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed) + bytes.len() as u64;
        let over = total > limit;
        async move { if over { Err(std::io::Error::other(TOO_LARGE)) } else { Ok(bytes) } }
    });
    let reader = tokio_util::io::StreamReader::new(Box::pin(stream));
    let result = match format {
        Format::Ndjson => read_ndjson(reader, &rows).await,
        Format::Csv => {
            let bridge = tokio_util::io::SyncIoBridge::new(reader);
            tokio::task::spawn_blocking(move || read_csv(bridge, &rows))
                .await
                .unwrap_or_else(|e| Err(ReadError::Body(format!("the CSV reader stopped: {e}"))))
        }
    };
    match result {
        Err(ReadError::Body(message)) if message.contains(TOO_LARGE) => Err(ReadError::TooLarge(limit)),
        other => other,
    }
}

const TOO_LARGE: &str = "body over the bulk limit";

async fn read_ndjson<R: tokio::io::AsyncRead + Unpin>(
    reader: R,
    rows: &mpsc::Sender<ReadRow>,
) -> Result<(), ReadError> {
    let mut reader = tokio::io::BufReader::with_capacity(64 * 1024, reader);
    let mut line = Vec::new();
    let mut number = 0u64;
    loop {
        line.clear();
        let read = (&mut reader).take(MAX_LINE as u64 + 1).read_until(b'\n', &mut line).await;
        let read = read.map_err(|e| ReadError::Body(e.to_string()))?;
        if read == 0 {
            return Ok(());
        }
        number += 1;
        let row = if line.len() > MAX_LINE && !line.ends_with(b"\n") {
            // Skip the rest of the over-long line.
            let mut rest = Vec::new();
            reader.read_until(b'\n', &mut rest).await.map_err(|e| ReadError::Body(e.to_string()))?;
            Err(Unreadable::new(None, format!("the line is over {MAX_LINE} bytes")))
        } else {
            let text = String::from_utf8_lossy(&line);
            let text = text.trim();
            if text.is_empty() {
                continue;
            }
            ndjson_row(text)
        };
        if rows.send((number, row)).await.is_err() {
            return Ok(());
        }
    }
}

use tokio::io::AsyncReadExt as _;

fn read_csv<R: std::io::Read>(reader: R, rows: &mpsc::Sender<ReadRow>) -> Result<(), ReadError> {
    let mut csv = csv::ReaderBuilder::new().flexible(true).trim(csv::Trim::All).from_reader(reader);
    let header = csv.headers().map_err(|e| csv_error(&e))?.clone();
    let columns = CsvColumns::from_header(&header)?;
    let mut record = csv::StringRecord::new();
    loop {
        match csv.read_record(&mut record) {
            Ok(false) => return Ok(()),
            Ok(true) => {
                let line = record.position().map_or(0, |p| p.line());
                if record.iter().all(str::is_empty) {
                    continue;
                }
                if rows.blocking_send((line, columns.row(&record))).is_err() {
                    return Ok(());
                }
            }
            Err(err) if matches!(err.kind(), csv::ErrorKind::Io(_)) => return Err(csv_error(&err)),
            Err(err) => {
                let line = err.position().map_or(0, |p| p.line());
                if rows.blocking_send((line, Err(Unreadable::new(None, format!("not a CSV row: {err}"))))).is_err() {
                    return Ok(());
                }
            }
        }
    }
}

fn csv_error(err: &csv::Error) -> ReadError {
    match err.kind() {
        csv::ErrorKind::Io(io) => ReadError::Body(io.to_string()),
        _ => ReadError::Header(format!("the CSV header cannot be read: {err}")),
    }
}

/// Where each field of a CSV row goes.
struct CsvColumns {
    columns: Vec<CsvColumn>,
}

enum CsvColumn {
    Key,
    ContactId,
    Phone,
    MobilePhone,
    Name,
    OptIn,
    Property(String),
    Trigger(String),
}

impl CsvColumn {
    fn name(&self) -> String {
        match self {
            CsvColumn::Key => "key".into(),
            CsvColumn::ContactId => "contact_id".into(),
            CsvColumn::Phone => "phone".into(),
            CsvColumn::MobilePhone => "mobile_phone".into(),
            CsvColumn::Name => "name".into(),
            CsvColumn::OptIn => "opt_in".into(),
            CsvColumn::Property(name) => format!("properties.{name}"),
            CsvColumn::Trigger(name) => format!("trigger.{name}"),
        }
    }
}

impl CsvColumns {
    fn from_header(header: &csv::StringRecord) -> Result<CsvColumns, ReadError> {
        let mut columns = Vec::new();
        for name in header {
            if name.contains('\0') {
                return Err(ReadError::Header(
                    "a CSV column name (line 1) holds the character U+0000 (NUL): remove it".into(),
                ));
            }
            let column = match name {
                "key" => CsvColumn::Key,
                "contact_id" | "id" => CsvColumn::ContactId,
                "phone" => CsvColumn::Phone,
                "mobile_phone" => CsvColumn::MobilePhone,
                "name" => CsvColumn::Name,
                "opt_in" => CsvColumn::OptIn,
                other => match (other.strip_prefix("properties."), other.strip_prefix("trigger.")) {
                    (Some(p), _) if !p.is_empty() => CsvColumn::Property(p.to_string()),
                    (_, Some(t)) if !t.is_empty() => CsvColumn::Trigger(t.to_string()),
                    _ => {
                        return Err(ReadError::Header(format!(
                            "unknown CSV column `{other}` (line 1): use key, contact_id, phone, mobile_phone, name, \
                             opt_in, properties.NAME or trigger.NAME"
                        )));
                    }
                },
            };
            columns.push(column);
        }
        if !columns.iter().any(|c| matches!(c, CsvColumn::Phone | CsvColumn::ContactId)) {
            return Err(ReadError::Header("the CSV header (line 1) needs a `phone` or `contact_id` column".into()));
        }
        Ok(CsvColumns { columns })
    }

    fn row(&self, record: &csv::StringRecord) -> Result<RowInput, Unreadable> {
        let key = self
            .columns
            .iter()
            .zip(record.iter())
            .find(|(column, _)| matches!(column, CsvColumn::Key))
            .map(|(_, value)| value.to_string());
        for (column, value) in self.columns.iter().zip(record.iter()) {
            if value.contains('\0') {
                return Err(Unreadable::new(
                    key,
                    format!(
                        "column `{}` holds the character U+0000 (NUL), which cannot be stored: remove it",
                        column.name()
                    ),
                ));
            }
        }
        let mut row = RowInput::default();
        let mut properties = Map::new();
        let mut trigger = Map::new();
        for (column, value) in self.columns.iter().zip(record.iter()) {
            if value.is_empty() {
                continue;
            }
            let text = || Some(value.to_string());
            match column {
                CsvColumn::Key => row.key = text(),
                CsvColumn::ContactId => {
                    row.contact.id = Some(
                        value
                            .parse()
                            .map_err(|_| Unreadable::new(key.clone(), format!("contact_id: `{value}` is not an id")))?,
                    )
                }
                CsvColumn::Phone => row.contact.phone = text(),
                CsvColumn::MobilePhone => row.contact.mobile_phone = text(),
                CsvColumn::Name => row.contact.name = text(),
                CsvColumn::OptIn => row.contact.opt_in = value.split(';').map(|s| s.trim().to_string()).collect(),
                CsvColumn::Property(name) => {
                    properties.insert(name.clone(), Value::String(value.to_string()));
                }
                CsvColumn::Trigger(name) => {
                    trigger.insert(name.clone(), Value::String(value.to_string()));
                }
            }
        }
        if !properties.is_empty() {
            row.contact.properties = Some(properties);
        }
        if !trigger.is_empty() {
            row.trigger = Some(trigger);
        }
        Ok(row)
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
