//! The webhook journal: deliveries are committed here before the 200 and
//! applied to the inbox afterwards, in arrival order.
//!
//! Invariants:
//! - A journal row commits before its webhook is answered: a delivery that
//!   got its 200 survives a crash and is applied after restart.
//! - A row is applied exactly once: its effects and its `applied_at` commit
//!   in one transaction; on PostgreSQL concurrent appliers skip rows another
//!   one holds (`FOR UPDATE SKIP LOCKED`).
//! - A delivery that cannot be applied does not hold up the others: after a
//!   failed batch each row is tried alone, and a row that keeps failing is
//!   set aside after [`MAX_APPLY_ATTEMPTS`] with its error.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait, LockBehavior, LockType};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseTransaction, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect,
};
use uuid::Uuid;

use super::entities::webhook_delivery;
use super::{Backend, IngestReport, Keywords, Store, StoreError};
use kairo_core::channel::InboundEvent;

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

    /// Applies up to `limit` journaled deliveries, oldest first, stopping
    /// early once `limit` events have been applied. Returns how many
    /// deliveries were applied (0: nothing was waiting).
    pub async fn apply_journal(
        &self,
        keywords: &Keywords,
        limit: u64,
        now: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        match self.apply_batch(keywords, limit, now).await {
            Ok(applied) => Ok(applied),
            Err(err) => {
                tracing::warn!(%err, "applying a batch of webhook deliveries failed; trying them one by one");
                self.apply_one_by_one(keywords, limit, now).await
            }
        }
    }

    async fn apply_batch(&self, keywords: &Keywords, limit: u64, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let _turn = self.write_turn().await;
        let txn = self.begin_write().await.map_err(|e| self.query_error(e))?;
        let rows = self.claim_deliveries(&txn, limit).await?;
        // The budget counts events, not deliveries: a batch of 10-message
        // deliveries must not hold the write lock ten times longer.
        let (mut applied, mut events) = (0, 0);
        for row in &rows {
            events += self.apply_delivery(&txn, row, keywords, now).await?;
            applied += 1;
            if events >= limit as usize {
                break;
            }
        }
        txn.commit().await.map_err(|e| self.query_error(e))?;
        Ok(applied)
    }

    async fn apply_one_by_one(&self, keywords: &Keywords, limit: u64, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let mut applied = 0;
        for _ in 0..limit {
            let _turn = self.write_turn().await;
            let txn = self.begin_write().await.map_err(|e| self.query_error(e))?;
            let Some(row) = self.claim_deliveries(&txn, 1).await?.pop() else { break };
            match self.apply_delivery(&txn, &row, keywords, now).await {
                Ok(_) => {
                    txn.commit().await.map_err(|e| self.query_error(e))?;
                    applied += 1;
                }
                Err(err) => {
                    txn.rollback().await.map_err(|e| self.query_error(e))?;
                    tracing::error!(%err, delivery = %row.id, attempt = row.attempts + 1, "webhook delivery could not be applied");
                    webhook_delivery::Entity::update_many()
                        .col_expr(
                            webhook_delivery::Column::Attempts,
                            Expr::col(webhook_delivery::Column::Attempts).add(1),
                        )
                        .col_expr(webhook_delivery::Column::LastError, Expr::value(err.to_string()))
                        .filter(webhook_delivery::Column::Id.eq(row.id))
                        .exec(&self.db)
                        .await
                        .map_err(|e| self.query_error(e))?;
                    // The rest waits for the next pass, so the database can recover.
                    break;
                }
            }
        }
        Ok(applied)
    }

    /// The oldest unapplied deliveries, locked for this transaction. SQLite
    /// has one writer at a time, so a plain select is enough there;
    /// PostgreSQL may run appliers in several processes, which skip each
    /// other's rows.
    async fn claim_deliveries(
        &self,
        txn: &DatabaseTransaction,
        limit: u64,
    ) -> Result<Vec<webhook_delivery::Model>, StoreError> {
        let mut query = webhook_delivery::Entity::find()
            .filter(webhook_delivery::Column::AppliedAt.is_null())
            .filter(webhook_delivery::Column::Attempts.lt(MAX_APPLY_ATTEMPTS))
            .order_by_asc(webhook_delivery::Column::ReceivedAt)
            .order_by_asc(webhook_delivery::Column::Id)
            .limit(limit);
        if self.backend == Backend::Postgres {
            query = query.lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
        }
        query.all(txn).await.map_err(|e| self.query_error(e))
    }

    async fn apply_delivery(
        &self,
        txn: &DatabaseTransaction,
        row: &webhook_delivery::Model,
        keywords: &Keywords,
        now: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        let events: Vec<InboundEvent> = serde_json::from_value(row.events.clone()).map_err(|e| {
            self.query_error(sea_orm::DbErr::Custom(format!("webhook delivery {} is unreadable: {e}", row.id)))
        })?;
        let mut report = IngestReport::default();
        for event in &events {
            self.apply(txn, event, keywords, now, &mut report).await?;
        }
        webhook_delivery::Entity::update_many()
            .col_expr(webhook_delivery::Column::AppliedAt, Expr::value(now))
            .filter(webhook_delivery::Column::Id.eq(row.id))
            .exec(txn)
            .await
            .map_err(|e| self.query_error(e))?;
        Ok(events.len())
    }
}
