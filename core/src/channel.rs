//! Kairo's view of a channel's webhook: the handshake, the signature, and
//! the events a delivery holds, in Kairo's own terms (what a channel sends is
//! in [`crate::outbound`]).
//!
//! Invariant: only the channel crate parses a channel's wire format. The
//! `kairo-whatsapp` crate implements [`Channel`] for the WhatsApp Cloud API and
//! turns webhook bodies into [`InboundEvent`]s, which `kairo-api`'s webhook
//! endpoint journals and the engine's inbox rules (`kairo_engine::inbox`)
//! apply; everything after the channel speaks these types.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::status::DeliveryStatus;

/// Why a webhook request was refused; each maps to one HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// 401: no signature header at all.
    #[error("missing X-Hub-Signature-256 header")]
    MissingSignature,
    /// 403: a signature that does not match the body.
    #[error("signature does not match the body")]
    BadSignature,
    /// 403: the verification handshake named the wrong token or mode.
    #[error("verification handshake refused: wrong hub.mode or hub.verify_token")]
    BadVerifyToken,
    /// 400: the body is not a webhook delivery this channel understands.
    #[error("malformed webhook body: {0}")]
    Malformed(String),
    /// 503: the webhook cannot be checked because it is not configured.
    #[error("webhook is not configured: {0}")]
    NotConfigured(String),
}

/// A channel's webhook: verification and parsing.
pub trait Channel: Send + Sync + std::fmt::Debug {
    /// Answers the GET handshake: the challenge to echo, or a refusal.
    fn verify_handshake(&self, mode: &str, verify_token: &str, challenge: &str) -> Result<String, WebhookError>;
    /// Checks the signature header against the raw body bytes.
    fn verify_signature(&self, signature: Option<&str>, body: &[u8]) -> Result<(), WebhookError>;
    /// Turns a verified body into events; every part of a batch is kept.
    fn parse(&self, body: &[u8]) -> Result<Vec<InboundEvent>, WebhookError>;
}

/// One thing a webhook delivery said.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum InboundEvent {
    Message(InboundMessage),
    Status(StatusUpdate),
    TemplateStatus(TemplateStatusChange),
    NumberQuality(NumberQualityChange),
    /// Anything else the channel reported (account notices, out-of-band
    /// errors, unknown fields): kept in the event log, never dropped.
    Notice(Notice),
}

/// A message from a contact to a business number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboundMessage {
    /// The business number that received it (the channel's id for it).
    pub number_id: String,
    pub wamid: String,
    /// The sender's WhatsApp id (digits of their number), when shared.
    pub from: Option<String>,
    /// The sender's business-scoped user id, when sent.
    pub from_user_id: Option<String>,
    /// The sender's WhatsApp profile name.
    pub profile_name: Option<String>,
    /// `text`, `image`, `location`, … or whatever new type the channel sent.
    pub message_type: String,
    /// The text a person reads: the text body, a caption, a button title.
    pub text: Option<String>,
    /// The message object as delivered.
    pub payload: serde_json::Value,
    /// What it holds, as the inbox shows it (read by the channel from the
    /// payload; none in journal entries written before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<crate::content::MessageContent>,
    pub occurred_at: DateTime<Utc>,
    /// A system message saying the sender changed number or user id: the
    /// ids they are known by from now on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_change: Option<IdentityChange>,
}

impl InboundMessage {
    /// The text the contact typed: a text message's body, and nothing else
    /// (never a caption, a button title or an interactive reply).
    pub fn typed_text(&self) -> Option<&str> {
        if self.message_type != "text" {
            return None;
        }
        self.text.as_deref()
    }
}

/// The ids a sender is known by after changing number (`wa_id`, and a new
/// user id when WhatsApp sends one) or user id; `None` where unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityChange {
    pub wa_id: Option<String>,
    pub user_id: Option<String>,
}

/// A delivery status of a message the business sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusUpdate {
    pub number_id: String,
    pub wamid: String,
    pub status: DeliveryStatus,
    pub recipient: Option<String>,
    pub error: Option<DeliveryError>,
    /// What the send put in `biz_opaque_callback_data`.
    pub callback_data: Option<String>,
    pub payload: serde_json::Value,
    pub occurred_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryError {
    pub code: i32,
    pub title: String,
    pub details: Option<String>,
    /// What to do about it, where the channel knows better than its own
    /// text (the channel's advice table).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advice: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateStatusChange {
    pub account_id: String,
    pub template_name: String,
    pub language: String,
    /// What happened: APPROVED, PAUSED, REJECTED, …
    pub event: String,
    pub reason: Option<String>,
    pub payload: serde_json::Value,
    pub occurred_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NumberQualityChange {
    /// The WhatsApp Business Account (the webhook entry's id).
    #[serde(default)]
    pub account_id: String,
    /// Digits of the display number (quality webhooks carry no number id).
    pub display_number: String,
    pub event: String,
    /// The number's messaging limit tier after the change (`TIER_1K`, …),
    /// when the channel says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_limit: Option<String>,
    pub payload: serde_json::Value,
    pub occurred_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notice {
    pub account_id: String,
    /// The webhook field (`account_update`, `messages` errors, …).
    pub field: String,
    /// The restrictions an account notice puts on the account (WhatsApp's
    /// `ACCOUNT_RESTRICTION`); empty for any other notice.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restrictions: Vec<Restriction>,
    pub payload: serde_json::Value,
    pub occurred_at: DateTime<Utc>,
}

/// A restriction the channel put on an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restriction {
    /// The channel's name for it (`RESTRICTED_BIZ_INITIATED_MESSAGING`, …).
    pub kind: String,
    /// Whether it stops messages the business starts (templates): only
    /// those restrictions pause sends; others (adding numbers, …) are kept
    /// and logged.
    pub stops_sends: bool,
    /// When it ends, when the channel gives it as a timestamp.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
    /// The end as the channel wrote it, when it is not a timestamp.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_text: Option<String>,
}
