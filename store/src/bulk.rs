//! Bulk enrollments: the job a streamed upload becomes, what happened to
//! each of its rows, and the row keys that make a row idempotent.
//!
//! Invariant: a chunk of rows commits in one transaction with its
//! enrollments, its row results, its row keys and the job's counters, so a
//! crash mid-upload leaves either all of a chunk or none of it, and a row key
//! is recorded exactly when its enrollment is.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::Serialize;
use uuid::Uuid;

use std::collections::HashMap;

use super::entities::{bulk_job, bulk_job_row, consent, contact, enrollment, idempotency_key};
use super::{
    Backend, Consent, Contact, Enrollment, EnrollmentHistory, IdempotencyRecord, NewContact, Store, StoreError, Tx,
};
use kairo_core::ids::{ApiTokenId, BulkJobId, ContactId, EnrollmentId, WorkflowId};
use kairo_core::status::EnrollmentStatus;

pub type BulkJob = bulk_job::Model;
pub type BulkJobRow = bulk_job_row::Model;

/// Where a bulk job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BulkJobStatus {
    /// Rows are being read and applied (moved in by the upload's start).
    Running,
    /// Every row was read; each has a result (moved in by the upload's end).
    Completed,
    /// The upload stopped before its end (a broken connection, a body over
    /// the limit, a database failure): the rows applied so far stay applied.
    Failed,
}

impl BulkJobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BulkJobStatus::Running => "running",
            BulkJobStatus::Completed => "completed",
            BulkJobStatus::Failed => "failed",
        }
    }
}

/// What happened to one row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RowResult {
    pub line: u64,
    pub row_key: Option<String>,
    /// `enrolled`, `skipped`, `replayed` or `error`.
    pub outcome: &'static str,
    pub contact_id: Option<ContactId>,
    pub enrollment_id: Option<EnrollmentId>,
    pub reason: Option<String>,
    pub error: Option<String>,
}

/// A row key and what its row did, kept so that a repeat replays it.
#[derive(Debug, Clone)]
pub struct RowKey {
    pub key: String,
    pub request_hash: String,
    pub result: serde_json::Value,
}

impl Store {
    pub async fn create_bulk_job(
        &self,
        workflow_key: &str,
        format: &str,
        token: Option<ApiTokenId>,
        now: DateTime<Utc>,
    ) -> Result<BulkJob, StoreError> {
        let row = bulk_job::ActiveModel {
            id: Set(BulkJobId::new()),
            workflow_key: Set(workflow_key.to_string()),
            format: Set(format.to_string()),
            status: Set(BulkJobStatus::Running.as_str().to_string()),
            token_id: Set(token),
            rows_seen: Set(0),
            rows_enrolled: Set(0),
            rows_skipped: Set(0),
            rows_replayed: Set(0),
            rows_failed: Set(0),
            error: Set(None),
            created_at: Set(now),
            updated_at: Set(now),
            finished_at: Set(None),
        };
        bulk_job::Entity::insert(row).exec_with_returning(&self.db).await.map_err(|e| self.query_error(e))
    }

    pub async fn finish_bulk_job(
        &self,
        id: BulkJobId,
        status: BulkJobStatus,
        error: Option<String>,
        now: DateTime<Utc>,
    ) -> Result<Option<BulkJob>, StoreError> {
        bulk_job::Entity::update_many()
            .col_expr(bulk_job::Column::Status, Expr::value(status.as_str()))
            .col_expr(bulk_job::Column::Error, Expr::value(error))
            .col_expr(bulk_job::Column::FinishedAt, Expr::value(now))
            .col_expr(bulk_job::Column::UpdatedAt, Expr::value(now))
            .filter(bulk_job::Column::Id.eq(id))
            .exec(&self.db)
            .await
            .map_err(|e| self.query_error(e))?;
        self.bulk_job(id).await
    }

    pub async fn bulk_job(&self, id: BulkJobId) -> Result<Option<BulkJob>, StoreError> {
        bulk_job::Entity::find_by_id(id).one(&self.db).await.map_err(|e| self.query_error(e))
    }

    /// Bulk jobs, newest first.
    pub async fn bulk_jobs(&self, limit: u64) -> Result<Vec<BulkJob>, StoreError> {
        bulk_job::Entity::find()
            .order_by_desc(bulk_job::Column::CreatedAt)
            .limit(limit)
            .all(&self.db)
            .await
            .map_err(|e| self.query_error(e))
    }

