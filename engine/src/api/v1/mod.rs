//! `/v1`: the JSON API for other systems (enrollments, run history,
//! contacts) and for inbox agents (threads, replies, owners, saved views).
//!
//! Every handler takes a [`Caller`] (a live bearer token within its rate
//! limit) and checks its scope first. Lists are newest first with an opaque
//! `cursor`; `POST`s that create take an `Idempotency-Key`.

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::auth::{Caller, TokenLimiter};
use super::error::ApiError;
use crate::ids::PhoneNumberId;
use crate::runtime::Engine;
use crate::store::{NewIdempotencyRecord, PhoneNumber, StoreError};

pub mod bulk;
pub mod contacts;
pub mod enrollments;
pub mod inbox;
pub mod openapi;
pub mod people;
pub mod workflows;

/// How long an idempotency key is remembered.
pub const IDEMPOTENCY_TTL: chrono::Duration = chrono::Duration::hours(24);
/// Page sizes: the default and the most a `limit` may ask for.
const DEFAULT_LIMIT: u64 = 50;
const MAX_LIMIT: u64 = 500;

/// What the API handlers reach.
#[derive(Debug, Clone)]
pub struct ApiState {
    pub engine: Arc<Engine>,
    /// Single enrollments, committed in groups.
    pub queue: crate::runtime::EnrollQueue,
    pub limiter: Arc<TokenLimiter>,
    pub settings: crate::config::ApiSettings,
}

/// The `/v1` routes, ready to nest under any outer state.
pub fn router<S>(state: ApiState) -> Router<S> {
    let max_body = state.settings.max_body_bytes;
    Router::new()
        .route("/openapi.json", get(openapi::document))
        .route("/enrollments", post(enrollments::enroll).get(enrollments::list))
        .route("/enrollments/bulk", post(bulk::upload).layer(DefaultBodyLimit::disable()))
        .route("/enrollments/{id}", get(enrollments::show))
        .route("/enrollments/{id}/cancel", post(enrollments::cancel))
        .route("/enrollments/{id}/retry", post(enrollments::retry))
        .route("/bulk-jobs", get(bulk::list))
        .route("/bulk-jobs/{id}", get(bulk::show))
        .route("/bulk-jobs/{id}/rows", get(bulk::rows))
        .route("/workflows", get(workflows::list))
        .route("/workflows/{key}", get(workflows::show))
        .route("/workflows/{key}/pause", post(workflows::pause))
        .route("/workflows/{key}/resume", post(workflows::resume))
        .route("/contacts", post(contacts::create).get(contacts::list))
        .route("/contacts/{id}", get(contacts::show).patch(contacts::update))
        .route("/contacts/{id}/consent", post(contacts::set_consent))
        .route("/users", post(people::create_user).get(people::list_users))
        .route("/users/{id}/deactivate", post(people::deactivate_user))
        .route("/teams", post(people::create_team).get(people::list_teams))
        .route("/teams/{id}/deactivate", post(people::deactivate_team))
        .route("/threads", get(inbox::list))
        .route("/statuses/unmatched", get(inbox::unmatched_statuses))
        .route("/threads/{id}", get(inbox::show))
        .route("/threads/{id}/replies", post(inbox::reply))
        .route("/threads/{id}/owner", post(inbox::assign))
        .route("/threads/{id}/close", post(inbox::close))
        .route("/threads/{id}/reopen", post(inbox::reopen))
        .route("/views", post(inbox::create_view).get(inbox::list_views))
        .fallback(super::error::not_found)
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

/// `?cursor=…&limit=…` of every list.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Items per page (default 50, at most 500).
    pub limit: Option<u64>,
}

impl PageParams {
    pub fn limit(&self) -> u64 {
        self.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT)
    }

    /// The cursor as the id it holds.
    pub fn cursor<T: std::str::FromStr>(&self) -> Result<Option<T>, ApiError> {
        match self.cursor.as_deref().filter(|c| !c.is_empty()) {
            None => Ok(None),
            Some(cursor) => cursor
                .parse()
                .map(Some)
                .map_err(|_| ApiError::bad_request("invalid_cursor", "`cursor` is not one this API gave out")),
        }
    }
}

