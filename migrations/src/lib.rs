//! Kairo's database schema, as sea-orm-migration migrations.
//!
//! One migration set serves SQLite and PostgreSQL: tables are described with
//! sea-query's builder, which renders each backend's types (`uuid` vs. a blob,
//! `jsonb` vs. JSON text, `timestamptz` vs. text). The only hand-written SQL is
//! for partial indexes, whose syntax the two backends share.
//!
//! Invariants:
//! - Migrations are append-only: a migration that has shipped is never edited;
//!   a change is a new migration.
//! - No table is called `jobs` or `workers`: apalis-sqlite owns those names in
//!   the same SQLite schema, and SQLite names are case-insensitive.
//! - No secret (access token, app secret, verify token, API token) is stored in
//!   clear: accounts keep their ids only, API tokens keep a SHA-256 hash.

pub use sea_orm_migration::{MigratorTrait, sea_orm};

mod m20261125_000001_initial;
mod m20261125_000002_webhook_journal;
mod m20261125_000003_pending_timers_index;
mod m20261125_000004_send_pacing;
mod m20261125_000005_send_settlement;
mod m20261127_000006_http_api;
mod m20261201_000007_trust;
mod m20261202_000008_unique_phone;
mod m20261205_000009_sign_in;
mod m20261206_000010_inbox_live;
mod m20261207_000011_inbox_timeline;

/// The ordered list of Kairo's migrations.
#[derive(Debug)]
pub struct Migrator;

#[sea_orm_migration::async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn sea_orm_migration::MigrationTrait>> {
        vec![
            Box::new(m20261125_000001_initial::Migration),
            Box::new(m20261125_000002_webhook_journal::Migration),
            Box::new(m20261125_000003_pending_timers_index::Migration),
            Box::new(m20261125_000004_send_pacing::Migration),
            Box::new(m20261125_000005_send_settlement::Migration),
            Box::new(m20261127_000006_http_api::Migration),
            Box::new(m20261201_000007_trust::Migration),
            Box::new(m20261202_000008_unique_phone::Migration),
            Box::new(m20261205_000009_sign_in::Migration),
            Box::new(m20261206_000010_inbox_live::Migration),
            Box::new(m20261207_000011_inbox_timeline::Migration),
        ]
    }
}
