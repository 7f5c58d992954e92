//! What signing in to the web pages needs.
//!
//! - `users.role`: `agent` (answers threads) or `admin` (also manages
//!   people); existing users become agents.
//! - `user_passwords`: one argon2id hash (a PHC string: algorithm,
//!   parameters, salt and hash) per user who may sign in; `one_time` when
//!   it was printed by `kairo user create/password`, so the first sign-in
//!   asks for a new one.
//! - `web_sessions`: a signed-in browser. The cookie carries a random
//!   secret; only its SHA-256 is kept here, with the session's CSRF token,
//!   so every `kairo serve` process sharing the database knows it.
//! - `messages.sent_by_user_id`: the agent who sent a reply (none for
//!   workflow sends and inbound messages). No foreign key: SQLite cannot
//!   add one to an existing table, and users are deactivated, never
//!   deleted.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table("users")
                    .add_column(ColumnDef::new("role").string().not_null().default("agent"))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter().table("messages").add_column(ColumnDef::new("sent_by_user_id").uuid().null()).to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("user_passwords")
                    .col(uuid("user_id").primary_key())
                    .col(string("hash"))
                    .col(boolean("one_time").default(false))
                    .col(timestamp_with_time_zone("set_at"))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_user_passwords_user_id")
                            .from("user_passwords", "user_id")
                            .to("users", "id")
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("web_sessions")
                    .col(string("id").primary_key())
                    .col(uuid("user_id"))
                    .col(string("csrf_token"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("last_seen_at"))
                    .col(timestamp_with_time_zone("expires_at"))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_web_sessions_user_id")
                            .from("web_sessions", "user_id")
                            .to("users", "id")
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(Index::create().name("ix_web_sessions_user").table("web_sessions").col("user_id").to_owned())
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table("web_sessions").to_owned()).await?;
        manager.drop_table(Table::drop().table("user_passwords").to_owned()).await?;
        manager.alter_table(Table::alter().table("messages").drop_column("sent_by_user_id").to_owned()).await?;
        manager.alter_table(Table::alter().table("users").drop_column("role").to_owned()).await
    }
}
