//! Durable state: the only crate that speaks SQL.
//!
//! One [`Store`] is opened from a URL, `sqlite://PATH` (the embedded default:
//! the file is created if absent) or `postgres://…` (the scale-out path). Both
//! run the same migrations and the same sea-orm queries; where the backends
//! must differ, one function holds the `match` and says why.
//!
//! Invariants:
//! - SQLite connections all run in WAL mode with `synchronous=FULL`, a busy
//!   timeout and foreign keys on, so a commit survives a power cut. The WAL
//!   is checkpointed by a task of the store's own, never by a committing
//!   writer (see [`checkpoint_sqlite`]).
//! - Timestamps are UTC; a state change and its event commit together.
//! - Errors name the database by its redacted URL: a password never appears.

mod bulk;
mod catalog;
mod changes;
mod consents;
mod contacts;
mod enrollments;
mod entities;
mod events;
mod idempotency;
mod journal;
mod messages;
mod numbers;
mod pacing;
mod paging;
mod people;
mod reports;
mod saved_views;
mod schedules;
mod sessions;
mod steps;
#[cfg(feature = "test-support")]
pub mod testing;
mod threads;
mod timers;
mod tokens;
mod tx;
mod url;
mod workflows;

use std::str::FromStr;
use std::time::Duration;

use kairo_migrations::{Migrator, MigratorTrait};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement};
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

pub use self::bulk::{BulkJob, BulkJobRow, BulkJobStatus, RowKey, RowResult};
pub use self::catalog::{CatalogRows, NewTemplate, Template};
pub use self::consents::{Consent, ConsentChange, ConsentEvent};
pub use self::contacts::{Contact, ContactIds, ContactUpdate, NewContact, merge_properties};
pub use self::enrollments::{Enrollment, EnrollmentChange, EnrollmentFilter, EnrollmentHistory, NewEnrollment};
pub use self::events::{Event, NewEvent};
pub use self::idempotency::{IdempotencyRecord, NewIdempotencyRecord};
pub use self::journal::{JournaledDelivery, MAX_APPLY_ATTEMPTS};
pub use self::messages::status_name as delivery_status_name;
pub use self::messages::{Message, MessageOrigin, NewMessage, OutboundRecord, PendingStatus};
pub use self::numbers::{Account, NewAccount, NewPhoneNumber, NewPortfolio, PauseScope, PhoneNumber, Portfolio};
pub use self::pacing::{Reach, SendBudget, SlotGrant, messaging_limit};
pub use self::paging::Page;
pub use self::people::{AssignmentRule, NewAssignmentRule, NewUser, OwnerChoice, Team, UnknownOwner, User};
pub use self::reports::{Funnel, HistoryEntry, StepCounts, UnfinishedSteps, VersionReport};
pub use self::saved_views::{NewSavedView, SavedView};
pub use self::sessions::{NewWebSession, UserPassword, WebSession};
pub use self::steps::{NewStepExecution, RunRows, StepExecution, StepRecord, StepSpan};
pub use self::threads::{NewThread, Thread, ThreadCursor, ThreadEvent, ThreadFilter, ThreadSort, WindowFilter};
pub use self::timers::{DueTimer, NewTimer, NewTimerRow, Timer};
pub use self::tokens::{ApiToken, NewApiToken};
pub use self::tx::Tx;
pub use self::url::DatabaseUrl;
pub use self::workflows::{SavedVersion, Workflow, WorkflowState, WorkflowVersion};

/// How long a query waits for a connection from the pool, and how long a
/// SQLite writer waits for the file lock, before giving up.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Prepared statements kept per SQLite connection. Batched statements are
/// written for their batch size, and a prepared statement of a thousand
/// rows holds megabytes: a small cache keeps a worker's memory flat.
const SQLITE_STATEMENT_CACHE: usize = 24;

/// PostgreSQL: the longest a statement waits for a row or table lock
/// before it fails (and its step goes back to the queue).
pub const LOCK_TIMEOUT: &str = "5s";
/// PostgreSQL: a session idle inside a transaction this long is ended by the
/// server. No store transaction waits on anything but its own statements.
pub const IDLE_IN_TRANSACTION_TIMEOUT: &str = "10s";

