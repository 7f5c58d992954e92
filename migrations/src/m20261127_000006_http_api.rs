//! What the HTTP API keeps beyond the initial schema.
//!
//! - `teams.deactivated_at`: a team is deactivated, never deleted, so that
//!   threads it owned keep their history.
//! - `bulk_jobs`: one streamed bulk enrollment (NDJSON or CSV) and its
//!   progress, polled by the client while rows are applied.
//! - `bulk_job_rows`: what happened to each row, with its line number:
//!   enrolled, skipped by a rule, replayed (its row key was seen before), or
//!   an error that names the field.

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
                    .table("teams")
                    .add_column(ColumnDef::new("deactivated_at").timestamp_with_time_zone().null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("bulk_jobs")
                    .col(pk_uuid("id"))
                    .col(string("workflow_key"))
                    .col(string("format"))
                    .col(string("status"))
                    .col(uuid_null("token_id"))
                    .col(big_integer("rows_seen").default(0))
                    .col(big_integer("rows_enrolled").default(0))
                    .col(big_integer("rows_skipped").default(0))
                    .col(big_integer("rows_replayed").default(0))
                    .col(big_integer("rows_failed").default(0))
                    .col(text_null("error"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .col(timestamp_with_time_zone_null("finished_at"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(Index::create().name("ix_bulk_jobs_created").table("bulk_jobs").col("created_at").to_owned())
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("bulk_job_rows")
                    .col(pk_uuid("id"))
                    .col(uuid("job_id"))
                    .col(big_integer("line"))
                    .col(string_null("row_key"))
                    .col(string("outcome"))
                    .col(uuid_null("contact_id"))
                    .col(uuid_null("enrollment_id"))
                    .col(string_null("reason"))
                    .col(text_null("error"))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_bulk_job_rows_job_id")
                            .from("bulk_job_rows", "job_id")
                            .to("bulk_jobs", "id")
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_bulk_job_rows_job_line")
                    .table("bulk_job_rows")
                    .col("job_id")
                    .col("line")
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table("bulk_job_rows").to_owned()).await?;
        manager.drop_table(Table::drop().table("bulk_jobs").to_owned()).await?;
        manager.alter_table(Table::alter().table("teams").drop_column("deactivated_at").to_owned()).await
    }
}
