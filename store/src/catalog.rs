//! The template catalogue: message templates per account, with their status
//! and components, as the catalogue sync finds them.

use chrono::{DateTime, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::OnConflict;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::entities::{phone_number, template, whatsapp_account};
use super::{Store, StoreError, Tx};
use kairo_core::ids::{AccountId, TemplateId};

pub type Template = template::Model;

/// The rows the workflow catalogue is built from.
#[derive(Debug, Clone, Default)]
pub struct CatalogRows {
    /// Each account's id and WABA id.
    pub accounts: Vec<(AccountId, String)>,
    pub numbers: Vec<super::PhoneNumber>,
    pub templates: Vec<Template>,
    /// E-mails of the active users.
    pub users: Vec<String>,
    /// Names of the active teams.
    pub teams: Vec<String>,
}

/// The status a template gets when its account no longer lists it.
pub const TEMPLATE_GONE: &str = "DELETED";

#[derive(Debug, Clone)]
pub struct NewTemplate {
    pub account_id: AccountId,
    pub graph_id: String,
    pub name: String,
    pub language: String,
    pub status: String,
    pub category: String,
    pub parameter_format: String,
    pub components: serde_json::Value,
}

impl Store {
    /// Inserts a template, or updates the one with the same account, name and language.
    pub async fn upsert_template(&self, new: NewTemplate, now: DateTime<Utc>) -> Result<Template, StoreError> {
        let row = template::ActiveModel {
            id: Set(TemplateId::new()),
            account_id: Set(new.account_id),
            graph_id: Set(new.graph_id),
            name: Set(new.name.clone()),
            language: Set(new.language.clone()),
            status: Set(new.status),
            category: Set(new.category),
            parameter_format: Set(new.parameter_format),
            components: Set(new.components),
            synced_at: Set(now),
            created_at: Set(now),
            updated_at: Set(now),
        };
        use template::Column as C;
        template::Entity::insert(row)
            .on_conflict(
                OnConflict::columns([C::AccountId, C::Name, C::Language])
                    .update_columns([
                        C::GraphId,
                        C::Status,
                        C::Category,
                        C::ParameterFormat,
                        C::Components,
                        C::SyncedAt,
                        C::UpdatedAt,
                    ])
                    .to_owned(),
            )
            .exec_without_returning(&self.db)
            .await
            .map_err(|e| self.query_error(e))?;
        template::Entity::find()
            .filter(C::AccountId.eq(new.account_id))
            .filter(C::Name.eq(new.name))
            .filter(C::Language.eq(new.language))
            .one(&self.db)
            .await
            .map_err(|e| self.query_error(e))?
            .ok_or_else(|| self.missing("template just upserted"))
    }

    /// Marks `DELETED` the account's templates that a full sync did not see
    /// (`seen`: name and language); returns how many changed. They stay in
    /// the catalogue so that workflows naming them are flagged.
    pub async fn mark_templates_gone(
        &self,
        account: AccountId,
        seen: &std::collections::HashSet<(String, String)>,
        now: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        let gone: Vec<TemplateId> = self
            .templates(account)
            .await?
            .into_iter()
            .filter(|t| t.status != TEMPLATE_GONE && !seen.contains(&(t.name.clone(), t.language.clone())))
            .map(|t| t.id)
            .collect();
        for chunk in gone.chunks(500) {
            template::Entity::update_many()
                .col_expr(template::Column::Status, sea_orm::sea_query::Expr::value(TEMPLATE_GONE))
                .col_expr(template::Column::SyncedAt, sea_orm::sea_query::Expr::value(now))
                .col_expr(template::Column::UpdatedAt, sea_orm::sea_query::Expr::value(now))
                .filter(template::Column::Id.is_in(chunk.iter().copied()))
                .exec(&self.db)
                .await
                .map_err(|e| self.query_error(e))?;
        }
        Ok(gone.len())
    }

    /// The catalogue status (`APPROVED`, `PAUSED`, …) and category
    /// (`MARKETING`, `UTILITY`, `AUTHENTICATION`) of one template; None when
    /// the catalogue does not list it (never synced).
    pub async fn template_status(
        &self,
        account: AccountId,
        name: &str,
        language: &str,
    ) -> Result<Option<(String, String)>, StoreError> {
        template::Entity::find()
            .select_only()
            .column(template::Column::Status)
            .column(template::Column::Category)
            .filter(template::Column::AccountId.eq(account))
            .filter(template::Column::Name.eq(name))
            .filter(template::Column::Language.eq(language))
            .into_tuple()
            .one(&self.db)
            .await
            .map_err(|e| self.query_error(e))
    }

    /// One template of an account, by name and language.
    pub async fn template(
        &self,
        account: AccountId,
        name: &str,
        language: &str,
    ) -> Result<Option<Template>, StoreError> {
        template::Entity::find()
            .filter(template::Column::AccountId.eq(account))
            .filter(template::Column::Name.eq(name))
            .filter(template::Column::Language.eq(language))
            .one(&self.db)
            .await
            .map_err(|e| self.query_error(e))
    }

    /// An account's templates, by name then language.
    pub async fn templates(&self, account: AccountId) -> Result<Vec<Template>, StoreError> {
        template::Entity::find()
            .filter(template::Column::AccountId.eq(account))
            .order_by_asc(template::Column::Name)
            .order_by_asc(template::Column::Language)
            .all(&self.db)
            .await
            .map_err(|e| self.query_error(e))
    }

    /// Every account (id and WABA id), number and template, and the names
    /// of the active users and teams: what the workflow catalogue is built
    /// from.
    pub async fn catalog_rows(&self) -> Result<CatalogRows, StoreError> {
        let accounts = whatsapp_account::Entity::find().all(&self.db).await.map_err(|e| self.query_error(e))?;
        let numbers = phone_number::Entity::find().all(&self.db).await.map_err(|e| self.query_error(e))?;
        let templates = template::Entity::find().all(&self.db).await.map_err(|e| self.query_error(e))?;
        let users = super::entities::user::Entity::find()
            .filter(super::entities::user::Column::DeactivatedAt.is_null())
            .all(&self.db)
            .await
            .map_err(|e| self.query_error(e))?;
        let teams = super::entities::team::Entity::find()
            .filter(super::entities::team::Column::DeactivatedAt.is_null())
            .all(&self.db)
            .await
            .map_err(|e| self.query_error(e))?;
        Ok(CatalogRows {
            accounts: accounts.into_iter().map(|a| (a.id, a.waba_id)).collect(),
            numbers,
            templates,
            users: users.into_iter().map(|u| u.email).collect(),
            teams: teams.into_iter().map(|t| t.name).collect(),
        })
    }
}

impl Tx {
    /// Sets the status of an account's template in one language (a
    /// `message_template_status_update`); an unknown account changes nothing.
    pub async fn set_template_status(
        &self,
        waba_id: &str,
        name: &str,
        language: &str,
        status: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let q = |e| self.err(e);
        let Some(account) = whatsapp_account::Entity::find()
            .filter(whatsapp_account::Column::WabaId.eq(waba_id))
            .one(&self.txn)
            .await
            .map_err(q)?
        else {
            return Ok(());
        };
        template::Entity::update_many()
            .col_expr(template::Column::Status, sea_orm::sea_query::Expr::value(status))
            .col_expr(template::Column::UpdatedAt, sea_orm::sea_query::Expr::value(now))
            .filter(template::Column::AccountId.eq(account.id))
            .filter(template::Column::Name.eq(name))
            .filter(template::Column::Language.eq(language))
            .exec(&self.txn)
            .await
            .map_err(q)?;
        Ok(())
    }
}
