//! Bulk enrollment: a chunk of rows enrolled in one transaction, with the
//! same enrollment rules as one enrollment, contacts found or created for
//! the whole chunk at once, and a result per row.
//!
//! Invariant: a row key is recorded in the same transaction as its row's
//! enrollment, so a row is enrolled at most once per key, across uploads
//! and across crashes.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::{Engine, EngineError, Enrolled};
use kairo_core::ids::{BulkJobId, ContactId, PhoneNumberId};
use kairo_store::{Contact, NewContact, RowKey, RowResult, Tx, merge_properties};

/// How long a row key is remembered.
pub const ROW_KEY_TTL: chrono::Duration = chrono::Duration::days(30);

/// One row of a bulk upload, already checked for shape.
#[derive(Debug, Clone)]
pub struct BulkRow {
    pub line: u64,
    pub key: Option<String>,
    /// Hash of the row's content: the same key with another row is refused.
    pub content_hash: String,
    pub contact: BulkContact,
    pub trigger: Value,
    /// Numbers to opt the contact in on (consent from the API, audited).
    pub opt_in: Vec<PhoneNumberId>,
}

/// The row's contact: an existing one, or found (created) by phone.
#[derive(Debug, Clone)]
pub enum BulkContact {
    Id(ContactId),
    Phone {
        /// Normalised digits.
        phone: String,
        name: Option<String>,
        mobile_phone: Option<String>,
        properties: Option<Map<String, Value>>,
    },
}

/// Where a chunk goes: its workflow, job and row-key space.
#[derive(Debug, Clone)]
pub struct BulkTarget<'a> {
    pub workflow: &'a str,
    pub job: BulkJobId,
    /// Row keys of one token and workflow.
    pub key_scope: &'a str,
}

impl Engine {
    /// Enrolls a chunk of rows and records every row's result (`failed`
    /// rows are recorded as they are). Returns the results in line order.
    pub async fn enroll_chunk(
        &self,
        target: &BulkTarget<'_>,
        rows: Vec<BulkRow>,
        failed: Vec<RowResult>,
    ) -> Result<Vec<RowResult>, EngineError> {
        let now = self.now();
        let tx = self.store.begin().await?;
        let mut results = self.enroll_rows(&tx, target.workflow, Some(target.key_scope), rows, now).await?;
        results.extend(failed);
        results.sort_by_key(|r| r.line);
        tx.record_bulk_rows(target.job, &results, now).await?;
        // Rows whose first step parked leave the workers nothing to run.
        let wake = tx.wrote_pending_steps();
        tx.commit().await?;
        if wake {
            self.notify();
        }
        Ok(results)
    }

    /// Enrolls `rows` into `workflow` in `tx`: row keys of `key_scope`
    /// replayed or recorded, contacts found or created, the enrollment
    /// rules applied. Returns a result per row, in no particular order.
    pub(super) async fn enroll_rows(
        &self,
        tx: &Tx,
        workflow: &str,
        key_scope: Option<&str>,
        rows: Vec<BulkRow>,
        now: DateTime<Utc>,
    ) -> Result<Vec<RowResult>, EngineError> {
        let plan = self.enrollable_plan_in(tx, workflow).await?;
        let Some(api) = plan.model.triggers.iter().find_map(|t| t.api.as_ref()) else {
            return Err(EngineError::NotApiEnrollable { workflow: workflow.into() });
        };
        let (claimed, mut seen) = claim_keys(tx, key_scope, &rows, now).await?;
        let fresh: Vec<BulkRow> =
            rows.iter().filter(|r| r.key.as_ref().is_none_or(|k| !seen.contains_key(k))).cloned().collect();
        let contacts = self.chunk_contacts(tx, &fresh, now).await?;
        let (mut results, admitted) = admit(rows, &api.required, &contacts, &mut seen);
        for (row, contact) in &admitted {
            for number in &row.opt_in {
                tx.opt_in(contact.id, *number, now).await?;
            }
        }
        let items: Vec<(&Contact, Value)> = admitted.iter().map(|(row, c)| (*c, row.trigger.clone())).collect();
        let enrolled = self.enroll_many_in(tx, &plan, &items, "api", now).await?;
        let mut new_keys = Vec::new();
        let mut firsts: HashMap<String, Value> = HashMap::new();
        for ((row, contact), enrolled) in admitted.iter().zip(enrolled) {
            let result = row_result(row, contact.id, enrolled);
            if let Some(key) = &row.key {
                let first = json!({ "outcome": result.outcome, "contact": result.contact_id,
                    "enrollment": result.enrollment_id, "reason": result.reason });
                firsts.insert(key.clone(), first.clone());
                new_keys.push(RowKey { key: key.clone(), request_hash: row.content_hash.clone(), result: first });
            }
            results.push(result);
        }
        replay_repeats(&mut results, &firsts);
        if let Some(scope) = key_scope
            && !claimed.is_empty()
        {
            let claimed: Vec<String> = claimed.into_iter().collect();
            tx.release_row_keys(scope, &claimed).await?;
            tx.insert_row_keys(scope, new_keys, now + ROW_KEY_TTL, now).await?;
        }
        Ok(results)
    }

