//! Rows of a bulk upload, from the body to the engine: NDJSON lines or CSV
//! records read one at a time, each into a row or the reason it is
//! unreadable; business numbers looked up once per upload; phones
//! normalised and rows hashed off the async threads, a chunk at a time.

use std::collections::HashMap;

use axum::body::Body;
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;

use crate::error::ApiError;
use crate::v1::contacts::ContactInput;
use crate::v1::{ApiState, body_hash, resolve_number};
use kairo_core::ids::PhoneNumberId;
use kairo_core::phone::{PhoneError, normalize_phone};
use kairo_engine::runtime::{BulkContact, BulkRow, BulkTarget};
use kairo_store::RowResult;

/// Rows per transaction: large enough that a commit carries many rows,
/// small enough that progress shows and SQLite's writer is not held long.
pub(super) const CHUNK: usize = 500;
/// The longest NDJSON line accepted.
const MAX_LINE: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Format {
    Ndjson,
    Csv,
}

impl Format {
    pub(super) fn name(self) -> &'static str {
        match self {
            Format::Ndjson => "ndjson",
            Format::Csv => "csv",
        }
    }
}

/// A row read from the body: its line, its content, or why it is unreadable.
pub(super) type ReadRow = (u64, Result<RowInput, Unreadable>);

/// Why a row cannot be taken, with its key when it could be read.
#[derive(Debug, Clone)]
pub(super) struct Unreadable {
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
        let kind = crate::error::json_kind(&value);
        return Err(Unreadable::new(key, format!("a row is a JSON object, not {kind}")));
    }
    if let Some(field) = crate::error::nul_field(&value) {
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
pub(super) struct RowInput {
    #[serde(default)]
    key: Option<String>,
    contact: ContactInput,
    #[serde(default)]
    trigger: Option<Map<String, Value>>,
}

/// Takes rows as they are read and enrolls them a chunk at a time; the
/// next chunk is prepared (phones normalised, rows hashed) while the one
/// before it commits, so the database's writer waits on neither.
pub(super) async fn apply_rows(
    state: &ApiState,
    target: &BulkTarget<'_>,
    rows: mpsc::Receiver<ReadRow>,
) -> Result<(), ApiError> {
    let (prepared_tx, mut prepared) = mpsc::channel::<Result<PreparedChunk, PrepareError>>(1);
    let preparer = tokio::spawn(prepare_chunks(state.clone(), rows, prepared_tx));
    while let Some(chunk) = prepared.recv().await {
        // On an error the receiver is dropped: the preparer and the reader stop.
        let chunk = chunk.map_err(|e| ApiError::internal(&e.to_string()))?;
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
    out: mpsc::Sender<Result<PreparedChunk, PrepareError>>,
) {
    let mut numbers: Numbers = HashMap::new();
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
    numbers: &mut Numbers,
) -> Result<PreparedChunk, PrepareError> {
    for (_, read) in &chunk {
        for name in read.iter().flat_map(|input| &input.contact.opt_in) {
            if !numbers.contains_key(name) {
                let found = resolve_number(state, name).await.map(|n| n.id).map_err(|e| UnknownNumber(e.message));
                numbers.insert(name.clone(), found);
            }
        }
    }
    let numbers = numbers.clone();
    tokio::task::spawn_blocking(move || prepare_rows(chunk, &numbers)).await.map_err(PrepareError)
}

/// The preparing task ended abnormally (a panic).
#[derive(Debug, thiserror::Error)]
#[error("preparing rows stopped: {0}")]
struct PrepareError(tokio::task::JoinError);

/// The business numbers rows named so far, each found or not.
type Numbers = HashMap<String, Result<PhoneNumberId, UnknownNumber>>;

/// A business number a row names that is not there; the message says
/// which numbers are.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
struct UnknownNumber(String);

/// What is wrong with a row that was read; the message is the row's `error`.
#[derive(Debug, thiserror::Error)]
enum RowError {
    #[error("the row cannot be hashed: {0}")]
    Unhashable(serde_json::Error),
    #[error("contact.phone: {0}")]
    Phone(PhoneError),
    #[error("contact.mobile_phone: {0}")]
    MobilePhone(PhoneError),
    #[error("the row names no contact: give `contact.id` or `contact.phone`")]
    NoContact,
    #[error("contact.opt_in: {0}")]
    OptIn(UnknownNumber),
    #[error("key: at most 255 characters")]
    KeyTooLong,
}

fn prepare_rows(chunk: Vec<ReadRow>, numbers: &Numbers) -> PreparedChunk {
    let mut rows = Vec::with_capacity(chunk.len());
    let mut failed = Vec::new();
    for (line, read) in chunk {
        match read.and_then(|input| {
            let key = input.key.clone();
            bulk_row(line, input, numbers).map_err(|error| Unreadable::new(key, error.to_string()))
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
fn bulk_row(line: u64, input: RowInput, numbers: &Numbers) -> Result<BulkRow, RowError> {
    let content_hash = body_hash(&serde_json::to_value(&input).map_err(RowError::Unhashable)?);
    let contact = match (input.contact.id, &input.contact.phone) {
        (Some(id), _) => BulkContact::Id(id),
        (None, Some(phone)) => BulkContact::Phone {
            phone: normalize_phone(phone).map_err(RowError::Phone)?,
            name: input.contact.name.clone(),
            mobile_phone: input
                .contact
                .mobile_phone
                .as_deref()
                .map(normalize_phone)
                .transpose()
                .map_err(RowError::MobilePhone)?,
            properties: input.contact.properties.clone(),
        },
        (None, None) => return Err(RowError::NoContact),
    };
    let mut opt_in = Vec::new();
    for name in &input.contact.opt_in {
        let found =
            numbers.get(name).cloned().unwrap_or_else(|| Err(UnknownNumber(format!("no business number `{name}`"))));
        opt_in.push(found.map_err(RowError::OptIn)?);
    }
    let key = input.key.filter(|k| !k.trim().is_empty());
    if key.as_ref().is_some_and(|k| k.len() > 255) {
        return Err(RowError::KeyTooLong);
    }
    Ok(BulkRow { line, key, content_hash, contact, trigger: Value::Object(input.trigger.unwrap_or_default()), opt_in })
}

/// Why the body could not be read to its end.
#[derive(Debug, thiserror::Error)]
pub(super) enum ReadError {
    #[error("the body is over the bulk limit of {0} bytes")]
    TooLarge(u64),
    #[error("{0}")]
    Header(String),
    #[error("the body could not be read: {0}")]
    Body(String),
}

/// Reads the body into rows, in order, counting its bytes against `limit`.
pub(super) async fn read_rows(
    body: Body,
    format: Format,
    limit: u64,
    rows: mpsc::Sender<ReadRow>,
) -> Result<(), ReadError> {
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
