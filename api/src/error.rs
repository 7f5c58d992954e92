//! One error type for the HTTP API: every failure becomes
//! `{"error": {"code", "message", "details"}}` with its status.
//!
//! Invariant: internals (SQL, paths, secrets) never reach a client. A 5xx is
//! logged once at `error` with an id that its body names; a 4xx is logged at
//! `debug` (the client's mistake is the client's to read).

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use kairo_engine::runtime::{EngineError, ReplyError};
use kairo_store::StoreError;

/// An API failure.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Option<Value>,
    /// Seconds, for 429 answers.
    pub retry_after: Option<u64>,
}

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable (`invalid_phone`, `window_closed`, …).
    pub code: String,
    /// For people: what went wrong and what to do.
    pub message: String,
    /// More about it (the fields at fault, the rows, the time a window closed).
    #[schema(value_type = Option<Object>)]
    pub details: Option<Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), details: None, retry_after: None }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(what: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", format!("no {what}"))
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    /// A name a body gave that is not known (`unknown_number`, …): 409, the
    /// request is well formed but what it names is not there now. (In a
    /// query string the same name is 404: nothing to find by it.)
    pub fn named_in_body(mut self) -> Self {
        if self.status == StatusCode::NOT_FOUND && self.code.starts_with("unknown_") {
            self.status = StatusCode::CONFLICT;
        }
        self
    }

    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!(
                "the request body is over {limit} bytes; send less (bulk enrollments take NDJSON or CSV at /v1/enrollments/bulk)"
            ),
        )
    }

    /// A failure that is not the client's: logged here with an id the
    /// client can quote.
    pub fn internal(err: &dyn std::fmt::Display) -> Self {
        let id = uuid::Uuid::now_v7().simple().to_string();
        tracing::error!(error_id = %id, %err, "API request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("the server failed to answer (error id {id}); try again, and see the server log if it persists"),
        )
    }

    pub fn unavailable(err: &dyn std::fmt::Display) -> Self {
        let id = uuid::Uuid::now_v7().simple().to_string();
        tracing::error!(error_id = %id, %err, "API request failed: database unavailable");
        let mut answer = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("the database is unavailable or busy (error id {id}); try again after the Retry-After seconds"),
        );
        answer.retry_after = Some(1);
        answer
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if !self.status.is_server_error() {
            tracing::debug!(status = %self.status, code = self.code, message = %self.message, "API request refused");
        }
        let body = json!({ "error": { "code": self.code, "message": self.message, "details": self.details } });
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match &err {
            StoreError::Duplicate { what, .. } => ApiError::conflict("conflict", format!("{what} already exists")),
            StoreError::Connect { .. } => ApiError::unavailable(&err),
            _ if err.is_busy() => ApiError::unavailable(&err),
            _ => ApiError::internal(&err),
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(err: EngineError) -> Self {
        match err {
            EngineError::Store(err) => err.into(),
            EngineError::UnknownWorkflow(key) => ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_workflow",
                format!("no workflow `{key}` is loaded: check its id (GET /v1/workflows lists them)"),
            ),
            err @ EngineError::WorkflowNotActive { .. } => {
                let code = match &err {
                    EngineError::WorkflowNotActive { state: kairo_store::WorkflowState::Archived, .. } => {
                        "workflow_archived"
                    }
                    _ => "workflow_paused",
                };
                ApiError::conflict(code, err.to_string())
            }
            err @ EngineError::NotApiEnrollable { .. } => ApiError::conflict("not_api_enrollable", err.to_string()),
            EngineError::MissingTriggerData { workflow, missing } => ApiError::unprocessable(
                "missing_trigger_data",
                format!("workflow `{workflow}` needs these fields in `trigger`: {}", missing.join(", ")),
            )
            .with_details(json!({ "missing": missing })),
            EngineError::UnknownContact(id) => ApiError::not_found(format_args!("contact {id}")),
            EngineError::UnknownEnrollment(id) => ApiError::not_found(format_args!("enrollment {id}")),
            err @ EngineError::WrongState { .. } => ApiError::conflict("wrong_state", err.to_string()),
            err @ EngineError::BrokenVersion(..) => ApiError::internal(&err),
        }
    }
}

