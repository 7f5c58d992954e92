//! The inbox rules: what an inbound event does to the inbox, consent and the
//! event log. The store writes the rows; the decisions are made here.
//!
//! Invariants:
//! - Everything a batch of deliveries changes commits together, in one
//!   transaction; a failure rolls all of it back (the journal keeps them).
//! - A wamid is stored once; a status is logged once per (wamid, status).
//! - Delivery status only moves forward (the store's rule: sending < sent <
//!   delivered < read, `failed` only over sending and sent). A status for an
//!   unknown wamid is kept and applied when the message is recorded.
//! - Only messages to connected numbers (registered from the configuration
//!   or a sync) are recorded; others are counted as ignored. Meta pushes no
//!   history, so what arrives after a number is connected is all there is.
//! - The window runs 24 h from the contact's latest message and never
//!   shrinks ([`message`]); a keyword older than the consent state it
//!   would change is audited but changes nothing ([`consent`]).
//!
//! Modules: [`sender`] (which contact a sender is), [`message`] (a message
//! into its thread), [`consent`] (keywords), [`journal`] (the webhook
//! journal's writer and applier tasks).

pub mod consent;
pub mod journal;
pub mod message;
pub mod sender;

use chrono::{DateTime, Duration, Utc};
use sha2::{Digest, Sha256};

use kairo_core::channel::{InboundEvent, Notice, StatusUpdate};
use kairo_core::text::normalize;
use kairo_store::{NewEvent, Store, StoreError, Tx};

/// How long a contact's message keeps the customer service window open.
pub const SESSION_WINDOW: Duration = Duration::hours(24);

/// The consent keywords, already normalised (trimmed, NFKC, lower case).
#[derive(Debug, Clone)]
pub struct Keywords {
    pub opt_in: Vec<String>,
    pub opt_out: Vec<String>,
}

impl Keywords {
    pub fn new(opt_in: &[String], opt_out: &[String]) -> Self {
        Self {
            opt_in: opt_in.iter().map(|k| normalize(k)).collect(),
            opt_out: opt_out.iter().map(|k| normalize(k)).collect(),
        }
    }
}

impl Default for Keywords {
    fn default() -> Self {
        let words = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        Self::new(
            &words(&["YES", "START", "SUBSCRIBE"]),
            &words(&["STOP", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "STOPALL"]),
        )
    }
}

/// What one delivery did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestReport {
    pub messages: usize,
    pub duplicates: usize,
    pub statuses: usize,
    /// Statuses kept for a wamid not recorded yet.
    pub pending_statuses: usize,
    /// Messages to numbers not connected, or from before the connection.
    pub ignored: usize,
    pub other: usize,
}

/// Applies several deliveries in one transaction and reports on each.
pub async fn ingest(
    store: &Store,
    deliveries: &[Vec<InboundEvent>],
    keywords: &Keywords,
    now: DateTime<Utc>,
) -> Result<Vec<IngestReport>, StoreError> {
    let tx = store.begin().await?;
    let mut reports = Vec::with_capacity(deliveries.len());
    for delivery in deliveries {
        let mut report = IngestReport::default();
        for event in delivery {
            apply(&tx, event, keywords, now, &mut report).await?;
        }
        reports.push(report);
    }
    tx.commit().await?;
    Ok(reports)
}