/// What U+0000 becomes in text PostgreSQL stores: it cannot hold that
/// character in `text` or `jsonb`, so it is kept as U+2400 SYMBOL FOR NULL,
/// which shows where it was.
pub const NUL_STAND_IN: char = '\u{2400}';

/// Replaces U+0000 in every string (and key) of `value` with
/// [`NUL_STAND_IN`]. True when something was replaced.
pub fn escape_nul(value: &mut serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::String(s) if s.contains('\0') => {
            *s = s.replace('\0', &NUL_STAND_IN.to_string());
            true
        }
        Value::Array(items) => items.iter_mut().fold(false, |any, v| escape_nul(v) | any),
        Value::Object(map) => {
            let mut any = false;
            if map.keys().any(|k| k.contains('\0')) {
                let entries: Vec<_> = std::mem::take(map).into_iter().collect();
                for (k, v) in entries {
                    map.insert(k.replace('\0', &NUL_STAND_IN.to_string()), v);
                }
                any = true;
            }
            map.values_mut().fold(any, |any, v| escape_nul(v) | any)
        }
        _ => false,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported database URL `{url}`: use sqlite://PATH or postgres://USER:PASSWORD@HOST/DB")]
    UnsupportedUrl { url: DatabaseUrl },
    #[error("invalid database URL `{url}`: {reason}")]
    InvalidUrl { url: DatabaseUrl, reason: String },
    #[error("cannot connect to database {url}: {reason}")]
    Connect { url: DatabaseUrl, reason: String },
    #[error("migrating database {url}: {source}")]
    Migrate { url: DatabaseUrl, source: DbErr },
    #[error("database {url}: {source}")]
    Query { url: DatabaseUrl, source: DbErr },
    /// A uniqueness rule of the product was broken (a second row with the
    /// same wamid, token name, …): the caller decides what a duplicate means.
    #[error("database {url}: {what} already exists")]
    Duplicate { url: DatabaseUrl, what: String },
}

/// The database schema this build migrates to: its number of migrations
/// and the name of the last one.
pub fn schema_version() -> (usize, String) {
    let migrations = Migrator::migrations();
    (migrations.len(), migrations.last().map(|m| m.name().to_string()).unwrap_or_default())
}

impl StoreError {
    /// The database is there but busy: no connection came free in time (a
    /// full pool), a lock was not granted within the lock timeout, or
    /// SQLite stayed locked past its busy timeout. Worth retrying shortly.
    pub fn is_busy(&self) -> bool {
        let StoreError::Query { source, .. } = self else { return false };
        if matches!(source, DbErr::ConnectionAcquire(_)) {
            return true;
        }
        let text = source.to_string();
        text.contains("55P03") || text.contains("lock timeout") || text.contains("database is locked")
    }
}

/// Which database the store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// One migration and whether it has run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationState {
    pub name: String,
    pub applied: bool,
}

/// What `/readyz` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    pub database_reachable: bool,
    pub pending_migrations: Vec<String>,
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.database_reachable && self.pending_migrations.is_empty()
    }
}

/// The handle to Kairo's database; cheap to clone (a pool inside).
#[derive(Debug, Clone)]
pub struct Store {
    db: DatabaseConnection,
    url: DatabaseUrl,
    backend: Backend,
    /// SQLite has one writer at a time, and a writer that finds the file
    /// locked backs off in sleeps of up to 100 ms. Writers in this process
    /// that run long or often (the journal and its applier) queue here
    /// instead, in order, without sleeping. Unused on PostgreSQL.
    write_gate: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// Held by every clone: the SQLite checkpointer stops when the last
    /// clone is dropped.
    _alive: std::sync::Arc<()>,
}

/// How many connections a store keeps and how long a caller waits for one.
#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    pub max_connections: u32,
    pub acquire_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings { max_connections: 10, acquire_timeout: ACQUIRE_TIMEOUT }
    }
}

impl Store {
    /// Opens (and for SQLite, creates) the database at `url`. Does not migrate.
    pub async fn open(url: &DatabaseUrl) -> Result<Store, StoreError> {
        Self::open_with(url, PoolSettings::default()).await
    }

