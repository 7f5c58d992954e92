//! The signed-in agent of a request, and the CSRF check of every POST.
//!
//! A request is signed in when its session cookie opens a session the
//! database holds, unexpired, of an active user (`people::session_of`).
//! Pages then answer a browser that is not signed in with a redirect to the
//! sign-in page (back here afterwards); the pages' scripts, which ask with
//! `X-Kairo-Fetch`, get a 401 and send the page there themselves.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;

use super::WebState;
use super::cookies::{self, Jar};
use kairo_core::status::UserRole;
use kairo_engine::people;
use kairo_store::{StoreError, User, WebSession};

/// The header the pages' scripts send: they want a status, not a redirect.
pub const FETCH_HEADER: &str = "x-kairo-fetch";
/// The header a script's POST carries its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// The form field a plain form's POST carries it in.
pub const CSRF_FIELD: &str = "csrf";
/// The largest form a page posts (a reply is at most 4,096 characters).
const MAX_FORM_BYTES: usize = 64 * 1024;

/// A signed-in person.
#[derive(Debug, Clone)]
pub struct Agent {
    pub user: User,
    pub session: WebSession,
}

impl Agent {
    /// The agent a browser's cookies sign in, if any.
    pub async fn from_jar(state: &WebState, jar: &Jar) -> Result<Option<Agent>, StoreError> {
        let Some(cookie) = jar.get(cookies::SESSION) else { return Ok(None) };
        let now = state.api.engine.now();
        let found = people::session_of(state.api.engine.store(), cookie, now).await?;
        Ok(found.map(|(session, user)| Agent { user, session }))
    }

    pub fn is_admin(&self) -> bool {
        self.user.role == UserRole::Admin
    }

    pub fn csrf(&self) -> &str {
        &self.session.csrf_token
    }

    /// Whether `token` is this session's CSRF token (compared in constant
    /// time).
    pub fn csrf_matches(&self, token: &str) -> bool {
        !token.is_empty() && bool::from(token.as_bytes().ct_eq(self.session.csrf_token.as_bytes()))
    }

    /// Whether the person still has to replace a one-time password.
    async fn must_choose_password(&self, state: &WebState) -> Result<bool, StoreError> {
        Ok(state.api.engine.store().password_of(self.user.id).await?.is_none_or(|p| p.one_time))
    }
}

/// Whether a request came from the pages' scripts.
pub fn is_fetch(headers: &HeaderMap) -> bool {
    headers.contains_key(FETCH_HEADER)
}

/// Not signed in: the sign-in page (back to `path` afterwards), or a 401
/// for a script.
fn not_signed_in(parts: &Parts) -> Response {
    if is_fetch(&parts.headers) || parts.method != Method::GET {
        return (StatusCode::UNAUTHORIZED, "your session has ended: sign in again").into_response();
    }
    let back = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/inbox");
    let next: String = url::form_urlencoded::byte_serialize(back.as_bytes()).collect();
    Redirect::to(&format!("/signin?next={next}")).into_response()
}

fn unavailable(err: &StoreError) -> Response {
    tracing::error!(%err, "reading a web session failed");
    super::error_page(
        StatusCode::SERVICE_UNAVAILABLE,
        "The inbox cannot reach its database",
        "Kairo cannot read the database right now. Try again in a moment; if it lasts, an operator should look at \
         the server's log.",
    )
}

impl FromRequestParts<WebState> for Agent {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &WebState) -> Result<Self, Self::Rejection> {
        let agent = match Agent::from_jar(state, &Jar::from_parts(parts)).await {
            Ok(Some(agent)) => agent,
            Ok(None) => return Err(not_signed_in(parts)),
            Err(err) => return Err(unavailable(&err)),
        };
        match agent.must_choose_password(state).await {
            Ok(false) => Ok(agent),
            Ok(true) if is_fetch(&parts.headers) => {
                Err((StatusCode::UNAUTHORIZED, "choose a new password first").into_response())
            }
            Ok(true) => Err(Redirect::to("/password").into_response()),
            Err(err) => Err(unavailable(&err)),
        }
    }
}

/// A signed-in person who may still hold a one-time password (the page
/// where it is replaced).
#[derive(Debug, Clone)]
pub struct AnyAgent(pub Agent);

impl FromRequestParts<WebState> for AnyAgent {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &WebState) -> Result<Self, Self::Rejection> {
        match Agent::from_jar(state, &Jar::from_parts(parts)).await {
            Ok(Some(agent)) => Ok(AnyAgent(agent)),
            Ok(None) => Err(not_signed_in(parts)),
            Err(err) => Err(unavailable(&err)),
        }
    }
}

/// A POST of a signed-in agent whose CSRF token matched, with its form.
#[derive(Debug)]
pub struct Posted<T> {
    pub agent: Agent,
    pub form: T,
    /// It came from the pages' script (answer with a fragment or a status,
    /// not a redirect).
    pub fetch: bool,
}

/// The CSRF token a POST carries: the header, else the form field.
pub fn posted_token(headers: &HeaderMap, body: &[u8]) -> String {
    if let Some(token) = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()) {
        return token.to_string();
    }
    url::form_urlencoded::parse(body)
        .find(|(name, _)| name == CSRF_FIELD)
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default()
}

/// The answer to a POST without its token.
pub fn csrf_refused() -> Response {
    super::error_page(
        StatusCode::FORBIDDEN,
        "This form has expired",
        "The form was not sent from this session's page (its security token is missing or old), so nothing was \
         done. Reload the page and try again.",
    )
}

impl<T: DeserializeOwned + Send> FromRequest<WebState> for Posted<T> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &WebState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = request.into_parts();
        let agent = Agent::from_request_parts(&mut parts, state).await?;
        let fetch = is_fetch(&parts.headers);
        let bytes: Bytes = axum::body::to_bytes(body, MAX_FORM_BYTES).await.map_err(|_| {
            super::error_page(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Too much to send",
                "The form holds more than 64 KiB; shorten the message and try again.",
            )
        })?;
        if !agent.csrf_matches(&posted_token(&parts.headers, &bytes)) {
            return Err(csrf_refused());
        }
        let form = serde_urlencoded::from_bytes::<T>(&bytes).map_err(|err| {
            super::error_page(StatusCode::UNPROCESSABLE_ENTITY, "The form could not be read", &err.to_string())
        })?;
        Ok(Posted { agent, form, fetch })
    }
}
