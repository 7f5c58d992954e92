//! The first schema: every concept of the product contract (DESIGN.md).
//!
//! Ids are UUID v7 (time-ordered) written by the application; timestamps are
//! UTC. Status columns hold the lowercase names of the engine's state enums,
//! mapped in one place by the store.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Tables in creation order (parents before children); dropped in reverse.
const TABLES: &[&str] = &[
    "business_portfolios",
    "whatsapp_accounts",
    "phone_numbers",
    "templates",
    "contacts",
    "consents",
    "consent_events",
    "users",
    "teams",
    "team_members",
    "assignment_rules",
    "threads",
    "messages",
    "pending_statuses",
    "workflows",
    "workflow_versions",
    "enrollments",
    "step_executions",
    "timers",
    "schedule_ticks",
    "events",
    "api_tokens",
    "idempotency_keys",
    "saved_views",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in tables() {
            manager.create_table(table).await?;
        }
        for index in indexes() {
            manager.create_index(index).await?;
        }
        // At most one open thread per contact and business number. Partial
        // indexes are not in sea-query's builder; this SQL is the same on
        // SQLite and PostgreSQL.
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE UNIQUE INDEX uq_threads_open_per_contact_number \
                 ON threads (contact_id, phone_number_id) WHERE status = 'open'",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for name in TABLES.iter().rev() {
            manager.drop_table(Table::drop().table(*name).to_owned()).await?;
        }
        Ok(())
    }
}

fn create(name: &'static str) -> TableCreateStatement {
    Table::create().table(name).to_owned()
}

fn fk(
    from_table: &'static str,
    from_col: &'static str,
    to_table: &'static str,
    on_delete: ForeignKeyAction,
) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .name(format!("fk_{from_table}_{from_col}"))
        .from(from_table, from_col)
        .to(to_table, "id")
        .on_delete(on_delete)
        .to_owned()
}

fn index(name: &str, table: &'static str, cols: &[&'static str]) -> IndexCreateStatement {
    let mut stmt = Index::create().name(name).table(table).to_owned();
    for col in cols {
        stmt.col(*col);
    }
    stmt
}

fn unique(name: &str, table: &'static str, cols: &[&'static str]) -> IndexCreateStatement {
    index(name, table, cols).unique().to_owned()
}

use ForeignKeyAction::{Cascade, Restrict, SetNull};

/// Every table, in creation order (a table comes after those it references).
fn tables() -> Vec<TableCreateStatement> {
    [whatsapp_tables(), contact_tables(), agent_tables(), inbox_tables(), workflow_tables(), run_tables(), api_tables()]
        .concat()
}

/// WhatsApp: portfolios, accounts, numbers, templates.
fn whatsapp_tables() -> Vec<TableCreateStatement> {
    vec![
        create("business_portfolios")
            .col(pk_uuid("id"))
            .col(string("business_id"))
            .col(string("name"))
            // 250, 2k, 10k, 100k or unlimited; null until first synced.
            .col(string_null("messaging_limit"))
            .col(timestamp_with_time_zone("created_at"))
            .col(timestamp_with_time_zone("updated_at"))
            .to_owned(),
        create("whatsapp_accounts")
            .col(pk_uuid("id"))
            .col(string("waba_id"))
            .col(string("name"))
            .col(uuid_null("portfolio_id"))
            .col(timestamp_with_time_zone("created_at"))
            .col(timestamp_with_time_zone("updated_at"))
            .foreign_key(&mut fk("whatsapp_accounts", "portfolio_id", "business_portfolios", SetNull))
            .to_owned(),
        create("phone_numbers")
            .col(pk_uuid("id"))
            .col(uuid("account_id"))
            .col(string("graph_id"))
            .col(string("display_number"))
            .col(string("normalized_number"))
            .col(string_null("verified_name"))
            .col(string_null("quality_rating"))
            .col(integer("throughput_mps").default(80))
            .col(string_null("messaging_limit_tier"))
            .col(string_null("status"))
            .col(timestamp_with_time_zone_null("paused_at"))
            .col(string_null("pause_reason"))
            .col(timestamp_with_time_zone("connected_at"))
            .col(timestamp_with_time_zone("created_at"))
            .col(timestamp_with_time_zone("updated_at"))
            .foreign_key(&mut fk("phone_numbers", "account_id", "whatsapp_accounts", Cascade))
            .to_owned(),
        create("templates")
            .col(pk_uuid("id"))
            .col(uuid("account_id"))
            .col(string("graph_id"))
            .col(string("name"))
            .col(string("language"))
            .col(string("status"))
            .col(string("category"))
            .col(string("parameter_format"))
            .col(json_binary("components"))
            .col(timestamp_with_time_zone("synced_at"))
            .col(timestamp_with_time_zone("created_at"))
            .col(timestamp_with_time_zone("updated_at"))
            .foreign_key(&mut fk("templates", "account_id", "whatsapp_accounts", Cascade))
            .to_owned(),
    ]
}

