//! Pending timers get a partial index of their wake times. The index of
//! `(state, wake_at)` it replaces held every timer ever set, and firing one
//! moved its entry; now firing only removes an entry, and the index is as
//! large as the timers still waiting.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_index(Index::drop().name("ix_timers_due").table("timers").to_owned()).await?;
        // Same SQL on SQLite and PostgreSQL. Queries that use it name the
        // state as a literal: neither planner matches a bound parameter
        // against an index's WHERE.
        manager
            .get_connection()
            .execute_unprepared("CREATE INDEX ix_timers_pending ON timers (wake_at) WHERE state = 'pending'")
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_index(Index::drop().name("ix_timers_pending").table("timers").to_owned()).await?;
        manager
            .create_index(Index::create().name("ix_timers_due").table("timers").col("state").col("wake_at").to_owned())
            .await
    }
}
