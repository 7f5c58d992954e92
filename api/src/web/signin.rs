//! Signing in and out, and replacing a one-time password.
//!
//! Failed sign-ins are counted per client address and per account over a
//! quarter of an hour; past the limit the form is refused with the wait
//! before the password is even checked (so argon2's cost cannot be used to
//! load the server either). The counts live in this process: several
//! `kairo serve` processes each allow as many (the limit bounds guessing
//! per process; a proxy in front can limit across them).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::WebState;
use super::cookies::{self, Jar};
use super::layout;
use super::session::{self, AnyAgent, Posted};
use kairo_engine::people::{self, MIN_PASSWORD_CHARS, PeopleError, SignInError};

/// How long failures are remembered.
const WINDOW: Duration = Duration::from_secs(15 * 60);
/// Failed sign-ins allowed per account in [`WINDOW`].
pub const ACCOUNT_FAILURES: u32 = 8;
/// Failed sign-ins allowed per client address in [`WINDOW`] (an office
/// behind one address signs many people in).
pub const ADDRESS_FAILURES: u32 = 30;
/// The session cookie outlives the server's sliding expiry, which decides.
const COOKIE_MAX_AGE_SECS: i64 = 30 * 24 * 3600;

/// Failed sign-ins per address and per account.
#[derive(Debug, Default)]
pub struct Attempts {
    by_address: Mutex<HashMap<IpAddr, (Instant, u32)>>,
    by_account: Mutex<HashMap<String, (Instant, u32)>>,
}

fn blocked<K: std::hash::Hash + Eq>(map: &Mutex<HashMap<K, (Instant, u32)>>, key: &K, limit: u32) -> Option<u64> {
    let map = map.lock().unwrap_or_else(|e| e.into_inner());
    let (start, count) = map.get(key)?;
    let left = WINDOW.checked_sub(start.elapsed())?;
    (*count >= limit).then(|| left.as_secs().max(1))
}

fn count<K: std::hash::Hash + Eq>(map: &Mutex<HashMap<K, (Instant, u32)>>, key: K) {
    let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
    if map.len() > 100_000 {
        map.retain(|_, (start, _)| start.elapsed() < WINDOW);
    }
    let entry = map.entry(key).or_insert((Instant::now(), 0));
    if entry.0.elapsed() >= WINDOW {
        *entry = (Instant::now(), 0);
    }
    entry.1 += 1;
}

impl Attempts {
    /// The seconds to wait, when the address or the account failed too often.
    pub fn blocked(&self, address: IpAddr, account: &str) -> Option<u64> {
        let by_account = blocked(&self.by_account, &account.to_string(), ACCOUNT_FAILURES);
        let by_address = blocked(&self.by_address, &address, ADDRESS_FAILURES);
        by_account.max(by_address)
    }

    pub fn failed(&self, address: IpAddr, account: &str) {
        count(&self.by_address, address);
        count(&self.by_account, account.to_string());
    }

    pub fn succeeded(&self, account: &str) {
        self.by_account.lock().unwrap_or_else(|e| e.into_inner()).remove(account);
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct SignInQuery {
    next: Option<String>,
    #[serde(default)]
    signed_out: Option<String>,
    #[serde(default)]
    expired: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct SignInForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    next: String,
    #[serde(default)]
    csrf: String,
}

/// Only a path of this site is followed after sign-in (never `//host`).
fn local_path(next: Option<&str>) -> String {
    match next {
        Some(path) if path.starts_with('/') && !path.starts_with("//") && !path.starts_with("/\\") => path.to_string(),
        _ => "/inbox".to_string(),
    }
}

fn new_form_token() -> String {
    uuid::Uuid::new_v4().simple().to_string() + &uuid::Uuid::new_v4().simple().to_string()
}

struct SignInView<'a> {
    email: &'a str,
    next: &'a str,
    notice: Option<&'a str>,
    error: Option<&'a str>,
}

fn sign_in_page(state: &WebState, status: StatusCode, view: SignInView<'_>) -> Response {
    let token = new_form_token();
    let body: Markup = html! {
        main.narrow.signin {
            h1 { "Sign in to Kairo" }
            @if let Some(notice) = view.notice { p.notice role="status" { (notice) } }
            form method="post" action="/signin" {
                input type="hidden" name="csrf" value=(token);
                input type="hidden" name="next" value=(view.next);
                label for="email" { "E-mail" }
                input #email type="email" name="email" autocomplete="username" required autofocus[view.error.is_none()]
                    value=(view.email) aria-describedby=[view.error.map(|_| "signin-error")];
                label for="password" { "Password" }
                input #password type="password" name="password" autocomplete="current-password" required
                    autofocus[view.error.is_some()] aria-describedby=[view.error.map(|_| "signin-error")];
                @if let Some(error) = view.error { p #signin-error .error role="alert" { (error) } }
                button type="submit" { "Sign in" }
            }
            p.hint { "No account or forgot the password? An admin gives one with " code { "kairo user create" } " or "
                code { "kairo user password" } "." }
        }
    };
    let mut response = (status, layout::bare("Sign in", body)).into_response();
    let cookie = cookies::set(cookies::SIGNIN_CSRF, &token, Some(3600), state.secure_cookies);
    if let Ok(value) = header::HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

/// `GET /signin`.
pub async fn page(State(state): State<WebState>, jar: Jar, Query(query): Query<SignInQuery>) -> Response {
    if let Ok(Some(_)) = session::Agent::from_jar(&state, &jar).await {
        return Redirect::to(&local_path(query.next.as_deref())).into_response();
    }
    let notice = if query.signed_out.is_some() {
        Some("You are signed out.")
    } else if query.expired.is_some() {
        Some("Your session has ended: sign in again.")
    } else {
        None
    };
    let next = local_path(query.next.as_deref());
    sign_in_page(&state, StatusCode::OK, SignInView { email: "", next: &next, notice, error: None })
}

/// The client's address (the connection's peer), for the failure counts.
pub struct ClientAddress(IpAddr);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        let address = parts
            .extensions
            .get::<ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip())
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        Ok(ClientAddress(address))
    }
}