    /// [`Store::open`] with this many connections at most.
    pub async fn open_with(url: &DatabaseUrl, pool: PoolSettings) -> Result<Store, StoreError> {
        Self::open_as(url, pool, true).await
    }

    /// [`Store::open_with`] for a database that must exist already: a
    /// missing SQLite file is an error, not created (for commands that only
    /// look, such as `kairo sandbox inbound` checking the inbox).
    pub async fn open_existing(url: &DatabaseUrl, pool: PoolSettings) -> Result<Store, StoreError> {
        Self::open_as(url, pool, false).await
    }

    async fn open_as(url: &DatabaseUrl, pool: PoolSettings, create: bool) -> Result<Store, StoreError> {
        let url = url.clone();
        let scheme = url.scheme();
        match scheme.as_str() {
            "sqlite" => Self::open_sqlite(url, pool, create).await,
            "postgres" | "postgresql" => Self::open_postgres(url, pool).await,
            _ => Err(StoreError::UnsupportedUrl { url }),
        }
    }

    async fn open_sqlite(url: DatabaseUrl, settings: PoolSettings, create: bool) -> Result<Store, StoreError> {
        let options = SqliteConnectOptions::from_str(url.expose())
            .map_err(|err| StoreError::InvalidUrl { url: url.clone(), reason: url.scrub(&err.to_string()) })?
            .create_if_missing(create)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(SQLITE_BUSY_TIMEOUT)
            .foreign_keys(true)
            .statement_cache_capacity(SQLITE_STATEMENT_CACHE)
            // Checkpoints run in the background, not inside a commit.
            .pragma("wal_autocheckpoint", "0");
        // An in-memory database lives in one connection: a second one would
        // be a second, empty database, and an idle timeout would lose it.
        let in_memory = url.expose().contains(":memory:");
        let pool = SqlitePoolOptions::new()
            .max_connections(if in_memory { 1 } else { settings.max_connections })
            .idle_timeout(if in_memory { None } else { Some(Duration::from_secs(600)) })
            .max_lifetime(if in_memory { None } else { Some(Duration::from_secs(1800)) })
            .acquire_timeout(settings.acquire_timeout)
            .connect_with(options)
            .await
            .map_err(|err| StoreError::Connect { url: url.clone(), reason: url.scrub(&err.to_string()) })?;
        let alive = std::sync::Arc::new(());
        if !in_memory {
            tokio::spawn(checkpoint_sqlite(pool.clone(), std::sync::Arc::downgrade(&alive)));
        }
        let db = sea_orm::SqlxSqliteConnector::from_sqlx_sqlite_pool(pool);
        Ok(Store { db, url, backend: Backend::Sqlite, write_gate: Default::default(), _alive: alive })
    }

    async fn open_postgres(url: DatabaseUrl, settings: PoolSettings) -> Result<Store, StoreError> {
        let options = PgConnectOptions::from_str(url.expose())
            .map_err(|err| StoreError::InvalidUrl { url: url.clone(), reason: url.scrub(&err.to_string()) })?
            // Every query is a prepared statement; after five runs
            // PostgreSQL may keep one generic plan for it, made when the
            // table was small (an empty `threads`), and use it until the next
            // ANALYZE however large the table grows: a broadcast into a new
            // inbox slowed from 970 to 400 sends/s in 30 s, each send slower
            // as the table grew. A plan made for each run's values follows
            // the table; it costs planning on every statement (a third of
            // the API's end-to-end runs/s on a 2-core machine, see
            // docs/benchmarks.md).
            .options([
                ("plan_cache_mode", "force_custom_plan"),
                // A worker paused (SIGSTOP, a long GC-like stall of the
                // machine) must not hold up the others: a statement gives
                // up waiting for a lock after LOCK_TIMEOUT, and a session
                // that sits in an open transaction is ended by the server,
                // releasing its locks.
                ("lock_timeout", LOCK_TIMEOUT),
                ("idle_in_transaction_session_timeout", IDLE_IN_TRANSACTION_TIMEOUT),
            ]);
        // One direct attempt first: a pool retries until its timeout and then
        // reports only "timed out", hiding "connection refused" or "password
        // authentication failed", which tell the operator what to fix.
        let connect_error = |reason: String| StoreError::Connect { url: url.clone(), reason: url.scrub(&reason) };
        let probe = tokio::time::timeout(ACQUIRE_TIMEOUT, PgConnection::connect_with(&options))
            .await
            .map_err(|_| connect_error(format!("no answer within {}s", ACQUIRE_TIMEOUT.as_secs())))?
            .map_err(|err| connect_error(err.to_string()))?;
        let _ = probe.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(settings.acquire_timeout)
            .connect_with(options)
            .await
            .map_err(|err| connect_error(err.to_string()))?;
        let db = sea_orm::SqlxPostgresConnector::from_sqlx_postgres_pool(pool);
        Ok(Store { db, url, backend: Backend::Postgres, write_gate: Default::default(), _alive: Default::default() })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The database URL with any password replaced, fit for logs.
    pub fn url(&self) -> &DatabaseUrl {
        &self.url
    }

    /// Applies every pending migration.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        Migrator::up(&self.db, None).await.map_err(|source| StoreError::Migrate { url: self.url.clone(), source })
    }

