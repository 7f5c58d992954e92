//! Messages of a thread, the replies agents send, the sends workflows record,
//! and statuses that arrived before their message.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder,
    QuerySelect,
};
use uuid::Uuid;

use super::entities::{message, pending_status, thread};
use super::tx::BATCH_CHUNK;
use super::{Contact, Store, StoreError, Tx};
use kairo_core::channel::StatusUpdate;
use kairo_core::ids::{ContactId, EnrollmentId, MessageId, PhoneNumberId, StepExecutionId, ThreadId, UserId, Wamid};
use kairo_core::status::{DeliveryStatus, Direction};

/// A delivery status as stored and as WhatsApp names it.
pub fn status_name(status: DeliveryStatus) -> &'static str {
    match status {
        DeliveryStatus::Received => "received",
        DeliveryStatus::Sending => "sending",
        DeliveryStatus::Sent => "sent",
        DeliveryStatus::Delivered => "delivered",
        DeliveryStatus::Read => "read",
        DeliveryStatus::Failed => "failed",
    }
}

/// Applies to a recorded message the statuses that arrived before it (a
/// status webhook can beat the send's own commit), oldest first, and drops
/// them. Returns how many were applied.
pub(super) async fn apply_pending_statuses<C: ConnectionTrait>(
    db: &C,
    wamid: &Wamid,
    now: DateTime<Utc>,
) -> Result<usize, DbErr> {
    let pending = pending_status::Entity::find()
        .filter(pending_status::Column::Wamid.eq(wamid.clone()))
        .order_by_asc(pending_status::Column::OccurredAt)
        .all(db)
        .await?;
    if pending.is_empty() {
        return Ok(0);
    }
    let Some(mut found) = message::Entity::find().filter(message::Column::Wamid.eq(wamid.clone())).one(db).await?
    else {
        return Ok(0);
    };
    for status in &pending {
        let update: Option<StatusUpdateRecord> = serde_json::from_value(status.payload.clone()).ok();
        let error = update.and_then(|u| u.error).map(|e| kairo_core::channel::DeliveryError {
            code: e.code,
            title: e.title,
            details: e.details,
            advice: e.advice,
        });
        found = apply_status(db, found, status.status, error.as_ref(), status.occurred_at, now).await?;
    }
    pending_status::Entity::delete_many().filter(pending_status::Column::Wamid.eq(wamid.clone())).exec(db).await?;
    Ok(pending.len())
}

/// Where a status sits in the forward-only order; `None` for statuses that
/// are not part of it.
pub(super) fn rank(status: DeliveryStatus) -> Option<u8> {
    match status {
        DeliveryStatus::Sending => Some(0),
        DeliveryStatus::Sent => Some(1),
        DeliveryStatus::Delivered => Some(2),
        DeliveryStatus::Read => Some(3),
        DeliveryStatus::Received | DeliveryStatus::Failed => None,
    }
}