/// `POST /signin`.
pub async fn submit(
    State(state): State<WebState>,
    ClientAddress(address): ClientAddress,
    jar: Jar,
    body: Bytes,
) -> Response {
    let form: SignInForm = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let next = local_path(Some(&form.next));
    let expected = jar.get(cookies::SIGNIN_CSRF).unwrap_or_default();
    let token_ok =
        !form.csrf.is_empty() && bool::from(subtle::ConstantTimeEq::ct_eq(form.csrf.as_bytes(), expected.as_bytes()));
    if !token_ok {
        return sign_in_page(
            &state,
            StatusCode::FORBIDDEN,
            SignInView {
                email: &form.email,
                next: &next,
                notice: None,
                error: Some(
                    "This sign-in form had expired (or cookies are blocked), so it was not checked: sign in again.",
                ),
            },
        );
    }
    let account = people::normalize_email(&form.email).unwrap_or_else(|_| form.email.trim().to_lowercase());
    if let Some(wait) = state.attempts.blocked(address, &account) {
        return too_many(&state, &form, &next, wait);
    }
    let store = state.api.engine.store();
    let signed = match people::sign_in(store, &form.email, &form.password).await {
        Ok(signed) => signed,
        Err(SignInError::Store(err)) => {
            tracing::error!(%err, "sign-in could not read the database");
            return super::error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Sign-in is unavailable",
                "Kairo cannot read the database right now; try again in a moment.",
            );
        }
        Err(err) => {
            state.attempts.failed(address, &account);
            tracing::info!(%address, "a sign-in was refused");
            let message = err.to_string();
            return sign_in_page(
                &state,
                StatusCode::UNAUTHORIZED,
                SignInView { email: &form.email, next: &next, notice: None, error: Some(&message) },
            );
        }
    };
    state.attempts.succeeded(&account);
    let now = state.api.engine.now();
    let (cookie, _session) = match people::start_session(store, &signed.user, now).await {
        Ok(started) => started,
        Err(err) => {
            tracing::error!(%err, "a web session could not be stored");
            return super::error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Sign-in is unavailable",
                "Kairo cannot write to the database right now; try again in a moment.",
            );
        }
    };
    tracing::info!(user = %signed.user.id, "signed in");
    let to = if signed.must_choose_password { "/password".to_string() } else { next };
    let mut response = Redirect::to(&to).into_response();
    set_cookie(
        &mut response,
        &cookies::set(cookies::SESSION, cookie.expose(), Some(COOKIE_MAX_AGE_SECS), state.secure_cookies),
    );
    set_cookie(&mut response, &cookies::clear(cookies::SIGNIN_CSRF, state.secure_cookies));
    response
}