    /// A job's row results after `after_line`, in line order; only one
    /// outcome when `outcome` is given.
    pub async fn bulk_job_rows(
        &self,
        id: BulkJobId,
        outcome: Option<&str>,
        after_line: u64,
        limit: u64,
    ) -> Result<Vec<BulkJobRow>, StoreError> {
        let mut query = bulk_job_row::Entity::find()
            .filter(bulk_job_row::Column::JobId.eq(id))
            .filter(bulk_job_row::Column::Line.gt(after_line as i64))
            .order_by_asc(bulk_job_row::Column::Line)
            .limit(limit);
        if let Some(outcome) = outcome {
            query = query.filter(bulk_job_row::Column::Outcome.eq(outcome));
        }
        query.all(&self.db).await.map_err(|e| self.query_error(e))
    }
}

/// Values per `IN (…)` list: well within both databases' parameter limits.
const IN_LIST: usize = 500;

impl Tx {
    /// The rows `query` selects for each [`IN_LIST`]-sized chunk of `values`.
    async fn select_in_chunks<V, E>(
        &self,
        values: &[V],
        query: impl Fn(&[V]) -> sea_orm::Select<E>,
    ) -> Result<Vec<E::Model>, StoreError>
    where
        E: EntityTrait,
    {
        let mut found = Vec::new();
        for chunk in values.chunks(IN_LIST) {
            found.extend(query(chunk).all(&self.txn).await.map_err(|e| self.err(e))?);
        }
        Ok(found)
    }

    /// Each contact's enrollments in `workflow`, read at once; on
    /// PostgreSQL the contacts are locked first (in id order, so two
    /// uploads never deadlock), as one enrollment locks its contact.
    pub async fn enrollment_histories(
        &self,
        contacts: &[ContactId],
        workflow: WorkflowId,
    ) -> Result<HashMap<ContactId, EnrollmentHistory>, StoreError> {
        let mut ids = contacts.to_vec();
        ids.sort();
        ids.dedup();
        let mut histories: HashMap<ContactId, EnrollmentHistory> = HashMap::new();
        for chunk in ids.chunks(IN_LIST) {
            if self.store.backend == Backend::Postgres {
                contact::Entity::find()
                    .filter(contact::Column::Id.is_in(chunk.iter().copied()))
                    .order_by_asc(contact::Column::Id)
                    .lock(sea_orm::sea_query::LockType::Update)
                    .all(&self.txn)
                    .await
                    .map_err(|e| self.err(e))?;
            }
            let rows: Vec<(ContactId, EnrollmentStatus, DateTime<Utc>)> = enrollment::Entity::find()
                .select_only()
                .column(enrollment::Column::ContactId)
                .column(enrollment::Column::Status)
                .column(enrollment::Column::EnrolledAt)
                .filter(enrollment::Column::ContactId.is_in(chunk.iter().copied()))
                .filter(enrollment::Column::WorkflowId.eq(workflow))
                .into_tuple()
                .all(&self.txn)
                .await
                .map_err(|e| self.err(e))?;
            for (contact, status, at) in rows {
                let history = histories.entry(contact).or_default();
                history.total += 1;
                history.running += u64::from(super::enrollments::RUNNING.contains(&status));
                history.last_enrolled_at = history.last_enrolled_at.max(Some(at));
            }
        }
        Ok(histories)
    }