    /// Runs the first `count` pending migrations only: a database as an
    /// older release left it, for tests of upgrades.
    pub async fn migrate_some(&self, count: u32) -> Result<(), StoreError> {
        Migrator::up(&self.db, Some(count))
            .await
            .map_err(|source| StoreError::Migrate { url: self.url.clone(), source })
    }

    /// Every migration Kairo knows, in order, and whether it has run here.
    pub async fn migration_status(&self) -> Result<Vec<MigrationState>, StoreError> {
        let pending: Vec<String> = Migrator::get_pending_migrations(&self.db)
            .await
            .map_err(|source| StoreError::Migrate { url: self.url.clone(), source })?
            .iter()
            .map(|m| m.name().to_string())
            .collect();
        Ok(Migrator::migrations()
            .iter()
            .map(|m| {
                let name = m.name().to_string();
                let applied = !pending.contains(&name);
                MigrationState { name, applied }
            })
            .collect())
    }

    /// Whether the database answers and every migration has run.
    pub async fn readiness(&self) -> Readiness {
        let database_reachable = self.db.execute_unprepared("SELECT 1").await.is_ok();
        let pending_migrations = match self.migration_status().await {
            Ok(states) => states.into_iter().filter(|m| !m.applied).map(|m| m.name).collect(),
            Err(_) => Migrator::migrations().iter().map(|m| m.name().to_string()).collect(),
        };
        Readiness { database_reachable, pending_migrations }
    }

    /// Closes the pool, waiting for connections in use to be returned.
    pub async fn close(self) {
        if let Err(err) = self.db.close().await {
            tracing::warn!(%err, url = %self.url, "closing the database pool");
        }
    }

