//! Signing in to the web pages: each user's password hash and the browsers
//! signed in as them.
//!
//! Invariants:
//! - Only an argon2id hash of a password is kept, and only a SHA-256 of a
//!   session cookie's secret: a database dump signs no one in.
//! - A session is valid only while its user is active: deactivating a user
//!   ends their sessions at the next request, in every `kairo serve`
//!   process, because each request reads the session and its user together.

use chrono::{DateTime, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

use super::entities::{user, user_password, web_session};
use super::{Store, StoreError, User};
use kairo_core::ids::UserId;

pub type UserPassword = user_password::Model;

pub type WebSession = web_session::Model;

/// A session to keep: the hash of the cookie's secret, never the secret.
#[derive(Debug, Clone)]
pub struct NewWebSession {
    pub id_hash: String,
    pub user_id: UserId,
    pub csrf_token: String,
    pub expires_at: DateTime<Utc>,
}

impl Store {
    /// Sets (or replaces) a user's password hash.
    pub async fn set_password(
        &self,
        user_id: UserId,
        hash: String,
        one_time: bool,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let row = user_password::ActiveModel {
            user_id: Set(user_id),
            hash: Set(hash),
            one_time: Set(one_time),
            set_at: Set(now),
        };
        user_password::Entity::insert(row)
            .on_conflict(
                OnConflict::column(user_password::Column::UserId)
                    .update_columns([
                        user_password::Column::Hash,
                        user_password::Column::OneTime,
                        user_password::Column::SetAt,
                    ])
                    .to_owned(),
            )
            .exec_without_returning(&self.db)
            .await
            .map_err(|e| self.query_error(e))?;
        Ok(())
    }

    /// The user's password hash; None when they have none (they cannot sign in).
    pub async fn password_of(&self, user_id: UserId) -> Result<Option<UserPassword>, StoreError> {
        user_password::Entity::find_by_id(user_id).one(&self.db).await.map_err(|e| self.query_error(e))
    }

    pub async fn create_web_session(&self, new: NewWebSession, now: DateTime<Utc>) -> Result<WebSession, StoreError> {
        let row = web_session::ActiveModel {
            id: Set(new.id_hash),
            user_id: Set(new.user_id),
            csrf_token: Set(new.csrf_token),
            created_at: Set(now),
            last_seen_at: Set(now),
            expires_at: Set(new.expires_at),
        };
        web_session::Entity::insert(row).exec_with_returning(&self.db).await.map_err(|e| self.query_error(e))
    }

    /// The session and its user, when the session has not expired and the
    /// user is active; None otherwise.
    pub async fn web_session(
        &self,
        id_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<(WebSession, User)>, StoreError> {
        let q = |e| self.query_error(e);
        let found = web_session::Entity::find_by_id(id_hash.to_string())
            .filter(web_session::Column::ExpiresAt.gt(now))
            .one(&self.db)
            .await
            .map_err(q)?;
        let Some(session) = found else { return Ok(None) };
        let user = user::Entity::find_by_id(session.user_id)
            .filter(user::Column::DeactivatedAt.is_null())
            .one(&self.db)
            .await
            .map_err(q)?;
        Ok(user.map(|user| (session, user)))
    }

    /// Moves a session's expiry on (a sliding expiry), as it is used.
    pub async fn touch_web_session(
        &self,
        id_hash: &str,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        web_session::Entity::update_many()
            .col_expr(web_session::Column::LastSeenAt, Expr::value(now))
            .col_expr(web_session::Column::ExpiresAt, Expr::value(expires_at))
            .filter(web_session::Column::Id.eq(id_hash))
            .exec(&self.db)
            .await
            .map_err(|e| self.query_error(e))?;
        Ok(())
    }

    /// Signs one browser out.
    pub async fn end_web_session(&self, id_hash: &str) -> Result<(), StoreError> {
        web_session::Entity::delete_many()
            .filter(web_session::Column::Id.eq(id_hash))
            .exec(&self.db)
            .await
            .map_err(|e| self.query_error(e))?;
        Ok(())
    }

    /// Signs every browser of a user out (deactivation, a password reset).
    /// Returns how many sessions ended.
    pub async fn end_web_sessions_of(&self, user_id: UserId) -> Result<u64, StoreError> {
        let done = web_session::Entity::delete_many()
            .filter(web_session::Column::UserId.eq(user_id))
            .exec(&self.db)
            .await
            .map_err(|e| self.query_error(e))?;
        Ok(done.rows_affected)
    }

    /// Forgets sessions that expired before `now`. Returns how many.
    pub async fn end_expired_web_sessions(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let done = web_session::Entity::delete_many()
            .filter(web_session::Column::ExpiresAt.lte(now))
            .exec(&self.db)
            .await
            .map_err(|e| self.query_error(e))?;
        Ok(done.rows_affected)
    }
}
