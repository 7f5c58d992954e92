//! WhatsApp webhooks: the GET handshake, `X-Hub-Signature-256` over the raw
//! body, and the envelope (`entry[].changes[].value`) turned into the
//! `kairo-core`'s [`InboundEvent`]s.
//!
//! Invariants:
//! - The signature is checked over the bytes as received, never a
//!   re-serialisation: Meta escapes non-ASCII and `/` when it signs.
//! - Every level of a batch is read (entries, changes, messages, statuses);
//!   an unknown message type is kept with its raw payload; an unknown field
//!   becomes a notice. Nothing a valid delivery says is dropped.

use chrono::{DateTime, TimeZone, Utc};
use hmac::{KeyInit, Mac};
use kairo_core::channel::{
    Channel, DeliveryError, IdentityChange, InboundEvent, InboundMessage, Notice, NumberQualityChange, Restriction,
    StatusUpdate, TemplateStatusChange, WebhookError,
};
use kairo_core::secret::Secret;
use kairo_core::status::DeliveryStatus;
use serde_json::Value;
use subtle::ConstantTimeEq;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The webhook of one Meta app: its app secret and verify token.
#[derive(Debug, Clone)]
pub struct WhatsAppWebhook {
    pub app_secret: Option<Secret>,
    pub verify_token: Option<Secret>,
}

impl Channel for WhatsAppWebhook {
    fn verify_handshake(&self, mode: &str, verify_token: &str, challenge: &str) -> Result<String, WebhookError> {
        let expected = self
            .verify_token
            .as_ref()
            .ok_or_else(|| WebhookError::NotConfigured("no verify token (whatsapp.verify_token)".into()))?;
        let token_ok: bool = expected.expose().as_bytes().ct_eq(verify_token.as_bytes()).into();
        if mode == "subscribe" && token_ok { Ok(challenge.to_string()) } else { Err(WebhookError::BadVerifyToken) }
    }

    fn verify_signature(&self, signature: Option<&str>, body: &[u8]) -> Result<(), WebhookError> {
        let secret = self
            .app_secret
            .as_ref()
            .ok_or_else(|| WebhookError::NotConfigured("no app secret (whatsapp.app_secret)".into()))?;
        let header = signature.map(str::trim).filter(|s| !s.is_empty()).ok_or(WebhookError::MissingSignature)?;
        let hex = header.strip_prefix("sha256=").ok_or(WebhookError::BadSignature)?;
        let digest = decode_hex(hex).ok_or(WebhookError::BadSignature)?;
        let mut mac = HmacSha256::new_from_slice(secret.expose().as_bytes()).expect("HMAC takes a key of any length");
        mac.update(body);
        mac.verify_slice(&digest).map_err(|_| WebhookError::BadSignature)
    }

    fn parse(&self, body: &[u8]) -> Result<Vec<InboundEvent>, WebhookError> {
        let root: Value =
            serde_json::from_slice(body).map_err(|e| WebhookError::Malformed(format!("not JSON: {e}")))?;
        if root["object"] != "whatsapp_business_account" {
            return Err(WebhookError::Malformed("`object` is not \"whatsapp_business_account\"".into()));
        }
        let entries = root["entry"].as_array().ok_or_else(|| WebhookError::Malformed("`entry` is missing".into()))?;
        let mut events = Vec::new();
        for entry in entries {
            let account_id = id_text(&entry["id"]);
            let entry_time = entry["time"].as_i64().and_then(unix).unwrap_or_else(epoch);
            let changes = entry["changes"]
                .as_array()
                .ok_or_else(|| WebhookError::Malformed(format!("entry {account_id}: `changes` is missing")))?;
            for change in changes {
                let field = change["field"].as_str().unwrap_or_default();
                let value = &change["value"];
                if !value.is_object() {
                    return Err(WebhookError::Malformed(format!("entry {account_id}: a change has no `value` object")));
                }
                match field {
                    "messages" => messages_change(&account_id, value, entry_time, &mut events)?,
                    "message_template_status_update" => {
                        events.push(InboundEvent::TemplateStatus(TemplateStatusChange {
                            account_id: account_id.clone(),
                            template_name: text(&value["message_template_name"]).unwrap_or_default(),
                            language: text(&value["message_template_language"]).unwrap_or_default(),
                            event: text(&value["event"]).unwrap_or_default(),
                            reason: text(&value["reason"]),
                            payload: value.clone(),
                            occurred_at: entry_time,
                        }))
                    }
                    "phone_number_quality_update" => events.push(InboundEvent::NumberQuality(NumberQualityChange {
                        account_id: account_id.clone(),
                        display_number: text(&value["display_phone_number"]).unwrap_or_default(),
                        event: text(&value["event"]).unwrap_or_default(),
                        current_limit: text(&value["current_limit"]),
                        payload: value.clone(),
                        occurred_at: entry_time,
                    })),
                    _ => events.push(InboundEvent::Notice(Notice {
                        account_id: account_id.clone(),
                        field: field.to_string(),
                        restrictions: account_restrictions(field, value).unwrap_or_default(),
                        payload: value.clone(),
                        occurred_at: entry_time,
                    })),
                }
            }
        }
        Ok(events)
    }
}