/// Moves an outbound message's status forward; records the time of each
/// status whatever the order, and `failed` only over sending or sent.
pub(super) async fn apply_status<C: ConnectionTrait>(
    txn: &C,
    found: message::Model,
    status: DeliveryStatus,
    error: Option<&kairo_core::channel::DeliveryError>,
    at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<message::Model, sea_orm::DbErr> {
    let current = found.status;
    let mut row = found.clone().into_active_model();
    match status {
        DeliveryStatus::Sent => {
            row.sent_at = Set(found.sent_at.or(Some(at)));
        }
        DeliveryStatus::Delivered => {
            row.delivered_at = Set(found.delivered_at.or(Some(at)));
        }
        DeliveryStatus::Read => {
            row.read_at = Set(found.read_at.or(Some(at)));
            // Read implies delivered, even when `delivered` never comes.
            row.delivered_at = Set(found.delivered_at.or(Some(at)));
        }
        DeliveryStatus::Failed | DeliveryStatus::Received | DeliveryStatus::Sending => {}
    }
    let next = match (status, rank(current), rank(status)) {
        (DeliveryStatus::Failed, Some(r), _) if r <= 1 => Some(DeliveryStatus::Failed),
        (DeliveryStatus::Failed, _, _) => {
            tracing::warn!(wamid = ?found.wamid, current = ?current, "failed status after delivery: recorded, status kept");
            None
        }
        (_, Some(now_rank), Some(new_rank)) if new_rank > now_rank => Some(status),
        _ => None,
    };
    if let Some(next) = next {
        row.status = Set(next);
    }
    if status == DeliveryStatus::Failed {
        row.failed_at = Set(Some(at));
        if let Some(error) = error {
            row.error_code = Set(Some(error.code));
            row.error_title = Set(Some(error.title.clone()));
            row.error_details = Set(error.details.clone());
            row.error_advice = Set(error.advice.clone());
        }
    }
    row.updated_at = Set(now);
    row.update(txn).await
}

/// Where an outbound message sits: what a status event resolves to.
#[derive(Debug, Clone)]
pub struct MessageOrigin {
    pub contact_id: ContactId,
    pub phone_number_id: PhoneNumberId,
    pub enrollment_id: Option<EnrollmentId>,
}

/// An outbound message for [`Tx::record_sends`]: its `thread_id` is
/// filled in from the contact's thread on `number`.
#[derive(Debug, Clone)]
pub struct OutboundRecord {
    pub contact: Contact,
    pub number: PhoneNumberId,
    pub message: super::NewMessage,
}

pub type Message = message::Model;

pub type PendingStatus = pending_status::Model;

#[derive(Debug, Clone)]
pub struct NewMessage {
    pub thread_id: ThreadId,
    pub direction: Direction,
    pub wamid: Option<Wamid>,
    pub message_type: String,
    pub body: Option<String>,
    /// The message as the channel delivered or sent it, kept whole.
    pub payload: serde_json::Value,
    pub status: DeliveryStatus,
    pub template_name: Option<String>,
    pub template_language: Option<String>,
    pub template_params: Option<serde_json::Value>,
    pub enrollment_id: Option<EnrollmentId>,
    pub step_execution_id: Option<StepExecutionId>,
    pub occurred_at: DateTime<Utc>,
    /// The agent who sent it (an inbox reply from the web pages or the API).
    pub sent_by: Option<UserId>,
    /// What it holds, as the inbox shows it.
    pub content: Option<kairo_core::content::MessageContent>,
}

/// A new message row, in the state it is first recorded in.
pub(super) fn message_row(new: NewMessage, now: DateTime<Utc>) -> message::ActiveModel {
    message::ActiveModel {
        id: Set(MessageId::new()),
        thread_id: Set(new.thread_id),
        direction: Set(new.direction),
        wamid: Set(new.wamid),
        message_type: Set(new.message_type),
        body: Set(new.body),
        payload: Set(new.payload),
        status: Set(new.status),
        error_code: Set(None),
        error_title: Set(None),
        error_details: Set(None),
        error_advice: Set(None),
        template_name: Set(new.template_name),
        template_language: Set(new.template_language),
        template_params: Set(new.template_params),
        enrollment_id: Set(new.enrollment_id),
        step_execution_id: Set(new.step_execution_id),
        occurred_at: Set(new.occurred_at),
        sent_at: Set(None),
        delivered_at: Set(None),
        read_at: Set(None),
        failed_at: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
        sent_by_user_id: Set(new.sent_by),
        content: Set(new.content.and_then(|c| serde_json::to_value(c).ok())),
    }
}

/// The part of a kept status that is applied later.
#[derive(serde::Deserialize)]
struct StatusUpdateRecord {
    error: Option<ErrorRecord>,
}

#[derive(serde::Deserialize)]
struct ErrorRecord {
    code: i32,
    title: String,
    details: Option<String>,
    #[serde(default)]
    advice: Option<String>,
}

impl Store {
    /// Applies statuses that arrived before their message was recorded.
    /// Returns how many were applied.
    pub async fn settle_pending_statuses(&self, wamid: &Wamid, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let q = |e| self.query_error(e);
        let txn = self.begin_write().await.map_err(q)?;
        let applied = apply_pending_statuses(&txn, wamid, now).await.map_err(q)?;
        txn.commit().await.map_err(q)?;
        Ok(applied)
    }

    /// A reply WhatsApp accepted: its wamid, `sent`, the statuses that beat
    /// it here, and the thread's last outbound (and first response) time.
    pub async fn mark_reply_sent(
        &self,
        message_id: kairo_core::ids::MessageId,
        wamid: &kairo_core::ids::Wamid,
        now: DateTime<Utc>,
    ) -> Result<Option<super::Message>, StoreError> {
        let txn = self.begin_write().await.map_err(|e| self.query_error(e))?;
        message::Entity::update_many()
            .col_expr(message::Column::Wamid, Expr::value(Some(wamid.clone())))
            .col_expr(message::Column::Status, Expr::value(kairo_core::status::DeliveryStatus::Sent))
            .col_expr(message::Column::SentAt, Expr::value(Some(now)))
            .col_expr(message::Column::UpdatedAt, Expr::value(now))
            .filter(message::Column::Id.eq(message_id))
            .exec(&txn)
            .await
            .map_err(|e| self.insert_error(e, || format!("message {wamid}")))?;
        apply_pending_statuses(&txn, wamid, now).await.map_err(|e| self.query_error(e))?;
        let Some(row) = message::Entity::find_by_id(message_id).one(&txn).await.map_err(|e| self.query_error(e))?
        else {
            return Ok(None);
        };
        super::threads::note_reply(&txn, row.thread_id, now).await.map_err(|e| self.query_error(e))?;
        txn.commit().await.map_err(|e| self.query_error(e))?;
        message::Entity::find_by_id(message_id).one(&self.db).await.map_err(|e| self.query_error(e))
    }

    /// A reply the channel refused: `failed`, with the code and reason.
    pub async fn mark_reply_failed(
        &self,
        message_id: kairo_core::ids::MessageId,
        code: Option<i32>,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        message::Entity::update_many()
            .col_expr(message::Column::Status, Expr::value(kairo_core::status::DeliveryStatus::Failed))
            .col_expr(message::Column::ErrorCode, Expr::value(code))
            .col_expr(message::Column::ErrorTitle, Expr::value(Some(reason.to_string())))
            .col_expr(message::Column::FailedAt, Expr::value(Some(now)))
            .col_expr(message::Column::UpdatedAt, Expr::value(now))
            .filter(message::Column::Id.eq(message_id))
            .exec(&self.db)
            .await
            .map_err(|e| self.query_error(e))?;
        Ok(())
    }

    /// Records a message. A wamid is unique: recording it twice is refused
    /// with [`StoreError::Duplicate`], which is how duplicate deliveries are
    /// stored once.
    pub async fn record_message(&self, new: NewMessage, now: DateTime<Utc>) -> Result<Message, StoreError> {
        let wamid = new.wamid.clone();
        let row = message_row(new, now);
        message::Entity::insert(row)
            .exec_with_returning(&self.db)
            .await
            .map_err(|e| self.insert_error(e, || format!("message {}", wamid.map(|w| w.0).unwrap_or_default())))
    }

    pub async fn message_by_wamid(&self, wamid: &Wamid) -> Result<Option<Message>, StoreError> {
        message::Entity::find()
            .filter(message::Column::Wamid.eq(wamid.clone()))
            .one(&self.db)
            .await
            .map_err(|e| self.query_error(e))
    }

    /// A thread's messages in the order they happened.
    pub async fn messages(&self, thread: ThreadId) -> Result<Vec<Message>, StoreError> {
        message::Entity::find()
            .filter(message::Column::ThreadId.eq(thread))
            .order_by_asc(message::Column::OccurredAt)
            .order_by_asc(message::Column::Id)
            .all(&self.db)
            .await
            .map_err(|e| self.query_error(e))
    }

    /// Keeps a status for a wamid not recorded yet, to apply when it is.
    pub async fn keep_pending_status(
        &self,
        wamid: Wamid,
        status: DeliveryStatus,
        payload: serde_json::Value,
        occurred_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<PendingStatus, StoreError> {
        let callback_data = payload.get("callback_data").and_then(serde_json::Value::as_str).map(str::to_string);
        let row = pending_status::ActiveModel {
            id: Set(Uuid::now_v7()),
            wamid: Set(wamid),
            status: Set(status),
            callback_data: Set(callback_data),
            payload: Set(payload),
            occurred_at: Set(occurred_at),
            received_at: Set(now),
        };
        pending_status::Entity::insert(row).exec_with_returning(&self.db).await.map_err(|e| self.query_error(e))
    }

    /// The wamid of a status kept for an unrecorded send whose
    /// `biz_opaque_callback_data` was `callback_data`: the send reached
    /// WhatsApp even if its answer never reached Kairo.
    pub async fn wamid_for_callback(&self, callback_data: &str) -> Result<Option<Wamid>, StoreError> {
        pending_status::Entity::find()
            .select_only()
            .column(pending_status::Column::Wamid)
            .filter(pending_status::Column::CallbackData.eq(callback_data))
            .into_tuple()
            .one(&self.db)
            .await
            .map_err(|e| self.query_error(e))
    }

    pub async fn pending_statuses(&self, wamid: &Wamid) -> Result<Vec<PendingStatus>, StoreError> {
        pending_status::Entity::find()
            .filter(pending_status::Column::Wamid.eq(wamid.clone()))
            .order_by_asc(pending_status::Column::OccurredAt)
            .all(&self.db)
            .await
            .map_err(|e| self.query_error(e))
    }

    /// Statuses kept for messages Kairo has not recorded (yet), newest
    /// first, at most `limit`; and how many there are in all.
    pub async fn unmatched_statuses(&self, limit: u64) -> Result<(Vec<PendingStatus>, u64), StoreError> {
        use sea_orm::{PaginatorTrait, QuerySelect};
        let q = |e| self.query_error(e);
        let total = pending_status::Entity::find().count(&self.db).await.map_err(q)?;
        let items = pending_status::Entity::find()
            .order_by_desc(pending_status::Column::ReceivedAt)
            .limit(limit)
            .all(&self.db)
            .await
            .map_err(q)?;
        Ok((items, total))
    }
}

impl Tx {
    /// Who an outbound message went to, found by its wamid.
    pub async fn message_origin(&self, wamid: &str) -> Result<Option<MessageOrigin>, StoreError> {
        let Some(found) = message::Entity::find()
            .filter(message::Column::Wamid.eq(kairo_core::ids::Wamid(wamid.to_string())))
            .one(&self.txn)
            .await
            .map_err(|e| self.err(e))?
        else {
            return Ok(None);
        };
        let thread = thread::Entity::find_by_id(found.thread_id).one(&self.txn).await.map_err(|e| self.err(e))?;
        Ok(thread.map(|t| MessageOrigin {
            contact_id: t.contact_id,
            phone_number_id: t.phone_number_id,
            enrollment_id: found.enrollment_id,
        }))
    }

    /// Records a message once per wamid (a second time changes nothing) and,
    /// for an outbound one, applies the statuses that arrived for it before
    /// this commit.
    pub async fn record_message_once(&self, new: super::NewMessage, now: DateTime<Utc>) -> Result<(), StoreError> {
        let (wamid, outbound) = (new.wamid.clone(), new.direction == Direction::Outbound);
        let row = super::messages::message_row(new, now);
        message::Entity::insert(row)
            .on_conflict(OnConflict::column(message::Column::Wamid).do_nothing().to_owned())
            .exec_without_returning(&self.txn)
            .await
            .map_err(|e| self.err(e))?;
        // Statuses only ever come for the business's own messages.
        if let Some(wamid) = wamid.filter(|_| outbound) {
            apply_pending_statuses(&self.txn, &wamid, now).await.map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// Whether a message with this wamid is recorded.
    pub async fn has_message(&self, wamid: &Wamid) -> Result<bool, StoreError> {
        let found = message::Entity::find()
            .select_only()
            .column(message::Column::Id)
            .filter(message::Column::Wamid.eq(wamid.clone()))
            .into_tuple::<MessageId>()
            .one(&self.txn)
            .await
            .map_err(|e| self.err(e))?;
        Ok(found.is_some())
    }

    /// Applies a delivery status to its message (forward only), or keeps it
    /// until the message is recorded. True when applied now.
    pub async fn apply_status_update(&self, update: &StatusUpdate, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let q = |e| self.err(e);
        let wamid = Wamid(update.wamid.clone());
        match message::Entity::find()
            .filter(message::Column::Wamid.eq(wamid.clone()))
            .one(&self.txn)
            .await
            .map_err(q)?
        {
            Some(found) => {
                apply_status(&self.txn, found, update.status, update.error.as_ref(), update.occurred_at, now)
                    .await
                    .map_err(q)?;
                Ok(true)
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
                .exec_without_returning(&self.txn)
                .await
                .map_err(q)?;
                Ok(false)
            }
        }
    }

    /// Notes an outbound message on its thread (last outbound time, first response).
    /// Records a batch of outbound messages (sends), each in its contact's
    /// open thread on its number (opened now when there is none, owned by
    /// the number's assignment rules), once per wamid, with the statuses
    /// that arrived for them before this commit; the threads' last outbound
    /// time is now. A handful of statements for the whole batch.
    pub async fn record_sends(&self, sends: Vec<OutboundRecord>, now: DateTime<Utc>) -> Result<(), StoreError> {
        if sends.is_empty() {
            return Ok(());
        }
        let pairs: Vec<(&Contact, PhoneNumberId)> = sends.iter().map(|s| (&s.contact, s.number)).collect();
        let threads = self.threads_for_sends(&pairs, now).await?;
        let touched: HashSet<ThreadId> = sends.iter().map(|s| threads[&(s.contact.id, s.number)]).collect();
        let wamids: Vec<Wamid> = sends.iter().filter_map(|s| s.message.wamid.clone()).collect();
        let rows: Vec<message::ActiveModel> = sends
            .into_iter()
            .map(|s| {
                let thread_id = threads[&(s.contact.id, s.number)];
                super::messages::message_row(super::NewMessage { thread_id, ..s.message }, now)
            })
            .collect();
        for chunk in rows.chunks(BATCH_CHUNK) {
            message::Entity::insert_many(chunk.to_vec())
                .on_conflict(OnConflict::column(message::Column::Wamid).do_nothing().to_owned())
                .exec_without_returning(&self.txn)
                .await
                .map_err(|e| self.err(e))?;
        }
        for chunk in wamids.chunks(BATCH_CHUNK) {
            let early: Vec<Wamid> = pending_status::Entity::find()
                .select_only()
                .column(pending_status::Column::Wamid)
                .filter(pending_status::Column::Wamid.is_in(chunk.iter().cloned()))
                .into_tuple()
                .all(&self.txn)
                .await
                .map_err(|e| self.err(e))?;
            for wamid in early.into_iter().collect::<HashSet<_>>() {
                apply_pending_statuses(&self.txn, &wamid, now).await.map_err(|e| self.err(e))?;
            }
        }
        self.touch_outbound_many(touched.into_iter().collect(), now).await
    }
}
