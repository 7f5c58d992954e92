//! sea-orm entities: one per table of the migration, private to the store.
//!
//! Each `Model` is also the record type the store hands out (re-exported from
//! [`super`] under the concept's name), so there is one definition per row.

#![allow(missing_debug_implementations)] // the derives generate helper types

macro_rules! entity {
    ($module:ident, $table:literal, { $($field:tt)* }) => {
        #[allow(dead_code)] // sea-orm generates relation helpers we do not use
        pub mod $module {
            use sea_orm::entity::prelude::*;
            #[allow(unused_imports)]
            use kairo_core::ids::*;
            #[allow(unused_imports)]
            use kairo_core::status::*;

            #[sea_orm::model]
            #[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Serialize)]
            #[sea_orm(table_name = $table)]
            pub struct Model { $($field)* }

            impl ActiveModelBehavior for ActiveModel {}
        }
    };
}

entity!(business_portfolio, "business_portfolios", {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: PortfolioId,
    pub business_id: String,
    pub name: String,
    pub messaging_limit: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
});

entity!(whatsapp_account, "whatsapp_accounts", {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: AccountId,
    pub waba_id: String,
    pub name: String,
    pub portfolio_id: Option<PortfolioId>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
});

entity!(phone_number, "phone_numbers", {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: PhoneNumberId,
    pub account_id: AccountId,
    pub graph_id: String,
    pub display_number: String,
    pub normalized_number: String,
    pub verified_name: Option<String>,
    pub quality_rating: Option<String>,
    pub throughput_mps: i32,
    pub messaging_limit_tier: Option<String>,
    pub status: Option<String>,
    pub paused_at: Option<DateTimeUtc>,
    pub pause_reason: Option<String>,
    /// What the pause stops: `marketing` or `all` ([`PauseScope`](super::PauseScope)).
    pub pause_scope: Option<String>,
    pub connected_at: DateTimeUtc,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
});

entity!(template, "templates", {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: TemplateId,
    pub account_id: AccountId,
    pub graph_id: String,
    pub name: String,
    pub language: String,
    pub status: String,
    pub category: String,
    pub parameter_format: String,
    pub components: Json,
    pub synced_at: DateTimeUtc,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
});

entity!(contact, "contacts", {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: ContactId,
    pub name: Option<String>,
    pub phone: Option<String>,
    pub mobile_phone: Option<String>,
    pub wa_id: Option<String>,
    pub user_id: Option<String>,
    pub properties: Json,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
});

entity!(consent, "consents", {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub contact_id: ContactId,
    pub phone_number_id: PhoneNumberId,
    pub status: ConsentStatus,
    pub changed_at: DateTimeUtc,
});

entity!(consent_event, "consent_events", {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub contact_id: ContactId,
    pub phone_number_id: PhoneNumberId,
    pub status: ConsentStatus,
    pub source: ConsentSource,
    pub keyword: Option<String>,
    pub wamid: Option<Wamid>,
    pub occurred_at: DateTimeUtc,
});

entity!(user, "users", {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: UserId,
    pub email: String,
    pub name: String,
    pub created_at: DateTimeUtc,
    pub deactivated_at: Option<DateTimeUtc>,
    pub role: UserRole,
});

entity!(user_password, "user_passwords", {
    #[sea_orm(primary_key, auto_increment = false)]
    pub user_id: UserId,
    /// An argon2id PHC string; never shown, never logged.
    #[serde(skip)]
    pub hash: String,
    pub one_time: bool,
    pub set_at: DateTimeUtc,
});

entity!(web_session, "web_sessions", {
    /// SHA-256 (hex) of the cookie's secret; the secret itself is not kept.
    #[sea_orm(primary_key, auto_increment = false)]
    #[serde(skip)]
    pub id: String,
    pub user_id: UserId,
    #[serde(skip)]
    pub csrf_token: String,
    pub created_at: DateTimeUtc,
    pub last_seen_at: DateTimeUtc,
    pub expires_at: DateTimeUtc,
});

