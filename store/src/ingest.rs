//! Webhook ingest: inbound events applied to the inbox, consent and the
//! event log, several deliveries in one transaction (a group commit).
//!
//! Invariants:
//! - Everything a batch of deliveries changes commits together, before any
//!   of them is answered; a failure rolls all of it back (Meta retries).
//! - A wamid is stored once; a status is logged once per (wamid, status).
//! - Delivery status only moves forward: sending < sent < delivered < read;
//!   `failed` wins only over sending and sent. A status for an unknown wamid
//!   is kept and applied when the message is recorded.
//! - Only messages to connected numbers (registered from the configuration
//!   or a sync) are recorded; others are counted as ignored. Meta pushes no
//!   history, so what arrives after a number is connected is all there is.

use chrono::{DateTime, Duration, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DatabaseTransaction, EntityTrait, IntoActiveModel,
    QueryFilter, QueryOrder,
};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::entities::{
    assignment_rule, consent, consent_event, contact, event, message, pending_status, phone_number, team, team_member,
    template, thread, user, whatsapp_account,
};
use super::messages::{apply_status, message_row, status_name};
use super::threads::new_thread_row;
use super::{NewMessage, Store, StoreError};
use kairo_core::channel::{InboundEvent, InboundMessage, Notice, StatusUpdate};
use kairo_core::status::{ConsentSource, ConsentStatus, DeliveryStatus, Direction, ThreadStatus};
use kairo_core::text::normalize;
use kairo_core::{ids::*, phone::PhoneDigits};

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

