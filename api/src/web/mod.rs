//! The web pages `kairo serve` shows on the API's port: sign-in and the
//! inbox. Server-rendered HTML (maud, escaped by default), a little of our
//! own JavaScript for live updates and the composer, the assets embedded in
//! the binary: nothing comes from a CDN, so the pages work on a LAN with no
//! internet.
//!
//! One module per page, beside what they share: `session` (the signed-in
//! agent, read from the cookie on every request), `cookies`, `layout`.
//!
//! Invariants:
//! - A page is a thin view over the functions `/v1` calls (`v1::inbox`,
//!   the engine's `reply` and `people`): no product rule (window, consent,
//!   template check, owner rules) is written here.
//! - Every state-changing request (a POST) carries the session's CSRF token,
//!   as a form field or the `X-CSRF-Token` header: [`session::Posted`]
//!   checks it before a handler runs, so no handler can forget it.
//! - A deactivated user's sessions end at once: the store refuses a session
//!   whose user is not active, and an open page's next request (a live
//!   update included) is sent to the sign-in page.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use crate::v1::ApiState;

pub mod assets;
mod composer;
mod contact;
mod conversation;
mod cookies;
mod inbox;
mod layout;
pub mod live;
mod message;
mod query;
mod session;
mod signin;
mod view;
mod views;

/// What the pages reach.
#[derive(Clone)]
pub struct WebState {
    pub api: ApiState,
    pub attempts: Arc<signin::Attempts>,
    pub live: live::Hub,
    /// Cookies get `Secure` (set when Kairo is served over HTTPS).
    pub secure_cookies: bool,
}

impl std::fmt::Debug for WebState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebState").field("secure_cookies", &self.secure_cookies).finish_non_exhaustive()
    }
}

impl WebState {
    /// The pages' state; starts the live feed's poller (one per process).
    pub fn start(api: ApiState, shutdown: tokio_util::sync::CancellationToken) -> Self {
        let secure_cookies = api.settings.secure_cookies;
        let live = live::Hub::start(api.engine.clone(), shutdown);
        WebState { api, attempts: Arc::default(), live, secure_cookies }
    }
}

/// The pages' routes.
pub fn router<S>(state: WebState) -> Router<S> {
    Router::new()
        .route("/", get(home))
        .route("/signin", get(signin::page).post(signin::submit))
        .route("/password", get(signin::password_page).post(signin::choose_password))
        .route("/signout", post(signin::sign_out))
        .route("/inbox", get(inbox::page))
        .route("/inbox/threads", get(inbox::list_fragment))
        .route("/inbox/events", get(live::events))
        .route("/inbox/session", get(inbox::session_check))
        .route("/inbox/views", post(views::create))
        .route("/inbox/views/{id}", post(views::rename))
        .route("/inbox/views/{id}/delete", post(views::delete))
        .route("/inbox/{id}", get(inbox::thread_page))
        .route("/inbox/{id}/conversation", get(inbox::conversation_fragment))
        .route("/inbox/{id}/reply", post(inbox::reply))
        .route("/inbox/{id}/owner", post(inbox::assign))
        .route("/inbox/{id}/close", post(inbox::close))
        .route("/inbox/{id}/contact", post(contact::save))
        .route("/inbox/{id}/reopen", post(inbox::reopen))
        .route("/assets/{name}", get(assets::serve))
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(state)
}

/// `/`: the inbox when signed in, else the sign-in page.
async fn home(State(state): State<WebState>, jar: cookies::Jar) -> Redirect {
    match session::Agent::from_jar(&state, &jar).await {
        Ok(Some(_)) => Redirect::to("/inbox"),
        _ => Redirect::to("/signin"),
    }
}

/// What every page answers with: no framing by other sites, no guessing
/// of types, scripts and styles only from this server, no referrer to
/// other sites, and no caching of pages that show conversations.
async fn security_headers(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let set = |headers: &mut axum::http::HeaderMap, name, value: &'static str| {
        headers.entry(name).or_insert(HeaderValue::from_static(value));
    };
    set(
        headers,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'; \
         form-action 'self'; base-uri 'none'",
    );
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    set(headers, header::REFERRER_POLICY, "same-origin");
    set(headers, header::CACHE_CONTROL, "no-store");
    response
}

/// A page's failure: a message on a page of its own, with a way on.
pub(crate) fn error_page(status: axum::http::StatusCode, title: &str, message: &str) -> Response {
    let body = layout::bare(
        title,
        maud::html! {
            main.narrow {
                h1 { (title) }
                p.error role="alert" { (message) }
                p { a href="/inbox" { "Back to the inbox" } " · " a href="/signin" { "Sign in" } }
            }
        },
    );
    (status, body).into_response()
}
