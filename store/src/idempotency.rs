//! Idempotency keys of the HTTP API (a retried request answers what the
//! first one did) and the row keys of bulk uploads (a row sent again is
//! enrolled at most once, across concurrent uploads).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::OnConflict;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use uuid::Uuid;

use super::entities::idempotency_key;
use super::tx::IN_LIST;
use super::{RowKey, Store, StoreError, Tx};

pub type IdempotencyRecord = idempotency_key::Model;

#[derive(Debug, Clone)]
pub struct NewIdempotencyRecord {
    /// Whose key space this is (the token and the endpoint).
    pub scope: String,
    pub key: String,
    /// Hash of the request body: the same key with another body is a conflict.
    pub request_hash: String,
    pub response_status: Option<i32>,
    pub response_body: Option<serde_json::Value>,
    pub expires_at: DateTime<Utc>,
}

impl Store {
    /// Stores an idempotency key; a second one with the same scope and key is
    /// refused with [`StoreError::Duplicate`].
    pub async fn insert_idempotency_record(
        &self,
        new: NewIdempotencyRecord,
        now: DateTime<Utc>,
    ) -> Result<IdempotencyRecord, StoreError> {
        let key = new.key.clone();
        let row = idempotency_key::ActiveModel {
            id: Set(Uuid::now_v7()),
            scope: Set(new.scope),
            key: Set(new.key),
            request_hash: Set(new.request_hash),
            response_status: Set(new.response_status),
            response_body: Set(new.response_body),
            created_at: Set(now),
            expires_at: Set(new.expires_at),
        };
        idempotency_key::Entity::insert(row)
            .exec_with_returning(&self.db)
            .await
            .map_err(|e| self.insert_error(e, || format!("idempotency key {key}")))
    }

    pub async fn idempotency_record(&self, scope: &str, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        idempotency_key::Entity::find()
            .filter(idempotency_key::Column::Scope.eq(scope))
            .filter(idempotency_key::Column::Key.eq(key))
            .one(&self.db)
            .await
            .map_err(|e| self.query_error(e))
    }

    /// Writes the answer a key's first request got, so that repeats replay it.
    pub async fn complete_idempotency_record(
        &self,
        id: Uuid,
        status: i32,
        body: serde_json::Value,
    ) -> Result<(), StoreError> {
        idempotency_key::Entity::update_many()
            .col_expr(idempotency_key::Column::ResponseStatus, sea_orm::sea_query::Expr::value(status))
            .col_expr(idempotency_key::Column::ResponseBody, sea_orm::sea_query::Expr::value(body))
            .filter(idempotency_key::Column::Id.eq(id))
            .exec(&self.db)
            .await
            .map_err(|e| self.query_error(e))?;
        Ok(())
    }

    /// Forgets a key whose request failed before it changed anything, so
    /// that the client may try again with the same key.
    pub async fn delete_idempotency_record(&self, id: Uuid) -> Result<(), StoreError> {
        idempotency_key::Entity::delete_by_id(id).exec(&self.db).await.map_err(|e| self.query_error(e))?;
        Ok(())
    }

    /// Deletes keys past their expiry; returns how many.
    pub async fn expire_idempotency_records(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let res = idempotency_key::Entity::delete_many()
            .filter(idempotency_key::Column::ExpiresAt.lt(now))
            .exec(&self.db)
            .await
            .map_err(|e| self.query_error(e))?;
        Ok(res.rows_affected)
    }
}

impl Tx {
    /// The row keys of `scope` among `keys` already recorded.
    pub async fn row_keys(&self, scope: &str, keys: &[String]) -> Result<Vec<IdempotencyRecord>, StoreError> {
        self.select_in_chunks(keys, |chunk| {
            idempotency_key::Entity::find()
                .filter(idempotency_key::Column::Scope.eq(scope))
                .filter(idempotency_key::Column::Key.is_in(chunk.iter().cloned()))
        })
        .await
    }

    /// Claims the row keys of `scope` among `keys` that nobody holds yet,
    /// returning those this transaction now holds. A key another upload
    /// is enrolling at this moment is waited for (its transaction commits
    /// or rolls back first) and is then not claimed: so a row is enrolled
    /// at most once per key, across concurrent uploads. Keys are claimed in
    /// sorted order, so two uploads never wait on each other both ways.
    pub async fn claim_row_keys(
        &self,
        scope: &str,
        keys: &[String],
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        let mut keys = keys.to_vec();
        keys.sort();
        keys.dedup();
        let ids: HashMap<Uuid, String> = keys.iter().map(|k| (Uuid::now_v7(), k.clone())).collect();
        let mut rows: Vec<idempotency_key::ActiveModel> = ids
            .iter()
            .map(|(id, key)| idempotency_key::ActiveModel {
                id: Set(*id),
                scope: Set(scope.to_string()),
                key: Set(key.clone()),
                request_hash: Set(String::new()),
                response_status: Set(None),
                response_body: Set(None),
                created_at: Set(now),
                expires_at: Set(expires_at),
            })
            .collect();
        rows.sort_by(|a, b| a.key.as_ref().cmp(b.key.as_ref()));
        self.insert_untaken_keys(rows).await?;
        let held = self.row_keys(scope, &keys).await?;
        Ok(held.into_iter().filter(|record| ids.contains_key(&record.id)).map(|record| record.key).collect())
    }

    /// Lets go of claimed row keys (those whose rows were not enrolled).
    pub async fn release_row_keys(&self, scope: &str, keys: &[String]) -> Result<(), StoreError> {
        for chunk in keys.chunks(IN_LIST) {
            idempotency_key::Entity::delete_many()
                .filter(idempotency_key::Column::Scope.eq(scope))
                .filter(idempotency_key::Column::Key.is_in(chunk.iter().cloned()))
                .exec(&self.txn)
                .await
                .map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// Records row keys with their results. A key another upload recorded
    /// meanwhile is left as it is (its first result stands).
    pub async fn insert_row_keys(
        &self,
        scope: &str,
        keys: Vec<RowKey>,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let rows: Vec<idempotency_key::ActiveModel> = keys
            .into_iter()
            .map(|k| idempotency_key::ActiveModel {
                id: Set(Uuid::now_v7()),
                scope: Set(scope.to_string()),
                key: Set(k.key),
                request_hash: Set(k.request_hash),
                response_status: Set(Some(200)),
                response_body: Set(Some(k.result)),
                created_at: Set(now),
                expires_at: Set(expires_at),
            })
            .collect();
        self.insert_untaken_keys(rows).await
    }

    /// Inserts key rows in multi-row statements; a key already there (of
    /// another upload) is left as it is.
    async fn insert_untaken_keys(&self, rows: Vec<idempotency_key::ActiveModel>) -> Result<(), StoreError> {
        use idempotency_key::Column as C;
        for chunk in rows.chunks(self.store.rows_per_insert()) {
            idempotency_key::Entity::insert_many(chunk.to_vec())
                .on_conflict(OnConflict::columns([C::Scope, C::Key]).do_nothing().to_owned())
                .exec_without_returning(&self.txn)
                .await
                .map_err(|e| self.err(e))?;
        }
        Ok(())
    }
}
