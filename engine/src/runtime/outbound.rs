//! What the runtime asks of the outside world: send a message on a channel,
//! make an HTTP request. The engine owns these traits; `kairo-actions`
//! implements them (the WhatsApp Cloud API, the sandbox recorder, reqwest).
//!
//! Errors say whether trying again may help ([`CallError::retryable`]); the
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
    pub callback_data: String,
}

/// What the channel answered to a send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendReceipt {
    /// The message id the channel gave (`wamid.…`).
    pub wamid: String,
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

/// A call that did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CallError {
    pub message: String,
    /// Trying again later may succeed (rate limits, 5xx, timeouts before
    /// anything was sent); false for permanent errors.
    pub retryable: bool,
    /// How long the other side asked us to wait, when it said.
    pub retry_after: Option<Duration>,
}

impl CallError {
    pub fn permanent(message: impl Into<String>) -> Self {
        Self { message: message.into(), retryable: false, retry_after: None }
    }

    pub fn temporary(message: impl Into<String>) -> Self {
        Self { message: message.into(), retryable: true, retry_after: None }
    }
}

/// A messaging channel's sending side.
#[async_trait]
pub trait Outbound: Send + Sync + std::fmt::Debug {
    async fn send_template(&self, message: &OutboundTemplate) -> Result<SendReceipt, CallError>;
    async fn send_text(&self, message: &OutboundText) -> Result<SendReceipt, CallError>;
}

/// The `http` step's client.
#[async_trait]
pub trait HttpCaller: Send + Sync + std::fmt::Debug {
    async fn call(&self, request: &HttpCall) -> Result<HttpAnswer, CallError>;
}