impl From<ReplyError> for ApiError {
    fn from(err: ReplyError) -> Self {
        match err {
            ReplyError::UnknownThread(id) => ApiError::not_found(format_args!("thread {id}")),
            err @ ReplyError::UnknownNumber { .. } => ApiError::conflict("unknown_number", err.to_string()),
            ReplyError::WindowClosed { closed_at } => {
                let message = ReplyError::WindowClosed { closed_at }.to_string();
                ApiError::conflict("window_closed", message)
                    .with_details(json!({ "window_closed_at": closed_at, "use": "template" }))
            }
            err @ ReplyError::NotOptedIn => ApiError::conflict("not_opted_in", err.to_string()),
            err @ ReplyError::AnotherThreadOpen { .. } => ApiError::conflict("another_thread_open", err.to_string()),
            ReplyError::NumberPaused { number, reason } => {
                let message = ReplyError::NumberPaused { number: number.clone(), reason: reason.clone() }.to_string();
                ApiError::conflict("number_paused", message).with_details(json!({ "number": number, "reason": reason }))
            }
            ReplyError::MessagingLimit { until } => {
                let message = ReplyError::MessagingLimit { until }.to_string();
                ApiError::conflict("messaging_limit", message).with_details(json!({ "until": until }))
            }
            err @ ReplyError::TemplateNotApproved { .. } => {
                ApiError::conflict("template_not_approved", err.to_string())
            }
            err @ ReplyError::UnknownTemplate { .. } => ApiError::conflict("unknown_template", err.to_string()),
            err @ ReplyError::SampleTemplate { .. } => ApiError::unprocessable("sample_template", err.to_string()),
            ReplyError::TemplateParameters { name, problems } => {
                let message = ReplyError::TemplateParameters { name, problems: problems.clone() }.to_string();
                ApiError::unprocessable("invalid_template_parameters", message)
                    .with_details(json!({ "problems": problems }))
            }
            ReplyError::Refused(call) => {
                let message = format!("WhatsApp refused the reply: {}", call.message);
                ApiError::new(StatusCode::BAD_GATEWAY, "send_refused", message)
                    .with_details(json!({ "whatsapp_code": call.code }))
            }
            err @ ReplyError::OutcomeUnknown(_) => {
                ApiError::new(StatusCode::GATEWAY_TIMEOUT, "send_outcome_unknown", err.to_string())
            }
            ReplyError::Store(err) => err.into(),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::JsonDataError(err) => {
                ApiError::unprocessable("invalid_body", format!("the JSON body does not fit: {}", err.body_text()))
            }
            JsonRejection::JsonSyntaxError(err) => {
                ApiError::bad_request("malformed_json", format!("the body is not valid JSON: {}", err.body_text()))
            }
            JsonRejection::MissingJsonContentType(_) => ApiError::bad_request(
                "content_type",
                "send the body as JSON with the header Content-Type: application/json",
            ),
            JsonRejection::BytesRejection(err) if err.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", "the request body is too large")
            }
            other => ApiError::bad_request("bad_request", other.body_text()),
        }
    }
}

impl From<PathRejection> for ApiError {
    /// An id in the path that is not one this API gives out names nothing:
    /// 404, as an unknown id is.
    fn from(rejection: PathRejection) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("nothing has this id: {}; ids are the `id`s this API answers with", rejection.body_text()),
        )
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::bad_request("invalid_query", format!("the query string is not valid: {}", rejection.body_text()))
    }
}

/// A JSON object body whose rejections are [`ApiError`]s: the body must be
/// an object (never an array standing in for one), and no text in it may
/// hold U+0000, which no database column keeps; either answers 422 naming
/// the field.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> axum::extract::FromRequest<S> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        let axum::Json(value) = axum::Json::<Value>::from_request(request, state).await?;
        if !value.is_object() {
            return Err(ApiError::unprocessable(
                "invalid_body",
                format!("the body must be a JSON object, not {}", json_kind(&value)),
            ));
        }
        check_text(&value, "body")?;
        serde_path_to_error::deserialize(value).map(ApiJson).map_err(|err| {
            let field = err.path().to_string();
            let message = err.into_inner().to_string();
            ApiError::unprocessable("invalid_body", format!("the JSON body does not fit at `{field}`: {message}"))
                .with_details(json!({ "field": field }))
        })
    }
}

/// What kind of JSON value this is, for messages.
pub fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The path (`contact.properties.plan`, `items[2]`) of the first text in
/// `value` (a key or a string) that holds U+0000, if any.
pub fn nul_field(value: &Value) -> Option<String> {
    fn walk(value: &Value, path: &mut String) -> bool {
        match value {
            Value::String(text) => text.contains('\0'),
            Value::Array(items) => items.iter().enumerate().any(|(i, item)| {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                let found = walk(item, path);
                if !found {
                    path.truncate(len);
                }
                found
            }),
            Value::Object(map) => map.iter().any(|(key, item)| {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&key.replace('\0', "\\u0000"));
                let found = key.contains('\0') || walk(item, path);
                if !found {
                    path.truncate(len);
                }
                found
            }),
            _ => false,
        }
    }
    let mut path = String::new();
    walk(value, &mut path).then_some(path)
}

/// Refuses text holding U+0000 with 422 naming the field (`what` names
/// the whole value when it is a plain string).
pub fn check_text(value: &Value, what: &str) -> Result<(), ApiError> {
    match nul_field(value) {
        None => Ok(()),
        Some(field) => {
            let field = if field.is_empty() { what.to_string() } else { field };
            Err(nul_error(&field))
        }
    }
}

/// 422 for a field holding U+0000.
pub fn nul_error(field: &str) -> ApiError {
    ApiError::unprocessable(
        "invalid_text",
        format!("`{field}` holds the character U+0000 (NUL), which cannot be stored: remove it and send again"),
    )
    .with_details(json!({ "field": field }))
}

impl<T: Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// `axum::extract::Path` whose rejections are [`ApiError`]s.
#[derive(Debug, Clone, Copy, axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// `axum::extract::Query` whose rejections are [`ApiError`]s.
#[derive(Debug, Clone, Copy, Default, axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// Unknown paths under the API answer JSON too.
pub async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no_route", "no such endpoint: see /v1/openapi.json for the API")
}

/// A JSON value as `T`, with 422 naming what does not fit.
pub(crate) fn parse_body<T: serde::de::DeserializeOwned>(body: serde_json::Value) -> Result<T, ApiError> {
    serde_json::from_value(body)
        .map_err(|e| ApiError::unprocessable("invalid_body", format!("the JSON body does not fit: {e}")))
}
