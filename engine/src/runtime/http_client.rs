//! The `http` step's client, on reqwest with rustls.
//!
//! Classification: a request that could not connect, or timed out, may be
//! retried; any answer is handed back with its status for the runtime to
//! judge (2xx succeeds, 429 and 5xx retry, other 4xx fail).

use async_trait::async_trait;
use kairo_core::outbound::{CallError, HttpAnswer, HttpCall, HttpCaller};

#[derive(Debug, Clone)]
pub struct ReqwestHttp {
    client: reqwest::Client,
}

impl ReqwestHttp {
    /// Needs a rustls crypto provider installed (the binary installs ring).
    pub fn new() -> Result<Self, ClientError> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("kairo/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|source| ClientError { what: "HTTP", source })?;
        Ok(Self { client })
    }
}

/// An HTTP client that could not be built (no TLS provider, say).
#[derive(Debug, thiserror::Error)]
#[error("cannot build the {what} client: {source}")]
pub struct ClientError {
    pub what: &'static str,
    pub source: reqwest::Error,
}

#[async_trait]
impl HttpCaller for ReqwestHttp {
    async fn call(&self, request: &HttpCall) -> Result<HttpAnswer, CallError> {
        let method = reqwest::Method::from_bytes(request.method.as_bytes())
            .map_err(|_| CallError::permanent(format!("unknown HTTP method `{}`", request.method)))?;
        let mut builder = self.client.request(method, &request.url).timeout(request.timeout);
        for (name, value) in &request.headers {
            builder = builder.header(name, value);
        }
        if let Some(body) = &request.body {
            builder = builder.json(body);
        }
        let response = builder.send().await.map_err(|e| {
            let what = format!("{} {}: {}", request.method, request.url, describe(&e, request.timeout));
            if e.is_builder() { CallError::permanent(what) } else { CallError::temporary(what) }
        })?;
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        Ok(HttpAnswer { status, body })
    }
}

/// What went wrong with a request that got no answer, in the words of the
/// person who runs the other side: refused, not found in DNS, TLS, timed
/// out, cut off; and what to check.
fn describe(error: &reqwest::Error, timeout: std::time::Duration) -> String {
    use std::error::Error;
    let mut chain = Vec::new();
    let mut source = error.source();
    while let Some(cause) = source {
        chain.push(cause.to_string());
        source = cause.source();
    }
    let causes = chain.join(": ").to_lowercase();
    if error.is_builder() {
        return format!("the request cannot be built ({}): check the step's url and headers", chain.join(": "));
    }
    if error.is_timeout() {
        return format!(
            "no answer within {}s (timeout): the service is slow or down; raise the step's `timeout` or check the service",
            timeout.as_secs()
        );
    }
    if causes.contains("dns") || causes.contains("failed to lookup") || causes.contains("name or service not known") {
        return "the host name could not be resolved (DNS): check the url's host".to_string();
    }
    if causes.contains("connection refused") {
        return "connection refused: nothing listens at that host and port; check the url and that the service runs"
            .to_string();
    }
    if causes.contains("certificate") || causes.contains("tls") || causes.contains("handshake") {
        return format!("the TLS handshake failed ({}): check the service's certificate", chain.join(": "));
    }
    if error.is_connect() {
        return format!("cannot connect ({}): check the url and the network", chain.join(": "));
    }
    format!("the connection broke before an answer ({}); the step is retried", chain.join(": "))
}
