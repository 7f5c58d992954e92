//! Send limits shared by every worker process: per business number, the
//! next free send slot on one timeline; per business portfolio, the
//! recipients reached outside a service window in the last 24 hours (the
//! messaging limit). Times are microseconds since the epoch, so both
//! backends compare and compute them alike.

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
                    .table("send_pacing")
                    .col(uuid("phone_number_id").primary_key())
                    // The earliest time the next send of this number may go.
                    .col(big_integer("next_slot_us").default(0))
                    // After a rate-limit answer: sends go at `slow_percent` of
                    // the number's throughput until this time.
                    .col(big_integer("slow_until_us").default(0))
                    .col(integer("slow_percent").default(100))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_send_pacing_phone_number_id")
                            .from("send_pacing", "phone_number_id")
                            .to("phone_numbers", "id")
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("messaging_reach")
                    // The business portfolio, or the account when it has none.
                    .col(uuid("scope_id"))
                    // The recipient's WhatsApp id (digits).
                    .col(string("recipient"))
                    .col(big_integer("reached_us"))
                    .primary_key(Index::create().col("scope_id").col("recipient"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_messaging_reach_scope_time")
                    .table("messaging_reach")
                    .col("scope_id")
                    .col("reached_us")
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table("messaging_reach").to_owned()).await?;
        manager.drop_table(Table::drop().table("send_pacing").to_owned()).await
    }
}
