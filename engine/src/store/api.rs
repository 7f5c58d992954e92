//! HTTP API state: bearer tokens (hashed) and idempotency keys.

use chrono::{DateTime, Utc};
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};
use uuid::Uuid;

use super::entities::{api_token, idempotency_key};
use super::{Store, StoreError};
use crate::ids::ApiTokenId;

pub type ApiToken = api_token::Model;
pub type IdempotencyRecord = idempotency_key::Model;

/// A token to store. Only its SHA-256 hash is kept; the token itself is shown
/// once to whoever created it.
#[derive(Debug, Clone)]
pub struct NewApiToken {
    pub name: String,
    pub token_hash: String,
    pub scopes: Vec<String>,
}

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
    pub async fn insert_api_token(&self, new: NewApiToken, now: DateTime<Utc>) -> Result<ApiToken, StoreError> {
        let name = new.name.clone();
        let row = api_token::ActiveModel {
            id: Set(ApiTokenId::new()),
            name: Set(new.name),
            token_hash: Set(new.token_hash),
            scopes: Set(serde_json::json!(new.scopes)),
            created_at: Set(now),
            last_used_at: Set(None),
            revoked_at: Set(None),
        };
        api_token::Entity::insert(row)
            .exec_with_returning(&self.db)
            .await
            .map_err(|e| self.insert_error(e, || format!("API token {name}")))
    }

    /// The live (not revoked) token with this hash.
    pub async fn api_token_by_hash(&self, token_hash: &str) -> Result<Option<ApiToken>, StoreError> {
        api_token::Entity::find()
            .filter(api_token::Column::TokenHash.eq(token_hash))
            .filter(api_token::Column::RevokedAt.is_null())
            .one(&self.db)
            .await
            .map_err(|e| self.query_error(e))
    }

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
}

impl Store {
    /// Every token, newest first (hashes included: callers show names and scopes).
    pub async fn api_tokens(&self) -> Result<Vec<ApiToken>, StoreError> {
        use sea_orm::QueryOrder;
        api_token::Entity::find()
            .order_by_desc(api_token::Column::CreatedAt)
            .all(&self.db)
            .await
            .map_err(|e| self.query_error(e))
    }

    /// Revokes the live token with this name; `false` when there is none.
    pub async fn revoke_api_token(&self, name: &str, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let res = api_token::Entity::update_many()
            .col_expr(api_token::Column::RevokedAt, sea_orm::sea_query::Expr::value(now))
            .filter(api_token::Column::Name.eq(name))
            .filter(api_token::Column::RevokedAt.is_null())
            .exec(&self.db)
            .await
            .map_err(|e| self.query_error(e))?;
        Ok(res.rows_affected > 0)
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