entity!(team, "teams", {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: TeamId,
    pub name: String,
    pub last_assigned_user_id: Option<UserId>,
    pub created_at: DateTimeUtc,
    pub deactivated_at: Option<DateTimeUtc>,
});

entity!(team_member, "team_members", {
    #[sea_orm(primary_key, auto_increment = false)]
    pub team_id: TeamId,
    #[sea_orm(primary_key, auto_increment = false)]
    pub user_id: UserId,
    pub added_at: DateTimeUtc,
});

entity!(assignment_rule, "assignment_rules", {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub phone_number_id: PhoneNumberId,
    pub user_id: Option<UserId>,
    pub team_id: Option<TeamId>,
    pub position: i32,
    pub created_at: DateTimeUtc,
});

entity!(thread, "threads", {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: ThreadId,
    pub contact_id: ContactId,
    pub phone_number_id: PhoneNumberId,
    pub customer_wa_id: String,
    pub status: ThreadStatus,
    pub owner_user_id: Option<UserId>,
    pub owner_team_id: Option<TeamId>,
    pub window_closes_at: Option<DateTimeUtc>,
    pub last_inbound_at: Option<DateTimeUtc>,
    pub last_outbound_at: Option<DateTimeUtc>,
    pub first_response_at: Option<DateTimeUtc>,
    pub opened_at: DateTimeUtc,
    pub closed_at: Option<DateTimeUtc>,
    pub updated_at: DateTimeUtc,
});

entity!(message, "messages", {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: MessageId,
    pub thread_id: ThreadId,
    pub direction: Direction,
    pub wamid: Option<Wamid>,
    pub message_type: String,
    pub body: Option<String>,
    pub payload: Json,
    pub status: DeliveryStatus,
    pub error_code: Option<i32>,
    pub error_title: Option<String>,
    pub error_details: Option<String>,
    pub template_name: Option<String>,
    pub template_language: Option<String>,
    pub template_params: Option<Json>,
    pub enrollment_id: Option<EnrollmentId>,
    pub step_execution_id: Option<StepExecutionId>,
    pub occurred_at: DateTimeUtc,
    pub sent_at: Option<DateTimeUtc>,
    pub delivered_at: Option<DateTimeUtc>,
    pub read_at: Option<DateTimeUtc>,
    pub failed_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    /// The agent who sent this reply; none for workflow sends and inbound messages.
    pub sent_by_user_id: Option<UserId>,
    /// What it holds as the inbox shows it (`kairo_core::content::MessageContent`);
    /// none for messages recorded before it was kept.
    pub content: Option<Json>,
    /// What to do about a failure, from the channel's advice table.
    pub error_advice: Option<String>,
});

entity!(thread_event, "thread_events", {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub thread_id: ThreadId,
    pub kind: ThreadEventKind,
    /// The agent who did it; none for assignment rules, workflows and API tokens.
    pub actor_user_id: Option<UserId>,
    /// The owner after an assignment (or the rules' owner of a new thread).
    pub owner_user_id: Option<UserId>,
    pub owner_team_id: Option<TeamId>,
    pub occurred_at: DateTimeUtc,
});

entity!(thread_read, "thread_reads", {
    #[sea_orm(primary_key, auto_increment = false)]
    pub thread_id: ThreadId,
    #[sea_orm(primary_key, auto_increment = false)]
    pub user_id: UserId,
    pub read_at: DateTimeUtc,
});

entity!(pending_status, "pending_statuses", {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub wamid: Wamid,
    pub status: DeliveryStatus,
    pub payload: Json,
    pub occurred_at: DateTimeUtc,
    pub received_at: DateTimeUtc,
    /// The status's `biz_opaque_callback_data`.
    pub callback_data: Option<String>,
});

entity!(workflow, "workflows", {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: WorkflowId,
    pub key: String,
    pub name: String,
    pub source_path: Option<String>,
    pub current_version_id: Option<WorkflowVersionId>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    /// `active`, `paused` or `archived` ([`super::workflows::WorkflowState`]).
    pub state: String,
});

entity!(workflow_version, "workflow_versions", {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: WorkflowVersionId,
    pub workflow_id: WorkflowId,
    pub version: i32,
    pub content_hash: String,
    pub definition: Json,
    pub source: String,
    pub created_at: DateTimeUtc,
});

