//! The Graph API over reqwest (rustls): base URL and version from settings
//! (tests point them at a loopback mock), a bearer token per call, a
//! timeout on every call.
//!
//! Failures come back classified ([`FailureKind`]), and the class of a
//! transport failure depends on whether the call changes anything: a send
//! that timed out or lost its connection after the request was written may
//! have gone out (unknown), a read that did the same is simply retried.
//! Tokens travel only in the `Authorization` header, never in a URL, a log
//! line or an error message.

use std::time::Duration;

use kairo_core::outbound::{CallError, FailureKind};
use kairo_core::secret::Secret;
use serde_json::Value;

use super::errors::GraphError;

/// Where the Graph API is and how long a call may take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphSettings {
    /// `https://graph.facebook.com` in production.
    pub base_url: String,
    /// `v25.0`: always explicit, so Meta's default version never moves under us.
    pub version: String,
    pub timeout: Duration,
}

/// The Graph API client could not be built (no TLS provider, say).
#[derive(Debug, thiserror::Error)]
#[error("cannot build the Graph API client: {0}")]
pub struct ClientError(#[source] pub reqwest::Error);

/// Graph's catch-all error, which may come after a send went out.
const SOMETHING_WENT_WRONG: i64 = 131000;

pub const DEFAULT_GRAPH_URL: &str = "https://graph.facebook.com";
pub const DEFAULT_GRAPH_VERSION: &str = "v25.0";
pub const DEFAULT_GRAPH_TIMEOUT: Duration = Duration::from_secs(15);

impl Default for GraphSettings {
    fn default() -> Self {
        Self {
            base_url: DEFAULT_GRAPH_URL.into(),
            version: DEFAULT_GRAPH_VERSION.into(),
            timeout: DEFAULT_GRAPH_TIMEOUT,
        }
    }
}

/// Whether a call changes anything on Meta's side: it decides what an
/// unanswered call means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    /// A send: unanswered means it may have gone out.
    Sends,
    /// A read: unanswered means try again.
    Reads,
}

#[derive(Debug, Clone)]
pub struct GraphClient {
    http: reqwest::Client,
    settings: GraphSettings,
}

impl GraphClient {
    /// Needs a rustls crypto provider installed (the binary installs ring).
    pub fn new(settings: GraphSettings) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("kairo/", env!("CARGO_PKG_VERSION")))
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(ClientError)?;
        Ok(Self { http, settings })
    }

    pub fn settings(&self) -> &GraphSettings {
        &self.settings
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{}/{}", self.settings.base_url.trim_end_matches('/'), self.settings.version, path)
    }

    /// `POST /{number}/messages`: the JSON answer of an accepted send.
    pub async fn post_message(&self, token: &Secret, number_id: &str, body: &Value) -> Result<Value, CallError> {
        let path = format!("{number_id}/messages");
        let request = self.http.post(self.url(&path)).bearer_auth(token.expose()).json(body);
        self.call(request, &path, Effect::Sends).await
    }

    /// `GET /{path}?{query}`: the JSON answer.
    pub async fn get(&self, token: &Secret, path: &str, query: &[(&str, &str)]) -> Result<Value, CallError> {
        let url = url::Url::parse_with_params(&self.url(path), query).map_err(|e| {
            CallError::permanent(format!(
                "Graph API {path}: the base URL `{}` is not valid: {e}",
                self.settings.base_url
            ))
        })?;
        let request = self.http.get(url).bearer_auth(token.expose());
        self.call(request, path, Effect::Reads).await
    }

    async fn call(&self, request: reqwest::RequestBuilder, path: &str, effect: Effect) -> Result<Value, CallError> {
        let response = request.send().await.map_err(|e| transport_error(&e, path, effect))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let bytes = response.bytes().await.map_err(|e| transport_error(&e, path, effect))?;
        if (200..300).contains(&status) {
            return serde_json::from_slice(&bytes).map_err(|_| {
                let kind = if effect == Effect::Sends { FailureKind::Unknown } else { FailureKind::Temporary };
                CallError::new(kind, format!("Graph API {path}: HTTP {status} with a body that is not JSON"))
            });
        }
        if let Some(graph_error) = GraphError::parse(status, &bytes) {
            let mut error = graph_error.to_call_error();
            // "Something went wrong": Meta says try again, but a send may
            // have gone out; sending again could send twice.
            if effect == Effect::Sends && graph_error.code == SOMETHING_WENT_WRONG {
                error.kind = FailureKind::Unknown;
            }
            if retry_after.is_some() {
                error.retry_after = retry_after;
            }
            return Err(error);
        }
        // No Graph error envelope: a proxy, a load balancer, an outage page.
        let (kind, what) = match status {
            429 => (FailureKind::Throttled, "throttled"),
            500.. if effect == Effect::Sends => {
                (FailureKind::Unknown, "no reliable answer; the message may have gone out")
            }
            500.. => (FailureKind::Temporary, "server error"),
            _ => (FailureKind::Permanent, "refused"),
        };
        let error = CallError::new(kind, format!("Graph API {path}: HTTP {status} without a Graph error ({what})"));
        Err(match (kind, retry_after) {
            (FailureKind::Throttled, wait) => error.after(wait.unwrap_or(Duration::from_secs(1))),
            _ => error,
        })
    }
}

/// A call that got no HTTP answer. Before the request was written (no
/// connection), nothing happened: try again. After, a send may have gone
/// out.
fn transport_error(error: &reqwest::Error, path: &str, effect: Effect) -> CallError {
    let cause = error_chain(error);
    if error.is_builder() {
        return CallError::permanent(format!("Graph API {path}: cannot build the request: {cause}"));
    }
    if error.is_connect() {
        return CallError::temporary(format!("Graph API {path}: cannot connect ({cause}); nothing was sent"));
    }
    let what = if error.is_timeout() { "no answer in time" } else { "the connection broke" };
    match effect {
        Effect::Sends => CallError::new(
            FailureKind::Unknown,
            format!("Graph API {path}: {what} after the request was sent ({cause}); the message may have gone out"),
        ),
        Effect::Reads => CallError::temporary(format!("Graph API {path}: {what} ({cause})")),
    }
}

/// The error and its sources, without the URL (which carries no token,
/// but keeps messages short).
fn error_chain(error: &reqwest::Error) -> String {
    use std::error::Error;
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}