/// Applies one event in the caller's transaction.
pub async fn apply(
    tx: &Tx,
    event: &InboundEvent,
    keywords: &Keywords,
    now: DateTime<Utc>,
    report: &mut IngestReport,
) -> Result<(), StoreError> {
    match event {
        InboundEvent::Message(inbound) => message::ingest(tx, inbound, keywords, now, report).await,
        InboundEvent::Status(status) => ingest_status(tx, status, now, report).await,
        InboundEvent::TemplateStatus(change) => {
            report.other += 1;
            if TEMPLATE_STATUSES.contains(&change.event.as_str()) {
                tx.set_template_status(&change.account_id, &change.template_name, &change.language, &change.event, now)
                    .await?;
            }
            log_payload_event(tx, "template_status", change, change.occurred_at, now).await
        }
        InboundEvent::NumberQuality(change) => {
            report.other += 1;
            if let Some((number, reason)) = tx.apply_quality_change(&change.account_id, change, now).await? {
                tracing::error!(
                    number = %number.display_number,
                    %reason,
                    "marketing sends from this number are paused; once its quality is back, resume them with `kairo numbers resume {}`",
                    number.display_number
                );
            }
            log_payload_event(tx, "number_quality", change, change.occurred_at, now).await
        }
        InboundEvent::Notice(notice) => {
            report.other += 1;
            if let Some(reason) = account_restriction(notice) {
                for number in tx.pause_account(&notice.account_id, &reason, now).await? {
                    tracing::error!(
                        number = %number.display_number,
                        %reason,
                        "every send from this number is paused; when Meta lifts the restriction, resume them with `kairo numbers resume {}`",
                        number.display_number
                    );
                }
            }
            log_payload_event(tx, &format!("notice:{}", notice.field), notice, notice.occurred_at, now).await
        }
    }
}

/// Template events that are a resulting status; others (FLAGGED,
/// UNARCHIVED, …) leave the status as it is.
const TEMPLATE_STATUSES: &[&str] = &[
    "APPROVED",
    "PENDING",
    "REJECTED",
    "PAUSED",
    "DISABLED",
    "IN_APPEAL",
    "PENDING_DELETION",
    "DELETED",
    "LIMIT_EXCEEDED",
    "ARCHIVED",
    "LOCKED",
];

/// The pause reason of a notice that restricts business-initiated
/// messaging; None for any other notice. Other restrictions (adding
/// numbers, …) are kept in the event log and logged, and stop nothing.
fn account_restriction(notice: &Notice) -> Option<String> {
    for other in notice.restrictions.iter().filter(|r| !r.stops_sends) {
        tracing::warn!(
            account = %notice.account_id,
            restriction = %other.kind,
            "Meta restricted the account; sends go on (this restriction does not stop messaging)"
        );
    }
    let restrictions: Vec<String> = notice
        .restrictions
        .iter()
        .filter(|r| r.stops_sends)
        .map(|r| match r.until {
            Some(until) => format!("{} until {}", r.kind, until.format("%Y-%m-%d %H:%M UTC")),
            None => r.kind.clone(),
        })
        .collect();
    (!restrictions.is_empty()).then(|| format!("account restricted: {}", restrictions.join(", ")))
}

/// A status logged once per (wamid, status), then applied to its message or
/// kept until the message is recorded.
async fn ingest_status(
    tx: &Tx,
    update: &StatusUpdate,
    now: DateTime<Utc>,
    report: &mut IngestReport,
) -> Result<(), StoreError> {
    let event = NewEvent {
        kind: "message_status".into(),
        dedup_key: format!("status:{}:{}", update.wamid, kairo_store::delivery_status_name(update.status)),
        phone_number_id: None,
        contact_id: None,
        payload: serde_json::to_value(update).expect("events serialise"),
        occurred_at: update.occurred_at,
    };
    if !tx.log_event(event, now).await? {
        report.duplicates += 1;
        return Ok(());
    }
    if tx.apply_status_update(update, now).await? {
        report.statuses += 1;
    } else {
        report.pending_statuses += 1;
    }
    Ok(())
}

/// Logs an event whose whole payload is its identity.
async fn log_payload_event(
    tx: &Tx,
    kind: &str,
    event: &impl serde::Serialize,
    occurred_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let payload = serde_json::to_value(event).expect("events serialise");
    let digest = Sha256::digest(payload.to_string().as_bytes());
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    let event = NewEvent {
        kind: kind.to_string(),
        dedup_key: format!("{kind}:{hex}"),
        phone_number_id: None,
        contact_id: None,
        payload,
        occurred_at,
    };
    tx.log_event(event, now).await.map(|_| ())
}