    /// The chunk's contacts: named by id, found by phone, or created (once
    /// per phone), with the rows' names and properties applied.
    async fn chunk_contacts(
        &self,
        tx: &Tx,
        rows: &[BulkRow],
        now: DateTime<Utc>,
    ) -> Result<ChunkContacts, EngineError> {
        let ids: Vec<ContactId> = rows
            .iter()
            .filter_map(|r| match r.contact {
                BulkContact::Id(id) => Some(id),
                BulkContact::Phone { .. } => None,
            })
            .collect();
        let phones: Vec<String> = rows
            .iter()
            .filter_map(|r| match &r.contact {
                BulkContact::Phone { phone, .. } => Some(phone.clone()),
                BulkContact::Id(_) => None,
            })
            .collect();
        let by_id: HashMap<ContactId, Contact> =
            tx.contacts_by_ids(&ids).await?.into_iter().map(|c| (c.id, c)).collect();
        let mut by_phone: HashMap<String, Contact> = HashMap::new();
        // The oldest contact with the number as its phone or mobile phone,
        // as a single contact is found.
        let wanted: std::collections::HashSet<&String> = phones.iter().collect();
        for contact in tx.contacts_by_phones(&phones).await? {
            for number in [&contact.phone, &contact.mobile_phone].into_iter().flatten() {
                if wanted.contains(number) {
                    by_phone.entry(number.clone()).or_insert_with(|| contact.clone());
                }
            }
        }
        let mut news = Vec::new();
        let mut new_phones: std::collections::HashSet<&String> = std::collections::HashSet::new();
        let mut changed: HashMap<ContactId, Contact> = HashMap::new();
        for row in rows {
            let BulkContact::Phone { phone, name, mobile_phone, properties } = &row.contact else { continue };
            match by_phone.get_mut(phone) {
                Some(contact) => {
                    if name.is_none() && properties.is_none() && mobile_phone.is_none() {
                        continue;
                    }
                    if let Some(name) = name {
                        contact.name = Some(name.clone());
                    }
                    if let Some(mobile) = mobile_phone {
                        contact.mobile_phone = Some(mobile.clone());
                    }
                    if let Some(properties) = properties {
                        contact.properties = merge_properties(contact.properties.clone(), properties.clone());
                    }
                    changed.insert(contact.id, contact.clone());
                }
                None if new_phones.insert(phone) => {
                    news.push(NewContact {
                        name: name.clone(),
                        phone: Some(phone.clone()),
                        mobile_phone: mobile_phone.clone(),
                        // Learnt from the first inbound message.
                        wa_id: None,
                        user_id: None,
                        properties: Value::Object(properties.clone().unwrap_or_default()),
                    });
                }
                None => {}
            }
        }
        for contact in changed.values() {
            tx.replace_contact_fields(contact, now).await?;
        }
        for contact in tx.insert_contacts(news, now).await? {
            if let Some(phone) = contact.phone.clone() {
                by_phone.insert(phone, contact);
            }
        }
        Ok(ChunkContacts { by_id, by_phone })
    }
}

struct ChunkContacts {
    by_id: HashMap<ContactId, Contact>,
    by_phone: HashMap<String, Contact>,
}

fn contact_label(contact: &BulkContact) -> String {
    match contact {
        BulkContact::Id(id) => id.to_string(),
        BulkContact::Phone { phone, .. } => format!("+{phone}"),
    }
}

fn row_result(row: &BulkRow, contact: ContactId, enrolled: Enrolled) -> RowResult {
    let (outcome, enrollment, reason) = match enrolled {
        Enrolled::Enrolled { enrollment } => ("enrolled", Some(enrollment), None),
        Enrolled::Skipped { reason } => {
            ("skipped", None, serde_json::to_value(reason).ok().and_then(|v| v.as_str().map(str::to_string)))
        }
    };
    RowResult {
        line: row.line,
        row_key: row.key.clone(),
        outcome,
        contact_id: Some(contact),
        enrollment_id: enrollment,
        reason,
        error: None,
    }
}

