//! Contacts: who a business talks to, their phones and properties.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::entities::{consent, contact};
use super::paging::{Page, page};
use super::tx::On;
use super::{Store, StoreError, Tx};
use kairo_core::ids::{ContactId, PhoneNumberId};
use kairo_core::status::ConsentStatus;

/// A change to a contact; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct ContactUpdate {
    pub name: Option<String>,
    pub phone: Option<String>,
    pub mobile_phone: Option<String>,
    /// Merged into the properties: a key set to `null` is removed.
    pub properties: Option<serde_json::Map<String, serde_json::Value>>,
}

/// `updates` merged into `properties`: keys set to `null` are removed.
pub fn merge_properties(
    properties: serde_json::Value,
    updates: serde_json::Map<String, serde_json::Value>,
) -> serde_json::Value {
    let mut merged = match properties {
        serde_json::Value::Object(map) => map,
        _ => serde_json::Map::new(),
    };
    for (key, value) in updates {
        if value.is_null() {
            merged.remove(&key);
        } else {
            merged.insert(key, value);
        }
    }
    serde_json::Value::Object(merged)
}

pub type Contact = contact::Model;

/// Ids a contact is known by on WhatsApp, learned from a message; `None`
/// leaves one as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContactIds {
    pub phone: Option<String>,
    pub wa_id: Option<String>,
    pub user_id: Option<String>,
}

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

async fn contact_by_id(on: &impl On, id: ContactId) -> Result<Option<Contact>, StoreError> {
    contact::Entity::find_by_id(id).one(on.conn()).await.map_err(|e| on.error(e))
}

impl Store {
    /// Contacts, newest first; `phone` narrows to a normalised number.
    pub async fn list_contacts(
        &self,
        phone: Option<&str>,
        before: Option<ContactId>,
        limit: u64,
    ) -> Result<Page<Contact>, StoreError> {
        let mut query = contact::Entity::find().order_by_desc(contact::Column::Id);
        if let Some(phone) = phone {
            query = query.filter(
                Condition::any().add(contact::Column::Phone.eq(phone)).add(contact::Column::MobilePhone.eq(phone)),
            );
        }
        if let Some(before) = before {
            query = query.filter(contact::Column::Id.lt(before));
        }
        let rows = query.limit(limit + 1).all(&self.db).await.map_err(|e| self.query_error(e))?;
        Ok(page(rows, limit, |c| c.id.to_string()))
    }

    /// Applies `change` to a contact; `None` when there is no such contact.
    pub async fn update_contact(
        &self,
        id: ContactId,
        change: ContactUpdate,
        now: DateTime<Utc>,
    ) -> Result<Option<Contact>, StoreError> {
        let Some(current) = self.contact(id).await? else { return Ok(None) };
        let mut row: contact::ActiveModel = current.clone().into();
        if let Some(name) = change.name {
            row.name = Set(Some(name));
        }
        if let Some(phone) = change.phone {
            row.phone = Set(Some(phone));
        }
        if let Some(mobile) = change.mobile_phone {
            row.mobile_phone = Set(Some(mobile));
        }
        if let Some(updates) = change.properties {
            row.properties = Set(merge_properties(current.properties, updates));
        }
        row.updated_at = Set(now);
        contact::Entity::update(row)
            .exec(&self.db)
            .await
            .map_err(|e| self.insert_error(e, || "a contact with this phone".into()))
            .map(Some)
    }

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
            super::consents::opt_in_new_contacts(&txn, &ids, number, now).await.map_err(|e| self.query_error(e))?;
        }
        txn.commit().await.map_err(|e| self.query_error(e))?;
        Ok(ids)
    }

    pub async fn contact(&self, id: ContactId) -> Result<Option<Contact>, StoreError> {
        contact_by_id(self, id).await
    }

    /// Contacts by id (a page of the inbox's list names them), in chunks
    /// that stay under SQLite's parameter limit.
    pub async fn contacts_by_ids(&self, ids: &[ContactId]) -> Result<Vec<Contact>, StoreError> {
        let mut found = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(500) {
            let rows = contact::Entity::find()
                .filter(contact::Column::Id.is_in(chunk.iter().copied()))
                .all(&self.db)
                .await
                .map_err(|e| self.query_error(e))?;
            found.extend(rows);
        }
        Ok(found)
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
}

impl Tx {
    pub async fn contact(&self, id: ContactId) -> Result<Option<Contact>, StoreError> {
        contact_by_id(self, id).await
    }

    /// The oldest contact with this WhatsApp id.
    pub async fn contact_by_wa_id(&self, wa_id: &str) -> Result<Option<Contact>, StoreError> {
        self.oldest_contact(Condition::all().add(contact::Column::WaId.eq(wa_id))).await
    }