entity!(enrollment, "enrollments", {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: EnrollmentId,
    pub workflow_id: WorkflowId,
    pub workflow_version_id: WorkflowVersionId,
    pub contact_id: ContactId,
    pub status: EnrollmentStatus,
    pub trigger_kind: String,
    pub trigger_data: Json,
    pub current_step: Option<String>,
    pub exit_reason: Option<String>,
    pub error: Option<String>,
    pub enrolled_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub finished_at: Option<DateTimeUtc>,
});

entity!(step_execution, "step_executions", {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: StepExecutionId,
    pub enrollment_id: EnrollmentId,
    pub step_id: String,
    pub attempt: i32,
    pub state: StepState,
    pub output: Option<Json>,
    pub error: Option<String>,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<DateTimeUtc>,
    pub due_at: DateTimeUtc,
    pub started_at: Option<DateTimeUtc>,
    pub finished_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
});

entity!(timer, "timers", {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: TimerId,
    pub enrollment_id: EnrollmentId,
    pub step_execution_id: Option<StepExecutionId>,
    pub kind: String,
    pub state: TimerState,
    pub wake_at: DateTimeUtc,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<DateTimeUtc>,
    pub fired_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
});

entity!(schedule_tick, "schedule_ticks", {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub workflow_id: WorkflowId,
    pub trigger_key: String,
    pub tick_at: DateTimeUtc,
    pub fired_at: DateTimeUtc,
});

entity!(event, "events", {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: EventId,
    pub kind: String,
    pub dedup_key: String,
    pub phone_number_id: Option<PhoneNumberId>,
    pub contact_id: Option<ContactId>,
    pub payload: Json,
    pub attempts: i32,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<DateTimeUtc>,
    pub occurred_at: DateTimeUtc,
    pub created_at: DateTimeUtc,
    pub applied_at: Option<DateTimeUtc>,
});

entity!(api_token, "api_tokens", {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: ApiTokenId,
    pub name: String,
    pub token_hash: String,
    pub scopes: Json,
    pub created_at: DateTimeUtc,
    pub last_used_at: Option<DateTimeUtc>,
    pub revoked_at: Option<DateTimeUtc>,
});

entity!(idempotency_key, "idempotency_keys", {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub scope: String,
    pub key: String,
    pub request_hash: String,
    pub response_status: Option<i32>,
    pub response_body: Option<Json>,
    pub created_at: DateTimeUtc,
    pub expires_at: DateTimeUtc,
});

entity!(saved_view, "saved_views", {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: SavedViewId,
    pub name: String,
    pub owner_user_id: Option<UserId>,
    pub filter: Json,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
});

entity!(webhook_delivery, "webhook_deliveries", {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub channel: String,
    pub events: Json,
    pub received_at: DateTimeUtc,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub applied_at: Option<DateTimeUtc>,
});

entity!(bulk_job, "bulk_jobs", {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: BulkJobId,
    pub workflow_key: String,
    /// `ndjson` or `csv`.
    pub format: String,
    /// `running`, `completed` or `failed` ([`BulkJobStatus`](super::BulkJobStatus)).
    pub status: String,
    pub token_id: Option<ApiTokenId>,
    pub rows_seen: i64,
    pub rows_enrolled: i64,
    pub rows_skipped: i64,
    pub rows_replayed: i64,
    pub rows_failed: i64,
    pub error: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub finished_at: Option<DateTimeUtc>,
});

entity!(bulk_job_row, "bulk_job_rows", {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub job_id: BulkJobId,
    /// 1-based line of the body (CSV: the header is line 1).
    pub line: i64,
    pub row_key: Option<String>,
    /// `enrolled`, `skipped`, `replayed` or `error`.
    pub outcome: String,
    pub contact_id: Option<ContactId>,
    pub enrollment_id: Option<EnrollmentId>,
    /// Why a row was skipped (`already_enrolled`, …).
    pub reason: Option<String>,
    pub error: Option<String>,
});
