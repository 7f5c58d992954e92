//! Workflows: each with its versions, and per version the enrollments by
//! status and the funnel a marketer watches.

use std::collections::BTreeMap;

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::ApiState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiPath, ErrorBody};
use kairo_core::ids::{WorkflowId, WorkflowVersionId};
use kairo_store::{Funnel, VersionReport, Workflow, WorkflowState};

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WorkflowView {
    /// The `id` of its file.
    pub key: String,
    pub id: WorkflowId,
    pub name: String,
    pub source_path: Option<String>,
    /// The version new enrollments take.
    pub current_version: Option<i32>,
    /// `active`; `paused` (no new enrollments, schedules stopped) or
    /// `archived` (its file was removed); running enrollments go on in both.
    pub state: WorkflowState,
    pub versions: Vec<VersionView>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VersionView {
    pub id: WorkflowVersionId,
    pub version: i32,
    pub content_hash: String,
    pub created_at: DateTime<Utc>,
    /// Enrollments per status (`active`, `waiting`, `completed`, …).
    pub enrollments: BTreeMap<String, u64>,
    /// Enrolled, sent, delivered, read, replied, failed, goal met.
    pub funnel: Funnel,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WorkflowList {
    pub items: Vec<WorkflowView>,
}

/// Every workflow with its versions and funnels.
#[utoipa::path(get, path = "/v1/workflows", tag = "workflows",
    responses((status = 200, body = WorkflowList)), security(("bearer" = [])))]
pub async fn list(State(state): State<ApiState>, _caller: Caller) -> Result<ApiJson<WorkflowList>, ApiError> {
    let mut workflows = state.engine.store().workflows().await?;
    workflows.sort_by(|a, b| a.key.cmp(&b.key));
    let mut items = Vec::with_capacity(workflows.len());
    for workflow in workflows {
        items.push(view(&state, workflow).await?);
    }
    Ok(ApiJson(WorkflowList { items }))
}

/// One workflow by its `id`.
#[utoipa::path(get, path = "/v1/workflows/{key}", tag = "workflows", params(("key" = String, Path)),
    responses((status = 200, body = WorkflowView), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn show(
    State(state): State<ApiState>,
    _caller: Caller,
    ApiPath(key): ApiPath<String>,
) -> Result<ApiJson<WorkflowView>, ApiError> {
    let workflow = state
        .engine
        .store()
        .workflow_by_key(&key)
        .await?
        .ok_or_else(|| ApiError::from(kairo_engine::runtime::EngineError::UnknownWorkflow(key.clone())))?;
    Ok(ApiJson(view(&state, workflow).await?))
}

/// Pauses a workflow: nothing new enrolls (triggers, schedules, the API);
/// running enrollments go on.
#[utoipa::path(post, path = "/v1/workflows/{key}/pause", tag = "workflows", params(("key" = String, Path)),
    responses((status = 200, body = WorkflowView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn pause(
    State(state): State<ApiState>,
    _caller: Caller,
    ApiPath(key): ApiPath<String>,
) -> Result<ApiJson<WorkflowView>, ApiError> {
    set_state(&state, &key, WorkflowState::Paused).await
}

/// Resumes a paused workflow: it enrolls again.
#[utoipa::path(post, path = "/v1/workflows/{key}/resume", tag = "workflows", params(("key" = String, Path)),
    responses((status = 200, body = WorkflowView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn resume(
    State(state): State<ApiState>,
    _caller: Caller,
    ApiPath(key): ApiPath<String>,
) -> Result<ApiJson<WorkflowView>, ApiError> {
    set_state(&state, &key, WorkflowState::Active).await
}

async fn set_state(state: &ApiState, key: &str, to: WorkflowState) -> Result<ApiJson<WorkflowView>, ApiError> {
    let store = state.engine.store();
    let workflow = store
        .workflow_by_key(key)
        .await?
        .ok_or_else(|| ApiError::from(kairo_engine::runtime::EngineError::UnknownWorkflow(key.to_string())))?;
    if WorkflowState::of(&workflow) == WorkflowState::Archived {
        return Err(ApiError::conflict(
            "workflow_archived",
            format!(
                "workflow `{key}` is archived (its file was removed): put its file back in the workflow folder to use it again"
            ),
        ));
    }
    let workflow = store
        .set_workflow_state(key, to, state.engine.now())
        .await?
        .ok_or_else(|| ApiError::from(kairo_engine::runtime::EngineError::UnknownWorkflow(key.to_string())))?;
    state.engine.refresh().await?;
    tracing::info!(workflow = key, state = to.as_str(), "workflow state changed");
    Ok(ApiJson(view(state, workflow).await?))
}

async fn view(state: &ApiState, workflow: Workflow) -> Result<WorkflowView, ApiError> {
    let reports = state.engine.store().version_reports(workflow.id).await?;
    let current_version =
        reports.iter().find(|r| Some(r.version.id) == workflow.current_version_id).map(|r| r.version.version);
    let state = WorkflowState::of(&workflow);
    Ok(WorkflowView {
        state,
        key: workflow.key,
        id: workflow.id,
        name: workflow.name,
        source_path: workflow.source_path,
        current_version,
        versions: reports.into_iter().map(version_view).collect(),
    })
}

fn version_view(report: VersionReport) -> VersionView {
    VersionView {
        id: report.version.id,
        version: report.version.version,
        content_hash: report.version.content_hash,
        created_at: report.version.created_at,
        enrollments: report.by_status,
        funnel: report.funnel,
    }
}
