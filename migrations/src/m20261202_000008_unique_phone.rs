//! One contact per phone number, enforced by the database.
//!
//! Concurrent creates for one new number (two API calls, two bulk uploads,
//! an inbound message beside an API call) used to make a contact each.
//! `contacts.phone` is now unique (empty phones, NULL, stay many).
//!
//! Databases made before it may hold such duplicates: the oldest contact of
//! each number keeps it as `phone`; each later one keeps the number as its
//! `mobile_phone` when that is empty (it is still found by the number and
//! its sends still reach it) and loses it as `phone`; the number is kept in
//! its properties as `duplicate_phone` either way. Nothing else changes:
//! its enrollments, threads and consents stay its own.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let keep_number = match manager.get_database_backend() {
            sea_orm_migration::sea_orm::DatabaseBackend::Postgres => {
                "properties || jsonb_build_object('duplicate_phone', phone)"
            }
            _ => "json_set(properties, '$.duplicate_phone', phone)",
        };
        db.execute_unprepared(&format!(
            "UPDATE contacts SET mobile_phone = COALESCE(mobile_phone, phone), properties = {keep_number}, \
             phone = NULL \
             WHERE phone IS NOT NULL AND EXISTS (SELECT 1 FROM contacts older WHERE older.phone = contacts.phone \
             AND (older.created_at < contacts.created_at \
                  OR (older.created_at = contacts.created_at AND older.id < contacts.id)))"
        ))
        .await?;
        manager.drop_index(Index::drop().name("ix_contacts_phone").table("contacts").to_owned()).await?;
        manager
            .create_index(Index::create().name("uq_contacts_phone").table("contacts").col("phone").unique().to_owned())
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_index(Index::drop().name("uq_contacts_phone").table("contacts").to_owned()).await?;
        manager.create_index(Index::create().name("ix_contacts_phone").table("contacts").col("phone").to_owned()).await
    }
}
