//! The cookies the pages use, read from the `Cookie` header and written as
//! `Set-Cookie` values: `HttpOnly` (no script reads them), `SameSite=Lax`
//! (not sent on another site's POST), `Secure` when served over HTTPS.

use std::collections::HashMap;
use std::convert::Infallible;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;

/// The session cookie: a random secret whose SHA-256 the database keeps.
pub const SESSION: &str = "kairo_session";
/// The sign-in form's CSRF token (there is no session yet to hold it).
pub const SIGNIN_CSRF: &str = "kairo_signin";

/// The request's cookies.
#[derive(Debug, Default, Clone)]
pub struct Jar(HashMap<String, String>);

impl Jar {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }

    pub fn from_parts(parts: &Parts) -> Self {
        let mut cookies = HashMap::new();
        for value in parts.headers.get_all(header::COOKIE) {
            let Ok(text) = value.to_str() else { continue };
            for pair in text.split(';') {
                if let Some((name, value)) = pair.trim().split_once('=') {
                    cookies.entry(name.trim().to_string()).or_insert_with(|| value.trim().to_string());
                }
            }
        }
        Jar(cookies)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Jar {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Jar::from_parts(parts))
    }
}

/// A `Set-Cookie` value that keeps `value` for this browser session's
/// lifetime on the server (the server ends it; the browser drops it when
/// closed only if `max_age` is none).
pub fn set(name: &str, value: &str, max_age: Option<i64>, secure: bool) -> String {
    let mut cookie = format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax");
    if let Some(seconds) = max_age {
        cookie.push_str(&format!("; Max-Age={seconds}"));
    }
    if secure {
        cookie.push_str("; Secure");
    }
    cookie
}

/// A `Set-Cookie` value that removes the cookie.
pub fn clear(name: &str, secure: bool) -> String {
    set(name, "", Some(0), secure)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_http_only_and_same_site_lax_and_secure_when_asked() {
        let plain = set(SESSION, "abc", Some(60), false);
        assert_eq!(plain, "kairo_session=abc; Path=/; HttpOnly; SameSite=Lax; Max-Age=60");
        assert!(set(SESSION, "abc", None, true).ends_with("; Secure"));
        assert!(clear(SESSION, false).contains("Max-Age=0"));
    }

    #[test]
    fn the_first_of_two_cookies_of_one_name_counts() {
        let request = axum::http::Request::builder()
            .header(header::COOKIE, "a=1; kairo_session=first")
            .header(header::COOKIE, "kairo_session=second")
            .body(())
            .expect("a request");
        let (parts, ()) = request.into_parts();
        let jar = Jar::from_parts(&parts);
        assert_eq!(jar.get(SESSION), Some("first"));
        assert_eq!(jar.get("a"), Some("1"));
        assert_eq!(jar.get("missing"), None);
    }
}
