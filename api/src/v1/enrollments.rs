//! Enrollments: enroll one contact (idempotent with `Idempotency-Key`),
//! list and filter, one enrollment with its whole step history, cancel,
//! retry a failed step.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::contacts::{ContactInput, normalized};
use super::inbox::MessageView;
use super::{ApiState, PageParams, body_hash, idempotent, resolve_number};
use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody, parse_body};
use kairo_core::ids::{ContactId, EnrollmentId, StepExecutionId, WorkflowId, WorkflowVersionId};
use kairo_core::status::{EnrollmentStatus, StepState};
use kairo_engine::runtime::{BulkContact, BulkRow, EngineError, QueueError};
use kairo_store::{Enrollment, EnrollmentFilter, HistoryEntry};

/// Enroll one contact into a workflow.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollBody {
    /// The workflow's `id`, as in its file.
    pub workflow: String,
    /// The contact, by `id` or by `phone` (created when no contact has it).
    pub contact: ContactInput,
    /// Trigger data: the workflow reads it as `trigger.*`; its `api`
    /// trigger's `required` fields must be here.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub trigger: Value,
}

/// What enrolling did.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EnrollResult {
    /// `enrolled`, or `skipped` by one of the workflow's enrollment rules.
    pub result: String,
    pub contact: Option<ContactId>,
    pub enrollment: Option<EnrollmentId>,
    /// Why an enrollment rule said no: `already_enrolled`, `too_soon`,
    /// `still_running` or `suppressed`.
    pub reason: Option<String>,
}

/// One contact's run through one workflow version.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EnrollmentView {
    pub id: EnrollmentId,
    /// The workflow's `id`.
    pub workflow: String,
    pub workflow_id: WorkflowId,
    pub workflow_version_id: WorkflowVersionId,
    pub contact: ContactId,
    pub status: EnrollmentStatus,
    pub current_step: Option<String>,
    pub trigger_kind: String,
    #[schema(value_type = Object)]
    pub trigger_data: Value,
    pub exit_reason: Option<String>,
    pub error: Option<String>,
    pub enrolled_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// One step execution (one attempt of one step).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StepView {
    pub id: StepExecutionId,
    pub step: String,
    pub attempt: i32,
    pub state: StepState,
    #[schema(value_type = Option<Object>)]
    pub output: Option<Value>,
    pub error: Option<String>,
    pub due_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The message this step sent, with its delivery.
    pub message: Option<MessageView>,
}

