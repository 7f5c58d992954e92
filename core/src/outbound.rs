//! What the runtime asks of the outside world: send a message on a channel,
//! make an HTTP request. The engine calls these traits; `kairo-whatsapp`
//! implements the channel (the Cloud API, the sandbox recorder) and the
//! engine's `http_client` the HTTP request (reqwest).
//!
//! Errors say whether trying again may help ([`CallError::kind`], a [`FailureKind`]); the
//! runtime turns that into a new attempt with backoff or a failed step.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// A template message to one contact, parameters already rendered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboundTemplate {
    /// Unique per step execution: a channel may use it to refuse a repeat.
    pub idempotency_key: String,
    /// The sending number's Graph id.
    pub number_id: String,
    /// The recipient's WhatsApp id (digits of the international number).
    pub to: String,
    pub template: String,
    pub language: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<serde_json::Value>,
    /// Positional (`["Ana", "3"]`) or named (`{"first_name": "Ana"}`) parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub buttons: Vec<serde_json::Value>,
    /// Echoed back on status webhooks (`biz_opaque_callback_data`).
    pub callback_data: String,
}

/// A free-form text inside the 24-hour window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboundText {
    pub idempotency_key: String,
    pub number_id: String,
    pub to: String,
    pub text: String,
    /// The wamid of an inbound message this text answers (WhatsApp quotes it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    pub callback_data: String,
}

/// What the channel answered to a send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendReceipt {
    /// The message id the channel gave (`wamid.…`).
    pub wamid: String,
    /// How the channel took it: `accepted`, or `held_for_quality_assessment`
    /// (WhatsApp's template pacing). Neither means delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_status: Option<String>,
}

/// An HTTP request of an `http` step, expressions already rendered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpCall {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<serde_json::Value>,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpAnswer {
    pub status: u16,
    /// The body as JSON when it is JSON, else as a string.
    pub body: serde_json::Value,
}

/// What kind of failure a call met; the runtime acts on it (API.md 10.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The other side failed for now (5xx, overload, refused before
    /// sending): a new attempt with backoff, bounded by the step's retries.
    Temporary,
    /// A rate or volume limit was hit: the same attempt waits and goes
    /// again; a limit never fails a step by itself.
    Throttled,
    /// Will never succeed as sent: the step fails with the reason.
    Permanent,
    /// Credentials or account configuration: an operator must act. The
    /// step waits without spending an attempt.
    Auth,
    /// The request may have been carried out (a timeout or a dropped
    /// connection after it was sent): the step's unknown-outcome policy.
    Unknown,
}

/// Which limit a throttled call hit, when the channel can tell: the
/// runtime slows the number down, or spaces sends to one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThrottleScope {
    /// The number sends faster than its throughput allows.
    Number,
    /// Too many messages to this one recipient in a short time.
    Recipient,
}

/// A call that did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CallError {
    pub message: String,
    pub kind: FailureKind,
    /// How long to wait before the next try, when the other side said (or
    /// the channel knows better than the step's backoff).
    pub retry_after: Option<Duration>,
    /// The channel's own error code (WhatsApp's `error.code`), when it
    /// gave one: for metrics and reports; the runtime acts on `kind` and
    /// `throttle` only.
    pub code: Option<i64>,
    /// With [`FailureKind::Throttled`]: which limit, when known.
    pub throttle: Option<ThrottleScope>,
}

impl CallError {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self { message: message.into(), kind, retry_after: None, code: None, throttle: None }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        Self::new(FailureKind::Permanent, message)
    }

    pub fn temporary(message: impl Into<String>) -> Self {
        Self::new(FailureKind::Temporary, message)
    }

    pub fn with_code(mut self, code: i64) -> Self {
        self.code = Some(code);
        self
    }

    /// A limit answer that names the limit.
    pub fn throttled(mut self, scope: ThrottleScope) -> Self {
        self.throttle = Some(scope);
        self
    }

    pub fn after(mut self, wait: Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }
}

/// A messaging channel's sending side.
#[async_trait]
pub trait Outbound: Send + Sync + std::fmt::Debug {
    async fn send_template(&self, message: &OutboundTemplate) -> Result<SendReceipt, CallError>;
    async fn send_text(&self, message: &OutboundText) -> Result<SendReceipt, CallError>;

    /// Whether sends keep to the numbers' throughput (a channel that sends
    /// nothing anywhere need not).
    fn paced(&self) -> bool {
        true
    }
}

/// The `http` step's client.
#[async_trait]
pub trait HttpCaller: Send + Sync + std::fmt::Debug {
    async fn call(&self, request: &HttpCall) -> Result<HttpAnswer, CallError>;
}