    /// The oldest contact whose phone or mobile phone is these digits.
    pub async fn contact_by_phone(&self, digits: &str) -> Result<Option<Contact>, StoreError> {
        let either =
            Condition::any().add(contact::Column::Phone.eq(digits)).add(contact::Column::MobilePhone.eq(digits));
        self.oldest_contact(either).await
    }

    /// The oldest contact with this business-scoped WhatsApp user id.
    pub async fn contact_by_user_id(&self, user_id: &str) -> Result<Option<Contact>, StoreError> {
        self.oldest_contact(Condition::all().add(contact::Column::UserId.eq(user_id))).await
    }

    async fn oldest_contact(&self, condition: Condition) -> Result<Option<Contact>, StoreError> {
        contact::Entity::find()
            .filter(condition)
            .order_by_asc(contact::Column::CreatedAt)
            .order_by_asc(contact::Column::Id)
            .one(&self.txn)
            .await
            .map_err(|e| self.err(e))
    }

    /// Sets the ids given (the others stay as they are).
    pub async fn set_contact_ids(
        &self,
        contact: Contact,
        ids: ContactIds,
        now: DateTime<Utc>,
    ) -> Result<Contact, StoreError> {
        use sea_orm::{ActiveModelTrait, IntoActiveModel};
        let mut row = contact.into_active_model();
        if let Some(phone) = ids.phone {
            row.phone = Set(Some(phone));
        }
        if let Some(wa_id) = ids.wa_id {
            row.wa_id = Set(Some(wa_id));
        }
        if let Some(user_id) = ids.user_id {
            row.user_id = Set(Some(user_id));
        }
        row.updated_at = Set(now);
        row.update(&self.txn).await.map_err(|e| self.err(e))
    }

    /// Inserts a contact unless its phone is another's already (an API call
    /// may have given the number a contact a moment ago): `None` then.
    pub async fn insert_contact_unless_taken(
        &self,
        new: NewContact,
        now: DateTime<Utc>,
    ) -> Result<Option<Contact>, StoreError> {
        let id = ContactId::new();
        let row = contact::ActiveModel {
            id: Set(id),
            name: Set(new.name),
            phone: Set(new.phone),
            mobile_phone: Set(new.mobile_phone),
            wa_id: Set(new.wa_id),
            user_id: Set(new.user_id),
            properties: Set(if new.properties.is_null() { serde_json::json!({}) } else { new.properties }),
            created_at: Set(now),
            updated_at: Set(now),
        };
        contact::Entity::insert(row)
            .on_conflict(sea_orm::sea_query::OnConflict::new().do_nothing().to_owned())
            .exec_without_returning(&self.txn)
            .await
            .map_err(|e| self.err(e))?;
        self.contact(id).await
    }

    /// Merges `patch` into a contact's properties.
    pub async fn set_contact_properties(
        &self,
        id: ContactId,
        patch: &serde_json::Map<String, serde_json::Value>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let Some(row) = self.contact(id).await? else { return Ok(()) };
        let mut properties = match row.properties {
            serde_json::Value::Object(map) => map,
            _ => serde_json::Map::new(),
        };
        for (k, v) in patch {
            properties.insert(k.clone(), v.clone());
        }
        contact::Entity::update_many()
            .col_expr(contact::Column::Properties, Expr::value(serde_json::Value::Object(properties)))
            .col_expr(contact::Column::UpdatedAt, Expr::value(now))
            .filter(contact::Column::Id.eq(id))
            .exec(&self.txn)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Contacts opted in on a number (all contacts when `number` is None).
    pub async fn audience(&self, number: Option<PhoneNumberId>) -> Result<Vec<Contact>, StoreError> {
        match number {
            None => contact::Entity::find().all(&self.txn).await.map_err(|e| self.err(e)),
            Some(number) => {
                let ids: Vec<ContactId> = consent::Entity::find()
                    .select_only()
                    .column(consent::Column::ContactId)
                    .filter(consent::Column::PhoneNumberId.eq(number))
                    .filter(consent::Column::Status.eq(ConsentStatus::OptedIn))
                    .into_tuple()
                    .all(&self.txn)
                    .await
                    .map_err(|e| self.err(e))?;
                contact::Entity::find()
                    .filter(contact::Column::Id.is_in(ids))
                    .order_by_asc(contact::Column::Id)
                    .all(&self.txn)
                    .await
                    .map_err(|e| self.err(e))
            }
        }
    }
}

impl Tx {
    /// Contacts whose `phone` or `mobile_phone` is one of `phones`
    /// (normalised), oldest first.
    pub async fn contacts_by_phones(&self, phones: &[String]) -> Result<Vec<Contact>, StoreError> {
        self.select_in_chunks(phones, |chunk| {
            contact::Entity::find()
                .filter(
                    sea_orm::Condition::any()
                        .add(contact::Column::Phone.is_in(chunk.iter().cloned()))
                        .add(contact::Column::MobilePhone.is_in(chunk.iter().cloned())),
                )
                .order_by_asc(contact::Column::CreatedAt)
        })
        .await
    }

