//! Which contact a sender is: matched by WhatsApp id, then by phone, then by
//! business-scoped user id; otherwise a new contact named by the WhatsApp
//! profile. A sender without a phone number (a user id only) is one contact
//! across all its messages, never one per message.

use chrono::{DateTime, Utc};

use kairo_core::channel::InboundMessage;
use kairo_core::phone::PhoneDigits;
use kairo_store::{Contact, ContactIds, NewContact, StoreError, Tx};

/// The contact a sender is, learning the ids it did not know yet.
pub(super) async fn contact_for_sender(
    tx: &Tx,
    inbound: &InboundMessage,
    now: DateTime<Utc>,
) -> Result<Contact, StoreError> {
    let digits: Option<String> =
        inbound.from.as_ref().map(|f| PhoneDigits::of(f).into_string()).filter(|d| !d.is_empty());
    let user_id = inbound.from_user_id.clone();
    let mut found = None;
    if let Some(digits) = &digits {
        found = tx.contact_by_wa_id(digits).await?;
        if found.is_none() {
            found = tx.contact_by_phone(digits).await?;
        }
    }
    if found.is_none()
        && let Some(user_id) = &user_id
    {
        found = tx.contact_by_user_id(user_id).await?;
    }
    match found {
        Some(existing) => learn_ids(tx, existing, digits, user_id, now).await,
        None => new_contact(tx, inbound, digits, user_id, now).await,
    }
}

/// A known contact learns its WhatsApp id when it had none, and the user id
/// WhatsApp sends now.
async fn learn_ids(
    tx: &Tx,
    existing: Contact,
    digits: Option<String>,
    user_id: Option<String>,
    now: DateTime<Utc>,
) -> Result<Contact, StoreError> {
    let learn_wa_id = existing.wa_id.as_deref().is_none_or(str::is_empty) && digits.is_some();
    let learn_user_id = user_id.is_some() && existing.user_id != user_id;
    if !(learn_wa_id || learn_user_id) {
        return Ok(existing);
    }
    let ids =
        ContactIds { phone: None, wa_id: digits.filter(|_| learn_wa_id), user_id: user_id.filter(|_| learn_user_id) };
    tx.set_contact_ids(existing, ids, now).await
}

/// A new contact, unless an API call gave the phone a contact a moment ago:
/// then that one is the sender, and it learns the WhatsApp ids.
async fn new_contact(
    tx: &Tx,
    inbound: &InboundMessage,
    digits: Option<String>,
    user_id: Option<String>,
    now: DateTime<Utc>,
) -> Result<Contact, StoreError> {
    let new = NewContact {
        name: inbound.profile_name.clone(),
        phone: digits.clone(),
        mobile_phone: None,
        wa_id: digits.clone(),
        user_id: user_id.clone(),
        properties: serde_json::json!({}),
    };
    if let Some(contact) = tx.insert_contact_unless_taken(new, now).await? {
        return Ok(contact);
    }
    let digits = digits.ok_or_else(|| tx.missing("the new contact of a sender without a phone"))?;
    let existing =
        tx.contact_by_phone(&digits).await?.ok_or_else(|| tx.missing(&format!("the contact of {digits}")))?;
    tx.set_contact_ids(existing, ContactIds { phone: None, wa_id: Some(digits), user_id }, now).await
}

/// A system message saying the contact changed number or user id: the
/// contact keeps its history and is known by the new ids from now on.
pub(super) async fn identity_change(
    tx: &Tx,
    contact: Contact,
    inbound: &InboundMessage,
    now: DateTime<Utc>,
) -> Result<Contact, StoreError> {
    let Some(change) = &inbound.identity_change else { return Ok(contact) };
    let wa_id = change.wa_id.as_ref().map(|w| PhoneDigits::of(w).into_string()).filter(|w| !w.is_empty());
    let user_id = change.user_id.clone();
    if wa_id.is_none() && user_id.is_none() {
        return Ok(contact);
    }
    let mut ids = ContactIds { phone: None, wa_id: wa_id.clone(), user_id };
    if let Some(wa_id) = &wa_id {
        // The stated phone follows the number it was, and so do the threads
        // that answered to the old one.
        let old_wa_id = contact.wa_id.clone();
        if contact.phone.is_some() && contact.phone == old_wa_id {
            ids.phone = Some(wa_id.clone());
        }
        if let Some(old) = old_wa_id.or_else(|| inbound.from.clone()) {
            tx.move_threads_to_wa_id(contact.id, &old, wa_id).await?;
        }
    }
    tx.set_contact_ids(contact, ids, now).await
}
