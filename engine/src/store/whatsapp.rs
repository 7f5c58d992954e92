//! The WhatsApp catalogue: business portfolios, accounts, their phone numbers
//! and message templates.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::entities::{business_portfolio, phone_number, template, whatsapp_account};
use super::{Store, StoreError};
use crate::ids::{AccountId, PhoneNumberId, PortfolioId, TemplateId};

pub type Portfolio = business_portfolio::Model;
pub type Account = whatsapp_account::Model;
pub type PhoneNumber = phone_number::Model;
pub type Template = template::Model;

/// The status a template gets when its account no longer lists it.
pub const TEMPLATE_GONE: &str = "DELETED";

#[derive(Debug, Clone)]
pub struct NewPortfolio {
    pub business_id: String,
    pub name: String,
    pub messaging_limit: Option<String>,
}

#[derive(Debug, Clone)]
pub struct NewAccount {
    pub waba_id: String,
    pub name: String,
    pub portfolio_id: Option<PortfolioId>,
}

#[derive(Debug, Clone)]
pub struct NewPhoneNumber {
    pub account_id: AccountId,
    /// The number's id in the Graph API.
    pub graph_id: String,
    pub display_number: String,
    pub normalized_number: String,
    pub verified_name: Option<String>,
    pub quality_rating: Option<String>,
    pub throughput_mps: i32,
    pub messaging_limit_tier: Option<String>,
}

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
    /// Inserts a portfolio, or updates the one with the same business id.
    pub async fn upsert_portfolio(&self, new: NewPortfolio, now: DateTime<Utc>) -> Result<Portfolio, StoreError> {
        let row = business_portfolio::ActiveModel {
            id: Set(PortfolioId::new()),
            business_id: Set(new.business_id.clone()),
            name: Set(new.name),
            messaging_limit: Set(new.messaging_limit),
            created_at: Set(now),
            updated_at: Set(now),
        };
        use business_portfolio::Column as C;
        business_portfolio::Entity::insert(row)
            .on_conflict(
                OnConflict::column(C::BusinessId).update_columns([C::Name, C::MessagingLimit, C::UpdatedAt]).to_owned(),
            )
            .exec_without_returning(&self.db)
            .await
            .map_err(|e| self.query_error(e))?;
        business_portfolio::Entity::find()
            .filter(C::BusinessId.eq(new.business_id))
            .one(&self.db)
            .await
            .map_err(|e| self.query_error(e))?
            .ok_or_else(|| self.missing("portfolio just upserted"))
    }

    /// Inserts an account, or updates the one with the same WABA id.
    pub async fn upsert_account(&self, new: NewAccount, now: DateTime<Utc>) -> Result<Account, StoreError> {
        let row = whatsapp_account::ActiveModel {
            id: Set(AccountId::new()),
            waba_id: Set(new.waba_id.clone()),
            name: Set(new.name),
            portfolio_id: Set(new.portfolio_id),
            created_at: Set(now),
            updated_at: Set(now),
        };
        use whatsapp_account::Column as C;
        whatsapp_account::Entity::insert(row)
            .on_conflict(
                OnConflict::column(C::WabaId).update_columns([C::Name, C::PortfolioId, C::UpdatedAt]).to_owned(),
            )
            .exec_without_returning(&self.db)
            .await
            .map_err(|e| self.query_error(e))?;
        whatsapp_account::Entity::find()
            .filter(C::WabaId.eq(new.waba_id))
            .one(&self.db)
            .await
            .map_err(|e| self.query_error(e))?
            .ok_or_else(|| self.missing("account just upserted"))
    }

    /// Inserts a phone number, or refreshes the one with the same Graph id.
    /// `connected_at` is kept from the first time the number was seen: only
    /// messages after it are recorded.
    pub async fn upsert_phone_number(
        &self,
        new: NewPhoneNumber,
        now: DateTime<Utc>,
    ) -> Result<PhoneNumber, StoreError> {
        let row = phone_number::ActiveModel {
            id: Set(PhoneNumberId::new()),
            account_id: Set(new.account_id),
            graph_id: Set(new.graph_id.clone()),
            display_number: Set(new.display_number),
            normalized_number: Set(new.normalized_number),
            verified_name: Set(new.verified_name),
            quality_rating: Set(new.quality_rating),
            throughput_mps: Set(new.throughput_mps),
            messaging_limit_tier: Set(new.messaging_limit_tier),
            status: Set(None),
            paused_at: Set(None),
            pause_reason: Set(None),
            pause_scope: Set(None),
            connected_at: Set(now),
            created_at: Set(now),
            updated_at: Set(now),
        };
        use phone_number::Column as C;
        phone_number::Entity::insert(row)
            .on_conflict(
                OnConflict::column(C::GraphId)
                    .update_columns([
                        C::DisplayNumber,
                        C::NormalizedNumber,
                        C::VerifiedName,
                        C::QualityRating,
                        C::ThroughputMps,
                        C::MessagingLimitTier,
                        C::UpdatedAt,
                    ])
                    .to_owned(),
            )
            .exec_without_returning(&self.db)
            .await
            .map_err(|e| self.query_error(e))?;
        self.phone_number_by_graph_id(&new.graph_id).await?.ok_or_else(|| self.missing("phone number just upserted"))
    }

    /// Every business number, by display number.
    pub async fn phone_numbers(&self) -> Result<Vec<PhoneNumber>, StoreError> {
        phone_number::Entity::find()
            .order_by_asc(phone_number::Column::DisplayNumber)
            .all(&self.db)
            .await
            .map_err(|e| self.query_error(e))
    }

    /// The number with this Graph API id (what webhooks and sends name).
    pub async fn phone_number_by_graph_id(&self, graph_id: &str) -> Result<Option<PhoneNumber>, StoreError> {
        phone_number::Entity::find()
            .filter(phone_number::Column::GraphId.eq(graph_id))
            .one(&self.db)
            .await
            .map_err(|e| self.query_error(e))
    }

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

    /// Every account with its numbers and templates, for validating send steps.
    pub async fn catalog(&self) -> Result<crate::workflow::Catalog, StoreError> {
        use crate::workflow::catalog::{CatalogAccount, CatalogNumber, CatalogTemplate};
        let accounts = whatsapp_account::Entity::find().all(&self.db).await.map_err(|e| self.query_error(e))?;
        let numbers = phone_number::Entity::find().all(&self.db).await.map_err(|e| self.query_error(e))?;
        let templates = template::Entity::find().all(&self.db).await.map_err(|e| self.query_error(e))?;
        let accounts = accounts
            .into_iter()
            .map(|account| CatalogAccount {
                waba_id: account.waba_id.clone(),
                numbers: numbers
                    .iter()
                    .filter(|n| n.account_id == account.id)
                    .map(|n| CatalogNumber { id: n.graph_id.clone(), display_phone_number: n.display_number.clone() })
                    .collect(),
                templates: templates
                    .iter()
                    .filter(|t| t.account_id == account.id)
                    .map(|t| CatalogTemplate {
                        name: t.name.clone(),
                        language: t.language.clone(),
                        status: t.status.clone(),
                        category: t.category.clone(),
                        parameter_format: t.parameter_format.clone(),
                        components: t.components.as_array().cloned().unwrap_or_default(),
                    })
                    .collect(),
            })
            .collect();
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
        let people = crate::workflow::catalog::CatalogPeople {
            users: users.into_iter().map(|u| u.email).collect(),
            teams: teams.into_iter().map(|t| t.name).collect(),
        };
        Ok(crate::workflow::Catalog { accounts, people: Some(people) })
    }

    pub(crate) fn missing(&self, what: &str) -> StoreError {
        self.query_error(sea_orm::DbErr::RecordNotFound(what.to_string()))
    }
}
