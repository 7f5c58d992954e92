//! Bearer tokens: how they are made and kept (only a SHA-256 hash is
//! stored), what each scope allows, and the rate limit per token.
//!
//! Invariant: a token never appears in a log, an error or the database;
//! only its name and hash do.

use std::num::NonZeroU32;
use std::sync::Arc;

use axum::http::StatusCode;
use axum::http::request::Parts;
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::error::ApiError;
use kairo_core::ids::ApiTokenId;
use kairo_store::{ApiToken, NewApiToken, Store, StoreError};

/// What a token may do. `admin` may do everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Everything, users and teams included.
    Admin,
    /// Contacts, enrollments (single and bulk), workflows and run history.
    Enroll,
    /// Threads, replies, owners, saved views, contacts.
    Inbox,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Admin, Scope::Enroll, Scope::Inbox];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Admin => "admin",
            Scope::Enroll => "enroll",
            Scope::Inbox => "inbox",
        }
    }

    pub fn parse(text: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.as_str() == text.trim())
    }
}

/// A new token: the secret, shown once, and its stored record.
#[derive(Debug)]
pub struct CreatedToken {
    pub secret: kairo_core::secret::Secret,
    pub record: ApiToken,
}

/// Why a token could not be created.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("a token named `{0}` already exists: pick another name, or revoke it first")]
    NameTaken(String),
    #[error("a token needs a name")]
    EmptyName,
    #[error(transparent)]
    Store(StoreError),
}

/// Creates a token with `scopes`; only its hash is stored.
pub async fn create_token(
    store: &Store,
    name: &str,
    scopes: &[Scope],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<CreatedToken, TokenError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(TokenError::EmptyName);
    }
    // Two v4 UUIDs: 244 bits from the operating system's generator.
    let secret = format!("kairo_{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
    let new = NewApiToken {
        name: name.to_string(),
        token_hash: hash_token(&secret),
        scopes: scopes.iter().map(|s| s.as_str().to_string()).collect(),
    };
    match store.insert_api_token(new, now).await {
        Ok(record) => Ok(CreatedToken { secret: kairo_core::secret::Secret::new(secret), record }),
        Err(StoreError::Duplicate { .. }) => Err(TokenError::NameTaken(name.to_string())),
        Err(err) => Err(TokenError::Store(err)),
    }
}

