//! Sending through the Cloud API: the request bodies of API.md section 6
//! (shapes as in `fixtures/whatsapp/send_*.json`) and the [`Outbound`] channel the
//! runtime sends through.

use std::collections::HashMap;

use async_trait::async_trait;
use kairo_core::outbound::{CallError, FailureKind, Outbound, OutboundTemplate, OutboundText, SendReceipt};
use kairo_core::secret::Secret;
use serde_json::{Map, Value, json};

use super::graph::GraphClient;

/// The WhatsApp Cloud API as the runtime's sending channel.
#[derive(Debug, Clone)]
pub struct CloudApiChannel {
    graph: GraphClient,
    /// Access token per sending number (its Graph id): the token of the
    /// account the number belongs to.
    tokens: HashMap<String, Secret>,
}

impl CloudApiChannel {
    pub fn new(graph: GraphClient, tokens: HashMap<String, Secret>) -> Self {
        Self { graph, tokens }
    }

    async fn send(&self, number_id: &str, body: &Value) -> Result<SendReceipt, CallError> {
        let token = self.tokens.get(number_id).ok_or_else(|| {
            CallError::new(
                FailureKind::Auth,
                format!(
                    "no access token for business number {number_id}: set its account's access_token in kairo.toml or KAIRO_WHATSAPP_ACCESS_TOKEN"
                ),
            )
        })?;
        let answer = self.graph.post_message(token, number_id, body).await?;
        receipt(&answer).ok_or_else(|| {
            CallError::new(
                FailureKind::Unknown,
                format!("Graph API {number_id}/messages: accepted without a message id; the message may have gone out"),
            )
        })
    }
}

#[async_trait]
impl Outbound for CloudApiChannel {
    async fn send_template(&self, message: &OutboundTemplate) -> Result<SendReceipt, CallError> {
        self.send(&message.number_id, &template_request(message)).await
    }

    async fn send_text(&self, message: &OutboundText) -> Result<SendReceipt, CallError> {
        self.send(&message.number_id, &text_request(message)).await
    }
}

/// The wamid and status of an accepted send (`send_response_*.json`).
fn receipt(answer: &Value) -> Option<SendReceipt> {
    let message = answer.get("messages")?.get(0)?;
    Some(SendReceipt {
        wamid: message.get("id")?.as_str()?.to_string(),
        message_status: message.get("message_status").and_then(Value::as_str).map(str::to_string),
    })
}

/// `POST /{number}/messages` body of a template message.
pub fn template_request(message: &OutboundTemplate) -> Value {
    let mut components = Vec::new();
    if let Some(header) = &message.header {
        components.push(json!({ "type": "header", "parameters": header_parameters(header) }));
    }
    if let Some(body) = &message.body {
        let parameters: Vec<Value> = match body {
            Value::Array(values) => values.iter().map(|v| text_parameter(None, v)).collect(),
            Value::Object(named) => named.iter().map(|(name, v)| text_parameter(Some(name), v)).collect(),
            other => vec![text_parameter(None, other)],
        };
        if !parameters.is_empty() {
            components.push(json!({ "type": "body", "parameters": parameters }));
        }
    }
    for button in &message.buttons {
        components.extend(button_component(button));
    }
    let mut template = json!({ "name": message.template, "language": { "code": message.language } });
    if !components.is_empty() {
        template["components"] = Value::Array(components);
    }
    let mut body = envelope(&message.to, &message.callback_data);
    body["type"] = json!("template");
    body["template"] = template;
    body
}

/// `POST /{number}/messages` body of a free-form text.
pub fn text_request(message: &OutboundText) -> Value {
    let mut body = envelope(&message.to, &message.callback_data);
    if let Some(wamid) = &message.reply_to {
        body["context"] = json!({ "message_id": wamid });
    }
    body["type"] = json!("text");
    body["text"] = json!({ "preview_url": false, "body": message.text });
    body
}

/// A business-scoped user id (`US.13491208655302741918`): two letters, a
/// period, then letters and digits. A contact known only by one is sent to
/// with `recipient` instead of `to` (API.md section 2).
pub fn is_user_id(to: &str) -> bool {
    let bytes = to.as_bytes();
    bytes.len() > 3
        && bytes[0].is_ascii_alphabetic()
        && bytes[1].is_ascii_alphabetic()
        && bytes[2] == b'.'
        && bytes[3..].iter().all(u8::is_ascii_alphanumeric)
}

fn envelope(to: &str, callback_data: &str) -> Value {
    let mut body = json!({ "messaging_product": "whatsapp", "recipient_type": "individual" });
    if is_user_id(to) {
        body["recipient"] = json!(to);
    } else {
        // Graph takes the recipient's number as digits only.
        body["to"] = json!(kairo_core::phone::PhoneDigits::of(to).as_str());
    }
    if !callback_data.is_empty() {
        body["biz_opaque_callback_data"] = json!(truncate(callback_data, 512));
    }
    body
}

/// A header's parameters: `{"text": "…"}` or `{"image"|"video"|"document": {"link": "…"}}`.
fn header_parameters(header: &Value) -> Vec<Value> {
    let Some(header) = header.as_object() else { return vec![text_parameter(None, header)] };
    let mut out = Vec::new();
    for (kind, value) in header {
        match kind.as_str() {
            "text" => out.push(text_parameter(None, value)),
            media => out.push(json!({ "type": media, media: value })),
        }
    }
    out
}

/// One button component: the button's kind follows from the value given
/// (`payload`: quick reply, `text`: the suffix of a URL button,
/// `coupon_code`: copy code). `index` is sent as a string, as Meta writes it.
fn button_component(button: &Value) -> Option<Value> {
    let index = match button.get("index")? {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => return None,
    };
    let (sub_type, parameter) = if let Some(payload) = button.get("payload") {
        ("quick_reply", json!({ "type": "payload", "payload": payload }))
    } else if let Some(text) = button.get("text") {
        ("url", json!({ "type": "text", "text": clean(text.as_str().unwrap_or_default()) }))
    } else if let Some(code) = button.get("coupon_code") {
        ("copy_code", json!({ "type": "coupon_code", "coupon_code": code }))
    } else {
        return None;
    };
    Some(json!({ "type": "button", "sub_type": sub_type, "index": index, "parameters": [parameter] }))
}

fn text_parameter(name: Option<&String>, value: &Value) -> Value {
    let text = match value {
        Value::String(s) => clean(s),
        other => clean(&other.to_string()),
    };
    let mut parameter = Map::new();
    parameter.insert("type".into(), json!("text"));
    if let Some(name) = name {
        parameter.insert("parameter_name".into(), json!(name));
    }
    parameter.insert("text".into(), json!(text));
    Value::Object(parameter)
}

/// Template text parameters may hold no newline or tab and no more than
/// four spaces in a row (API.md 6.1): each run of whitespace with any of
/// them becomes one space.
fn clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    for c in text.chars() {
        if c.is_whitespace() {
            run.push(c);
            continue;
        }
        flush(&mut out, &mut run);
        out.push(c);
    }
    flush(&mut out, &mut run);
    out.trim().to_string()
}

fn flush(out: &mut String, run: &mut String) {
    if run.is_empty() {
        return;
    }
    if run.chars().any(|c| c != ' ') || run.len() > 4 {
        out.push(' ');
    } else {
        out.push_str(run);
    }
    run.clear();
}

fn truncate(text: &str, max_chars: usize) -> String {
    text.chars().take(max_chars).collect()
}