/// An enrollment and every step execution, oldest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EnrollmentDetail {
    #[serde(flatten)]
    pub enrollment: EnrollmentView,
    /// The version's number (1, 2, …).
    pub workflow_version: i32,
    pub steps: Vec<StepView>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EnrollmentPage {
    pub items: Vec<EnrollmentView>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EnrollmentQuery {
    /// Only this workflow (its `id`).
    pub workflow: Option<String>,
    /// Only this status.
    pub status: Option<EnrollmentStatus>,
    /// Only this contact.
    pub contact: Option<ContactId>,
    /// The `next_cursor` of the previous page.
    #[param(pattern = "^$|^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")]
    pub cursor: Option<String>,
    /// Items per page (default 50, at most 500).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelBody {
    /// Kept as the enrollment's exit reason.
    pub reason: Option<String>,
}

/// Enroll one contact.
#[utoipa::path(post, path = "/v1/enrollments", tag = "enrollments",
    request_body = EnrollBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "A repeat with the same key and body returns the first answer", min_length = 1, max_length = 255, pattern = "^[!-~]+$")),
    responses(
        (status = 201, description = "Enrolled", body = EnrollResult),
        (status = 200, description = "Skipped by an enrollment rule", body = EnrollResult),
        (status = 404, description = "Unknown workflow or contact", body = ErrorBody),
        (status = 422, description = "Invalid phone, missing trigger data, key reused with another body", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn enroll(
    State(state): State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, ApiError> {
    let request: EnrollBody = parse_body(body.clone())?;
    let trigger = if request.trigger.is_null() { serde_json::json!({}) } else { request.trigger.clone() };
    check_enrollable(&state, &request.workflow, &trigger).await?;
    let row = enroll_row(&state, &request.contact, trigger, &body).await?;
    let task_state = state.clone();
    idempotent(&state, &caller, &headers, "POST /v1/enrollments", &body, move || async move {
        let result = task_state.queue.enroll(&request.workflow, row).await.map_err(|err| match err {
            QueueError::Engine(err) => ApiError::from(err),
            QueueError::Failed(message) => ApiError::internal(&message),
            QueueError::Stopped => ApiError::unavailable(&"the server is shutting down"),
        })?;
        let contact = result.contact_id;
        let (status, answer) = match result.outcome {
            "enrolled" => (
                StatusCode::CREATED,
                EnrollResult { result: "enrolled".into(), contact, enrollment: result.enrollment_id, reason: None },
            ),
            "skipped" => (
                StatusCode::OK,
                EnrollResult { result: "skipped".into(), contact, enrollment: None, reason: result.reason },
            ),
            _ => {
                let message = result.error.unwrap_or_else(|| "the enrollment was refused".into());
                return Err(ApiError::conflict("enrollment_refused", message));
            }
        };
        Ok((status, serde_json::to_value(answer).expect("a result serialises")))
    })
    .await
}

/// The workflow is loaded, takes API enrollments, and `trigger` has what
/// its `api` trigger requires.
async fn check_enrollable(state: &ApiState, workflow: &str, trigger: &Value) -> Result<(), ApiError> {
    let plan = state.engine.enrollable_plan_now(workflow).await?;
    let Some(api) = plan.model.triggers.iter().find_map(|t| t.api.as_ref()) else {
        return Err(EngineError::NotApiEnrollable { workflow: workflow.into() }.into());
    };
    let missing: Vec<String> =
        api.required.iter().filter(|f| trigger.get(f.as_str()).is_none_or(Value::is_null)).cloned().collect();
    if !missing.is_empty() {
        return Err(EngineError::MissingTriggerData { workflow: workflow.into(), missing }.into());
    }
    Ok(())
}

/// The request as a row for the enrolling task, every field checked.
async fn enroll_row(
    state: &ApiState,
    contact: &ContactInput,
    trigger: Value,
    body: &Value,
) -> Result<BulkRow, ApiError> {
    let target = match (contact.id, &contact.phone) {
        (Some(id), _) => {
            state.engine.store().contact(id).await?.ok_or_else(|| {
                ApiError::new(StatusCode::NOT_FOUND, "unknown_contact", format!("no contact {id} (contact.id)"))
            })?;
            BulkContact::Id(id)
        }
        (None, Some(phone)) => BulkContact::Phone {
            phone: normalized(Some(phone), "contact.phone")?.unwrap_or_default(),
            name: contact.name.clone(),
            mobile_phone: normalized(contact.mobile_phone.as_deref(), "contact.mobile_phone")?,
            properties: contact.properties.clone(),
        },
        (None, None) => {
            return Err(ApiError::unprocessable(
                "missing_contact",
                "name the contact by `contact.id` or `contact.phone`",
            ));
        }
    };
    let mut opt_in = Vec::new();
    for number in &contact.opt_in {
        opt_in.push(resolve_number(state, number).await.map_err(ApiError::named_in_body)?.id);
    }
    Ok(BulkRow { line: 0, key: None, content_hash: body_hash(body), contact: target, trigger, opt_in })
}

/// List enrollments, newest first.
#[utoipa::path(get, path = "/v1/enrollments", tag = "enrollments", params(EnrollmentQuery),
    responses((status = 200, body = EnrollmentPage), (status = 404, description = "Unknown workflow", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<ApiState>,
    _caller: Caller,
    ApiQuery(query): ApiQuery<EnrollmentQuery>,
) -> Result<ApiJson<EnrollmentPage>, ApiError> {
    let store = state.engine.store();
    let keys = workflow_keys(&state).await?;
    let workflow = match &query.workflow {
        Some(key) => Some(
            keys.iter()
                .find(|(_, k)| *k == key)
                .map(|(id, _)| *id)
                .ok_or_else(|| ApiError::from(EngineError::UnknownWorkflow(key.clone())))?,
        ),
        None => None,
    };
    let paging = PageParams { cursor: query.cursor.clone(), limit: query.limit };
    let filter = EnrollmentFilter {
        workflow,
        status: query.status,
        contact: query.contact,
        before: paging.cursor()?,
        limit: paging.limit()?,
    };
    let page = store.list_enrollments(filter).await?;
    Ok(ApiJson(EnrollmentPage {
        items: page.items.into_iter().map(|e| enrollment_view(e, &keys)).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// One enrollment with its step history.
#[utoipa::path(get, path = "/v1/enrollments/{id}", tag = "enrollments",
    params(("id" = EnrollmentId, Path)),
    responses((status = 200, body = EnrollmentDetail), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn show(
    State(state): State<ApiState>,
    _caller: Caller,
    ApiPath(id): ApiPath<EnrollmentId>,
) -> Result<ApiJson<EnrollmentDetail>, ApiError> {
    // Run history is the marketers' and their systems' (docs/api.md's
    // scope table): an inbox token reads threads, not workflow internals.
    Ok(ApiJson(detail(&state, id).await?))
}

/// Cancel a running enrollment.
#[utoipa::path(post, path = "/v1/enrollments/{id}/cancel", tag = "enrollments",
    params(("id" = EnrollmentId, Path)), request_body(content = Option<CancelBody>),
    responses((status = 200, body = EnrollmentDetail), (status = 404, body = ErrorBody),
        (status = 409, description = "Not running", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn cancel(
    State(state): State<ApiState>,
    caller: Caller,
    ApiPath(id): ApiPath<EnrollmentId>,
    body: axum::body::Bytes,
) -> Result<ApiJson<EnrollmentDetail>, ApiError> {
    // The body is optional: empty, `null`, or `{"reason": "…"}`.
    let body: CancelBody = if body.iter().all(u8::is_ascii_whitespace) {
        CancelBody::default()
    } else {
        let value: Value = serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request("malformed_json", format!("the body is not valid JSON: {e}")))?;
        crate::error::check_text(&value, "body")?;
        if value.is_null() { CancelBody::default() } else { parse_body(value)? }
    };
    let reason = body.reason.unwrap_or_else(|| format!("cancelled through the API by {}", caller.name));
    state.engine.cancel(id, &reason).await?;
    Ok(ApiJson(detail(&state, id).await?))
}

/// Retry the failed step of a failed enrollment.
#[utoipa::path(post, path = "/v1/enrollments/{id}/retry", tag = "enrollments",
    params(("id" = EnrollmentId, Path)),
    responses((status = 200, body = EnrollmentDetail), (status = 404, body = ErrorBody),
        (status = 409, description = "Not failed", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn retry(
    State(state): State<ApiState>,
    _caller: Caller,
    ApiPath(id): ApiPath<EnrollmentId>,
) -> Result<ApiJson<EnrollmentDetail>, ApiError> {
    state.engine.retry(id).await?;
    Ok(ApiJson(detail(&state, id).await?))
}

async fn detail(state: &ApiState, id: EnrollmentId) -> Result<EnrollmentDetail, ApiError> {
    let store = state.engine.store();
    let enrollment = store.enrollment(id).await?.ok_or_else(|| ApiError::not_found(format_args!("enrollment {id}")))?;
    let version = store.workflow_version(enrollment.workflow_version_id).await?;
    let keys = workflow_keys(state).await?;
    let steps = store.enrollment_steps(id).await?.into_iter().map(step_view).collect();
    Ok(EnrollmentDetail {
        workflow_version: version.map_or(0, |v| v.version),
        enrollment: enrollment_view(enrollment, &keys),
        steps,
    })
}

async fn workflow_keys(state: &ApiState) -> Result<HashMap<WorkflowId, String>, ApiError> {
    Ok(state.engine.store().workflows().await?.into_iter().map(|w| (w.id, w.key)).collect())
}

fn enrollment_view(e: Enrollment, keys: &HashMap<WorkflowId, String>) -> EnrollmentView {
    EnrollmentView {
        id: e.id,
        workflow: keys.get(&e.workflow_id).cloned().unwrap_or_default(),
        workflow_id: e.workflow_id,
        workflow_version_id: e.workflow_version_id,
        contact: e.contact_id,
        status: e.status,
        current_step: e.current_step,
        trigger_kind: e.trigger_kind,
        trigger_data: e.trigger_data,
        exit_reason: e.exit_reason,
        error: e.error,
        enrolled_at: e.enrolled_at,
        updated_at: e.updated_at,
        finished_at: e.finished_at,
    }
}

fn step_view(entry: HistoryEntry) -> StepView {
    let s = entry.execution;
    StepView {
        id: s.id,
        step: s.step_id,
        attempt: s.attempt,
        state: s.state,
        output: s.output,
        error: s.error,
        due_at: s.due_at,
        started_at: s.started_at,
        finished_at: s.finished_at,
        message: entry.message.map(MessageView::from),
    }
}
