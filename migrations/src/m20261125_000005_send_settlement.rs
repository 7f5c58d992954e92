//! What settles a send after the fact, and what stops a number's sends.
//!
//! - `pending_statuses.callback_data`: a status webhook for a wamid no send
//!   recorded carries the `biz_opaque_callback_data` the send set
//!   (`kairo:<enrollment>:<step>`); the runtime looks it up to settle a send
//!   whose answer never arrived.
//! - `phone_numbers.pause_scope`: what a pause stops, `marketing` (quality
//!   dropped: marketing templates wait, service and utility sends go on) or
//!   `all` (credentials or account restriction: every send waits).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table("pending_statuses")
                    .add_column(ColumnDef::new("callback_data").string().null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_pending_statuses_callback_data")
                    .table("pending_statuses")
                    .col("callback_data")
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table("phone_numbers")
                    .add_column(ColumnDef::new("pause_scope").string().null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.alter_table(Table::alter().table("phone_numbers").drop_column("pause_scope").to_owned()).await?;
        manager
            .drop_index(Index::drop().name("ix_pending_statuses_callback_data").table("pending_statuses").to_owned())
            .await?;
        manager.alter_table(Table::alter().table("pending_statuses").drop_column("callback_data").to_owned()).await
    }
}