fn messages_change(
    account_id: &str,
    value: &Value,
    entry_time: DateTime<Utc>,
    events: &mut Vec<InboundEvent>,
) -> Result<(), WebhookError> {
    let number_id = text(&value["metadata"]["phone_number_id"])
        .ok_or_else(|| WebhookError::Malformed(format!("entry {account_id}: `metadata.phone_number_id` is missing")))?;
    let contacts = value["contacts"].as_array().cloned().unwrap_or_default();
    for message in value["messages"].as_array().into_iter().flatten() {
        let wamid = text(&message["id"]).ok_or_else(|| WebhookError::Malformed("a message has no `id`".into()))?;
        let from = text(&message["from"]);
        // The sender's entry in `contacts`: by WhatsApp id, by user id, or
        // the only entry there is.
        let sender = contacts
            .iter()
            .find(|c| {
                let user_id = text(&message["from_user_id"]);
                (from.is_some() && text(&c["wa_id"]) == from) || (user_id.is_some() && text(&c["user_id"]) == user_id)
            })
            .or(if contacts.len() == 1 { contacts.first() } else { None });
        let from_user_id = text(&message["from_user_id"]).or_else(|| sender.and_then(|c| text(&c["user_id"])));
        let profile_name = sender.and_then(|c| text(&c["profile"]["name"]));
        let message_type = text(&message["type"]).unwrap_or_else(|| "unknown".into());
        events.push(InboundEvent::Message(InboundMessage {
            number_id: number_id.clone(),
            wamid,
            from,
            from_user_id,
            profile_name,
            text: readable_text(&message_type, message),
            content: Some(super::content::content(&message_type, message)),
            identity_change: identity_change(&message_type, message),
            message_type,
            payload: message.clone(),
            occurred_at: timestamp(&message["timestamp"]).unwrap_or(entry_time),
        }));
    }
    for status in value["statuses"].as_array().into_iter().flatten() {
        let wamid = text(&status["id"]).ok_or_else(|| WebhookError::Malformed("a status has no `id`".into()))?;
        let Some(delivery) = delivery_status(status["status"].as_str().unwrap_or_default()) else {
            // `played` and future statuses: kept as a notice, not applied.
            events.push(InboundEvent::Notice(Notice {
                account_id: account_id.to_string(),
                field: "messages.statuses".into(),
                restrictions: Vec::new(),
                payload: status.clone(),
                occurred_at: timestamp(&status["timestamp"]).unwrap_or(entry_time),
            }));
            continue;
        };
        let error = status["errors"].as_array().and_then(|e| e.first()).map(delivery_error);
        events.push(InboundEvent::Status(StatusUpdate {
            number_id: number_id.clone(),
            wamid,
            status: delivery,
            recipient: text(&status["recipient_id"]).or_else(|| text(&status["recipient_user_id"])),
            error,
            callback_data: text(&status["biz_opaque_callback_data"]),
            payload: status.clone(),
            occurred_at: timestamp(&status["timestamp"]).unwrap_or(entry_time),
        }));
    }
    if let Some(errors) = value["errors"].as_array().filter(|e| !e.is_empty()) {
        events.push(InboundEvent::Notice(Notice {
            account_id: account_id.to_string(),
            field: "messages.errors".into(),
            restrictions: Vec::new(),
            payload: Value::Array(errors.clone()),
            occurred_at: entry_time,
        }));
    }
    Ok(())
}

