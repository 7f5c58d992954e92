//! A contact's message into its thread: the contact it is from, the thread it
//! opens or joins, and the 24-hour customer service window it opens.

use chrono::{DateTime, Utc};

use super::{IngestReport, Keywords, SESSION_WINDOW, consent, sender};
use kairo_core::channel::InboundMessage;
use kairo_core::ids::Wamid;
use kairo_core::status::{DeliveryStatus, Direction};
use kairo_store::{Contact, NewEvent, NewMessage, PhoneNumber, StoreError, Thread, Tx};

/// Records a message to a connected number once per wamid, in the contact's
/// open thread on that number (opened now when there is none), and applies
/// the consent keyword it may be.
pub(super) async fn ingest(
    tx: &Tx,
    inbound: &InboundMessage,
    keywords: &Keywords,
    now: DateTime<Utc>,
    report: &mut IngestReport,
) -> Result<(), StoreError> {
    let Some(number) = tx.phone_number_by_graph_id(&inbound.number_id).await? else {
        report.ignored += 1;
        return Ok(());
    };
    let wamid = Wamid(inbound.wamid.clone());
    if tx.has_message(&wamid).await? {
        report.duplicates += 1;
        return Ok(());
    }
    let contact = sender::contact_for_sender(tx, inbound, now).await?;
    let contact = sender::identity_change(tx, contact, inbound, now).await?;
    let (thread, opened) = thread_for(tx, &contact, &number, inbound, now).await?;
    tx.record_message_once(inbound_row(&thread, inbound), now).await?;
    open_window(tx, &thread, inbound, now).await?;
    report.messages += 1;
    log_message(tx, inbound, &thread, opened, &number, &contact, now).await?;
    consent::keyword(tx, inbound, keywords, &contact, &number, &wamid, now).await
}

fn inbound_row(thread: &Thread, inbound: &InboundMessage) -> NewMessage {
    NewMessage {
        thread_id: thread.id,
        direction: Direction::Inbound,
        wamid: Some(Wamid(inbound.wamid.clone())),
        message_type: inbound.message_type.clone(),
        body: inbound.text.clone(),
        payload: inbound.payload.clone(),
        status: DeliveryStatus::Received,
        template_name: None,
        template_language: None,
        template_params: None,
        enrollment_id: None,
        step_execution_id: None,
        occurred_at: inbound.occurred_at,
        sent_by: None,
        content: inbound.content.clone(),
    }
}

/// The contact's open thread on the number, or a new one owned by the
/// number's assignment rules. True when opened now.
async fn thread_for(
    tx: &Tx,
    contact: &Contact,
    number: &PhoneNumber,
    inbound: &InboundMessage,
    now: DateTime<Utc>,
) -> Result<(Thread, bool), StoreError> {
    if let Some(open) = tx.open_thread_of(contact.id, number.id).await? {
        return Ok((open, false));
    }
    let customer = inbound.from.clone().or_else(|| inbound.from_user_id.clone()).unwrap_or_default();
    Ok((tx.open_assigned_thread(contact.id, number.id, customer, inbound.occurred_at, now).await?, true))
}

/// The window runs 24 h from the contact's latest message; a message
/// delivered late does not shorten it. It counts from the earlier of the
/// message's timestamp and its arrival: a clock (or a forger) stamping a
/// message in the future never opens it longer.
async fn open_window(tx: &Tx, thread: &Thread, inbound: &InboundMessage, now: DateTime<Utc>) -> Result<(), StoreError> {
    let sent_at = inbound.occurred_at.min(now);
    let closes = sent_at + SESSION_WINDOW;
    let closes = thread.window_closes_at.is_none_or(|c| c < closes).then_some(closes);
    let latest = thread.last_inbound_at.is_none_or(|t| t < sent_at).then_some(sent_at);
    tx.note_inbound(thread.id, latest, closes, now).await
}

/// The `inbound_message` event workflows trigger on.
async fn log_message(
    tx: &Tx,
    inbound: &InboundMessage,
    thread: &Thread,
    opened: bool,
    number: &PhoneNumber,
    contact: &Contact,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let payload = serde_json::json!({
        "wamid": inbound.wamid, "thread_id": thread.id, "new_thread": opened, "from": inbound.from,
        "type": inbound.message_type, "text": inbound.text, "number_id": inbound.number_id,
    });
    let event = NewEvent {
        kind: "inbound_message".into(),
        dedup_key: format!("message:{}", inbound.wamid),
        phone_number_id: Some(number.id),
        contact_id: Some(contact.id),
        payload,
        occurred_at: inbound.occurred_at,
    };
    tx.log_event(event, now).await.map(|_| ())
}