/// Contacts and consent.
fn contact_tables() -> Vec<TableCreateStatement> {
    vec![
        create("contacts")
            .col(pk_uuid("id"))
            .col(string_null("name"))
            // Digits of the international form, so an inbound wa_id matches.
            .col(string_null("phone"))
            .col(string_null("mobile_phone"))
            .col(string_null("wa_id"))
            // WhatsApp user id, for users who hide their number.
            .col(string_null("user_id"))
            .col(json_binary("properties"))
            .col(timestamp_with_time_zone("created_at"))
            .col(timestamp_with_time_zone("updated_at"))
            .to_owned(),
        create("consents")
            .col(pk_uuid("id"))
            .col(uuid("contact_id"))
            .col(uuid("phone_number_id"))
            .col(string("status"))
            .col(timestamp_with_time_zone("changed_at"))
            .foreign_key(&mut fk("consents", "contact_id", "contacts", Cascade))
            .foreign_key(&mut fk("consents", "phone_number_id", "phone_numbers", Cascade))
            .to_owned(),
        create("consent_events")
            .col(pk_uuid("id"))
            .col(uuid("contact_id"))
            .col(uuid("phone_number_id"))
            .col(string("status"))
            .col(string("source"))
            .col(string_null("keyword"))
            .col(string_null("wamid"))
            .col(timestamp_with_time_zone("occurred_at"))
            .foreign_key(&mut fk("consent_events", "contact_id", "contacts", Cascade))
            .foreign_key(&mut fk("consent_events", "phone_number_id", "phone_numbers", Cascade))
            .to_owned(),
    ]
}

/// Inbox agents.
fn agent_tables() -> Vec<TableCreateStatement> {
    vec![
        create("users")
            .col(pk_uuid("id"))
            .col(string("email"))
            .col(string("name"))
            .col(timestamp_with_time_zone("created_at"))
            .col(timestamp_with_time_zone_null("deactivated_at"))
            .to_owned(),
        create("teams")
            .col(pk_uuid("id"))
            .col(string("name"))
            // Round-robin cursor: the member who was assigned last.
            .col(uuid_null("last_assigned_user_id"))
            .col(timestamp_with_time_zone("created_at"))
            .foreign_key(&mut fk("teams", "last_assigned_user_id", "users", SetNull))
            .to_owned(),
        create("team_members")
            .col(uuid("team_id"))
            .col(uuid("user_id"))
            .col(timestamp_with_time_zone("added_at"))
            .primary_key(Index::create().col("team_id").col("user_id"))
            .foreign_key(&mut fk("team_members", "team_id", "teams", Cascade))
            .foreign_key(&mut fk("team_members", "user_id", "users", Cascade))
            .to_owned(),
        create("assignment_rules")
            .col(pk_uuid("id"))
            .col(uuid("phone_number_id"))
            .col(uuid_null("user_id"))
            .col(uuid_null("team_id"))
            .col(integer("position"))
            .col(timestamp_with_time_zone("created_at"))
            .foreign_key(&mut fk("assignment_rules", "phone_number_id", "phone_numbers", Cascade))
            .foreign_key(&mut fk("assignment_rules", "user_id", "users", Cascade))
            .foreign_key(&mut fk("assignment_rules", "team_id", "teams", Cascade))
            .to_owned(),
    ]
}

