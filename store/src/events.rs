//! The event log: inbound events (messages, statuses, consent changes)
//! appended by the inbox rules as the webhook journal is applied, and
//! applied in turn to workflow triggers.
//!
//! Invariant: an event's `dedup_key` is unique, so a delivery Meta repeats is
//! appended once; `applied_at` is set when its effects commit.

use chrono::{DateTime, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::{Expr, LockBehavior, LockType, OnConflict};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::entities::event;
use super::{Backend, Store, StoreError, Tx};
use kairo_core::ids::{ContactId, EventId, PhoneNumberId};

pub type Event = event::Model;

#[derive(Debug, Clone)]
pub struct NewEvent {
    /// `inbound_message`, `message_status`, `opt_in`, `opt_out`, …
    pub kind: String,
    /// What makes two deliveries the same event (`message:<wamid>`, …).
    pub dedup_key: String,
    pub phone_number_id: Option<PhoneNumberId>,
    pub contact_id: Option<ContactId>,
    pub payload: serde_json::Value,
    pub occurred_at: DateTime<Utc>,
}

fn event_row(new: NewEvent, now: DateTime<Utc>) -> event::ActiveModel {
    event::ActiveModel {
        id: Set(EventId::new()),
        kind: Set(new.kind),
        dedup_key: Set(new.dedup_key),
        phone_number_id: Set(new.phone_number_id),
        contact_id: Set(new.contact_id),
        payload: Set(new.payload),
        attempts: Set(0),
        lease_owner: Set(None),
        lease_expires_at: Set(None),
        occurred_at: Set(new.occurred_at),
        created_at: Set(now),
        applied_at: Set(None),
    }
}

impl Store {
    /// Appends an event. Returns `None` when an event with the same dedup key
    /// is already in the log (a repeated delivery).
    pub async fn append_event(&self, new: NewEvent, now: DateTime<Utc>) -> Result<Option<Event>, StoreError> {
        match event::Entity::insert(event_row(new, now)).exec_with_returning(&self.db).await {
            Ok(event) => Ok(Some(event)),
            Err(e) => match self.insert_error(e, String::new) {
                StoreError::Duplicate { .. } => Ok(None),
                other => Err(other),
            },
        }
    }

    /// Events not applied yet, oldest first.
    pub async fn unapplied_events(&self, limit: u64) -> Result<Vec<Event>, StoreError> {
        event::Entity::find()
            .filter(event::Column::AppliedAt.is_null())
            .order_by_asc(event::Column::OccurredAt)
            .order_by_asc(event::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await
            .map_err(|e| self.query_error(e))
    }

    /// The newest events of one kind (`notice:account_update`, …).
    pub async fn latest_events(&self, kind: &str, limit: u64) -> Result<Vec<Event>, StoreError> {
        event::Entity::find()
            .filter(event::Column::Kind.eq(kind))
            .order_by_desc(event::Column::OccurredAt)
            .order_by_desc(event::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await
            .map_err(|e| self.query_error(e))
    }

    /// Events in the log, applied or not, oldest first.
    pub async fn events(&self, limit: u64) -> Result<Vec<Event>, StoreError> {
        event::Entity::find()
            .order_by_asc(event::Column::OccurredAt)
            .order_by_asc(event::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await
            .map_err(|e| self.query_error(e))
    }
}

impl Tx {
    /// Appends an event unless one with its dedup key is in the log; true
    /// when appended.
    pub async fn log_event(&self, new: NewEvent, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let inserted = event::Entity::insert(event_row(new, now))
            .on_conflict(OnConflict::column(event::Column::DedupKey).do_nothing().to_owned())
            .exec_without_returning(&self.txn)
            .await
            .map_err(|e| self.err(e))?;
        Ok(inserted == 1)
    }

    /// Unapplied events, oldest first, locked for this transaction (other
    /// PostgreSQL appliers skip them).
    pub async fn lock_unapplied_events(&self, limit: u64) -> Result<Vec<Event>, StoreError> {
        let mut query = event::Entity::find()
            .filter(event::Column::AppliedAt.is_null())
            .order_by_asc(event::Column::CreatedAt)
            .order_by_asc(event::Column::Id)
            .limit(limit);
        if self.store.backend == Backend::Postgres {
            query = query.lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
        }
        query.all(&self.txn).await.map_err(|e| self.err(e))
    }

    pub async fn mark_event_applied(&self, id: EventId, now: DateTime<Utc>) -> Result<(), StoreError> {
        event::Entity::update_many()
            .col_expr(event::Column::AppliedAt, Expr::value(Some(now)))
            .filter(event::Column::Id.eq(id))
            .exec(&self.txn)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}