/// A row whose key was seen before: the first result, or an error when the
/// key came with another row.
fn replayed(row: &BulkRow, first_hash: &str, first: &Value) -> RowResult {
    if first_hash != row.content_hash {
        return row_error(row, "this row key was used before with another row; give each row its own key".into());
    }
    let text = |field: &str| first.get(field).and_then(Value::as_str).map(str::to_string);
    RowResult {
        line: row.line,
        row_key: row.key.clone(),
        outcome: "replayed",
        contact_id: text("contact").and_then(|s| s.parse().ok()),
        enrollment_id: text("enrollment").and_then(|s| s.parse().ok()),
        reason: first.get("outcome").and_then(Value::as_str).map(|o| format!("first result: {o}")),
        error: None,
    }
}

fn row_error(row: &BulkRow, error: String) -> RowResult {
    RowResult {
        line: row.line,
        row_key: row.key.clone(),
        outcome: "error",
        contact_id: None,
        enrollment_id: None,
        reason: None,
        error: Some(error),
    }
}

/// The chunk's row keys claimed in this transaction, and the results of
/// those another upload holds or recorded before (replayed instead).
async fn claim_keys(
    tx: &Tx,
    key_scope: Option<&str>,
    rows: &[BulkRow],
    now: DateTime<Utc>,
) -> Result<(HashSet<String>, HashMap<String, (String, Value)>), EngineError> {
    let Some(scope) = key_scope else { return Ok(Default::default()) };
    let keys: Vec<String> = rows.iter().filter_map(|r| r.key.clone()).collect();
    if keys.is_empty() {
        return Ok(Default::default());
    }
    let claimed = tx.claim_row_keys(scope, &keys, now + ROW_KEY_TTL, now).await?;
    let others: Vec<String> = keys.iter().filter(|k| !claimed.contains(*k)).cloned().collect();
    if others.is_empty() {
        return Ok((claimed, HashMap::new()));
    }
    let seen = tx
        .row_keys(scope, &others)
        .await?
        .into_iter()
        .map(|k| (k.key, (k.request_hash, k.response_body.unwrap_or(Value::Null))))
        .collect();
    Ok((claimed, seen))
}

/// Each row's fate before enrolling: replayed (its key was seen), refused
/// (no such contact, a required trigger field missing) or admitted with its
/// contact. A key repeated in the chunk replays the first row.
fn admit<'c>(
    rows: Vec<BulkRow>,
    required: &[String],
    contacts: &'c ChunkContacts,
    seen: &mut HashMap<String, (String, Value)>,
) -> (Vec<RowResult>, Vec<(BulkRow, &'c Contact)>) {
    let mut results = Vec::with_capacity(rows.len());
    let mut admitted = Vec::new();
    for row in rows {
        if let Some(key) = &row.key
            && let Some((hash, first)) = seen.get(key)
        {
            results.push(replayed(&row, hash, first));
            continue;
        }
        let missing: Vec<&str> = required
            .iter()
            .filter(|f| row.trigger.get(f.as_str()).is_none_or(Value::is_null))
            .map(String::as_str)
            .collect();
        let contact = match &row.contact {
            BulkContact::Id(id) => contacts.by_id.get(id),
            BulkContact::Phone { phone, .. } => contacts.by_phone.get(phone),
        };
        match contact {
            None => results.push(row_error(&row, format!("no contact {}", contact_label(&row.contact)))),
            Some(_) if !missing.is_empty() => {
                results.push(row_error(&row, format!("trigger needs the field(s) {}", missing.join(", "))))
            }
            Some(contact) => {
                if let Some(key) = &row.key {
                    seen.insert(key.clone(), (row.content_hash.clone(), Value::Null));
                }
                admitted.push((row, contact));
            }
        }
    }
    (results, admitted)
}

/// Rows that repeated a key of this chunk replay its first result.
fn replay_repeats(results: &mut [RowResult], firsts: &HashMap<String, Value>) {
    for result in results.iter_mut().filter(|r| r.outcome == "replayed" && r.enrollment_id.is_none()) {
        if let Some(first) = result.row_key.as_ref().and_then(|k| firsts.get(k)) {
            let text = |field: &str| first.get(field).and_then(Value::as_str).map(str::to_string);
            result.contact_id = text("contact").and_then(|s| s.parse().ok());
            result.enrollment_id = text("enrollment").and_then(|s| s.parse().ok());
            result.reason = first.get("outcome").and_then(Value::as_str).map(|o| format!("first result: {o}"));
        }
    }
}
