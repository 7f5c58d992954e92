//! Saved views: named thread filters, listed with the inbox's threads
//! (`GET /v1/threads?view=`).

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::ApiState;
use super::inbox::{ThreadQuery, narrow};
use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiPath, ErrorBody};
use kairo_core::ids::SavedViewId;
use kairo_store::{NewSavedView, SavedView, StoreError, ThreadFilter};

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewViewBody {
    #[schema(min_length = 1)]
    pub name: String,
    pub filter: ThreadQuery,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ViewView {
    pub id: SavedViewId,
    pub name: String,
    #[schema(value_type = Object)]
    pub filter: Value,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ViewList {
    pub items: Vec<ViewView>,
}

async fn find_view(state: &ApiState, id: SavedViewId) -> Result<SavedView, ApiError> {
    state.engine.store().saved_view(id).await?.ok_or_else(|| ApiError::not_found(format_args!("saved view {id}")))
}

/// Save a named thread filter.
#[utoipa::path(post, path = "/v1/views", tag = "inbox", request_body = NewViewBody,
    responses((status = 201, body = ViewView), (status = 409, description = "Name taken", body = ErrorBody),
        (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_view(
    State(state): State<ApiState>,
    _caller: Caller,
    ApiJson(body): ApiJson<NewViewBody>,
) -> Result<(StatusCode, ApiJson<ViewView>), ApiError> {
    let name = body.name.trim();
    if name.is_empty() {
        return Err(ApiError::unprocessable("invalid_name", "a saved view needs a name"));
    }
    let filter = saved_filter(&state, &body.filter).await?;
    let new = NewSavedView { name: name.to_string(), owner_user_id: None, filter };
    match state.engine.store().insert_saved_view(new, state.engine.now()).await {
        Ok(view) => Ok((StatusCode::CREATED, ApiJson(view_view(view)))),
        Err(StoreError::Duplicate { .. }) => {
            Err(ApiError::conflict("name_taken", format!("a saved view named `{name}` already exists")))
        }
        Err(err) => Err(err.into()),
    }
}

/// A saved view's new name or filter (either or both).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ViewChange {
    #[schema(min_length = 1)]
    pub name: Option<String>,
    pub filter: Option<ThreadQuery>,
}

/// One saved view.
#[utoipa::path(get, path = "/v1/views/{id}", tag = "inbox", params(("id" = SavedViewId, Path)),
    responses((status = 200, body = ViewView), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn show_view(
    State(state): State<ApiState>,
    _caller: Caller,
    ApiPath(id): ApiPath<SavedViewId>,
) -> Result<ApiJson<ViewView>, ApiError> {
    let view = find_view(&state, id).await?;
    Ok(ApiJson(view_view(view)))
}

/// Rename a saved view, or replace its filter.
#[utoipa::path(patch, path = "/v1/views/{id}", tag = "inbox", params(("id" = SavedViewId, Path)),
    request_body = ViewChange,
    responses((status = 200, body = ViewView), (status = 404, body = ErrorBody),
        (status = 409, description = "Name taken", body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn update_view(
    State(state): State<ApiState>,
    _caller: Caller,
    ApiPath(id): ApiPath<SavedViewId>,
    ApiJson(body): ApiJson<ViewChange>,
) -> Result<ApiJson<ViewView>, ApiError> {
    let name = match body.name.as_deref().map(str::trim) {
        Some("") => return Err(ApiError::unprocessable("invalid_name", "a saved view needs a name")),
        other => other.map(str::to_string),
    };
    let filter = match &body.filter {
        None => None,
        Some(query) => Some(saved_filter(&state, query).await?),
    };
    match state.engine.store().update_saved_view(id, name.clone(), filter, state.engine.now()).await {
        Ok(Some(view)) => Ok(ApiJson(view_view(view))),
        Ok(None) => Err(ApiError::not_found(format_args!("saved view {id}"))),
        Err(StoreError::Duplicate { .. }) => Err(ApiError::conflict(
            "name_taken",
            format!("a saved view named `{}` already exists", name.unwrap_or_default()),
        )),
        Err(err) => Err(err.into()),
    }
}

/// Delete a saved view (the threads it showed stay as they are).
#[utoipa::path(delete, path = "/v1/views/{id}", tag = "inbox", params(("id" = SavedViewId, Path)),
    responses((status = 204, description = "Deleted"), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn delete_view(
    State(state): State<ApiState>,
    _caller: Caller,
    ApiPath(id): ApiPath<SavedViewId>,
) -> Result<StatusCode, ApiError> {
    if state.engine.store().delete_saved_view(id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format_args!("saved view {id}")))
    }
}

/// A saved filter from a view's query: no paging, no view of its own.
async fn saved_filter(state: &ApiState, query: &ThreadQuery) -> Result<Value, ApiError> {
    if query.view.is_some() || query.cursor.is_some() || query.limit.is_some() || query.sort.is_some() {
        return Err(ApiError::unprocessable(
            "invalid_filter",
            "a saved filter holds no `view`, `cursor`, `limit` or `sort`",
        ));
    }
    let mut filter = ThreadFilter::default();
    narrow(state, &mut filter, query).await.map_err(ApiError::named_in_body)?;
    Ok(serde_json::to_value(&filter).expect("a filter serialises"))
}

/// Every saved view, by name.
#[utoipa::path(get, path = "/v1/views", tag = "inbox", responses((status = 200, body = ViewList)),
    security(("bearer" = [])))]
pub async fn list_views(State(state): State<ApiState>, _caller: Caller) -> Result<ApiJson<ViewList>, ApiError> {
    let views = state.engine.store().saved_views().await?;
    Ok(ApiJson(ViewList { items: views.into_iter().map(view_view).collect() }))
}

fn view_view(v: SavedView) -> ViewView {
    ViewView { id: v.id, name: v.name, filter: v.filter, created_at: v.created_at }
}
