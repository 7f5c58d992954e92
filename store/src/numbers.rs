//! Business numbers' health: pauses that stop sends until an operator
//! resumes them, and what quality webhooks, account restrictions and the
//! catalogue sync say about a number.
//!
//! A pause has a scope ([`PauseScope`]): a quality drop stops marketing
//! templates only (service replies and utility templates still go); bad
//! credentials or a restricted account stop every send. Pauses widen
//! (marketing → all) but never narrow by themselves, and only an operator
//! lifts one ([`Store::resume_number`]): Meta flagging a number again
//! minutes later is worse than a marketer waiting for a look.
//!
//! Also the account hierarchy they belong to: business portfolios, WhatsApp
//! business accounts and their phone numbers, as the catalogue sync finds them.

use chrono::{DateTime, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder};

use super::entities::{business_portfolio, phone_number, whatsapp_account};
use super::tx::On;
use super::{Store, StoreError, Tx};
use kairo_core::ids::{AccountId, PhoneNumberId, PortfolioId};

pub type Portfolio = business_portfolio::Model;

pub type Account = whatsapp_account::Model;

pub type PhoneNumber = phone_number::Model;

impl phone_number::Model {
    /// Whether `written` names this business number: its Graph id, or the
    /// digits of its display form however they are written. The one way
    /// workflows, the API and the CLI find a number.
    pub fn answers_to(&self, written: &str) -> bool {
        kairo_core::phone::names_number(written, &self.graph_id, &self.normalized_number)
    }
}

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

/// What a number's pause stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PauseScope {
    /// Marketing templates wait; other sends go on.
    Marketing,
    /// Every send waits.
    All,
}

impl PauseScope {
    pub fn as_str(self) -> &'static str {
        match self {
            PauseScope::Marketing => "marketing",
            PauseScope::All => "all",
        }
    }

    /// The scope a number row holds; None when it is not paused.
    pub fn of(number: &PhoneNumber) -> Option<PauseScope> {
        number.paused_at?;
        Some(match number.pause_scope.as_deref() {
            Some("marketing") => PauseScope::Marketing,
            _ => PauseScope::All,
        })
    }

    /// Whether this pause holds back a send of a template of `category`
    /// (None: free-form text inside the service window).
    pub fn stops(self, category: Option<&str>) -> bool {
        match self {
            PauseScope::All => true,
            PauseScope::Marketing => category.is_some_and(|c| c.eq_ignore_ascii_case("MARKETING")),
        }
    }
}

/// Number events that pause marketing sends: Meta's quality flag and a
/// downgrade of the number's limit.
const QUALITY_DROPS: &[&str] = &["FLAGGED", "DOWNGRADE"];

/// Catalogue values of a number that pause marketing sends.
const LOW_QUALITY_RATINGS: &[&str] = &["RED", "LOW"];

const TROUBLED_STATUSES: &[&str] = &["FLAGGED", "RESTRICTED"];

/// Applies a `phone_number_quality_update` webhook inside the ingest
/// transaction: the limit it names, and a marketing pause on a quality
/// drop. Returns the number and pause reason when it paused now.
async fn apply_quality_change<C: ConnectionTrait>(
    db: &C,
    account_waba_id: &str,
    change: &kairo_core::channel::NumberQualityChange,
    now: DateTime<Utc>,
) -> Result<Option<(PhoneNumber, String)>, sea_orm::DbErr> {
    let digits = kairo_core::phone::PhoneDigits::of(&change.display_number).into_string();
    let mut query = phone_number::Entity::find().filter(phone_number::Column::NormalizedNumber.eq(digits));
    if let Some(account) =
        whatsapp_account::Entity::find().filter(whatsapp_account::Column::WabaId.eq(account_waba_id)).one(db).await?
    {
        query = query.filter(phone_number::Column::AccountId.eq(account.id));
    }
    let Some(number) = query.one(db).await? else { return Ok(None) };
    if let Some(limit) = change.current_limit.as_deref().filter(|l| !l.is_empty()) {
        phone_number::Entity::update_many()
            .col_expr(phone_number::Column::MessagingLimitTier, Expr::value(limit))
            .col_expr(phone_number::Column::UpdatedAt, Expr::value(now))
            .filter(phone_number::Column::Id.eq(number.id))
            .exec(db)
            .await?;
    }
    let event = change.event.to_ascii_uppercase();
    if !QUALITY_DROPS.contains(&event.as_str()) {
        return Ok(None);
    }
    let reason = format!("quality webhook {event}");
    Ok(pause(db, number.id, PauseScope::Marketing, &reason, now).await?.then_some((number, reason)))
}

