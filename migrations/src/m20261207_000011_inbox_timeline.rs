//! What the inbox's conversation and list show beyond the messages.
//!
//! - `messages.content`: what a message holds as the inbox shows it
//!   (`kairo_core::content::MessageContent` as JSON: a photo's caption and
//!   file, a place, contact cards, a tapped button, a reaction, a template
//!   as the customer read it). Messages recorded before have none.
//! - `messages.error_advice`: what to do about a failed message, from the
//!   channel's advice table (the code and WhatsApp's title are beside it).
//! - `thread_events`: the thread's own history (opened, assigned, closed,
//!   reopened), with the agent who did it when an agent did. Written in the
//!   transaction of the change it records.
//! - `thread_reads`: when each agent last read each thread; a thread whose
//!   contact wrote after that is unread for that agent.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter().table("messages").add_column(ColumnDef::new("content").json_binary().null()).to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter().table("messages").add_column(ColumnDef::new("error_advice").text().null()).to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("thread_events")
                    .col(uuid("id").primary_key())
                    .col(uuid("thread_id"))
                    .col(string("kind"))
                    .col(uuid_null("actor_user_id"))
                    .col(uuid_null("owner_user_id"))
                    .col(uuid_null("owner_team_id"))
                    .col(timestamp_with_time_zone("occurred_at"))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_thread_events_thread_id")
                            .from("thread_events", "thread_id")
                            .to("threads", "id")
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_thread_events_thread_occurred")
                    .table("thread_events")
                    .col("thread_id")
                    .col("occurred_at")
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("thread_reads")
                    .col(uuid("thread_id"))
                    .col(uuid("user_id"))
                    .col(timestamp_with_time_zone("read_at"))
                    .primary_key(Index::create().col("thread_id").col("user_id"))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_thread_reads_thread_id")
                            .from("thread_reads", "thread_id")
                            .to("threads", "id")
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_thread_reads_user_id")
                            .from("thread_reads", "user_id")
                            .to("users", "id")
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table("thread_reads").to_owned()).await?;
        manager.drop_table(Table::drop().table("thread_events").to_owned()).await?;
        manager.alter_table(Table::alter().table("messages").drop_column("error_advice").to_owned()).await?;
        manager.alter_table(Table::alter().table("messages").drop_column("content").to_owned()).await
    }
}
