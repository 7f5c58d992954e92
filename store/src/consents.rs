//! Consent per contact and business number, with its audit trail.

use chrono::{DateTime, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::OnConflict;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use uuid::Uuid;

use super::entities::{consent, consent_event};
use super::tx::On;
use super::{Store, StoreError, Tx};
use kairo_core::ids::{ContactId, PhoneNumberId, Wamid};
use kairo_core::status::{ConsentSource, ConsentStatus};

pub type Consent = consent::Model;

pub type ConsentEvent = consent_event::Model;

/// A change of a contact's consent on one business number.
#[derive(Debug, Clone)]
pub struct ConsentChange {
    pub contact_id: ContactId,
    pub phone_number_id: PhoneNumberId,
    pub status: ConsentStatus,
    pub source: ConsentSource,
    pub keyword: Option<String>,
    pub wamid: Option<Wamid>,
}

impl ConsentChange {
    /// A change made through the HTTP API (no keyword, no message).
    pub fn from_api(contact: ContactId, number: PhoneNumberId, status: ConsentStatus) -> ConsentChange {
        ConsentChange {
            contact_id: contact,
            phone_number_id: number,
            status,
            source: ConsentSource::Api,
            keyword: None,
            wamid: None,
        }
    }
}

/// The consent row (inserted or changed) and its audit entry, in the
/// caller's transaction.
pub(super) async fn write_consent<C: sea_orm::ConnectionTrait>(
    db: &C,
    change: ConsentChange,
    now: DateTime<Utc>,
) -> Result<(), sea_orm::DbErr> {
    set_consent(db, change.contact_id, change.phone_number_id, change.status, now).await?;
    audit_consent(db, change, now).await
}

/// The contact's consent on the number is `status` since `at`.
async fn set_consent<C: sea_orm::ConnectionTrait>(
    db: &C,
    contact: ContactId,
    number: PhoneNumberId,
    status: ConsentStatus,
    at: DateTime<Utc>,
) -> Result<(), sea_orm::DbErr> {
    use consent::Column as C;
    let current = consent::ActiveModel {
        id: Set(Uuid::now_v7()),
        contact_id: Set(contact),
        phone_number_id: Set(number),
        status: Set(status),
        changed_at: Set(at),
    };
    consent::Entity::insert(current)
        .on_conflict(
            OnConflict::columns([C::ContactId, C::PhoneNumberId]).update_columns([C::Status, C::ChangedAt]).to_owned(),
        )
        .exec_without_returning(db)
        .await?;
    Ok(())
}

/// An entry of the audit trail: who said what, when.
async fn audit_consent<C: sea_orm::ConnectionTrait>(
    db: &C,
    change: ConsentChange,
    occurred_at: DateTime<Utc>,
) -> Result<(), sea_orm::DbErr> {
    let audit = consent_event::ActiveModel {
        id: Set(Uuid::now_v7()),
        contact_id: Set(change.contact_id),
        phone_number_id: Set(change.phone_number_id),
        status: Set(change.status),
        source: Set(change.source),
        keyword: Set(change.keyword),
        wamid: Set(change.wamid),
        occurred_at: Set(occurred_at),
    };
    consent_event::Entity::insert(audit).exec_without_returning(db).await?;
    Ok(())
}

/// New contacts opted in on a number from the API, with their audit
/// entries: a few multi-row statements (chunks keep each under the
/// backends' bound-parameter limits).
pub(super) async fn opt_in_new_contacts<C: sea_orm::ConnectionTrait>(
    db: &C,
    ids: &[ContactId],
    number: PhoneNumberId,
    now: DateTime<Utc>,
) -> Result<(), sea_orm::DbErr> {
    for chunk in ids.chunks(500) {
        let consents = chunk.iter().map(|id| consent::ActiveModel {
            id: Set(Uuid::now_v7()),
            contact_id: Set(*id),
            phone_number_id: Set(number),
            status: Set(ConsentStatus::OptedIn),
            changed_at: Set(now),
        });
        consent::Entity::insert_many(consents).exec_without_returning(db).await?;
        let audits = chunk.iter().map(|id| consent_event::ActiveModel {
            id: Set(Uuid::now_v7()),
            contact_id: Set(*id),
            phone_number_id: Set(number),
            status: Set(ConsentStatus::OptedIn),
            source: Set(ConsentSource::Api),
            keyword: Set(None),
            wamid: Set(None),
            occurred_at: Set(now),
        });
        consent_event::Entity::insert_many(audits).exec_without_returning(db).await?;
    }
    Ok(())
}

async fn consent_of(on: &impl On, contact: ContactId, number: PhoneNumberId) -> Result<Option<Consent>, StoreError> {
    consent::Entity::find()
        .filter(consent::Column::ContactId.eq(contact))
        .filter(consent::Column::PhoneNumberId.eq(number))
        .one(on.conn())
        .await
        .map_err(|e| on.error(e))
}

impl Store {
    /// Records a consent change and its audit entry in one transaction.
    /// Idempotent in effect: a change to the state already held still leaves
    /// an audit entry (who said YES twice is worth knowing) but changes nothing.
    pub async fn record_consent(&self, change: ConsentChange, now: DateTime<Utc>) -> Result<Consent, StoreError> {
        let (contact, number) = (change.contact_id, change.phone_number_id);
        let txn = self.begin_write().await.map_err(|e| self.query_error(e))?;
        write_consent(&txn, change, now).await.map_err(|e| self.query_error(e))?;
        txn.commit().await.map_err(|e| self.query_error(e))?;
        self.consent(contact, number).await?.ok_or_else(|| self.missing("consent just recorded"))
    }

    /// The contact's current consent on this number; `None` means never asked.
    pub async fn consent(&self, contact: ContactId, number: PhoneNumberId) -> Result<Option<Consent>, StoreError> {
        consent_of(self, contact, number).await
    }

    /// The audit trail of the contact's consent on this number, oldest first.
    pub async fn consent_history(
        &self,
        contact: ContactId,
        number: PhoneNumberId,
    ) -> Result<Vec<ConsentEvent>, StoreError> {
        consent_event::Entity::find()
            .filter(consent_event::Column::ContactId.eq(contact))
            .filter(consent_event::Column::PhoneNumberId.eq(number))
            .order_by_asc(consent_event::Column::OccurredAt)
            .order_by_asc(consent_event::Column::Id)
            .all(&self.db)
            .await
            .map_err(|e| self.query_error(e))
    }
}

impl Tx {
    /// The contact's current consent on this number; `None` means never asked.
    pub async fn consent(&self, contact: ContactId, number: PhoneNumberId) -> Result<Option<Consent>, StoreError> {
        consent_of(self, contact, number).await
    }

    /// Sets the contact's consent on the number, held since `at`, without an
    /// audit entry (see [`Tx::audit_consent`]).
    pub async fn set_consent(
        &self,
        contact: ContactId,
        number: PhoneNumberId,
        status: ConsentStatus,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        set_consent(&self.txn, contact, number, status, at).await.map_err(|e| self.err(e))
    }

    /// Adds a change to the audit trail, whether or not it changed the state.
    pub async fn audit_consent(&self, change: ConsentChange, occurred_at: DateTime<Utc>) -> Result<(), StoreError> {
        audit_consent(&self.txn, change, occurred_at).await.map_err(|e| self.err(e))
    }

    pub async fn consents(&self, contact: ContactId) -> Result<Vec<Consent>, StoreError> {
        consent::Entity::find()
            .filter(consent::Column::ContactId.eq(contact))
            .all(&self.txn)
            .await
            .map_err(|e| self.err(e))
    }

    /// Records a consent change from the API with its audit entry.
    pub async fn record_api_consent(
        &self,
        contact: ContactId,
        number: PhoneNumberId,
        status: ConsentStatus,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let change = ConsentChange::from_api(contact, number, status);
        write_consent(&self.txn, change, now).await.map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Opts a contact in on a number from the API, unless already opted in.
    pub async fn opt_in(
        &self,
        contact: ContactId,
        number: PhoneNumberId,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let current = self.consents(contact).await?;
        if current.iter().any(|c| c.phone_number_id == number && c.status == ConsentStatus::OptedIn) {
            return Ok(());
        }
        self.record_api_consent(contact, number, ConsentStatus::OptedIn, now).await
    }
}

impl Tx {
    /// The consents of many contacts.
    pub async fn consents_of_contacts(&self, contacts: &[ContactId]) -> Result<Vec<Consent>, StoreError> {
        self.select_in_chunks(contacts, |chunk| {
            consent::Entity::find().filter(consent::Column::ContactId.is_in(chunk.iter().copied()))
        })
        .await
    }
}
