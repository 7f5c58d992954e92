//! `/v1`: the JSON API for other systems (enrollments, run history,
//! contacts) and for inbox agents (threads, replies, owners, saved views).
//!
//! Every handler takes a [`Caller`] (a live bearer token within its rate
//! limit) and checks its scope first. Lists are newest first with an opaque
//! `cursor`; `POST`s that create take an `Idempotency-Key`.

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::auth::{Caller, Scope, TokenLimiter};
use super::error::ApiError;
use kairo_core::ids::PhoneNumberId;
use kairo_engine::runtime::Engine;
use kairo_store::{NewIdempotencyRecord, PhoneNumber, StoreError};

pub mod bulk;
pub mod contacts;
pub mod enrollments;
pub mod inbox;
pub mod openapi;
pub mod people;
pub mod timeline;
pub mod views;
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
    pub queue: kairo_engine::runtime::EnrollQueue,
    pub limiter: Arc<TokenLimiter>,
    /// Failed authentications per client address.
    pub failed_auth: Arc<super::auth::FailedAuth>,
    pub settings: crate::ApiSettings,
}

impl FromRequestParts<ApiState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, Self::Rejection> {
        let address = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|info| info.0.ip())
            .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        Caller::authenticate(parts, state.engine.store(), &state.limiter, &state.failed_auth, address).await
    }
}

/// The `/v1` routes, ready to nest under any outer state.
pub fn router<S>(state: ApiState) -> Router<S> {
    let max_body = state.settings.max_body_bytes;
    use Scope::{Admin, Enroll, Inbox};
    Router::new()
        .route("/openapi.json", get(openapi::document))
        .route("/enrollments", needs(post(enrollments::enroll).get(enrollments::list), &[Enroll]))
        .route("/enrollments/bulk", needs(post(bulk::upload), &[Enroll]).layer(DefaultBodyLimit::disable()))
        .route("/enrollments/{id}", needs(get(enrollments::show), &[Enroll]))
        .route("/enrollments/{id}/cancel", needs(post(enrollments::cancel), &[Enroll]))
        .route("/enrollments/{id}/retry", needs(post(enrollments::retry), &[Enroll]))
        .route("/bulk-jobs", needs(get(bulk::list), &[Enroll]))
        .route("/bulk-jobs/{id}", needs(get(bulk::show), &[Enroll]))
        .route("/bulk-jobs/{id}/rows", needs(get(bulk::rows), &[Enroll]))
        .route("/workflows", needs(get(workflows::list), &[Enroll]))
        .route("/workflows/{key}", needs(get(workflows::show), &[Enroll]))
        .route("/workflows/{key}/pause", needs(post(workflows::pause), &[Enroll]))
        .route("/workflows/{key}/resume", needs(post(workflows::resume), &[Enroll]))
        .route("/contacts", needs(post(contacts::create).get(contacts::list), &[Enroll, Inbox]))
        .route("/contacts/{id}", needs(get(contacts::show).patch(contacts::update), &[Enroll, Inbox]))
        .route("/contacts/{id}/consent", needs(post(contacts::set_consent), &[Enroll, Inbox]))
        .route("/users", needs(post(people::create_user), &[Admin]))
        .route("/users", needs(get(people::list_users), &[Inbox]))
        .route("/users/{id}/deactivate", needs(post(people::deactivate_user), &[Admin]))
        .route("/teams", needs(post(people::create_team), &[Admin]))
        .route("/teams", needs(get(people::list_teams), &[Inbox]))
        .route("/teams/{id}/deactivate", needs(post(people::deactivate_team), &[Admin]))
        .route("/threads", needs(get(inbox::list), &[Inbox]))
        .route("/statuses/unmatched", needs(get(inbox::unmatched_statuses), &[Inbox]))
        .route("/threads/{id}", needs(get(inbox::show), &[Inbox]))
        .route("/threads/{id}/replies", needs(post(inbox::reply), &[Inbox]))
        .route("/threads/{id}/owner", needs(post(inbox::assign), &[Inbox]))
        .route("/threads/{id}/close", needs(post(inbox::close), &[Inbox]))
        .route("/threads/{id}/reopen", needs(post(inbox::reopen), &[Inbox]))
        .route("/views", needs(post(views::create_view).get(views::list_views), &[Inbox]))
        .route(
            "/views/{id}",
            needs(get(views::show_view).patch(views::update_view).delete(views::delete_view), &[Inbox]),
        )
        .fallback(super::error::not_found)
        .layer(axum::middleware::from_fn(refuse_nul_in_url))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

/// A path segment or a query parameter holding U+0000 (`%00`) answers 422
/// naming it: no database column keeps that character.
async fn refuse_nul_in_url(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let uri = request.uri();
    if uri.path().to_ascii_lowercase().contains("%00") {
        return super::error::nul_error("the path").into_response();
    }
    if let Some(query) = uri.query() {
        for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
            if name.contains('\0') || value.contains('\0') {
                return super::error::nul_error(&name.replace('\0', "\\u0000")).into_response();
            }
        }
    }
    next.run(request).await
}

