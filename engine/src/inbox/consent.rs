//! Consent keywords: a contact typing YES or STOP (or the configured words)
//! opts in or out on the number it wrote to.
//!
//! Invariants:
//! - Only what the contact typed counts: a text message's body, never a
//!   caption, a button title or an interactive reply.
//! - Every keyword is audited; a keyword older than the current state (a
//!   delivery that arrived late) does not undo a newer decision.
//! - Saying YES twice is audited but triggers nothing new: the `opt_in` /
//!   `opt_out` event is logged only when the state changed.

use chrono::{DateTime, SubsecRound, Utc};

use super::Keywords;
use kairo_core::channel::InboundMessage;
use kairo_core::ids::Wamid;
use kairo_core::status::{ConsentSource, ConsentStatus};
use kairo_core::text::normalize;
use kairo_store::{ConsentChange, Contact, NewEvent, PhoneNumber, StoreError, Tx};

/// Applies the keyword the message is, if it is one.
pub(super) async fn keyword(
    tx: &Tx,
    inbound: &InboundMessage,
    keywords: &Keywords,
    contact: &Contact,
    number: &PhoneNumber,
    wamid: &Wamid,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let Some(text) = inbound.typed_text() else { return Ok(()) };
    let said = normalize(text);
    let status = if keywords.opt_in.contains(&said) {
        ConsentStatus::OptedIn
    } else if keywords.opt_out.contains(&said) {
        ConsentStatus::OptedOut
    } else {
        return Ok(());
    };
    let change = ConsentChange {
        contact_id: contact.id,
        phone_number_id: number.id,
        status,
        source: ConsentSource::Keyword,
        keyword: Some(text.trim().to_string()),
        wamid: Some(wamid.clone()),
    };
    if apply(tx, change.clone(), inbound.occurred_at).await? {
        log_change(tx, &change, wamid, number, inbound.occurred_at, now).await?;
    }
    Ok(())
}

/// Audits the change and applies it unless the state is newer. True when
/// the state changed.
async fn apply(tx: &Tx, change: ConsentChange, occurred_at: DateTime<Utc>) -> Result<bool, StoreError> {
    let current = tx.consent(change.contact_id, change.phone_number_id).await?;
    // Webhook timestamps are whole seconds: a keyword in the same second as
    // the current state arrived after it, and wins.
    let newer = current.as_ref().is_none_or(|c| c.changed_at.trunc_subsecs(0) <= occurred_at);
    let changed = newer && current.as_ref().is_none_or(|c| c.status != change.status);
    if newer {
        let at = current.as_ref().map_or(occurred_at, |c| c.changed_at.max(occurred_at));
        tx.set_consent(change.contact_id, change.phone_number_id, change.status, at).await?;
    }
    tx.audit_consent(change, occurred_at).await?;
    Ok(changed)
}

/// The `opt_in` / `opt_out` event workflows trigger on.
async fn log_change(
    tx: &Tx,
    change: &ConsentChange,
    wamid: &Wamid,
    number: &PhoneNumber,
    occurred_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let kind = match change.status {
        ConsentStatus::OptedIn => "opt_in",
        ConsentStatus::OptedOut => "opt_out",
    };
    let payload = serde_json::json!({"keyword": change.keyword, "wamid": wamid, "number_id": number.graph_id});
    let event = NewEvent {
        kind: kind.into(),
        dedup_key: format!("{kind}:{wamid}"),
        phone_number_id: Some(number.id),
        contact_id: Some(change.contact_id),
        payload,
        occurred_at,
    };
    tx.log_event(event, now).await.map(|_| ())
}