/// The hex SHA-256 of a token, as stored.
pub fn hash_token(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Requests per second each token may make, with a burst of as many.
pub type TokenLimiter = DefaultKeyedRateLimiter<ApiTokenId>;

pub fn token_limiter(per_second: u32) -> Arc<TokenLimiter> {
    let rate = NonZeroU32::new(per_second.max(1)).expect("at least one per second");
    Arc::new(RateLimiter::keyed(Quota::per_second(rate)))
}

/// Whether `token` has the shape of the tokens [`create_token`] makes:
/// `kairo_` and 64 lowercase hexadecimal digits.
fn well_formed(token: &str) -> bool {
    token
        .strip_prefix("kairo_")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

/// Failed authentications a client address may make per [`FAILURE_WINDOW`]
/// before it is refused with 429 without its token being looked up.
pub const FAILURES_ALLOWED: u32 = 20;
pub const FAILURE_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

/// Failed authentications per client address (the connection's peer: put a
/// proxy's own limits in front when clients share one).
///
/// A blocked address may still use a token that authenticated lately (its
/// hash is remembered), so one client guessing does not lock out the
/// others behind the same address; only unknown tokens are refused unread.
#[derive(Debug, Default)]
pub struct FailedAuth {
    windows: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, (std::time::Instant, u32)>>,
    known: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl FailedAuth {
    /// Remembers a token hash that authenticated.
    fn known_good(&self, hash: &str) {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        if known.len() > 10_000 {
            known.clear();
        }
        if !known.contains(hash) {
            known.insert(hash.to_string());
        }
    }

    fn is_known(&self, hash: &str) -> bool {
        self.known.lock().unwrap_or_else(|e| e.into_inner()).contains(hash)
    }

    /// The seconds `address` must wait, when it failed too often lately.
    pub fn blocked(&self, address: std::net::IpAddr) -> Option<u64> {
        let windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let (start, count) = windows.get(&address)?;
        let left = FAILURE_WINDOW.checked_sub(start.elapsed())?;
        (*count >= FAILURES_ALLOWED).then(|| left.as_secs().max(1))
    }

    /// Counts a failure of `address`.
    pub fn failed(&self, address: std::net::IpAddr) {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if windows.len() > 100_000 {
            windows.retain(|_, (start, _)| start.elapsed() < FAILURE_WINDOW);
        }
        let entry = windows.entry(address).or_insert((std::time::Instant::now(), 0));
        if entry.0.elapsed() >= FAILURE_WINDOW {
            *entry = (std::time::Instant::now(), 0);
        }
        entry.1 += 1;
        if entry.1 == FAILURES_ALLOWED {
            tracing::warn!(
                %address,
                "{FAILURES_ALLOWED} unknown tokens from this address within a minute: its unknown tokens are refused \
                 (429) until the minute is over"
            );
        }
    }
}

/// The scopes the matched route takes, set on the route by the router.
#[derive(Debug, Clone, Copy)]
pub struct Needs(pub &'static [Scope]);

/// The caller of a request: a live token, within its rate limit, with a
/// scope the route takes.
#[derive(Debug, Clone)]
pub struct Caller {
    pub token: ApiTokenId,
    pub name: String,
    pub scopes: Vec<Scope>,
}

impl Caller {
    /// Refuses with 403 unless the token has one of `scopes` (or `admin`).
    pub fn require(&self, scopes: &[Scope]) -> Result<(), ApiError> {
        if self.scopes.contains(&Scope::Admin) || scopes.iter().any(|s| self.scopes.contains(s)) {
            return Ok(());
        }
        let wanted: Vec<&str> =
            scopes.iter().filter(|s| **s != Scope::Admin).map(|s| s.as_str()).chain(["admin"]).collect();
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            format!(
                "token `{}` may not do this: it needs the scope {}; create one with `kairo token create --scope …`",
                self.name,
                wanted.join(" or ")
            ),
        )
        .with_details(serde_json::json!({ "needed": wanted, "has": self.scopes })))
    }
}

impl Caller {
    /// Who sends the request: its bearer token checked against `store`, the
    /// address's failures and the token's rate limit, then the route's
    /// scopes ([`Needs`]).
    pub(crate) async fn authenticate(
        parts: &mut Parts,
        store: &Store,
        limiter: &TokenLimiter,
        failures: &FailedAuth,
        address: std::net::IpAddr,
    ) -> Result<Self, ApiError> {
        let header = parts.headers.get(axum::http::header::AUTHORIZATION).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing_token",
                "send a bearer token: Authorization: Bearer <token> (create one with `kairo token create`)",
            )
        })?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "invalid_token",
                    "the Authorization header must be `Bearer <token>`",
                )
            })?;
        // A token not in the shape `kairo token create` makes can never be
        // valid: refused without a lookup, and not counted as a guess (only
        // guesses that could succeed are limited).
        if !well_formed(token) {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "not a Kairo token: they are `kairo_` and 64 hexadecimal digits, as `kairo token create` prints them",
            ));
        }
        let hash = hash_token(token);
        if let Some(wait) = failures.blocked(address).filter(|_| !failures.is_known(&hash)) {
            let mut err = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_failures",
                format!(
                    "too many requests from this address had no valid token ({FAILURES_ALLOWED} a minute at most): \
                     retry after the Retry-After seconds (until then only a token that worked lately gets through)"
                ),
            );
            err.retry_after = Some(wait);
            return Err(err);
        }
        let Some(record) = store.api_token_by_hash(&hash).await? else {
            failures.failed(address);
            return Err(ApiError::new(StatusCode::UNAUTHORIZED, "invalid_token", "the token is unknown or revoked"));
        };
        failures.known_good(&hash);
        if let Err(not_until) = limiter.check_key(&record.id) {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            let mut err = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("token `{}` is over its rate limit; retry after the Retry-After seconds", record.name),
            );
            err.retry_after = Some(wait.as_secs().max(1));
            return Err(err);
        }
        let scopes = record
            .scopes
            .as_array()
            .map(|a| a.iter().filter_map(|s| s.as_str().and_then(Scope::parse)).collect())
            .unwrap_or_default();
        let caller = Caller { token: record.id, name: record.name, scopes };
        // Fails closed: a route that declares no scope serves nobody.
        let Some(Needs(needed)) = parts.extensions.get::<Needs>() else {
            return Err(ApiError::internal(&"a /v1 route declares no scope (`needs` in api/v1/mod.rs)"));
        };
        caller.require(needed)?;
        Ok(caller)
    }
}
