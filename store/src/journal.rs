//! The webhook journal: deliveries are committed here before the 200 and
//! applied to the inbox afterwards, in arrival order.
//!
//! Invariants:
//! - A journal row commits before its webhook is answered: a delivery that
//!   got its 200 survives a crash and is applied after restart.
//! - A row is applied exactly once: its effects and its `applied_at` commit
//!   in one transaction; on PostgreSQL concurrent appliers skip rows another
//!   one holds (`FOR UPDATE SKIP LOCKED`).
//! - A row that keeps failing to apply is set aside after
//!   [`MAX_APPLY_ATTEMPTS`] with its error.
//!
//! The applier that carries rows into the inbox is the engine's
//! (`kairo_engine::inbox`).

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait, LockBehavior, LockType};
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect};
use uuid::Uuid;

use super::entities::webhook_delivery;
use super::{Backend, Store, StoreError, Tx};
use kairo_core::channel::InboundEvent;

/// A journaled delivery.
pub type JournaledDelivery = webhook_delivery::Model;

/// Attempts after which a delivery that fails to apply is set aside.
pub const MAX_APPLY_ATTEMPTS: i32 = 10;

impl Store {
    /// Commits deliveries to the journal in one transaction (a group commit).
    pub async fn journal_deliveries(
        &self,
        channel: &str,
        deliveries: &[Vec<InboundEvent>],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if deliveries.is_empty() {
            return Ok(());
        }
        let pg = self.backend == Backend::Postgres;
        let rows = deliveries.iter().map(|events| webhook_delivery::ActiveModel {
            id: Set(Uuid::now_v7()),
            channel: Set(channel.to_string()),
            events: Set({
                let mut value = serde_json::to_value(events).expect("events serialise");
                if pg {
                    super::escape_nul(&mut value);
                }
                value
            }),
            received_at: Set(now),
            attempts: Set(0),
            last_error: Set(None),
            applied_at: Set(None),
        });
        // One statement for the whole batch; the transaction makes it one fsync.
        let _turn = self.write_turn().await;
        let txn = self.begin_write().await.map_err(|e| self.query_error(e))?;
        webhook_delivery::Entity::insert_many(rows)
            .exec_without_returning(&txn)
            .await
            .map_err(|e| self.query_error(e))?;
        txn.commit().await.map_err(|e| self.query_error(e))
    }

    /// Deliveries not applied yet, and when the oldest of them arrived.
    pub async fn journal_backlog(&self) -> Result<(u64, Option<DateTime<Utc>>), StoreError> {
        let q = |e| self.query_error(e);
        let unapplied = || webhook_delivery::Entity::find().filter(webhook_delivery::Column::AppliedAt.is_null());
        let count = unapplied().count(&self.db).await.map_err(q)?;
        let oldest = unapplied()
            .order_by_asc(webhook_delivery::Column::ReceivedAt)
            .one(&self.db)
            .await
            .map_err(q)?
            .map(|d| d.received_at);
        Ok((count, oldest))
    }

    /// Deliveries in the journal not applied yet (those set aside included).
    pub async fn unapplied_deliveries(&self) -> Result<u64, StoreError> {
        webhook_delivery::Entity::find()
            .filter(webhook_delivery::Column::AppliedAt.is_null())
            .count(&self.db)
            .await
            .map_err(|e| self.query_error(e))
    }

    /// Notes that a delivery failed to apply (its transaction rolled back):
    /// one attempt more, and the error; after [`MAX_APPLY_ATTEMPTS`] it is
    /// set aside.
    pub async fn note_apply_failure(&self, delivery: Uuid, error: &str) -> Result<(), StoreError> {
        let _turn = self.write_turn().await;
        webhook_delivery::Entity::update_many()
            .col_expr(webhook_delivery::Column::Attempts, Expr::col(webhook_delivery::Column::Attempts).add(1))
            .col_expr(webhook_delivery::Column::LastError, Expr::value(error))
            .filter(webhook_delivery::Column::Id.eq(delivery))
            .exec(&self.db)
            .await
            .map_err(|e| self.query_error(e))?;
        Ok(())
    }
}

impl Tx {
    /// The oldest unapplied deliveries, locked for this transaction. SQLite
    /// has one writer at a time, so a plain select is enough there;
    /// PostgreSQL may run appliers in several processes, which skip each
    /// other's rows.
    pub async fn claim_deliveries(&self, limit: u64) -> Result<Vec<JournaledDelivery>, StoreError> {
        let mut query = webhook_delivery::Entity::find()
            .filter(webhook_delivery::Column::AppliedAt.is_null())
            .filter(webhook_delivery::Column::Attempts.lt(MAX_APPLY_ATTEMPTS))
            .order_by_asc(webhook_delivery::Column::ReceivedAt)
            .order_by_asc(webhook_delivery::Column::Id)
            .limit(limit);
        if self.store.backend == Backend::Postgres {
            query = query.lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
        }
        query.all(&self.txn).await.map_err(|e| self.err(e))
    }

    /// A delivery's events, as the channel parsed them.
    pub fn events_of(&self, delivery: &JournaledDelivery) -> Result<Vec<InboundEvent>, StoreError> {
        serde_json::from_value(delivery.events.clone()).map_err(|e| {
            self.err(sea_orm::DbErr::Custom(format!("webhook delivery {} is unreadable: {e}", delivery.id)))
        })
    }

    /// The delivery's effects are in this transaction.
    pub async fn mark_delivery_applied(&self, delivery: Uuid, now: DateTime<Utc>) -> Result<(), StoreError> {
        webhook_delivery::Entity::update_many()
            .col_expr(webhook_delivery::Column::AppliedAt, Expr::value(now))
            .filter(webhook_delivery::Column::Id.eq(delivery))
            .exec(&self.txn)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}