    /// Contacts by id.
    pub async fn contacts_by_ids(&self, ids: &[ContactId]) -> Result<Vec<Contact>, StoreError> {
        self.select_in_chunks(ids, |chunk| {
            contact::Entity::find().filter(contact::Column::Id.is_in(chunk.iter().copied()))
        })
        .await
    }

    /// Inserts contacts in multi-row statements; returns the contacts of
    /// their phones. A phone another transaction gave a contact meanwhile
    /// (phones are unique) is not inserted again: that contact is returned.
    pub async fn insert_contacts(&self, news: Vec<NewContact>, now: DateTime<Utc>) -> Result<Vec<Contact>, StoreError> {
        let rows: Vec<Contact> = news
            .into_iter()
            .map(|new| Contact {
                id: ContactId::new(),
                name: new.name,
                phone: new.phone,
                mobile_phone: new.mobile_phone,
                wa_id: new.wa_id,
                user_id: new.user_id,
                properties: if new.properties.is_null() { serde_json::json!({}) } else { new.properties },
                created_at: now,
                updated_at: now,
            })
            .collect();
        for chunk in rows.chunks(self.store.rows_per_insert()) {
            let models = chunk.iter().cloned().map(contact::ActiveModel::from);
            contact::Entity::insert_many(models)
                .on_conflict(OnConflict::new().do_nothing().to_owned())
                .exec_without_returning(&self.txn)
                .await
                .map_err(|e| self.err(e))?;
        }
        let phones: Vec<String> = rows.iter().filter_map(|c| c.phone.clone()).collect();
        let mut stored: HashMap<String, Contact> = HashMap::new();
        for contact in self.contacts_by_phones(&phones).await? {
            if let Some(phone) = contact.phone.clone() {
                stored.insert(phone, contact);
            }
        }
        Ok(rows
            .into_iter()
            .map(|row| match row.phone.as_ref().and_then(|p| stored.get(p)) {
                Some(found) => found.clone(),
                None => row,
            })
            .collect())
    }

    /// Replaces a contact's properties, name and mobile phone (an upsert's
    /// merge, done by the caller).
    pub async fn replace_contact_fields(&self, contact: &Contact, now: DateTime<Utc>) -> Result<(), StoreError> {
        contact::Entity::update_many()
            .col_expr(contact::Column::Properties, Expr::value(contact.properties.clone()))
            .col_expr(contact::Column::Name, Expr::value(contact.name.clone()))
            .col_expr(contact::Column::MobilePhone, Expr::value(contact.mobile_phone.clone()))
            .col_expr(contact::Column::UpdatedAt, Expr::value(now))
            .filter(contact::Column::Id.eq(contact.id))
            .exec(&self.txn)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Sets properties on many contacts: `patches` merged in order (a
    /// contact named twice gets both), each contact written once, with one
    /// statement per few hundred contacts.
    pub async fn set_properties_many(
        &self,
        patches: &[(ContactId, serde_json::Map<String, serde_json::Value>)],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if patches.is_empty() {
            return Ok(());
        }
        let ids: Vec<ContactId> = patches.iter().map(|(id, _)| *id).collect();
        let mut contacts: HashMap<ContactId, Contact> =
            self.contacts_by_ids(&ids).await?.into_iter().map(|c| (c.id, c)).collect();
        for (id, patch) in patches {
            if let Some(contact) = contacts.get_mut(id) {
                let mut properties = match std::mem::take(&mut contact.properties) {
                    serde_json::Value::Object(map) => map,
                    _ => serde_json::Map::new(),
                };
                properties.extend(patch.clone());
                contact.properties = serde_json::Value::Object(properties);
                contact.updated_at = now;
            }
        }
        use contact::Column as C;
        let rows: Vec<contact::ActiveModel> = contacts.into_values().map(contact::ActiveModel::from).collect();
        for chunk in rows.chunks(self.store.rows_per_insert()) {
            // Every contact exists: the insert always turns into the update.
            contact::Entity::insert_many(chunk.to_vec())
                .on_conflict(OnConflict::column(C::Id).update_columns([C::Properties, C::UpdatedAt]).to_owned())
                .exec_without_returning(&self.txn)
                .await
                .map_err(|e| self.err(e))?;
        }
        Ok(())
    }
}
