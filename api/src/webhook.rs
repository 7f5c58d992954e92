//! `GET` and `POST /webhooks/whatsapp`: the handshake, signature check,
//! parsing, and a durable commit before the 200.
//!
//! Invariants:
//! - Nothing is stored unless the signature matches the raw body.
//! - The 200 goes back only after the delivery is committed to the journal;
//!   a database failure answers 503 so that Meta delivers again.
//! - Deliveries arriving together commit together (group commit): one
//!   writer task drains what is queued into one transaction.
//! - The inbox, consent and the event log are updated from the journal by
//!   one applier task, in arrival order, each delivery exactly once; after a
//!   crash it resumes with what was journaled.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::AppState;
use kairo_core::channel::{Channel, InboundEvent, WebhookError};
use kairo_core::clock::Clock;
use kairo_engine::group_commit::GroupCommit;
use kairo_store::{Keywords, Store, StoreError};

/// The largest webhook body accepted; Meta's are well under this.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// How many deliveries one journal transaction takes at most.
const MAX_BATCH: usize = 256;
/// How many deliveries one apply transaction takes: small enough that the
/// journal writer, which the webhook's 200 waits for, never queues long
/// behind the applier for SQLite's single write lock.
const APPLY_BATCH: u64 = 8;
/// The batch the applier takes when it stops deferring to webhooks: under
/// sustained load the inbox gets about a quarter of the writer's time.
const DEFERRED_APPLY_BATCH: u64 = 32;

/// What the webhook routes need.
#[derive(Debug, Clone)]
pub struct WebhookState {
    pub channel: Arc<dyn Channel>,
    pub ingestor: Ingestor,
}

/// The group-commit writer's handle; cheap to clone.
#[derive(Debug, Clone)]
pub struct Ingestor {
    journal: GroupCommit<Vec<InboundEvent>, Result<(), StoreError>>,
    /// Webhook requests waiting for their journal commit: while there are
    /// some, the applier steps aside (for at most [`MAX_APPLY_DEFERRAL`]).
    in_flight: Arc<AtomicUsize>,
    /// Wakes the applier once a delivery is journaled and its request no
    /// longer waits, so that it applies at once rather than defer to it.
    wake: Arc<Notify>,
}

/// How often the applier looks at the journal when nothing wakes it.
const APPLY_POLL: Duration = Duration::from_millis(500);
/// The longest the applier defers to waiting webhook requests: under
/// sustained load the inbox still moves at least this often.
const MAX_APPLY_DEFERRAL: Duration = Duration::from_millis(100);

impl Ingestor {
    /// Starts the journal writer and the applier that carries journaled
    /// deliveries into the inbox. The writer ends when every handle is
    /// dropped; the applier when `shutdown` is cancelled.
    pub fn spawn(store: Store, keywords: Keywords, clock: Arc<dyn Clock>, shutdown: CancellationToken) -> Ingestor {
        let wake = Arc::new(Notify::new());
        let in_flight = Arc::new(AtomicUsize::new(0));
        let waiting = in_flight.clone();
        let (writer_store, writer_clock, applier_wake) = (store.clone(), clock.clone(), wake.clone());
        let journal = GroupCommit::spawn(MAX_BATCH, move |deliveries: Vec<Vec<InboundEvent>>| {
            let (store, clock) = (writer_store.clone(), writer_clock.clone());
            async move { journal_group(&store, clock.as_ref(), deliveries).await }
        });
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(APPLY_POLL) => {}
                }
                let mut last_applied = tokio::time::Instant::now();
                loop {
                    // Webhooks first: their 200 waits for the journal, the inbox can lag a little.
                    let busy = waiting.load(Ordering::Acquire) > 0;
                    if busy && last_applied.elapsed() < MAX_APPLY_DEFERRAL {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                        continue;
                    }
                    let batch = if busy { DEFERRED_APPLY_BATCH } else { APPLY_BATCH };
                    last_applied = tokio::time::Instant::now();
                    match store.apply_journal(&keywords, batch, clock.now()).await {
                        Ok(0) => break,
                        Ok(_) => continue,
                        Err(err) => {
                            tracing::warn!(%err, "applying webhook deliveries failed; retrying shortly");
                            break;
                        }
                    }
                }
            }
        });
        Ingestor { journal, in_flight, wake: applier_wake }
    }

    /// Commits one delivery to the journal (with whatever else is queued).
    pub async fn submit(&self, events: Vec<InboundEvent>) -> Result<(), JournalError> {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        let outcome = self.journal(events).await;
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.wake.notify_one();
        outcome
    }

    async fn journal(&self, events: Vec<InboundEvent>) -> Result<(), JournalError> {
        let stored = self.journal.submit(events).await.map_err(|_| JournalError::Stopped)?;
        Ok(stored?)
    }
}

/// Why a delivery was not journaled (answered 503: Meta delivers it again).
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("the journal writer has stopped")]
    Stopped,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One journal insert for a group of deliveries. One delivery the database
/// refuses must not fail the others of its group: when the group fails,
/// each is stored alone, and only those that still fail are answered with
/// an error.
async fn journal_group(
    store: &Store,
    clock: &dyn Clock,
    deliveries: Vec<Vec<InboundEvent>>,
) -> Vec<Result<(), StoreError>> {
    match store.journal_deliveries("whatsapp", &deliveries, clock.now()).await {
        Ok(()) => deliveries.iter().map(|_| Ok(())).collect(),
        Err(err) => {
            tracing::warn!(%err, deliveries = deliveries.len(), "storing a group of webhook deliveries failed; storing them one by one");
            let mut answers = Vec::with_capacity(deliveries.len());
            for delivery in deliveries {
                let alone = store.journal_deliveries("whatsapp", std::slice::from_ref(&delivery), clock.now()).await;
                if let Err(err) = &alone {
                    tracing::error!(%err, "a webhook delivery was not stored; Meta will deliver it again");
                }
                answers.push(alone);
            }
            answers
        }
    }
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