/// The scopes a route takes (any of them, or `admin`), checked by
/// [`Caller`] as the token is read: before the body is, so a token without
/// the scope gets 403 whatever it sent. The table in docs/api.md lists the
/// same.
fn needs<S: Clone + Send + Sync + 'static>(
    route: axum::routing::MethodRouter<S>,
    scopes: &'static [Scope],
) -> axum::routing::MethodRouter<S> {
    route.layer(axum::Extension(super::auth::Needs(scopes)))
}

/// `?cursor=…&limit=…` of every list.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Items per page (default 50, at most 500).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u64>,
}

impl PageParams {
    /// The page size asked for: 1 to 500 (422 `invalid_limit` otherwise).
    pub fn limit(&self) -> Result<u64, ApiError> {
        checked_limit(self.limit, DEFAULT_LIMIT, MAX_LIMIT)
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

/// `limit` from 1 to `max` (`default` when absent), else 422 `invalid_limit`.
pub(crate) fn checked_limit(limit: Option<u64>, default: u64, max: u64) -> Result<u64, ApiError> {
    match limit {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::unprocessable("invalid_limit", format!("`limit` is 1 to {max}, not {n}"))
            .with_details(serde_json::json!({ "field": "limit" }))),
    }
}

/// A business number named by its Kairo id, its Graph id or its display
/// number (digits are enough).
pub(crate) async fn resolve_number(state: &ApiState, name: &str) -> Result<PhoneNumber, ApiError> {
    let numbers = state.engine.store().phone_numbers().await?;
    let id = name.parse::<PhoneNumberId>().ok();
    numbers.iter().find(|n| Some(n.id) == id || n.answers_to(name)).cloned().ok_or_else(|| {
        let known: Vec<&str> = numbers.iter().map(|n| n.display_number.as_str()).collect();
        ApiError::new(StatusCode::NOT_FOUND, "unknown_number", format!("no business number `{name}`"))
            .with_details(serde_json::json!({ "known_numbers": known }))
    })
}

/// How long a first request may run before a repeat of its key takes it for
/// abandoned (its process stopped before it could store its answer) and
/// runs again.
const IN_PROGRESS_STALE: chrono::Duration = chrono::Duration::minutes(2);

/// Runs a creating request once per `Idempotency-Key`: a repeat with the
/// same body gets the first answer (and changes nothing); the same key with
/// another body is refused with 422; a repeat while the first still runs
/// gets 409. Without the header the request simply runs.
///
/// The request runs in a task of its own: a client that hangs up does not
/// stop it half way, and its answer is stored for the retry (or, when it
/// failed, the key is forgotten so the retry runs).
pub(crate) async fn idempotent<F, Fut>(
    state: &ApiState,
    caller: &Caller,
    headers: &HeaderMap,
    endpoint: &str,
    body: &Value,
    run: F,
) -> Result<Response, ApiError>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<(StatusCode, Value), ApiError>> + Send + 'static,
{
    let Some(key) = idempotency_key(headers)? else {
        let (status, body) = detached(run()).await?;
        return Ok((status, axum::Json(body)).into_response());
    };
    let store = state.engine.store().clone();
    let now = state.engine.now();
    let scope = format!("{}:{endpoint}", caller.token);
    let request_hash = body_hash(body);
    // From the key's claim to its answer, all in a task of its own.
    detached(async move {
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
                    Some(first)
                        if first.expires_at <= now
                            || (first.response_status.is_none() && first.created_at + IN_PROGRESS_STALE <= now) =>
                    {
                        store.delete_idempotency_record(first.id).await?;
                        match store.insert_idempotency_record(new, now).await {
                            Err(StoreError::Duplicate { .. }) => return Err(in_progress()),
                            other => other?,
                        }
                    }
                    Some(first) => return replay(first, &request_hash),
                    None => return Err(in_progress()),
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
                // Nothing was done: the client may fix the request and send
                // it again with the same key.
                store.delete_idempotency_record(record.id).await?;
                Err(err)
            }
        }
    })
    .await
}

fn in_progress() -> ApiError {
    ApiError::conflict(
        "idempotency_in_progress",
        "the first request with this Idempotency-Key is still running; try again in a moment",
    )
}

/// Runs `work` to its end whether or not the request's connection stays.
async fn detached<T: Send + 'static>(
    work: impl Future<Output = Result<T, ApiError>> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::spawn(work).await.map_err(|err| ApiError::internal(&format!("the request's task stopped: {err}")))?
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else { return Ok(None) };
    let key = value.to_str().map(str::trim).unwrap_or_default();
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::bad_request(
            "invalid_idempotency_key",
            "Idempotency-Key must be 1 to 255 visible ASCII characters (no spaces)",
        ));
    }
    Ok(Some(key.to_string()))
}

fn replay(first: kairo_store::IdempotencyRecord, request_hash: &str) -> Result<Response, ApiError> {
    if first.request_hash != request_hash {
        // 409: the request is well formed, and conflicts with what its key
        // already holds (the IETF draft on the header suggests 422).
        return Err(ApiError::conflict(
            "idempotency_key_reused",
            format!(
                "Idempotency-Key `{}` was used with another body; use a new key for a different request",
                first.key
            ),
        ));
    }
    let (Some(status), Some(body)) = (first.response_status, first.response_body) else {
        return Err(in_progress());
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
