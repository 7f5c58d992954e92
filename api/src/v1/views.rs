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
    /// How many threads the view shows now.
    pub threads: u64,
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
    Ok((StatusCode::CREATED, ApiJson(save_view(&state, &body.name, &body.filter).await?)))
}

/// Saves a named filter (the API's and the inbox page's one rule).
pub(crate) async fn save_view(state: &ApiState, name: &str, query: &ThreadQuery) -> Result<ViewView, ApiError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(ApiError::unprocessable("invalid_name", "a saved view needs a name"));
    }
    let filter = saved_filter(state, query).await?;
    let new = NewSavedView { name: name.to_string(), owner_user_id: None, filter };
    match state.engine.store().insert_saved_view(new, state.engine.now()).await {
        Ok(view) => view_view(state, view).await,
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
    Ok(ApiJson(view_view(&state, view).await?))
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
    Ok(ApiJson(change_view(&state, id, body.name.as_deref(), body.filter.as_ref()).await?))
}

/// Renames a saved view or replaces its filter.
pub(crate) async fn change_view(
    state: &ApiState,
    id: SavedViewId,
    name: Option<&str>,
    query: Option<&ThreadQuery>,
) -> Result<ViewView, ApiError> {
    let name = match name.map(str::trim) {
        Some("") => return Err(ApiError::unprocessable("invalid_name", "a saved view needs a name")),
        other => other.map(str::to_string),
    };
    let filter = match query {
        None => None,
        Some(query) => Some(saved_filter(state, query).await?),
    };
    match state.engine.store().update_saved_view(id, name.clone(), filter, state.engine.now()).await {
        Ok(Some(view)) => view_view(state, view).await,
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
    remove_view(&state, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes a saved view.
pub(crate) async fn remove_view(state: &ApiState, id: SavedViewId) -> Result<(), ApiError> {
    if state.engine.store().delete_saved_view(id).await? {
        Ok(())
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
    Ok(ApiJson(ViewList { items: views(&state).await? }))
}

/// Every saved view, by name, with how many threads each shows.
pub(crate) async fn views(state: &ApiState) -> Result<Vec<ViewView>, ApiError> {
    let mut out = Vec::new();
    for view in state.engine.store().saved_views().await? {
        out.push(view_view(state, view).await?);
    }
    Ok(out)
}

async fn view_view(state: &ApiState, v: SavedView) -> Result<ViewView, ApiError> {
    let filter: ThreadFilter = serde_json::from_value(v.filter.clone())
        .map_err(|e| ApiError::internal(&format!("saved view {} is unreadable: {e}", v.id)))?;
    let threads = state.engine.store().count_threads(&filter, state.engine.now()).await?;
    Ok(ViewView { id: v.id, name: v.name, filter: v.filter, threads, created_at: v.created_at })
}