/// Pauses every number of an account (an `account_update` restriction of
/// business-initiated messaging). Returns the numbers paused now.
async fn pause_account<C: ConnectionTrait>(
    db: &C,
    account_waba_id: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<Vec<PhoneNumber>, sea_orm::DbErr> {
    let Some(account) =
        whatsapp_account::Entity::find().filter(whatsapp_account::Column::WabaId.eq(account_waba_id)).one(db).await?
    else {
        return Ok(Vec::new());
    };
    let mut paused = Vec::new();
    for number in phone_number::Entity::find().filter(phone_number::Column::AccountId.eq(account.id)).all(db).await? {
        if pause(db, number.id, PauseScope::All, reason, now).await? {
            paused.push(number);
        }
    }
    Ok(paused)
}

async fn pause<C: ConnectionTrait>(
    db: &C,
    id: PhoneNumberId,
    scope: PauseScope,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<bool, sea_orm::DbErr> {
    let Some(number) = phone_number::Entity::find_by_id(id).one(db).await? else { return Ok(false) };
    let current = PauseScope::of(&number);
    if current == Some(PauseScope::All) || current == Some(scope) {
        return Ok(false);
    }
    phone_number::Entity::update_many()
        .col_expr(phone_number::Column::PausedAt, Expr::value(number.paused_at.unwrap_or(now)))
        .col_expr(phone_number::Column::PauseReason, Expr::value(reason))
        .col_expr(phone_number::Column::PauseScope, Expr::value(scope.as_str()))
        .col_expr(phone_number::Column::UpdatedAt, Expr::value(now))
        .filter(phone_number::Column::Id.eq(id))
        .exec(db)
        .await?;
    Ok(true)
}

async fn all_numbers(on: &impl On) -> Result<Vec<PhoneNumber>, StoreError> {
    phone_number::Entity::find()
        .order_by_asc(phone_number::Column::DisplayNumber)
        .all(on.conn())
        .await
        .map_err(|e| on.error(e))
}

async fn number_by_graph_id(on: &impl On, graph_id: &str) -> Result<Option<PhoneNumber>, StoreError> {
    phone_number::Entity::find()
        .filter(phone_number::Column::GraphId.eq(graph_id))
        .one(on.conn())
        .await
        .map_err(|e| on.error(e))
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
        all_numbers(self).await
    }

    /// The number with this Graph API id (what webhooks and sends name).
    pub async fn phone_number_by_graph_id(&self, graph_id: &str) -> Result<Option<PhoneNumber>, StoreError> {
        number_by_graph_id(self, graph_id).await
    }

    /// Pauses a number's sends. An existing pause keeps its time and reason
    /// unless this one is wider. True when the number was not paused this
    /// widely before (the caller tells the operator).
    pub async fn pause_number(
        &self,
        id: PhoneNumberId,
        scope: PauseScope,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let _turn = self.write_turn().await;
        pause(&self.db, id, scope, reason, now).await.map_err(|e| self.query_error(e))
    }

    /// Lifts a number's pause (an operator's action). True when it was
    /// paused. The sends the pause held back are due at once, not when
    /// their next look would have come.
    pub async fn resume_number(&self, id: PhoneNumberId, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let tx = self.begin().await?;
        let res = phone_number::Entity::update_many()
            .col_expr(phone_number::Column::PausedAt, Expr::value(Option::<DateTime<Utc>>::None))
            .col_expr(phone_number::Column::PauseReason, Expr::value(Option::<String>::None))
            .col_expr(phone_number::Column::PauseScope, Expr::value(Option::<String>::None))
            .col_expr(phone_number::Column::UpdatedAt, Expr::value(now))
            .filter(phone_number::Column::Id.eq(id))
            .filter(phone_number::Column::PausedAt.is_not_null())
            .exec(&tx.txn)
            .await
            .map_err(|e| tx.err(e))?;
        let display =
            phone_number::Entity::find_by_id(id).one(&tx.txn).await.map_err(|e| tx.err(e))?.map(|n| n.display_number);
        if let Some(display) = display {
            tx.release_held_steps(&display, now).await?;
        }
        tx.commit().await?;
        Ok(res.rows_affected == 1)
    }

    /// Records what the catalogue says of a number's health (quality
    /// rating, status) and pauses its marketing sends when that is low,
    /// flagged or restricted. Returns the pause reason when it paused now.
    pub async fn note_number_health(
        &self,
        id: PhoneNumberId,
        quality_rating: Option<&str>,
        status: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Option<String>, StoreError> {
        let _turn = self.write_turn().await;
        phone_number::Entity::update_many()
            .col_expr(phone_number::Column::Status, Expr::value(status.map(str::to_string)))
            .filter(phone_number::Column::Id.eq(id))
            .exec(&self.db)
            .await
            .map_err(|e| self.query_error(e))?;
        let reason = match (quality_rating, status) {
            (Some(q), _) if LOW_QUALITY_RATINGS.iter().any(|l| l.eq_ignore_ascii_case(q)) => {
                format!("quality rating {q}")
            }
            (_, Some(s)) if TROUBLED_STATUSES.iter().any(|t| t.eq_ignore_ascii_case(s)) => format!("number status {s}"),
            _ => return Ok(None),
        };
        let paused = pause(&self.db, id, PauseScope::Marketing, &reason, now).await.map_err(|e| self.query_error(e))?;
        Ok(paused.then_some(reason))
    }
}

impl Tx {
    /// The connected number with this Graph id.
    pub async fn phone_number_by_graph_id(&self, graph_id: &str) -> Result<Option<PhoneNumber>, StoreError> {
        number_by_graph_id(self, graph_id).await
    }

    /// Applies a number's quality change: the limit it names, and a marketing
    /// pause on a quality drop. Returns the number and pause reason when it
    /// paused now.
    pub async fn apply_quality_change(
        &self,
        account_waba_id: &str,
        change: &kairo_core::channel::NumberQualityChange,
        now: DateTime<Utc>,
    ) -> Result<Option<(PhoneNumber, String)>, StoreError> {
        apply_quality_change(&self.txn, account_waba_id, change, now).await.map_err(|e| self.err(e))
    }

    /// Pauses every number of an account. Returns the numbers paused now.
    pub async fn pause_account(
        &self,
        account_waba_id: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<PhoneNumber>, StoreError> {
        pause_account(&self.txn, account_waba_id, reason, now).await.map_err(|e| self.err(e))
    }

    /// Every business number, by display number.
    pub async fn phone_numbers(&self) -> Result<Vec<PhoneNumber>, StoreError> {
        all_numbers(self).await
    }
}
