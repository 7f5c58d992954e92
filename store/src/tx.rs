//! Write transactions ([`Tx`]) and what every table module shares.
//!
//! Invariant: a step's result, the enrollment's next state and the next step
//! (or the timer) commit in one transaction; dropping a [`Tx`] without
//! [`Tx::commit`] rolls everything back. On SQLite a transaction holds the
//! store's write turn, so writers queue in the process instead of spinning on
//! the file lock.

use sea_orm::{DatabaseTransaction, EntityTrait};

use super::{Backend, Store, StoreError};

/// A write transaction with the runtime's domain operations. Dropping it
/// without [`Tx::commit`] rolls everything back.
#[derive(Debug)]
pub struct Tx {
    pub(super) txn: DatabaseTransaction,
    pub(super) store: Store,
    _turn: Option<tokio::sync::OwnedMutexGuard<()>>,
    /// Set when [`Tx::insert_steps`] wrote a pending step.
    pub(super) pending_steps: std::sync::atomic::AtomicBool,
}

/// Where an operation runs: the pool ([`Store`]) or a write transaction
/// ([`Tx`]). An operation both need is written once over it, and `Store` and
/// `Tx` each name it in one line.
pub(super) trait On: Sync {
    type Conn: sea_orm::ConnectionTrait + Sync;
    fn conn(&self) -> &Self::Conn;
    fn error(&self, e: sea_orm::DbErr) -> StoreError;
}

impl On for Store {
    type Conn = sea_orm::DatabaseConnection;
    fn conn(&self) -> &Self::Conn {
        &self.db
    }
    fn error(&self, e: sea_orm::DbErr) -> StoreError {
        self.query_error(e)
    }
}

impl On for Tx {
    type Conn = DatabaseTransaction;
    fn conn(&self) -> &Self::Conn {
        &self.txn
    }
    fn error(&self, e: sea_orm::DbErr) -> StoreError {
        self.err(e)
    }
}

/// Rows per statement in batched writes: well under SQLite's limit of
/// bound parameters for the widest row.
pub(super) const BATCH_CHUNK: usize = 100;

impl Store {
    /// Starts a write transaction; on SQLite it waits for this process's turn.
    pub async fn begin(&self) -> Result<Tx, StoreError> {
        let turn = match self.backend {
            Backend::Sqlite => Some(self.write_gate.clone().lock_owned().await),
            Backend::Postgres => None,
        };
        let txn = self.begin_write().await.map_err(|e| self.query_error(e))?;
        Ok(Tx { txn, store: self.clone(), _turn: turn, pending_steps: Default::default() })
    }

    pub(super) fn db_backend(&self) -> sea_orm::DbBackend {
        self.db.get_database_backend()
    }

    pub fn missing(&self, what: &str) -> StoreError {
        self.query_error(sea_orm::DbErr::RecordNotFound(what.to_string()))
    }
}

impl Tx {
    /// Whether [`Tx::insert_steps`] wrote a step for a worker to run: when
    /// not, there is no need to wake the workers after the commit.
    pub fn wrote_pending_steps(&self) -> bool {
        self.pending_steps.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub async fn commit(self) -> Result<(), StoreError> {
        self.txn.commit().await.map_err(|e| self.store.query_error(e))
    }

    /// The error for a row that should be there and is not.
    pub fn missing(&self, what: &str) -> StoreError {
        self.store.missing(what)
    }

    /// Rolls everything back now (dropping a [`Tx`] does too, later).
    pub async fn rollback(self) -> Result<(), StoreError> {
        self.txn.rollback().await.map_err(|e| self.store.query_error(e))
    }

    pub(super) fn err(&self, e: sea_orm::DbErr) -> StoreError {
        self.store.query_error(e)
    }
}

/// One statement that takes work: an UPDATE (`set`) of the rows a subquery
/// picks (`pick`: condition, order and limit), returning them. PostgreSQL
/// takers skip rows another one holds; SQLite runs one writer at a time, so
/// there is nothing to skip.
pub(super) fn take_sql(backend: Backend, table: &str, set: &str, pick: &str) -> String {
    let lock = match backend {
        Backend::Postgres => " FOR UPDATE SKIP LOCKED",
        Backend::Sqlite => "",
    };
    format!("UPDATE {table} SET {set} WHERE id IN (SELECT id FROM {table} WHERE {pick}{lock}) RETURNING *")
}

/// Values per `IN (…)` list: well within both databases' parameter limits.
pub(super) const IN_LIST: usize = 500;

impl Tx {
    /// The rows `query` selects for each [`IN_LIST`]-sized chunk of `values`.
    pub(super) async fn select_in_chunks<V, E>(
        &self,
        values: &[V],
        query: impl Fn(&[V]) -> sea_orm::Select<E>,
    ) -> Result<Vec<E::Model>, StoreError>
    where
        E: EntityTrait,
    {
        let mut found = Vec::new();
        for chunk in values.chunks(IN_LIST) {
            found.extend(query(chunk).all(&self.txn).await.map_err(|e| self.err(e))?);
        }
        Ok(found)
    }
}
