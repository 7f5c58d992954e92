//! API bearer tokens, kept as hashes.

use chrono::{DateTime, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

use super::entities::api_token;
use super::{Store, StoreError};
use kairo_core::ids::ApiTokenId;

pub type ApiToken = api_token::Model;

/// A token to store. Only its SHA-256 hash is kept; the token itself is shown
/// once to whoever created it.
#[derive(Debug, Clone)]
pub struct NewApiToken {
    pub name: String,
    pub token_hash: String,
    pub scopes: Vec<String>,
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
}