/// A business number named by its Kairo id, its Graph id or its display
/// number (digits are enough).
pub(crate) async fn resolve_number(state: &ApiState, name: &str) -> Result<PhoneNumber, ApiError> {
    let numbers = state.engine.store().phone_numbers().await?;
    let digits: String = name.chars().filter(char::is_ascii_digit).collect();
    let id = name.parse::<PhoneNumberId>().ok();
    numbers
        .iter()
        .find(|n| Some(n.id) == id || n.graph_id == name || (!digits.is_empty() && n.normalized_number == digits))
        .cloned()
        .ok_or_else(|| {
            let known: Vec<&str> = numbers.iter().map(|n| n.display_number.as_str()).collect();
            ApiError::unprocessable("unknown_number", format!("no business number `{name}`"))
                .with_details(serde_json::json!({ "known_numbers": known }))
        })
}

/// Runs a creating request once per `Idempotency-Key`: a repeat with the
/// same body gets the first answer (and changes nothing); the same key with
/// another body is refused with 422; a repeat while the first still runs
/// gets 409. Without the header the request simply runs.
pub(crate) async fn idempotent<F, Fut>(
    state: &ApiState,
    caller: &Caller,
    headers: &HeaderMap,
    endpoint: &str,
    body: &Value,
    run: F,
) -> Result<Response, ApiError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<(StatusCode, Value), ApiError>>,
{
    let Some(key) = idempotency_key(headers)? else {
        let (status, body) = run().await?;
        return Ok((status, axum::Json(body)).into_response());
    };
    let store = state.engine.store();
    let now = state.engine.now();
    let scope = format!("{}:{endpoint}", caller.token);
    let request_hash = body_hash(body);
    let new = NewIdempotencyRecord {
        scope: scope.clone(),
        key: key.clone(),
        request_hash: request_hash.clone(),
        response_status: None,
        response_body: None,
        expires_at: now + IDEMPOTENCY_TTL,
    };
    let record = match store.insert_idempotency_record(new.clone(), now).await {
        Ok(record) => record,
        Err(StoreError::Duplicate { .. }) => {
            let first = store.idempotency_record(&scope, &key).await?;
            match first {
                Some(first) if first.expires_at <= now => {
                    store.delete_idempotency_record(first.id).await?;
                    store.insert_idempotency_record(new, now).await?
                }
                Some(first) => return replay(first, &request_hash),
                None => return Err(ApiError::conflict("idempotency_in_progress", "try again in a moment")),
            }
        }
        Err(err) => return Err(err.into()),
    };
    match run().await {
        Ok((status, body)) => {
            store.complete_idempotency_record(record.id, i32::from(status.as_u16()), body.clone()).await?;
            Ok((status, axum::Json(body)).into_response())
        }
        Err(err) => {
            // Nothing was done: the client may fix the request and send it
            // again with the same key.
            store.delete_idempotency_record(record.id).await?;
            Err(err)
        }
    }
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else { return Ok(None) };
    let key = value.to_str().map(str::trim).unwrap_or_default();
    if key.is_empty() || key.len() > 255 {
        return Err(ApiError::bad_request(
            "invalid_idempotency_key",
            "Idempotency-Key must be 1 to 255 visible ASCII characters",
        ));
    }
    Ok(Some(key.to_string()))
}

fn replay(first: crate::store::IdempotencyRecord, request_hash: &str) -> Result<Response, ApiError> {
    if first.request_hash != request_hash {
        return Err(ApiError::unprocessable(
            "idempotency_key_reused",
            format!(
                "Idempotency-Key `{}` was used with another body; use a new key for a different request",
                first.key
            ),
        ));
    }
    let (Some(status), Some(body)) = (first.response_status, first.response_body) else {
        return Err(ApiError::conflict(
            "idempotency_in_progress",
            "the first request with this Idempotency-Key is still running; try again in a moment",
        ));
    };
    let status = u16::try_from(status).ok().and_then(|s| StatusCode::from_u16(s).ok()).unwrap_or(StatusCode::OK);
    let mut response = (status, axum::Json(body)).into_response();
    response.headers_mut().insert("idempotent-replayed", axum::http::HeaderValue::from_static("true"));
    Ok(response)
}

/// The SHA-256 of a request's JSON (keys sorted), so that the same request
/// written with another key order or spacing is the same request.
pub(crate) fn body_hash(body: &Value) -> String {
    Sha256::digest(body.to_string().as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}
