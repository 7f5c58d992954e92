//! Schedule ticks: the last time a cron trigger fired, so a restart neither
//! repeats nor skips a tick.

use chrono::{DateTime, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::OnConflict;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use uuid::Uuid;

use super::entities::schedule_tick;
use super::tx::On;
use super::{Store, StoreError, Tx};
use kairo_core::ids::WorkflowId;

/// Records a tick unless it is there: the one write of the table, for the
/// pool and for a transaction. True when recorded now.
async fn record_tick(
    on: &impl On,
    workflow: WorkflowId,
    trigger_key: &str,
    tick_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let row = schedule_tick::ActiveModel {
        id: Set(Uuid::now_v7()),
        workflow_id: Set(workflow),
        trigger_key: Set(trigger_key.to_string()),
        tick_at: Set(tick_at),
        fired_at: Set(now),
    };
    let unique = [schedule_tick::Column::WorkflowId, schedule_tick::Column::TriggerKey, schedule_tick::Column::TickAt];
    let inserted = schedule_tick::Entity::insert(row)
        .on_conflict(OnConflict::columns(unique).do_nothing().to_owned())
        .exec_without_returning(on.conn())
        .await
        .map_err(|e| on.error(e))?;
    Ok(inserted == 1)
}

impl Store {
    /// Records that a schedule's tick fired. Returns false when that tick was
    /// already recorded (by this or another worker), so a tick fires once.
    pub async fn record_schedule_tick(
        &self,
        workflow: WorkflowId,
        trigger_key: &str,
        tick_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        record_tick(self, workflow, trigger_key, tick_at, now).await
    }
}

impl Tx {
    /// Records a schedule tick; false when another worker already fired it.
    pub async fn record_schedule_tick(
        &self,
        workflow: WorkflowId,
        trigger_key: &str,
        tick_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        record_tick(self, workflow, trigger_key, tick_at, now).await
    }

    /// The latest tick recorded for a schedule trigger.
    pub async fn last_schedule_tick(
        &self,
        workflow: WorkflowId,
        trigger_key: &str,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let row = schedule_tick::Entity::find()
            .filter(schedule_tick::Column::WorkflowId.eq(workflow))
            .filter(schedule_tick::Column::TriggerKey.eq(trigger_key))
            .order_by_desc(schedule_tick::Column::TickAt)
            .limit(1)
            .one(&self.txn)
            .await
            .map_err(|e| self.err(e))?;
        Ok(row.map(|r| r.tick_at))
    }
}