/// Inbox: threads and messages.
fn inbox_tables() -> Vec<TableCreateStatement> {
    vec![
        create("threads")
            .col(pk_uuid("id"))
            .col(uuid("contact_id"))
            .col(uuid("phone_number_id"))
            .col(string("customer_wa_id"))
            .col(string("status"))
            .col(uuid_null("owner_user_id"))
            .col(uuid_null("owner_team_id"))
            .col(timestamp_with_time_zone_null("window_closes_at"))
            .col(timestamp_with_time_zone_null("last_inbound_at"))
            .col(timestamp_with_time_zone_null("last_outbound_at"))
            .col(timestamp_with_time_zone_null("first_response_at"))
            .col(timestamp_with_time_zone("opened_at"))
            .col(timestamp_with_time_zone_null("closed_at"))
            .col(timestamp_with_time_zone("updated_at"))
            .foreign_key(&mut fk("threads", "contact_id", "contacts", Restrict))
            .foreign_key(&mut fk("threads", "phone_number_id", "phone_numbers", Restrict))
            .foreign_key(&mut fk("threads", "owner_user_id", "users", SetNull))
            .foreign_key(&mut fk("threads", "owner_team_id", "teams", SetNull))
            .to_owned(),
        create("messages")
            .col(pk_uuid("id"))
            .col(uuid("thread_id"))
            .col(string("direction"))
            // Null only while an outbound message is being sent.
            .col(string_null("wamid"))
            .col(string("message_type"))
            .col(text_null("body"))
            .col(json_binary("payload"))
            .col(string("status"))
            .col(integer_null("error_code"))
            .col(string_null("error_title"))
            .col(text_null("error_details"))
            .col(string_null("template_name"))
            .col(string_null("template_language"))
            .col(json_binary_null("template_params"))
            .col(uuid_null("enrollment_id"))
            .col(uuid_null("step_execution_id"))
            .col(timestamp_with_time_zone("occurred_at"))
            .col(timestamp_with_time_zone_null("sent_at"))
            .col(timestamp_with_time_zone_null("delivered_at"))
            .col(timestamp_with_time_zone_null("read_at"))
            .col(timestamp_with_time_zone_null("failed_at"))
            .col(timestamp_with_time_zone("created_at"))
            .col(timestamp_with_time_zone("updated_at"))
            .foreign_key(&mut fk("messages", "thread_id", "threads", Cascade))
            .to_owned(),
        // Status webhooks for a wamid not yet recorded; applied when it is.
        create("pending_statuses")
            .col(pk_uuid("id"))
            .col(string("wamid"))
            .col(string("status"))
            .col(json_binary("payload"))
            .col(timestamp_with_time_zone("occurred_at"))
            .col(timestamp_with_time_zone("received_at"))
            .to_owned(),
    ]
}

/// Workflows and enrollments.
fn workflow_tables() -> Vec<TableCreateStatement> {
    vec![
        create("workflows")
            .col(pk_uuid("id"))
            .col(string("key"))
            .col(string("name"))
            .col(string_null("source_path"))
            .col(uuid_null("current_version_id"))
            .col(timestamp_with_time_zone("created_at"))
            .col(timestamp_with_time_zone("updated_at"))
            .to_owned(),
        create("workflow_versions")
            .col(pk_uuid("id"))
            .col(uuid("workflow_id"))
            .col(integer("version"))
            .col(string("content_hash"))
            .col(json_binary("definition"))
            .col(text("source"))
            .col(timestamp_with_time_zone("created_at"))
            .foreign_key(&mut fk("workflow_versions", "workflow_id", "workflows", Cascade))
            .to_owned(),
        create("enrollments")
            .col(pk_uuid("id"))
            .col(uuid("workflow_id"))
            .col(uuid("workflow_version_id"))
            .col(uuid("contact_id"))
            .col(string("status"))
            .col(string("trigger_kind"))
            .col(json_binary("trigger_data"))
            .col(string_null("current_step"))
            .col(string_null("exit_reason"))
            .col(text_null("error"))
            .col(timestamp_with_time_zone("enrolled_at"))
            .col(timestamp_with_time_zone("updated_at"))
            .col(timestamp_with_time_zone_null("finished_at"))
            .foreign_key(&mut fk("enrollments", "workflow_id", "workflows", Restrict))
            .foreign_key(&mut fk("enrollments", "workflow_version_id", "workflow_versions", Restrict))
            .foreign_key(&mut fk("enrollments", "contact_id", "contacts", Restrict))
            .to_owned(),
    ]
}

