//! Idempotency keys of the HTTP API: a retried request answers what the
//! first one did.

use chrono::{DateTime, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use uuid::Uuid;

use super::entities::idempotency_key;
use super::{Store, StoreError};

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
