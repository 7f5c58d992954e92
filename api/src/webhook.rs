//! `GET` and `POST /webhooks/whatsapp`: the handshake, signature check,
//! parsing, and a durable commit before the 200.
//!
//! Invariants:
//! - Nothing is stored unless the signature matches the raw body.
//! - The 200 goes back only after the delivery is committed to the journal;
//!   a database failure answers 503 so that Meta delivers again.
//!
//! The journal's writer (a group commit) and the applier that carries
//! deliveries into the inbox are the engine's (`kairo_engine::inbox::journal`).

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use kairo_core::channel::{Channel, WebhookError};
use kairo_engine::inbox::journal::Ingestor;

/// The largest webhook body accepted; Meta's are well under this.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// What the webhook routes need.
#[derive(Debug, Clone)]
pub struct WebhookState {
    pub channel: Arc<dyn Channel>,
    pub ingestor: Ingestor,
}

pub(super) async fn handshake(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let Some(webhook) = &state.webhook else { return not_configured() };
    let get = |k: &str| params.get(k).map(String::as_str).unwrap_or_default();
    match webhook.channel.verify_handshake(get("hub.mode"), get("hub.verify_token"), get("hub.challenge")) {
        Ok(challenge) => ([(header::CONTENT_TYPE, "text/plain")], challenge).into_response(),
        Err(err) => refuse(err),
    }
}

pub(super) async fn deliver(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(webhook) = &state.webhook else { return not_configured() };
    let started = std::time::Instant::now();
    let signature = headers.get("x-hub-signature-256").and_then(|v| v.to_str().ok());
    if let Err(err) = webhook.channel.verify_signature(signature, &body) {
        return refuse(err);
    }
    let events = match webhook.channel.parse(&body) {
        Ok(events) => events,
        Err(err) => return refuse(err),
    };
    let count = events.len() as u64;
    match webhook.ingestor.submit(events).await {
        Ok(()) => {
            metrics::counter!("kairo_webhook_events_total").increment(count);
            metrics::histogram!("kairo_webhook_ingest_seconds").record(started.elapsed().as_secs_f64());
            StatusCode::OK.into_response()
        }
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_unavailable",
            "the delivery could not be stored; retry later",
        ),
    }
}

fn refuse(err: WebhookError) -> Response {
    let (status, code) = match &err {
        WebhookError::MissingSignature => (StatusCode::UNAUTHORIZED, "missing_signature"),
        WebhookError::BadSignature => (StatusCode::FORBIDDEN, "bad_signature"),
        WebhookError::BadVerifyToken => (StatusCode::FORBIDDEN, "bad_verify_token"),
        WebhookError::Malformed(_) => (StatusCode::BAD_REQUEST, "malformed_body"),
        WebhookError::NotConfigured(_) => (StatusCode::SERVICE_UNAVAILABLE, "webhook_not_configured"),
    };
    // The body is never logged: it is the sender's data, and a refused one is unverified.
    tracing::warn!(%err, status = status.as_u16(), "webhook refused");
    error(status, code, &err.to_string())
}

fn not_configured() -> Response {
    refuse(WebhookError::NotConfigured("no WhatsApp app is configured".into()))
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, axum::Json(json!({"error": {"code": code, "message": message}}))).into_response()
}