/// Runs: steps, timers, schedule ticks, events.
fn run_tables() -> Vec<TableCreateStatement> {
    vec![
        create("step_executions")
            .col(pk_uuid("id"))
            .col(uuid("enrollment_id"))
            .col(string("step_id"))
            .col(integer("attempt"))
            .col(string("state"))
            .col(json_binary_null("output"))
            .col(text_null("error"))
            .col(string_null("lease_owner"))
            .col(timestamp_with_time_zone_null("lease_expires_at"))
            .col(timestamp_with_time_zone("due_at"))
            .col(timestamp_with_time_zone_null("started_at"))
            .col(timestamp_with_time_zone_null("finished_at"))
            .col(timestamp_with_time_zone("created_at"))
            .foreign_key(&mut fk("step_executions", "enrollment_id", "enrollments", Cascade))
            .to_owned(),
        create("timers")
            .col(pk_uuid("id"))
            .col(uuid("enrollment_id"))
            .col(uuid_null("step_execution_id"))
            .col(string("kind"))
            .col(string("state"))
            .col(timestamp_with_time_zone("wake_at"))
            .col(string_null("lease_owner"))
            .col(timestamp_with_time_zone_null("lease_expires_at"))
            .col(timestamp_with_time_zone_null("fired_at"))
            .col(timestamp_with_time_zone("created_at"))
            .foreign_key(&mut fk("timers", "enrollment_id", "enrollments", Cascade))
            .foreign_key(&mut fk("timers", "step_execution_id", "step_executions", Cascade))
            .to_owned(),
        // One row per cron tick of a schedule trigger: the unique key makes a
        // tick fire once however many workers see it.
        create("schedule_ticks")
            .col(pk_uuid("id"))
            .col(uuid("workflow_id"))
            .col(string("trigger_key"))
            .col(timestamp_with_time_zone("tick_at"))
            .col(timestamp_with_time_zone("fired_at"))
            .foreign_key(&mut fk("schedule_ticks", "workflow_id", "workflows", Cascade))
            .to_owned(),
        // The event log: inbound events (messages, statuses, consent changes)
        // waiting to be applied to workflow triggers. Read at least once,
        // applied exactly once.
        create("events")
            .col(pk_uuid("id"))
            .col(string("kind"))
            .col(string("dedup_key"))
            .col(uuid_null("phone_number_id"))
            .col(uuid_null("contact_id"))
            .col(json_binary("payload"))
            .col(integer("attempts").default(0))
            .col(string_null("lease_owner"))
            .col(timestamp_with_time_zone_null("lease_expires_at"))
            .col(timestamp_with_time_zone("occurred_at"))
            .col(timestamp_with_time_zone("created_at"))
            .col(timestamp_with_time_zone_null("applied_at"))
            .to_owned(),
    ]
}

/// HTTP API.
fn api_tables() -> Vec<TableCreateStatement> {
    vec![
        create("api_tokens")
            .col(pk_uuid("id"))
            .col(string("name"))
            .col(string("token_hash"))
            .col(json_binary("scopes"))
            .col(timestamp_with_time_zone("created_at"))
            .col(timestamp_with_time_zone_null("last_used_at"))
            .col(timestamp_with_time_zone_null("revoked_at"))
            .to_owned(),
        create("idempotency_keys")
            .col(pk_uuid("id"))
            .col(string("scope"))
            .col(string("key"))
            .col(string("request_hash"))
            .col(integer_null("response_status"))
            .col(json_binary_null("response_body"))
            .col(timestamp_with_time_zone("created_at"))
            .col(timestamp_with_time_zone("expires_at"))
            .to_owned(),
        create("saved_views")
            .col(pk_uuid("id"))
            .col(string("name"))
            .col(uuid_null("owner_user_id"))
            .col(json_binary("filter"))
            .col(timestamp_with_time_zone("created_at"))
            .col(timestamp_with_time_zone("updated_at"))
            .foreign_key(&mut fk("saved_views", "owner_user_id", "users", Cascade))
            .to_owned(),
    ]
}

