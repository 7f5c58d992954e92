//! The webhook journal: verified deliveries committed before the 200 and
//! applied to the inbox afterwards, in order, exactly once.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("webhook_deliveries")
                    .col(pk_uuid("id"))
                    .col(string("channel"))
                    // The delivery's events as the channel parsed them.
                    .col(json_binary("events"))
                    .col(timestamp_with_time_zone("received_at"))
                    .col(integer("attempts").default(0))
                    .col(text_null("last_error"))
                    .col(timestamp_with_time_zone_null("applied_at"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_webhook_deliveries_pending")
                    .table("webhook_deliveries")
                    .col("applied_at")
                    .col("received_at")
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table("webhook_deliveries").to_owned()).await
    }
}
