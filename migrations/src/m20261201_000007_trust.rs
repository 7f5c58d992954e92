//! What the semantics users trust need from the schema.
//!
//! - `send_pacing.grant_start_us`: the first slot of the run the last
//!   reservation handed out. A reservation is one UPDATE … RETURNING, so no
//!   row lock is held across anything but that statement (a worker paused
//!   inside a reservation used to hold every other worker's sends).
//! - `workflows.state`: `active`, `paused` (no new enrollments, schedules
//!   stop; an operator's choice) or `archived` (its file was removed).
//!   Running enrollments finish on their version whatever the state.
//! - API token names are unique among live tokens only: a revoked token's
//!   name can be given to a new one.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table("send_pacing")
                    .add_column(ColumnDef::new("grant_start_us").big_integer().not_null().default(0))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table("workflows")
                    .add_column(ColumnDef::new("state").string().not_null().default("active"))
                    .to_owned(),
            )
            .await?;
        manager.drop_index(Index::drop().name("uq_api_tokens_name").table("api_tokens").to_owned()).await?;
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE UNIQUE INDEX uq_api_tokens_live_name ON api_tokens (name) WHERE revoked_at IS NULL",
            )
            .await
            .map(|_| ())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared("DROP INDEX uq_api_tokens_live_name").await?;
        manager
            .create_index(
                Index::create().name("uq_api_tokens_name").table("api_tokens").col("name").unique().to_owned(),
            )
            .await?;
        manager.alter_table(Table::alter().table("workflows").drop_column("state").to_owned()).await?;
        manager.alter_table(Table::alter().table("send_pacing").drop_column("grant_start_us").to_owned()).await
    }
}