/// The restrictions of an `account_update` whose event is
/// `ACCOUNT_RESTRICTION` (API.md section 5): each `restriction_info` entry,
/// stopping sends when it restricts business-initiated messaging, with its
/// expiration (seconds, as a number or a string). None for any other
/// notice (an empty list: the account's restrictions are lifted).
pub fn account_restrictions(field: &str, value: &Value) -> Option<Vec<Restriction>> {
    let restricted = field == "account_update"
        && value["event"].as_str().is_some_and(|e| e.eq_ignore_ascii_case("ACCOUNT_RESTRICTION"));
    if !restricted {
        return None;
    }
    let list = value["restriction_info"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let kind = text(&r["restriction_type"]).unwrap_or_else(|| "restricted".into());
            let expiration = r["expiration"].as_i64().or_else(|| r["expiration"].as_str()?.trim().parse().ok());
            let until = expiration.and_then(|t| chrono::DateTime::from_timestamp(t, 0));
            Restriction {
                stops_sends: kind.contains("BIZ_INITIATED"),
                until,
                until_text: text(&r["expiration"]).filter(|_| until.is_none()),
                kind,
            }
        })
        .collect();
    Some(list)
}

/// A failed status's first error, with what to do about it where Kairo's
/// advice table knows better than WhatsApp's title.
fn delivery_error(error: &Value) -> DeliveryError {
    let code = error["code"].as_i64().unwrap_or_default();
    DeliveryError {
        code: i32::try_from(code).unwrap_or_default(),
        title: text(&error["title"]).or_else(|| text(&error["message"])).unwrap_or_default(),
        details: text(&error["error_data"]["details"]),
        advice: crate::errors::advice(code, error["error_subcode"].as_i64()).map(str::to_string),
    }
}

fn delivery_status(name: &str) -> Option<DeliveryStatus> {
    match name {
        "sent" => Some(DeliveryStatus::Sent),
        "delivered" => Some(DeliveryStatus::Delivered),
        "read" => Some(DeliveryStatus::Read),
        "failed" => Some(DeliveryStatus::Failed),
        _ => None,
    }
}

/// The words a person would read in the inbox for this message, if any.
fn readable_text(kind: &str, message: &Value) -> Option<String> {
    match kind {
        "text" => text(&message["text"]["body"]),
        "image" | "video" | "document" => text(&message[kind]["caption"]),
        "button" => text(&message["button"]["text"]),
        "interactive" => {
            let reply = &message["interactive"];
            let kind = reply["type"].as_str().unwrap_or_default();
            text(&reply[kind]["title"]).or_else(|| text(&reply[kind]["body"]))
        }
        "reaction" => text(&message["reaction"]["emoji"]),
        "location" => text(&message["location"]["name"]).or_else(|| text(&message["location"]["address"])),
        "system" => text(&message["system"]["body"]),
        _ => None,
    }
}

/// A system message saying the sender changed number
/// (`user_changed_number`: the new one in `system.wa_id`, older versions
/// `new_wa_id`, with user ids also `system.user_id`) or user id
/// (`user_changed_user_id`).
fn identity_change(kind: &str, message: &Value) -> Option<IdentityChange> {
    if kind != "system" {
        return None;
    }
    let system = &message["system"];
    let field = |name: &str| text(&system[name]).map(|s| s.trim().to_string());
    let change = match text(&system["type"]).as_deref() {
        Some("user_changed_number") => {
            IdentityChange { wa_id: field("wa_id").or_else(|| field("new_wa_id")), user_id: field("user_id") }
        }
        Some("user_changed_user_id") => IdentityChange { wa_id: None, user_id: field("user_id") },
        _ => return None,
    };
    (change.wa_id.is_some() || change.user_id.is_some()).then_some(change)
}

/// A field's text; an empty string is absent (a sender shown by user id
/// only may come with `"from": ""`).
fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if s.trim().is_empty() => None,
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn id_text(value: &Value) -> String {
    text(value).unwrap_or_default()
}

/// WhatsApp sends message timestamps as strings of unix seconds.
fn timestamp(value: &Value) -> Option<DateTime<Utc>> {
    match value {
        Value::String(s) => s.parse::<i64>().ok().and_then(unix),
        Value::Number(n) => n.as_i64().and_then(unix),
        _ => None,
    }
}

fn unix(seconds: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_opt(seconds, 0).single()
}

fn epoch() -> DateTime<Utc> {
    DateTime::<Utc>::UNIX_EPOCH
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok()).collect()
}
