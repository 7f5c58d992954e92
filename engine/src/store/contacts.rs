//! Contacts and their consent, with its audit trail.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder};
use uuid::Uuid;

use super::entities::{consent, consent_event, contact};
use super::status::{ConsentSource, ConsentStatus};
use super::{Store, StoreError};
use crate::ids::{ContactId, PhoneNumberId, Wamid};

pub type Contact = contact::Model;
pub type Consent = consent::Model;
pub type ConsentEvent = consent_event::Model;

/// A contact to create. Phone numbers are already normalised (digits of the
/// international form).
#[derive(Debug, Clone, Default)]
pub struct NewContact {
    pub name: Option<String>,
    pub phone: Option<String>,
    pub mobile_phone: Option<String>,
    pub wa_id: Option<String>,
    pub user_id: Option<String>,
    pub properties: serde_json::Value,
}

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

impl Store {
    pub async fn insert_contact(&self, new: NewContact, now: DateTime<Utc>) -> Result<Contact, StoreError> {
        let row = contact::ActiveModel {
            id: Set(ContactId::new()),
            name: Set(new.name),
            phone: Set(new.phone),
            mobile_phone: Set(new.mobile_phone),
            wa_id: Set(new.wa_id),
            user_id: Set(new.user_id),
            properties: Set(if new.properties.is_null() { serde_json::json!({}) } else { new.properties }),
            created_at: Set(now),
            updated_at: Set(now),
        };
        let phone = row.phone.clone().unwrap();
        contact::Entity::insert(row)
            .exec_with_returning(&self.db)
            .await
            .map_err(|e| self.insert_error(e, || format!("a contact with the phone {}", phone.unwrap_or_default())))
    }

    /// Inserts many contacts in one transaction, opted in on `opted_in_on`
    /// when given (with an audit entry from the API). Returns their ids in order.
    pub async fn import_contacts(
        &self,
        news: Vec<NewContact>,
        opted_in_on: Option<PhoneNumberId>,
        now: DateTime<Utc>,
    ) -> Result<Vec<ContactId>, StoreError> {
        let ids: Vec<ContactId> = news.iter().map(|_| ContactId::new()).collect();
        if ids.is_empty() {
            return Ok(ids);
        }
        let _turn = self.write_turn().await;
        let txn = self.begin_write().await.map_err(|e| self.query_error(e))?;
        // Chunks keep each statement under the backends' bound-parameter limits.
        let rows: Vec<contact::ActiveModel> = news
            .into_iter()
            .zip(&ids)
            .map(|(new, id)| contact::ActiveModel {
                id: Set(*id),
                name: Set(new.name),
                phone: Set(new.phone),
                mobile_phone: Set(new.mobile_phone),
                wa_id: Set(new.wa_id),
                user_id: Set(new.user_id),
                properties: Set(if new.properties.is_null() { serde_json::json!({}) } else { new.properties }),
                created_at: Set(now),
                updated_at: Set(now),
            })
            .collect();
        for chunk in rows.chunks(500) {
            contact::Entity::insert_many(chunk.to_vec())
                .exec_without_returning(&txn)
                .await
                .map_err(|e| self.query_error(e))?;
        }
        if let Some(number) = opted_in_on {
            for chunk in ids.chunks(500) {
                let consents = chunk.iter().map(|id| consent::ActiveModel {
                    id: Set(Uuid::now_v7()),
                    contact_id: Set(*id),
                    phone_number_id: Set(number),
                    status: Set(ConsentStatus::OptedIn),
                    changed_at: Set(now),
                });
                consent::Entity::insert_many(consents)
                    .exec_without_returning(&txn)
                    .await
                    .map_err(|e| self.query_error(e))?;
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
                consent_event::Entity::insert_many(audits)
                    .exec_without_returning(&txn)
                    .await
                    .map_err(|e| self.query_error(e))?;
            }
        }
        txn.commit().await.map_err(|e| self.query_error(e))?;
        Ok(ids)
    }

    pub async fn contact(&self, id: ContactId) -> Result<Option<Contact>, StoreError> {
        contact::Entity::find_by_id(id).one(&self.db).await.map_err(|e| self.query_error(e))
    }

    /// Contacts whose `phone` or `mobile_phone` is this normalised number,
    /// oldest first.
    pub async fn contacts_by_phone(&self, normalized: &str) -> Result<Vec<Contact>, StoreError> {
        contact::Entity::find()
            .filter(
                Condition::any()
                    .add(contact::Column::Phone.eq(normalized))
                    .add(contact::Column::MobilePhone.eq(normalized)),
            )
            .order_by_asc(contact::Column::CreatedAt)
            .all(&self.db)
            .await
            .map_err(|e| self.query_error(e))
    }

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
        consent::Entity::find()
            .filter(consent::Column::ContactId.eq(contact))
            .filter(consent::Column::PhoneNumberId.eq(number))
            .one(&self.db)
            .await
            .map_err(|e| self.query_error(e))
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

/// The consent row (inserted or changed) and its audit entry, in the
/// caller's transaction.
pub(super) async fn write_consent<C: sea_orm::ConnectionTrait>(
    db: &C,
    change: ConsentChange,
    now: DateTime<Utc>,
) -> Result<(), sea_orm::DbErr> {
    use consent::Column as C;
    let current = consent::ActiveModel {
        id: Set(Uuid::now_v7()),
        contact_id: Set(change.contact_id),
        phone_number_id: Set(change.phone_number_id),
        status: Set(change.status),
        changed_at: Set(now),
    };
    consent::Entity::insert(current)
        .on_conflict(
            OnConflict::columns([C::ContactId, C::PhoneNumberId]).update_columns([C::Status, C::ChangedAt]).to_owned(),
        )
        .exec_without_returning(db)
        .await?;
    let audit = consent_event::ActiveModel {
        id: Set(Uuid::now_v7()),
        contact_id: Set(change.contact_id),
        phone_number_id: Set(change.phone_number_id),
        status: Set(change.status),
        source: Set(change.source),
        keyword: Set(change.keyword),
        wamid: Set(change.wamid),
        occurred_at: Set(now),
    };
    consent_event::Entity::insert(audit).exec_without_returning(db).await?;
    Ok(())
}