/// The form refused for a while: too many failures for the account or
/// from the address; `wait` seconds are left.
fn too_many(state: &WebState, form: &SignInForm, next: &str, wait: u64) -> Response {
    let minutes = wait.div_ceil(60);
    let message = format!(
        "Too many failed sign-ins for this account or from this address: try again in {minutes} minute{}.",
        if minutes == 1 { "" } else { "s" }
    );
    let mut response = sign_in_page(
        state,
        StatusCode::TOO_MANY_REQUESTS,
        SignInView { email: &form.email, next, notice: None, error: Some(&message) },
    );
    if let Ok(value) = header::HeaderValue::from_str(&wait.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

fn set_cookie(response: &mut Response, cookie: &str) {
    if let Ok(value) = header::HeaderValue::from_str(cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

fn password_form(agent: &session::Agent, error: Option<&str>) -> Markup {
    html! {
        main.narrow.signin {
            h1 { "Choose your password" }
            p { "Signed in as " strong { (agent.user.email) } ". The password you were given works once: choose your own, of at least "
                (MIN_PASSWORD_CHARS) " characters." }
            form method="post" action="/password" {
                input type="hidden" name="csrf" value=(agent.csrf());
                input type="text" name="username" value=(agent.user.email) autocomplete="username" hidden;
                label for="new-password" { "New password" }
                input #new-password type="password" name="password" autocomplete="new-password" required autofocus
                    minlength=(MIN_PASSWORD_CHARS) aria-describedby=[error.map(|_| "password-error")];
                label for="repeat-password" { "The same again" }
                input #repeat-password type="password" name="repeat" autocomplete="new-password" required
                    minlength=(MIN_PASSWORD_CHARS);
                @if let Some(error) = error { p #password-error .error role="alert" { (error) } }
                button type="submit" { "Save and go to the inbox" }
            }
        }
    }
}

/// `GET /password`.
pub async fn password_page(AnyAgent(agent): AnyAgent) -> Response {
    layout::bare("Choose your password", password_form(&agent, None)).into_response()
}

#[derive(Debug, Default, Deserialize)]
struct PasswordForm {
    #[serde(default)]
    password: String,
    #[serde(default)]
    repeat: String,
}

/// `POST /password`: the new password; every other browser of the person
/// is signed out, and this one gets a new session.
pub async fn choose_password(
    State(state): State<WebState>,
    AnyAgent(agent): AnyAgent,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !agent.csrf_matches(&session::posted_token(&headers, &body)) {
        return session::csrf_refused();
    }
    let form: PasswordForm = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let again = |status: StatusCode, message: &str| {
        (status, layout::bare("Choose your password", password_form(&agent, Some(message)))).into_response()
    };
    if form.password != form.repeat {
        return again(StatusCode::UNPROCESSABLE_ENTITY, "The two passwords differ: type the same one twice.");
    }
    let store = state.api.engine.store();
    let now = state.api.engine.now();
    match people::choose_password(store, &agent.user, &form.password, now).await {
        Ok(()) => {}
        Err(err @ PeopleError::PasswordTooShort) => return again(StatusCode::UNPROCESSABLE_ENTITY, &err.to_string()),
        Err(err) => {
            tracing::error!(%err, "a password could not be saved");
            return again(StatusCode::SERVICE_UNAVAILABLE, "Kairo cannot save it right now; try again in a moment.");
        }
    }
    let renewed = async {
        store.end_web_sessions_of(agent.user.id).await?;
        people::start_session(store, &agent.user, now).await
    };
    match renewed.await {
        Ok((cookie, _)) => {
            let mut response = Redirect::to("/inbox").into_response();
            set_cookie(
                &mut response,
                &cookies::set(cookies::SESSION, cookie.expose(), Some(COOKIE_MAX_AGE_SECS), state.secure_cookies),
            );
            response
        }
        Err(err) => {
            tracing::error!(%err, "a web session could not be renewed");
            Redirect::to("/signin").into_response()
        }
    }
}

/// `POST /signout`.
pub async fn sign_out(State(state): State<WebState>, jar: Jar, _posted: Posted<HashMap<String, String>>) -> Response {
    if let Some(cookie) = jar.get(cookies::SESSION)
        && let Err(err) = people::end_session(state.api.engine.store(), cookie).await
    {
        tracing::error!(%err, "a web session could not be ended");
    }
    let mut response = Redirect::to("/signin?signed_out=1").into_response();
    set_cookie(&mut response, &cookies::clear(cookies::SESSION, state.secure_cookies));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed_after_sign_in() {
        assert_eq!(local_path(Some("/inbox/abc?x=1")), "/inbox/abc?x=1");
        assert_eq!(local_path(Some("//evil.example/")), "/inbox");
        assert_eq!(local_path(Some("/\\evil.example/")), "/inbox");
        assert_eq!(local_path(Some("https://evil.example/")), "/inbox");
        assert_eq!(local_path(None), "/inbox");
    }

    #[test]
    fn an_account_is_blocked_after_its_failures_and_freed_by_a_success() {
        let attempts = Attempts::default();
        let here: IpAddr = "127.0.0.1".parse().expect("an address");
        for _ in 0..ACCOUNT_FAILURES {
            assert!(attempts.blocked(here, "ana@example.com").is_none());
            attempts.failed(here, "ana@example.com");
        }
        assert!(attempts.blocked(here, "ana@example.com").is_some_and(|s| s > 800));
        assert!(attempts.blocked(here, "bo@example.com").is_none(), "another account from here is not blocked yet");
        attempts.succeeded("ana@example.com");
        assert!(attempts.blocked(here, "ana@example.com").is_none());
    }
}