    /// Inserts new enrollments, built by the caller, in multi-row statements.
    pub async fn insert_started_enrollments(&self, rows: Vec<Enrollment>) -> Result<(), StoreError> {
        let models: Vec<enrollment::ActiveModel> = rows.into_iter().map(enrollment::ActiveModel::from).collect();
        for chunk in models.chunks(self.store.rows_per_insert()) {
            enrollment::Entity::insert_many(chunk.to_vec())
                .exec_without_returning(&self.txn)
                .await
                .map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// The consents of many contacts.
    pub async fn consents_of_contacts(&self, contacts: &[ContactId]) -> Result<Vec<Consent>, StoreError> {
        self.select_in_chunks(contacts, |chunk| {
            consent::Entity::find().filter(consent::Column::ContactId.is_in(chunk.iter().copied()))
        })
        .await
    }

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

    /// The row keys of `scope` among `keys` already recorded.
    pub async fn row_keys(&self, scope: &str, keys: &[String]) -> Result<Vec<IdempotencyRecord>, StoreError> {
        self.select_in_chunks(keys, |chunk| {
            idempotency_key::Entity::find()
                .filter(idempotency_key::Column::Scope.eq(scope))
                .filter(idempotency_key::Column::Key.is_in(chunk.iter().cloned()))
        })
        .await
    }

    /// Claims the row keys of `scope` among `keys` that nobody holds yet,
    /// returning those this transaction now holds. A key another upload
    /// is enrolling at this moment is waited for (its transaction commits
    /// or rolls back first) and is then not claimed: so a row is enrolled
    /// at most once per key, across concurrent uploads. Keys are claimed in
    /// sorted order, so two uploads never wait on each other both ways.
    pub async fn claim_row_keys(
        &self,
        scope: &str,
        keys: &[String],
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        let mut keys = keys.to_vec();
        keys.sort();
        keys.dedup();
        let ids: HashMap<Uuid, String> = keys.iter().map(|k| (Uuid::now_v7(), k.clone())).collect();
        let mut rows: Vec<idempotency_key::ActiveModel> = ids
            .iter()
            .map(|(id, key)| idempotency_key::ActiveModel {
                id: Set(*id),
                scope: Set(scope.to_string()),
                key: Set(key.clone()),
                request_hash: Set(String::new()),
                response_status: Set(None),
                response_body: Set(None),
                created_at: Set(now),
                expires_at: Set(expires_at),
            })
            .collect();
        rows.sort_by(|a, b| a.key.as_ref().cmp(b.key.as_ref()));
        self.insert_untaken_keys(rows).await?;
        let held = self.row_keys(scope, &keys).await?;
        Ok(held.into_iter().filter(|record| ids.contains_key(&record.id)).map(|record| record.key).collect())
    }

    /// Lets go of claimed row keys (those whose rows were not enrolled).
    pub async fn release_row_keys(&self, scope: &str, keys: &[String]) -> Result<(), StoreError> {
        for chunk in keys.chunks(IN_LIST) {
            idempotency_key::Entity::delete_many()
                .filter(idempotency_key::Column::Scope.eq(scope))
                .filter(idempotency_key::Column::Key.is_in(chunk.iter().cloned()))
                .exec(&self.txn)
                .await
                .map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// Records row keys with their results. A key another upload recorded
    /// meanwhile is left as it is (its first result stands).
    pub async fn insert_row_keys(
        &self,
        scope: &str,
        keys: Vec<RowKey>,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let rows: Vec<idempotency_key::ActiveModel> = keys
            .into_iter()
            .map(|k| idempotency_key::ActiveModel {
                id: Set(Uuid::now_v7()),
                scope: Set(scope.to_string()),
                key: Set(k.key),
                request_hash: Set(k.request_hash),
                response_status: Set(Some(200)),
                response_body: Set(Some(k.result)),
                created_at: Set(now),
                expires_at: Set(expires_at),
            })
            .collect();
        self.insert_untaken_keys(rows).await
    }

    /// Inserts key rows in multi-row statements; a key already there (of
    /// another upload) is left as it is.
    async fn insert_untaken_keys(&self, rows: Vec<idempotency_key::ActiveModel>) -> Result<(), StoreError> {
        use idempotency_key::Column as C;
        for chunk in rows.chunks(self.store.rows_per_insert()) {
            idempotency_key::Entity::insert_many(chunk.to_vec())
                .on_conflict(OnConflict::columns([C::Scope, C::Key]).do_nothing().to_owned())
                .exec_without_returning(&self.txn)
                .await
                .map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// Stores a chunk's row results and adds them to the job's counters.
    pub async fn record_bulk_rows(
        &self,
        job: BulkJobId,
        rows: &[RowResult],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let count = |outcome: &str| rows.iter().filter(|r| r.outcome == outcome).count() as i64;
        let models: Vec<bulk_job_row::ActiveModel> = rows
            .iter()
            .map(|r| bulk_job_row::ActiveModel {
                id: Set(Uuid::now_v7()),
                job_id: Set(job),
                line: Set(r.line as i64),
                row_key: Set(r.row_key.clone()),
                outcome: Set(r.outcome.to_string()),
                contact_id: Set(r.contact_id),
                enrollment_id: Set(r.enrollment_id),
                reason: Set(r.reason.clone()),
                error: Set(r.error.clone()),
            })
            .collect();
        for chunk in models.chunks(self.store.rows_per_insert()) {
            bulk_job_row::Entity::insert_many(chunk.to_vec())
                .exec_without_returning(&self.txn)
                .await
                .map_err(|e| self.err(e))?;
        }
        use bulk_job::Column as C;
        use sea_orm::sea_query::ExprTrait;
        bulk_job::Entity::update_many()
            .col_expr(C::RowsSeen, Expr::col(C::RowsSeen).add(rows.len() as i64))
            .col_expr(C::RowsEnrolled, Expr::col(C::RowsEnrolled).add(count("enrolled")))
            .col_expr(C::RowsSkipped, Expr::col(C::RowsSkipped).add(count("skipped")))
            .col_expr(C::RowsReplayed, Expr::col(C::RowsReplayed).add(count("replayed")))
            .col_expr(C::RowsFailed, Expr::col(C::RowsFailed).add(count("error")))
            .col_expr(C::UpdatedAt, Expr::value(now))
            .filter(C::Id.eq(job))
            .exec(&self.txn)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}
