//! What the live inbox reads: the threads and messages changed since a
//! moment. Every `kairo serve` process polls these twice a second (one
//! poll per process, however many agents it serves), so both are indexed
//! by `updated_at`.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(Index::create().name("ix_threads_updated_at").table("threads").col("updated_at").to_owned())
            .await?;
        manager
            .create_index(Index::create().name("ix_messages_updated_at").table("messages").col("updated_at").to_owned())
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_index(Index::drop().name("ix_messages_updated_at").table("messages").to_owned()).await?;
        manager.drop_index(Index::drop().name("ix_threads_updated_at").table("threads").to_owned()).await
    }
}