fn indexes() -> Vec<IndexCreateStatement> {
    vec![
        // Unique columns get named indexes (not inline UNIQUE), so both
        // backends carry the same index names.
        unique("uq_business_portfolios_business_id", "business_portfolios", &["business_id"]),
        unique("uq_whatsapp_accounts_waba_id", "whatsapp_accounts", &["waba_id"]),
        unique("uq_phone_numbers_graph_id", "phone_numbers", &["graph_id"]),
        unique("uq_users_email", "users", &["email"]),
        unique("uq_teams_name", "teams", &["name"]),
        unique("uq_workflows_key", "workflows", &["key"]),
        unique("uq_events_dedup_key", "events", &["dedup_key"]),
        unique("uq_api_tokens_name", "api_tokens", &["name"]),
        unique("uq_api_tokens_token_hash", "api_tokens", &["token_hash"]),
        unique("uq_saved_views_name", "saved_views", &["name"]),
        index("ix_whatsapp_accounts_portfolio", "whatsapp_accounts", &["portfolio_id"]),
        index("ix_phone_numbers_account", "phone_numbers", &["account_id"]),
        unique("uq_templates_account_name_language", "templates", &["account_id", "name", "language"]),
        index("ix_contacts_phone", "contacts", &["phone"]),
        index("ix_contacts_mobile_phone", "contacts", &["mobile_phone"]),
        index("ix_contacts_wa_id", "contacts", &["wa_id"]),
        index("ix_contacts_user_id", "contacts", &["user_id"]),
        unique("uq_consents_contact_number", "consents", &["contact_id", "phone_number_id"]),
        index("ix_consent_events_contact_number", "consent_events", &["contact_id", "phone_number_id", "occurred_at"]),
        index("ix_team_members_user", "team_members", &["user_id"]),
        index("ix_assignment_rules_number", "assignment_rules", &["phone_number_id", "position"]),
        index("ix_threads_contact_number_status", "threads", &["contact_id", "phone_number_id", "status"]),
        index("ix_threads_number_status_updated", "threads", &["phone_number_id", "status", "updated_at"]),
        index("ix_threads_owner_status", "threads", &["owner_user_id", "status"]),
        unique("uq_messages_wamid", "messages", &["wamid"]),
        index("ix_messages_thread_occurred", "messages", &["thread_id", "occurred_at"]),
        index("ix_messages_enrollment", "messages", &["enrollment_id"]),
        index("ix_pending_statuses_wamid", "pending_statuses", &["wamid"]),
        unique("uq_workflow_versions_hash", "workflow_versions", &["workflow_id", "content_hash"]),
        unique("uq_workflow_versions_number", "workflow_versions", &["workflow_id", "version"]),
        index("ix_enrollments_workflow_status", "enrollments", &["workflow_id", "status"]),
        index("ix_enrollments_version_status", "enrollments", &["workflow_version_id", "status"]),
        index("ix_enrollments_contact_workflow", "enrollments", &["contact_id", "workflow_id", "status"]),
        unique("uq_step_executions_attempt", "step_executions", &["enrollment_id", "step_id", "attempt"]),
        index("ix_step_executions_due", "step_executions", &["state", "due_at"]),
        index("ix_timers_due", "timers", &["state", "wake_at"]),
        index("ix_timers_enrollment", "timers", &["enrollment_id"]),
        unique("uq_schedule_ticks", "schedule_ticks", &["workflow_id", "trigger_key", "tick_at"]),
        index("ix_events_pending", "events", &["applied_at", "occurred_at"]),
        unique("uq_idempotency_keys", "idempotency_keys", &["scope", "key"]),
        index("ix_idempotency_keys_expiry", "idempotency_keys", &["expires_at"]),
    ]
}