/// The text a contact typed: a text message's body, and nothing else.
fn typed_text(inbound: &InboundMessage) -> Option<&str> {
    if inbound.message_type != "text" {
        return None;
    }
    inbound.payload["text"]["body"].as_str().or(inbound.text.as_deref())
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

/// A dedup key for events whose payload is their identity.
fn dedup(kind: &str, payload: &serde_json::Value) -> String {
    let digest = Sha256::digest(payload.to_string().as_bytes());
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("{kind}:{hex}")
}

impl Store {
    /// Applies several deliveries in one transaction and reports on each.
    pub async fn ingest(
        &self,
        deliveries: &[Vec<InboundEvent>],
        keywords: &Keywords,
        now: DateTime<Utc>,
    ) -> Result<Vec<IngestReport>, StoreError> {
        let txn = self.begin_write().await.map_err(|e| self.query_error(e))?;
        let mut reports = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            let mut report = IngestReport::default();
            for event in delivery {
                self.apply(&txn, event, keywords, now, &mut report).await?;
            }
            reports.push(report);
        }
        txn.commit().await.map_err(|e| self.query_error(e))?;
        Ok(reports)
    }

    pub(super) async fn apply(
        &self,
        txn: &DatabaseTransaction,
        event: &InboundEvent,
        keywords: &Keywords,
        now: DateTime<Utc>,
        report: &mut IngestReport,
    ) -> Result<(), StoreError> {
        match event {
            InboundEvent::Message(message) => self.ingest_message(txn, message, keywords, now, report).await,
            InboundEvent::Status(status) => self.ingest_status(txn, status, now, report).await,
            InboundEvent::TemplateStatus(change) => {
                report.other += 1;
                self.apply_template_status(
                    txn,
                    &change.account_id,
                    &change.template_name,
                    &change.language,
                    &change.event,
                    now,
                )
                .await?;
                self.log_payload_event(txn, "template_status", change, change.occurred_at, now).await
            }
            InboundEvent::NumberQuality(change) => {
                report.other += 1;
                if let Some((number, reason)) =
                    super::numbers::apply_quality_change(txn, &change.account_id, change, now)
                        .await
                        .map_err(|e| self.query_error(e))?
                {
                    tracing::error!(
                        number = %number.display_number,
                        %reason,
                        "marketing sends from this number are paused; once its quality is back, resume them with `kairo numbers resume {}`",
                        number.display_number
                    );
                }
                self.log_payload_event(txn, "number_quality", change, change.occurred_at, now).await
            }
            InboundEvent::Notice(notice) => {
                report.other += 1;
                if let Some(reason) = account_restriction(notice) {
                    let paused = super::numbers::pause_account(txn, &notice.account_id, &reason, now)
                        .await
                        .map_err(|e| self.query_error(e))?;
                    for number in paused {
                        tracing::error!(
                            number = %number.display_number,
                            %reason,
                            "every send from this number is paused; when Meta lifts the restriction, resume them with `kairo numbers resume {}`",
                            number.display_number
                        );
                    }
                }
                self.log_payload_event(txn, &format!("notice:{}", notice.field), notice, notice.occurred_at, now).await
            }
        }
    }

    /// Logs an event whose whole payload is its identity.
    async fn log_payload_event(
        &self,
        txn: &DatabaseTransaction,
        kind: &str,
        event: &impl serde::Serialize,
        occurred_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let payload = serde_json::to_value(event).expect("events serialise");
        let key = dedup(kind, &payload);
        self.log_event(txn, kind, &key, None, None, payload, occurred_at, now).await.map(|_| ())
    }

    async fn ingest_message(
        &self,
        txn: &DatabaseTransaction,
        inbound: &InboundMessage,
        keywords: &Keywords,
        now: DateTime<Utc>,
        report: &mut IngestReport,
    ) -> Result<(), StoreError> {
        let q = |e| self.query_error(e);
        let Some(number) = phone_number::Entity::find()
            .filter(phone_number::Column::GraphId.eq(&inbound.number_id))
            .one(txn)
            .await
            .map_err(q)?
        else {
            report.ignored += 1;
            return Ok(());
        };
        let wamid = Wamid(inbound.wamid.clone());
        let known =
            message::Entity::find().filter(message::Column::Wamid.eq(wamid.clone())).one(txn).await.map_err(q)?;
        if known.is_some() {
            report.duplicates += 1;
            return Ok(());
        }
        let contact = self.contact_for_sender(txn, inbound, now).await?;
        let contact = self.identity_change(txn, contact, inbound, now).await?;
        let (thread, opened) = self.thread_for(txn, &contact, &number, inbound, now).await?;
        let row = message_row(
            NewMessage {
                thread_id: thread.id,
                direction: Direction::Inbound,
                wamid: Some(wamid.clone()),
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
            },
            now,
        );
        message::Entity::insert(row).exec_without_returning(txn).await.map_err(q)?;
        // The window runs 24 h from the contact's latest message; a message
        // delivered late does not shorten it. It counts from the earlier of
        // the message's timestamp and its arrival: a clock (or a forger)
        // stamping a message in the future never opens it longer.
        let sent_at = inbound.occurred_at.min(now);
        let closes = sent_at + SESSION_WINDOW;
        let mut refreshed = thread.clone().into_active_model();
        if thread.window_closes_at.is_none_or(|c| c < closes) {
            refreshed.window_closes_at = Set(Some(closes));
        }
        if thread.last_inbound_at.is_none_or(|t| t < sent_at) {
            refreshed.last_inbound_at = Set(Some(sent_at));
        }
        refreshed.updated_at = Set(now);
        refreshed.update(txn).await.map_err(q)?;
        report.messages += 1;

        let payload = serde_json::json!({
            "wamid": inbound.wamid, "thread_id": thread.id, "new_thread": opened, "from": inbound.from,
            "type": inbound.message_type, "text": inbound.text, "number_id": inbound.number_id,
        });
        self.log_event(
            txn,
            "inbound_message",
            &format!("message:{}", inbound.wamid),
            Some(number.id),
            Some(contact.id),
            payload,
            inbound.occurred_at,
            now,
        )
        .await?;
        // Only what the contact typed counts as a keyword: a text message's
        // body, never a caption, a button title or an interactive reply.
        if let Some(text) = typed_text(inbound) {
            let said = normalize(text);
            let change = if keywords.opt_in.contains(&said) {
                Some(ConsentStatus::OptedIn)
            } else if keywords.opt_out.contains(&said) {
                Some(ConsentStatus::OptedOut)
            } else {
                None
            };
            if let Some(status) = change {
                self.keyword_consent(txn, &contact, &number, status, text.trim(), &wamid, inbound.occurred_at, now)
                    .await?;
            }
        }
        Ok(())
    }

    /// The contact a sender is: matched by WhatsApp id, then by phone, then by
    /// WhatsApp user id;
    /// otherwise a new contact named by the WhatsApp profile.
    async fn contact_for_sender(
        &self,
        txn: &DatabaseTransaction,
        inbound: &InboundMessage,
        now: DateTime<Utc>,
    ) -> Result<contact::Model, StoreError> {
        let q = |e| self.query_error(e);
        let digits: Option<String> =
            inbound.from.as_ref().map(|f| PhoneDigits::of(f).into_string()).filter(|d| !d.is_empty());
        let mut found = None;
        if let Some(digits) = &digits {
            found = contact::Entity::find()
                .filter(contact::Column::WaId.eq(digits))
                .order_by_asc(contact::Column::CreatedAt)
                .one(txn)
                .await
                .map_err(q)?;
        }
        if found.is_none()
            && let Some(digits) = &digits
        {
            found = contact::Entity::find()
                .filter(
                    Condition::any()
                        .add(contact::Column::Phone.eq(digits))
                        .add(contact::Column::MobilePhone.eq(digits)),
                )
                .order_by_asc(contact::Column::CreatedAt)
                .one(txn)
                .await
                .map_err(q)?;
        }
        if found.is_none()
            && let Some(user_id) = &inbound.from_user_id
        {
            found = contact::Entity::find().filter(contact::Column::UserId.eq(user_id)).one(txn).await.map_err(q)?;
        }
        match found {
            Some(existing) => {
                let learn_wa_id = existing.wa_id.as_deref().is_none_or(str::is_empty) && digits.is_some();
                let learn_user_id = inbound.from_user_id.is_some() && existing.user_id != inbound.from_user_id;
                if !(learn_wa_id || learn_user_id) {
                    return Ok(existing);
                }
                let mut row = existing.into_active_model();
                if learn_wa_id {
                    row.wa_id = Set(digits);
                }
                if learn_user_id {
                    row.user_id = Set(inbound.from_user_id.clone());
                }
                row.updated_at = Set(now);
                row.update(txn).await.map_err(q)
            }
            None => {
                let row = contact::ActiveModel {
                    id: Set(ContactId::new()),
                    name: Set(inbound.profile_name.clone()),
                    phone: Set(digits.clone()),
                    mobile_phone: Set(None),
                    wa_id: Set(digits.clone()),
                    user_id: Set(inbound.from_user_id.clone()),
                    properties: Set(serde_json::json!({})),
                    created_at: Set(now),
                    updated_at: Set(now),
                };
                let id = row.id.clone().unwrap();
                // Phones are unique: an API call may have given this number
                // a contact a moment ago; then that one is the sender.
                contact::Entity::insert(row)
                    .on_conflict(sea_orm::sea_query::OnConflict::new().do_nothing().to_owned())
                    .exec_without_returning(txn)
                    .await
                    .map_err(q)?;
                let inserted = contact::Entity::find_by_id(id).one(txn).await.map_err(q)?;
                match (inserted, &digits) {
                    (Some(contact), _) => Ok(contact),
                    (None, Some(digits)) => {
                        let existing = contact::Entity::find()
                            .filter(contact::Column::Phone.eq(digits.as_str()))
                            .one(txn)
                            .await
                            .map_err(q)?
                            .ok_or_else(|| q(sea_orm::DbErr::RecordNotFound(format!("the contact of {digits}"))))?;
                        let mut row = existing.into_active_model();
                        row.wa_id = Set(Some(digits.clone()));
                        if inbound.from_user_id.is_some() {
                            row.user_id = Set(inbound.from_user_id.clone());
                        }
                        row.updated_at = Set(now);
                        row.update(txn).await.map_err(q)
                    }
                    (None, None) => Err(q(sea_orm::DbErr::RecordNotInserted)),
                }
            }
        }
    }

    /// A system message saying the contact changed number
    /// (`user_changed_number`: the new one in `system.wa_id`, older
    /// versions `new_wa_id`, with user ids also `system.user_id`) or user id
    /// (`user_changed_user_id`): the contact keeps its history and is known
    /// by the new ids from now on.
    async fn identity_change(
        &self,
        txn: &DatabaseTransaction,
        contact: contact::Model,
        inbound: &InboundMessage,
        now: DateTime<Utc>,
    ) -> Result<contact::Model, StoreError> {
        if inbound.message_type != "system" {
            return Ok(contact);
        }
        let system = &inbound.payload["system"];
        let field = |name: &str| system[name].as_str().map(str::trim).filter(|s| !s.is_empty()).map(str::to_string);
        let (wa_id, user_id) = match system["type"].as_str() {
            Some("user_changed_number") => (
                field("wa_id").or_else(|| field("new_wa_id")).map(|w| PhoneDigits::of(&w).into_string()),
                field("user_id"),
            ),
            Some("user_changed_user_id") => (None, field("user_id")),
            _ => return Ok(contact),
        };
        if wa_id.is_none() && user_id.is_none() {
            return Ok(contact);
        }
        let old_wa_id = contact.wa_id.clone();
        let mut row = contact.clone().into_active_model();
        if let Some(wa_id) = wa_id.filter(|w: &String| !w.is_empty()) {
            // The stated phone follows the number it was, and so do the
            // threads that answered to the old one.
            if contact.phone.is_some() && contact.phone == old_wa_id {
                row.phone = Set(Some(wa_id.clone()));
            }
            if let Some(old) = old_wa_id.or_else(|| inbound.from.clone()) {
                thread::Entity::update_many()
                    .col_expr(thread::Column::CustomerWaId, sea_orm::sea_query::Expr::value(wa_id.clone()))
                    .filter(thread::Column::ContactId.eq(contact.id))
                    .filter(thread::Column::CustomerWaId.eq(old))
                    .exec(txn)
                    .await
                    .map_err(|e| self.query_error(e))?;
            }
            row.wa_id = Set(Some(wa_id));
        }
        if let Some(user_id) = user_id {
            row.user_id = Set(Some(user_id));
        }
        row.updated_at = Set(now);
        row.update(txn).await.map_err(|e| self.query_error(e))
    }

    /// The contact's open thread on the number, or a new one assigned by the
    /// number's rules. Returns whether it was opened now.
    async fn thread_for(
        &self,
        txn: &DatabaseTransaction,
        contact: &contact::Model,
        number: &phone_number::Model,
        inbound: &InboundMessage,
        now: DateTime<Utc>,
    ) -> Result<(thread::Model, bool), StoreError> {
        let q = |e| self.query_error(e);
        let open = thread::Entity::find()
            .filter(thread::Column::ContactId.eq(contact.id))
            .filter(thread::Column::PhoneNumberId.eq(number.id))
            .filter(thread::Column::Status.eq(ThreadStatus::Open))
            .one(txn)
            .await
            .map_err(q)?;
        if let Some(open) = open {
            return Ok((open, false));
        }
        let owners = self.assign_new_thread(txn, number.id).await?;
        let customer = inbound.from.clone().or_else(|| inbound.from_user_id.clone()).unwrap_or_default();
        let row = new_thread_row(contact.id, number.id, customer, owners, inbound.occurred_at, now);
        Ok((row.insert(txn).await.map_err(q)?, true))
    }

    /// Applies the number's first assignment rule: a user, or the next active
    /// member of a team after the one assigned last (round-robin).
    pub(super) async fn assign_new_thread(
        &self,
        txn: &DatabaseTransaction,
        number: PhoneNumberId,
    ) -> Result<(Option<UserId>, Option<TeamId>), StoreError> {
        let q = |e| self.query_error(e);
        let Some(rule) = assignment_rule::Entity::find()
            .filter(assignment_rule::Column::PhoneNumberId.eq(number))
            .order_by_asc(assignment_rule::Column::Position)
            .one(txn)
            .await
            .map_err(q)?
        else {
            return Ok((None, None));
        };
        if let Some(user) = rule.user_id {
            return Ok((Some(user), None));
        }
        let Some(team_id) = rule.team_id else { return Ok((None, None)) };
        self.round_robin(txn, team_id).await
    }

    /// The next active member of a team after the one assigned last, and
    /// the team; the team alone when no member is active.
    pub(super) async fn round_robin(
        &self,
        txn: &DatabaseTransaction,
        team_id: TeamId,
    ) -> Result<(Option<UserId>, Option<TeamId>), StoreError> {
        let q = |e| self.query_error(e);
        let Some(team) = team::Entity::find_by_id(team_id).one(txn).await.map_err(q)? else { return Ok((None, None)) };
        // A deactivated team takes no new threads.
        if team.deactivated_at.is_some() {
            return Ok((None, None));
        }
        let members: Vec<UserId> = team_member::Entity::find()
            .filter(team_member::Column::TeamId.eq(team_id))
            .order_by_asc(team_member::Column::AddedAt)
            .order_by_asc(team_member::Column::UserId)
            .all(txn)
            .await
            .map_err(q)?
            .into_iter()
            .map(|m| m.user_id)
            .collect();
        let active: Vec<UserId> = user::Entity::find()
            .filter(user::Column::Id.is_in(members.clone()))
            .filter(user::Column::DeactivatedAt.is_null())
            .all(txn)
            .await
            .map_err(q)?
            .into_iter()
            .map(|u| u.id)
            .collect();
        let in_turn: Vec<UserId> = members.into_iter().filter(|m| active.contains(m)).collect();
        if in_turn.is_empty() {
            return Ok((None, Some(team_id)));
        }
        let next = match team.last_assigned_user_id.and_then(|last| in_turn.iter().position(|m| *m == last)) {
            Some(i) => in_turn[(i + 1) % in_turn.len()],
            None => in_turn[0],
        };
        let mut cursor = team.into_active_model();
        cursor.last_assigned_user_id = Set(Some(next));
        cursor.update(txn).await.map_err(q)?;
        Ok((Some(next), Some(team_id)))
    }

    #[allow(clippy::too_many_arguments)] // one audit entry's facts, all required
    async fn keyword_consent(
        &self,
        txn: &DatabaseTransaction,
        contact: &contact::Model,
        number: &phone_number::Model,
        status: ConsentStatus,
        keyword: &str,
        wamid: &Wamid,
        occurred_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let q = |e| self.query_error(e);
        let current = consent::Entity::find()
            .filter(consent::Column::ContactId.eq(contact.id))
            .filter(consent::Column::PhoneNumberId.eq(number.id))
            .one(txn)
            .await
            .map_err(q)?;
        // A keyword older than the current state (a delivery that arrived
        // late) is audited but does not undo a newer decision. Webhook
        // timestamps are whole seconds: a keyword in the same second as the
        // current state arrived after it, and wins.
        use chrono::SubsecRound;
        let newer = current.as_ref().is_none_or(|c| c.changed_at.trunc_subsecs(0) <= occurred_at);
        let changed = newer && current.as_ref().is_none_or(|c| c.status != status);
        if newer {
            let at = current.as_ref().map_or(occurred_at, |c| c.changed_at.max(occurred_at));
            self.upsert_consent(txn, contact.id, number.id, status, at).await?;
        }
        consent_event::Entity::insert(consent_event::ActiveModel {
            id: Set(Uuid::now_v7()),
            contact_id: Set(contact.id),
            phone_number_id: Set(number.id),
            status: Set(status),
            source: Set(ConsentSource::Keyword),
            keyword: Set(Some(keyword.to_string())),
            wamid: Set(Some(wamid.clone())),
            occurred_at: Set(occurred_at),
        })
        .exec_without_returning(txn)
        .await
        .map_err(q)?;
        // Saying YES twice is recorded in the audit trail but triggers nothing new.
        if changed {
            let kind = match status {
                ConsentStatus::OptedIn => "opt_in",
                ConsentStatus::OptedOut => "opt_out",
            };
            let payload = serde_json::json!({"keyword": keyword, "wamid": wamid, "number_id": number.graph_id});
            self.log_event(
                txn,
                kind,
                &format!("{kind}:{wamid}"),
                Some(number.id),
                Some(contact.id),
                payload,
                occurred_at,
                now,
            )
            .await?;
        }
        Ok(())
    }

    async fn upsert_consent(
        &self,
        txn: &DatabaseTransaction,
        contact: ContactId,
        number: PhoneNumberId,
        status: ConsentStatus,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        consent::Entity::insert(consent::ActiveModel {
            id: Set(Uuid::now_v7()),
            contact_id: Set(contact),
            phone_number_id: Set(number),
            status: Set(status),
            changed_at: Set(at),
        })
        .on_conflict(
            OnConflict::columns([consent::Column::ContactId, consent::Column::PhoneNumberId])
                .update_columns([consent::Column::Status, consent::Column::ChangedAt])
                .to_owned(),
        )
        .exec_without_returning(txn)
        .await
        .map_err(|e| self.query_error(e))?;
        Ok(())
    }

    async fn ingest_status(
        &self,
        txn: &DatabaseTransaction,
        update: &StatusUpdate,
        now: DateTime<Utc>,
        report: &mut IngestReport,
    ) -> Result<(), StoreError> {
        let q = |e| self.query_error(e);
        let payload = serde_json::to_value(update).expect("events serialise");
        let key = format!("status:{}:{}", update.wamid, status_name(update.status));
        let first_time =
            self.log_event(txn, "message_status", &key, None, None, payload, update.occurred_at, now).await?;
        if !first_time {
            report.duplicates += 1;
            return Ok(());
        }
        let wamid = Wamid(update.wamid.clone());
        match message::Entity::find().filter(message::Column::Wamid.eq(wamid.clone())).one(txn).await.map_err(q)? {
            Some(found) => {
                apply_status(txn, found, update.status, update.error.as_ref(), update.occurred_at, now)
                    .await
                    .map_err(q)?;
                report.statuses += 1;
            }
            None => {
                pending_status::Entity::insert(pending_status::ActiveModel {
                    id: Set(Uuid::now_v7()),
                    wamid: Set(wamid),
                    status: Set(update.status),
                    payload: Set(serde_json::to_value(update).expect("events serialise")),
                    occurred_at: Set(update.occurred_at),
                    received_at: Set(now),
                    callback_data: Set(update.callback_data.clone()),
                })
                .exec_without_returning(txn)
                .await
                .map_err(q)?;
                report.pending_statuses += 1;
            }
        }
        Ok(())
    }

    async fn apply_template_status(
        &self,
        txn: &DatabaseTransaction,
        waba_id: &str,
        name: &str,
        language: &str,
        event: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        // Events that are a resulting status; others (FLAGGED, UNARCHIVED, …)
        // leave the status as it is.
        const STATUSES: &[&str] = &[
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
        if !STATUSES.contains(&event) {
            return Ok(());
        }
        let q = |e| self.query_error(e);
        let Some(account) = whatsapp_account::Entity::find()
            .filter(whatsapp_account::Column::WabaId.eq(waba_id))
            .one(txn)
            .await
            .map_err(q)?
        else {
            return Ok(());
        };
        template::Entity::update_many()
            .col_expr(template::Column::Status, sea_orm::sea_query::Expr::value(event))
            .col_expr(template::Column::UpdatedAt, sea_orm::sea_query::Expr::value(now))
            .filter(template::Column::AccountId.eq(account.id))
            .filter(template::Column::Name.eq(name))
            .filter(template::Column::Language.eq(language))
            .exec(txn)
            .await
            .map_err(q)?;
        Ok(())
    }

    /// Appends to the event log unless the dedup key is there; true when appended.
    #[allow(clippy::too_many_arguments)] // the columns of one event row
    async fn log_event(
        &self,
        txn: &impl ConnectionTrait,
        kind: &str,
        dedup_key: &str,
        number: Option<PhoneNumberId>,
        contact: Option<ContactId>,
        payload: serde_json::Value,
        occurred_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let row = event::ActiveModel {
            id: Set(EventId::new()),
            kind: Set(kind.to_string()),
            dedup_key: Set(dedup_key.to_string()),
            phone_number_id: Set(number),
            contact_id: Set(contact),
            payload: Set(payload),
            attempts: Set(0),
            lease_owner: Set(None),
            lease_expires_at: Set(None),
            occurred_at: Set(occurred_at),
            created_at: Set(now),
            applied_at: Set(None),
        };
        let inserted = event::Entity::insert(row)
            .on_conflict(OnConflict::column(event::Column::DedupKey).do_nothing().to_owned())
            .exec_without_returning(txn)
            .await
            .map_err(|e| self.query_error(e))?;
        Ok(inserted == 1)
    }
}
