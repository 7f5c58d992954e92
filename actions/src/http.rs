//! The `http` step's client, on reqwest with rustls.
//!
//! Classification: a request that could not connect, or timed out, may be
//! retried; any answer is handed back with its status for the runtime to
//! judge (2xx succeeds, 429 and 5xx retry, other 4xx fail).

use async_trait::async_trait;
use kairo_engine::runtime::{CallError, HttpAnswer, HttpCall, HttpCaller};

#[derive(Debug, Clone)]
pub struct ReqwestHttp {
    client: reqwest::Client,
}

impl ReqwestHttp {
    /// Needs a rustls crypto provider installed (the binary installs ring).
    pub fn new() -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("kairo/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Self { client })
    }
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
            let permanent = e.is_builder();
            let what = format!("{} {}: {}", request.method, request.url, e.without_url());
            if permanent { CallError::permanent(what) } else { CallError::temporary(what) }
        })?;
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        Ok(HttpAnswer { status, body })
    }
}