    /// The schema as the database reports it, normalised so that SQLite's and
    /// PostgreSQL's can be compared: tables with their columns (name and
    /// nullability) and indexes (name, columns, uniqueness), Kairo's tables only.
    pub async fn describe_schema(&self) -> Result<SchemaDescription, StoreError> {
        let rows = match self.backend {
            // SQLite keeps the schema in sqlite_master and pragma functions;
            // PostgreSQL in its catalogs. Each query yields the same rows:
            // (kind, table, name, detail).
            Backend::Sqlite => {
                self.query_rows(
                    "SELECT 'column', m.name, p.name, CASE WHEN p.\"notnull\" = 1 OR p.pk > 0 THEN 'not null' ELSE 'null' END \
                     FROM sqlite_master m, pragma_table_info(m.name) p \
                     WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' AND m.name <> 'seaql_migrations' \
                     UNION ALL \
                     SELECT 'index', m.name, il.name, \
                       (CASE WHEN il.\"unique\" = 1 THEN 'unique ' ELSE '' END) || \
                       (SELECT group_concat(name, ',') FROM (SELECT ii.name FROM pragma_index_info(il.name) ii ORDER BY ii.seqno)) \
                     FROM sqlite_master m, pragma_index_list(m.name) il \
                     WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' AND m.name <> 'seaql_migrations' AND il.origin <> 'pk'",
                )
                .await?
            }
            Backend::Postgres => {
                self.query_rows(
                    "SELECT 'column', c.table_name::text, c.column_name::text, \
                       CASE WHEN c.is_nullable = 'NO' THEN 'not null' ELSE 'null' END \
                     FROM information_schema.columns c \
                     WHERE c.table_schema = current_schema() AND c.table_name <> 'seaql_migrations' \
                     UNION ALL \
                     SELECT 'index', t.relname::text, i.relname::text, \
                       (CASE WHEN ix.indisunique THEN 'unique ' ELSE '' END) || \
                       (SELECT string_agg(a.attname, ',' ORDER BY k.ord) \
                        FROM unnest(ix.indkey) WITH ORDINALITY AS k(attnum, ord) \
                        JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum) \
                     FROM pg_index ix JOIN pg_class i ON i.oid = ix.indexrelid \
                     JOIN pg_class t ON t.oid = ix.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace \
                     WHERE n.nspname = current_schema() AND t.relname <> 'seaql_migrations' AND NOT ix.indisprimary",
                )
                .await?
            }
        };
        let mut schema = SchemaDescription::default();
        for (kind, table, name, detail) in rows {
            let entry = format!("{table}.{name}: {detail}");
            match kind.as_str() {
                "column" => schema.columns.push(entry),
                _ => schema.indexes.push(entry),
            }
        }
        schema.columns.sort();
        schema.indexes.sort();
        Ok(schema)
    }

    /// A PostgreSQL setting as one of the store's connections has it (an
    /// error on SQLite).
    pub async fn postgres_setting(&self, name: &str) -> Result<String, StoreError> {
        let row = self
            .db
            .query_one_raw(Statement::from_sql_and_values(
                self.db.get_database_backend(),
                "SELECT current_setting($1)",
                [name.into()],
            ))
            .await
            .map_err(|e| self.query_error(e))?
            .ok_or_else(|| self.missing("setting row"))?;
        row.try_get_by_index(0).map_err(|e| self.query_error(e))
    }

    /// The durability settings of a SQLite connection, as SQLite reports
    /// them (an error on PostgreSQL).
    pub async fn sqlite_pragmas(&self) -> Result<SqlitePragmas, StoreError> {
        let row = |sql: &'static str| async move {
            self.db
                .query_one_raw(Statement::from_string(self.db.get_database_backend(), sql))
                .await
                .map_err(|e| self.query_error(e))?
                .ok_or_else(|| self.missing("pragma row"))
        };
        let settings = row(
            "SELECT (SELECT journal_mode FROM pragma_journal_mode), (SELECT synchronous FROM pragma_synchronous), \
             (SELECT foreign_keys FROM pragma_foreign_keys), (SELECT timeout FROM pragma_busy_timeout)",
        )
        .await?;
        // Not a table-valued pragma: read on its own.
        let checkpoint = row("PRAGMA wal_autocheckpoint").await?;
        let read = || -> Result<SqlitePragmas, DbErr> {
            Ok(SqlitePragmas {
                journal_mode: settings.try_get_by_index(0)?,
                synchronous: settings.try_get_by_index(1)?,
                foreign_keys: settings.try_get_by_index::<i64>(2)? == 1,
                busy_timeout_ms: settings.try_get_by_index(3)?,
                wal_autocheckpoint: checkpoint.try_get_by_index(0)?,
            })
        };
        read().map_err(|e| self.query_error(e))
    }

    async fn query_rows(&self, sql: &str) -> Result<Vec<(String, String, String, String)>, StoreError> {
        let backend: DbBackend = self.db.get_database_backend();
        let rows = self
            .db
            .query_all_raw(Statement::from_string(backend, sql))
            .await
            .map_err(|source| self.query_error(source))?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get_by_index::<String>(0)?,
                    row.try_get_by_index::<String>(1)?,
                    row.try_get_by_index::<String>(2)?,
                    row.try_get_by_index::<String>(3)?,
                ))
            })
            .collect::<Result<_, DbErr>>()
            .map_err(|source| self.query_error(source))
    }

    fn query_error(&self, source: DbErr) -> StoreError {
        StoreError::Query { url: self.url.clone(), source }
    }

    /// Starts a transaction that writes. On SQLite it takes the write lock
    /// at `BEGIN` (`BEGIN IMMEDIATE`, waiting up to the busy timeout): a
    /// deferred transaction that reads first and writes later fails at
    /// once with "database is locked" when another connection wrote in
    /// between, whatever the busy timeout.
    pub(crate) async fn begin_write(&self) -> Result<sea_orm::DatabaseTransaction, DbErr> {
        use sea_orm::{SqliteTransactionMode, TransactionOptions, TransactionTrait};
        match self.backend {
            Backend::Sqlite => {
                let options = TransactionOptions {
                    sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                    ..TransactionOptions::default()
                };
                self.db.begin_with_options(options).await
            }
            Backend::Postgres => self.db.begin().await,
        }
    }

    /// Rows per multi-row INSERT. On PostgreSQL statements stay small: a
    /// 5,000-row bulk enrollment took 3.6 s with 500 rows per statement,
    /// 2.8 s with 100, 1.1 s with 25 and 1.2 s with 10, while the server
    /// ran every statement in under 8 ms and the process sat mostly idle:
    /// the time went waiting on the connection (sqlx 0.9 leaves Nagle's
    /// algorithm on, sqlx issue 4335).
    pub(crate) fn rows_per_insert(&self) -> usize {
        match self.backend {
            Backend::Sqlite => 500,
            Backend::Postgres => 25,
        }
    }

    /// Waits for this process's turn to write, on SQLite only.
    async fn write_turn(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match self.backend {
            Backend::Sqlite => Some(self.write_gate.lock().await),
            Backend::Postgres => None,
        }
    }

    /// Maps an insert error to [`StoreError::Duplicate`] when a unique index refused it.
    fn insert_error(&self, source: DbErr, what: impl FnOnce() -> String) -> StoreError {
        match source.sql_err() {
            Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) => {
                StoreError::Duplicate { url: self.url.clone(), what: what() }
            }
            _ => self.query_error(source),
        }
    }
}

/// A backend-neutral picture of the schema, for comparing SQLite and PostgreSQL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchemaDescription {
    /// `table.column: null|not null`, sorted.
    pub columns: Vec<String>,
    /// `table.index: [unique ]col1,col2`, sorted.
    pub indexes: Vec<String>,
}

/// What [`Store::sqlite_pragmas`] reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlitePragmas {
    pub journal_mode: String,
    /// 0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA.
    pub synchronous: i64,
    pub foreign_keys: bool,
    pub busy_timeout_ms: i64,
    /// WAL pages after which a commit checkpoints: 0, the store's task does.
    pub wal_autocheckpoint: i64,
}

/// How often the SQLite checkpointer looks at the WAL.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// Checkpoints the WAL of a SQLite database every [`CHECKPOINT_EVERY`]
/// until the store is gone. With SQLite's own automatic checkpoint, the
/// commit that crosses 1,000 WAL pages copies them into the database file
/// and syncs it before it returns: a writer (a bulk chunk, a batch of
/// timers) stalls for several milliseconds now and then. Here the copying
/// happens beside the writers: `PASSIVE` never waits for a lock, and a
/// checkpoint that could not finish (a reader still on old pages) is
/// finished by a later one. Each connection is opened with
/// `wal_autocheckpoint=0`; the last connection to close still checkpoints,
/// as SQLite always does.
async fn checkpoint_sqlite(pool: sqlx::SqlitePool, alive: std::sync::Weak<()>) {
    loop {
        tokio::time::sleep(CHECKPOINT_EVERY).await;
        if alive.strong_count() == 0 || pool.is_closed() {
            break;
        }
        if let Err(err) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&pool).await {
            if pool.is_closed() {
                break;
            }
            tracing::warn!(%err, "checkpointing the SQLite WAL failed; retrying");
        }
    }
    pool.close().await;
}
