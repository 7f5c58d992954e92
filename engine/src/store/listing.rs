//! What the HTTP API reads and changes outside the runtime: lists with
//! filters and cursors (enrollments, threads, contacts, users, teams), a
//! workflow's versions with their funnel, and the inbox agent's changes to a
//! thread (assign, close, reopen) and a contact (properties, names).
//!
//! Cursors are ids: every id is a UUID v7, so ordering by id is ordering by
//! creation, and "the page after id X" is `id < X` in a descending list.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, Func, LikeExpr, Query};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    Statement, Value,
};
use serde::Serialize;

use super::entities::{contact, enrollment, message, team, team_member, thread, user, workflow, workflow_version};
use super::status::{EnrollmentStatus, ThreadStatus};
use super::{Contact, Enrollment, Store, StoreError, Team, Thread, User, Workflow, WorkflowVersion};
use crate::ids::{ContactId, EnrollmentId, PhoneNumberId, TeamId, ThreadId, UserId, WorkflowId, WorkflowVersionId};

/// A page of a list, newest first, and the cursor of the next page.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` to read on; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// Which enrollments to list.
#[derive(Debug, Clone, Default)]
pub struct EnrollmentFilter {
    pub workflow: Option<WorkflowId>,
    pub status: Option<EnrollmentStatus>,
    pub contact: Option<ContactId>,
    /// List enrollments older than this one.
    pub before: Option<EnrollmentId>,
    pub limit: u64,
}

/// Which threads to list. Every field narrows the list.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, Serialize)]
pub struct ThreadFilter {
    /// Words that a message of the thread, or its contact's name or phone,
    /// contains (case-insensitive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<PhoneNumberId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_user: Option<UserId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_team: Option<TeamId>,
    /// `true`: threads with no owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unassigned: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ThreadStatus>,
    /// Threads of this contact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<ContactId>,
    /// `true`: threads whose contact is a known one (a `phone` or
    /// `mobile_phone` on record); `false`: contacts made from a WhatsApp
    /// profile alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub associated: Option<bool>,
    /// Whether the contact's 24-hour window is open now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<WindowFilter>,
}

/// Threads whose customer service window is open, or closed (or never
/// opened).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WindowFilter {
    Open,
    Closed,
}

/// The order of a thread list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ThreadSort {
    /// The newest thread first.
    #[default]
    Newest,
    /// The thread with the latest message (either way) first; a thread
    /// with none yet counts from when it opened.
    LastMessage,
}

/// Where a page of threads goes on from: the thread the previous page
/// ended with, by its last message's time and its id, which is its place in
/// either sort (`newest` reads the id, `last_message` both). Written
/// `<seconds>.<nanoseconds>_<id>`, so that any text of that form is one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadCursor {
    pub last_message_at: DateTime<Utc>,
    pub id: ThreadId,
}

impl ThreadCursor {
    /// The form of a cursor, for the API's document.
    pub const PATTERN: &str =
        "^$|^[0-9]{1,11}\\.[0-9]{9}_[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";

    /// A cursor as [`ThreadCursor::PATTERN`] writes it. A bare thread id
    /// (what `newest` pages gave out before) still goes on after that
    /// thread in `newest`; in `last_message` it starts from the top.
    pub fn parse(text: &str) -> Option<ThreadCursor> {
        let Some((at, id)) = text.split_once('_') else {
            let id: ThreadId = text.parse().ok()?;
            return Some(ThreadCursor { last_message_at: DateTime::<Utc>::MAX_UTC, id });
        };
        let (seconds, nanos) = at.split_once('.')?;
        let digits =
            |text: &str, most: usize| (1..=most).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_digit());
        if !digits(seconds, 11) || !digits(nanos, 9) || nanos.len() != 9 {
            return None;
        }
        let last_message_at = DateTime::from_timestamp(seconds.parse().ok()?, nanos.parse().ok()?)?;
        Some(ThreadCursor { last_message_at, id: id.parse().ok()? })
    }

    fn of(thread: &Thread) -> String {
        let at = last_message_at(thread);
        format!("{}.{:09}_{}", at.timestamp(), at.timestamp_subsec_nanos(), thread.id)
    }
}

/// When a thread's last message was (either way), or it opened.
const LAST_MESSAGE_AT: &str = "(CASE WHEN last_inbound_at IS NULL AND last_outbound_at IS NULL THEN opened_at \
    WHEN last_outbound_at IS NULL OR (last_inbound_at IS NOT NULL AND last_inbound_at > last_outbound_at) \
    THEN last_inbound_at ELSE last_outbound_at END)";

/// [`LAST_MESSAGE_AT`] of a thread row, as the database works it out.
fn last_message_at(t: &Thread) -> DateTime<Utc> {
    match (t.last_inbound_at, t.last_outbound_at) {
        (None, None) => t.opened_at,
        (Some(i), None) => i,
        (Some(i), Some(o)) if i > o => i,
        (_, Some(o)) => o,
    }
}

/// One version's funnel: what a marketer watches.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Funnel {
    /// Enrollments started.
    pub enrolled: u64,
    /// Messages WhatsApp accepted (every outbound message with a wamid).
    pub sent: u64,
    /// Messages delivered (read ones included).
    pub delivered: u64,
    pub read: u64,
    /// Enrollments whose contact wrote back after one of its messages.
    pub replied: u64,
    /// Messages that failed (status webhook `failed`).
    pub failed: u64,
    pub goal_met: u64,
}

/// A version with its enrollments by status and its funnel.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionReport {
    pub version: WorkflowVersion,
    pub by_status: BTreeMap<String, u64>,
    pub funnel: Funnel,
}

/// A change to a contact; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct ContactUpdate {
    pub name: Option<String>,
    pub phone: Option<String>,
    pub mobile_phone: Option<String>,
    /// Merged into the properties: a key set to `null` is removed.
    pub properties: Option<serde_json::Map<String, serde_json::Value>>,
}

impl Store {
    pub async fn workflow(&self, id: WorkflowId) -> Result<Option<Workflow>, StoreError> {
        workflow::Entity::find_by_id(id).one(&self.db).await.map_err(|e| self.query_error(e))
    }

    /// A workflow's versions, newest first.
    pub async fn workflow_versions(&self, id: WorkflowId) -> Result<Vec<WorkflowVersion>, StoreError> {
        workflow_version::Entity::find()
            .filter(workflow_version::Column::WorkflowId.eq(id))
            .order_by_desc(workflow_version::Column::Version)
            .all(&self.db)
            .await
            .map_err(|e| self.query_error(e))
    }

    /// Each version of `workflow`, newest first, with its enrollments by
    /// status and its funnel.
    pub async fn version_reports(&self, workflow: WorkflowId) -> Result<Vec<VersionReport>, StoreError> {
        let versions = self.workflow_versions(workflow).await?;
        let mut by_status: BTreeMap<WorkflowVersionId, BTreeMap<String, u64>> = BTreeMap::new();
        let mut funnels: BTreeMap<WorkflowVersionId, Funnel> = BTreeMap::new();
        let wf = || vec![Value::Uuid(Some(workflow.as_uuid()))];
        let rows = self
            .raw(
                "SELECT workflow_version_id, status, COUNT(*) FROM enrollments WHERE workflow_id = $1 \
                 GROUP BY workflow_version_id, status",
                wf(),
            )
            .await?;
        for row in rows {
            let (version, status, n) = self.version_count(&row)?;
            let status: String = status;
            let funnel = funnels.entry(version).or_default();
            funnel.enrolled += n;
            if status == "goal_met" {
                funnel.goal_met += n;
            }
            by_status.entry(version).or_default().insert(status, n);
        }
        let rows = self
            .raw(
                "SELECT e.workflow_version_id, m.status, COUNT(*) FROM messages m \
                 JOIN enrollments e ON e.id = m.enrollment_id \
                 WHERE e.workflow_id = $1 AND m.direction = 'outbound' AND m.wamid IS NOT NULL \
                 GROUP BY e.workflow_version_id, m.status",
                wf(),
            )
            .await?;
        for row in rows {
            let (version, status, n) = self.version_count(&row)?;
            let funnel = funnels.entry(version).or_default();
            funnel.sent += n;
            match status.as_str() {
                "delivered" => funnel.delivered += n,
                "read" => {
                    funnel.delivered += n;
                    funnel.read += n;
                }
                "failed" => funnel.failed += n,
                _ => {}
            }
        }
        let rows = self
            .raw(
                "SELECT e.workflow_version_id, 'replied', COUNT(DISTINCT e.id) FROM enrollments e \
                 JOIN messages m ON m.enrollment_id = e.id AND m.direction = 'outbound' \
                 JOIN messages r ON r.thread_id = m.thread_id AND r.direction = 'inbound' \
                   AND r.occurred_at > m.occurred_at \
                 WHERE e.workflow_id = $1 GROUP BY e.workflow_version_id",
                wf(),
            )
            .await?;
        for row in rows {
            let (version, _, n) = self.version_count(&row)?;
            funnels.entry(version).or_default().replied += n;
        }
        Ok(versions
            .into_iter()
            .map(|version| VersionReport {
                by_status: by_status.remove(&version.id).unwrap_or_default(),
                funnel: funnels.remove(&version.id).unwrap_or_default(),
                version,
            })
            .collect())
    }

    async fn raw(&self, sql: &str, values: Vec<Value>) -> Result<Vec<sea_orm::QueryResult>, StoreError> {
        self.db
            .query_all_raw(Statement::from_sql_and_values(self.db_backend(), sql, values))
            .await
            .map_err(|e| self.query_error(e))
    }

    fn version_count(&self, row: &sea_orm::QueryResult) -> Result<(WorkflowVersionId, String, u64), StoreError> {
        let q = |e| self.query_error(e);
        let version: uuid::Uuid = row.try_get_by_index(0).map_err(q)?;
        let label: String = row.try_get_by_index(1).map_err(q)?;
        let n: i64 = row.try_get_by_index(2).map_err(q)?;
        Ok((WorkflowVersionId(version), label, n.max(0) as u64))
    }

    /// Enrollments, newest first.
    pub async fn list_enrollments(&self, filter: EnrollmentFilter) -> Result<Page<Enrollment>, StoreError> {
        let mut query = enrollment::Entity::find().order_by_desc(enrollment::Column::Id);
        if let Some(workflow) = filter.workflow {
            query = query.filter(enrollment::Column::WorkflowId.eq(workflow));
        }
        if let Some(status) = filter.status {
            query = query.filter(enrollment::Column::Status.eq(status));
        }
        if let Some(contact) = filter.contact {
            query = query.filter(enrollment::Column::ContactId.eq(contact));
        }
        if let Some(before) = filter.before {
            query = query.filter(enrollment::Column::Id.lt(before));
        }
        let rows = query.limit(filter.limit + 1).all(&self.db).await.map_err(|e| self.query_error(e))?;
        Ok(page(rows, filter.limit, |e| e.id.to_string()))
    }

    /// Threads matching `filter`, newest first.
    pub async fn search_threads(
        &self,
        filter: &ThreadFilter,
        sort: ThreadSort,
        cursor: Option<ThreadCursor>,
        limit: u64,
        now: DateTime<Utc>,
    ) -> Result<Page<Thread>, StoreError> {
        let mut query = thread::Entity::find();
        query = match sort {
            ThreadSort::Newest => query.order_by_desc(thread::Column::Id),
            ThreadSort::LastMessage => {
                query.order_by_desc(Expr::cust(LAST_MESSAGE_AT)).order_by_desc(thread::Column::Id)
            }
        };
        match filter.window {
            Some(WindowFilter::Open) => query = query.filter(thread::Column::WindowClosesAt.gt(now)),
            Some(WindowFilter::Closed) => {
                query = query.filter(
                    Condition::any()
                        .add(thread::Column::WindowClosesAt.is_null())
                        .add(thread::Column::WindowClosesAt.lte(now)),
                )
            }
            None => {}
        }
        if let Some(number) = filter.number {
            query = query.filter(thread::Column::PhoneNumberId.eq(number));
        }
        if let Some(owner) = filter.owner_user {
            query = query.filter(thread::Column::OwnerUserId.eq(owner));
        }
        if let Some(team) = filter.owner_team {
            query = query.filter(thread::Column::OwnerTeamId.eq(team));
        }
        if let Some(unassigned) = filter.unassigned {
            let none =
                Condition::all().add(thread::Column::OwnerUserId.is_null()).add(thread::Column::OwnerTeamId.is_null());
            query = query.filter(if unassigned { none } else { none.not() });
        }
        if let Some(status) = filter.status {
            query = query.filter(thread::Column::Status.eq(status));
        }
        if let Some(contact) = filter.contact {
            query = query.filter(thread::Column::ContactId.eq(contact));
        }
        if let Some(associated) = filter.associated {
            let known = Query::select()
                .column(contact::Column::Id)
                .from(contact::Entity)
                .cond_where(
                    Condition::any()
                        .add(contact::Column::Phone.is_not_null())
                        .add(contact::Column::MobilePhone.is_not_null()),
                )
                .to_owned();
            query = query.filter(if associated {
                thread::Column::ContactId.in_subquery(known)
            } else {
                thread::Column::ContactId.not_in_subquery(known)
            });
        }
        if let Some(text) = filter.text.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
            use sea_orm::sea_query::ExprTrait;
            let pattern = format!("%{}%", escape_like(&text.to_lowercase()));
            let lower_like = |col: Expr| Expr::expr(Func::lower(col)).like(LikeExpr::new(&pattern).escape('\\'));
            let in_messages = Query::select()
                .column(message::Column::ThreadId)
                .from(message::Entity)
                .and_where(lower_like(Expr::col(message::Column::Body)))
                .to_owned();
            let digits: String = text.chars().filter(char::is_ascii_digit).collect();
            let mut contact_match = Condition::any().add(lower_like(Expr::col(contact::Column::Name)));
            if digits.len() >= 3 {
                let digits = format!("%{digits}%");
                contact_match = contact_match
                    .add(contact::Column::Phone.like(&digits))
                    .add(contact::Column::MobilePhone.like(&digits));
            }
            let in_contacts =
                Query::select().column(contact::Column::Id).from(contact::Entity).cond_where(contact_match).to_owned();
            query = query.filter(
                Condition::any()
                    .add(thread::Column::Id.in_subquery(in_messages))
                    .add(thread::Column::ContactId.in_subquery(in_contacts)),
            );
        }
        match cursor {
            Some(ThreadCursor { id, .. }) if sort == ThreadSort::Newest => {
                query = query.filter(thread::Column::Id.lt(id))
            }
            Some(ThreadCursor { last_message_at: at, id }) => {
                use sea_orm::sea_query::ExprTrait;
                let last = || Expr::cust(LAST_MESSAGE_AT);
                query = query.filter(
                    Condition::any()
                        .add(last().lt(Expr::value(at)))
                        .add(Condition::all().add(last().eq(Expr::value(at))).add(thread::Column::Id.lt(id))),
                );
            }
            None => {}
        }
        let rows = query.limit(limit + 1).all(&self.db).await.map_err(|e| self.query_error(e))?;
        Ok(page(rows, limit, ThreadCursor::of))
    }

    /// Sets a thread's owner (a user, a team, or nobody).
    pub async fn assign_thread(
        &self,
        id: ThreadId,
        owner: (Option<UserId>, Option<TeamId>),
        now: DateTime<Utc>,
    ) -> Result<Option<Thread>, StoreError> {
        thread::Entity::update_many()
            .col_expr(thread::Column::OwnerUserId, Expr::value(owner.0))
            .col_expr(thread::Column::OwnerTeamId, Expr::value(owner.1))
            .col_expr(thread::Column::UpdatedAt, Expr::value(now))
            .filter(thread::Column::Id.eq(id))
            .exec(&self.db)
            .await
            .map_err(|e| self.query_error(e))?;
        self.thread(id).await
    }

    /// Closes an open thread; `false` when it was not open.
    pub async fn close_thread(&self, id: ThreadId, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let res = thread::Entity::update_many()
            .col_expr(thread::Column::Status, Expr::value(ThreadStatus::Closed))
            .col_expr(thread::Column::ClosedAt, Expr::value(now))
            .col_expr(thread::Column::UpdatedAt, Expr::value(now))
            .filter(thread::Column::Id.eq(id))
            .filter(thread::Column::Status.eq(ThreadStatus::Open))
            .exec(&self.db)
            .await
            .map_err(|e| self.query_error(e))?;
        Ok(res.rows_affected == 1)
    }

    /// Reopens a closed thread. Refused with [`StoreError::Duplicate`] when
    /// the contact already has another open thread on the number (one open
    /// thread per contact and number); `false` when it was not closed.
    pub async fn reopen_thread(&self, id: ThreadId, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let res = thread::Entity::update_many()
            .col_expr(thread::Column::Status, Expr::value(ThreadStatus::Open))
            .col_expr(thread::Column::ClosedAt, Expr::value(Option::<DateTime<Utc>>::None))
            .col_expr(thread::Column::UpdatedAt, Expr::value(now))
            .filter(thread::Column::Id.eq(id))
            .filter(thread::Column::Status.eq(ThreadStatus::Closed))
            .exec(&self.db)
            .await
            .map_err(|e| self.insert_error(e, || format!("an open thread of the contact beside thread {id}")))?;
        Ok(res.rows_affected == 1)
    }

    /// A reply WhatsApp accepted: its wamid, `sent`, the statuses that beat
    /// it here, and the thread's last outbound (and first response) time.
    pub async fn mark_reply_sent(
        &self,
        message_id: crate::ids::MessageId,
        wamid: &crate::ids::Wamid,
        now: DateTime<Utc>,
    ) -> Result<Option<super::Message>, StoreError> {
        let txn = self.begin_write().await.map_err(|e| self.query_error(e))?;
        message::Entity::update_many()
            .col_expr(message::Column::Wamid, Expr::value(Some(wamid.clone())))
            .col_expr(message::Column::Status, Expr::value(super::status::DeliveryStatus::Sent))
            .col_expr(message::Column::SentAt, Expr::value(Some(now)))
            .col_expr(message::Column::UpdatedAt, Expr::value(now))
            .filter(message::Column::Id.eq(message_id))
            .exec(&txn)
            .await
            .map_err(|e| self.insert_error(e, || format!("message {wamid}")))?;
        super::ingest::apply_pending_statuses(&txn, wamid, now).await.map_err(|e| self.query_error(e))?;
        let Some(row) = message::Entity::find_by_id(message_id).one(&txn).await.map_err(|e| self.query_error(e))?
        else {
            return Ok(None);
        };
        let thread = thread::Entity::find_by_id(row.thread_id).one(&txn).await.map_err(|e| self.query_error(e))?;
        if let Some(thread) = thread {
            let first_response = thread.first_response_at.or(thread.last_inbound_at.map(|_| now));
            thread::Entity::update_many()
                .col_expr(thread::Column::LastOutboundAt, Expr::value(Some(now)))
                .col_expr(thread::Column::FirstResponseAt, Expr::value(first_response))
                .col_expr(thread::Column::UpdatedAt, Expr::value(now))
                .filter(thread::Column::Id.eq(thread.id))
                .exec(&txn)
                .await
                .map_err(|e| self.query_error(e))?;
        }
        txn.commit().await.map_err(|e| self.query_error(e))?;
        message::Entity::find_by_id(message_id).one(&self.db).await.map_err(|e| self.query_error(e))
    }

    /// A reply the channel refused: `failed`, with the code and reason.
    pub async fn mark_reply_failed(
        &self,
        message_id: crate::ids::MessageId,
        code: Option<i32>,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        message::Entity::update_many()
            .col_expr(message::Column::Status, Expr::value(super::status::DeliveryStatus::Failed))
            .col_expr(message::Column::ErrorCode, Expr::value(code))
            .col_expr(message::Column::ErrorTitle, Expr::value(Some(reason.to_string())))
            .col_expr(message::Column::FailedAt, Expr::value(Some(now)))
            .col_expr(message::Column::UpdatedAt, Expr::value(now))
            .filter(message::Column::Id.eq(message_id))
            .exec(&self.db)
            .await
            .map_err(|e| self.query_error(e))?;
        Ok(())
    }

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

    pub async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        user::Entity::find().order_by_asc(user::Column::Name).all(&self.db).await.map_err(|e| self.query_error(e))
    }

    /// Deactivates a user: no new threads are assigned to them and they
    /// leave every team's round robin; threads they own keep them.
    pub async fn deactivate_user(&self, id: UserId, now: DateTime<Utc>) -> Result<Option<User>, StoreError> {
        user::Entity::update_many()
            .col_expr(user::Column::DeactivatedAt, Expr::value(now))
            .filter(user::Column::Id.eq(id))
            .filter(user::Column::DeactivatedAt.is_null())
            .exec(&self.db)
            .await
            .map_err(|e| self.query_error(e))?;
        self.user(id).await
    }

    pub async fn team(&self, id: TeamId) -> Result<Option<Team>, StoreError> {
        team::Entity::find_by_id(id).one(&self.db).await.map_err(|e| self.query_error(e))
    }

    /// Teams with their members, by name.
    pub async fn list_teams(&self) -> Result<Vec<(Team, Vec<UserId>)>, StoreError> {
        let teams = team::Entity::find()
            .order_by_asc(team::Column::Name)
            .all(&self.db)
            .await
            .map_err(|e| self.query_error(e))?;
        let members = team_member::Entity::find()
            .order_by_asc(team_member::Column::AddedAt)
            .all(&self.db)
            .await
            .map_err(|e| self.query_error(e))?;
        Ok(teams
            .into_iter()
            .map(|t| {
                let ids = members.iter().filter(|m| m.team_id == t.id).map(|m| m.user_id).collect();
                (t, ids)
            })
            .collect())
    }

    /// Deactivates a team: assignment rules naming it assign no more.
    pub async fn deactivate_team(&self, id: TeamId, now: DateTime<Utc>) -> Result<Option<Team>, StoreError> {
        team::Entity::update_many()
            .col_expr(team::Column::DeactivatedAt, Expr::value(now))
            .filter(team::Column::Id.eq(id))
            .filter(team::Column::DeactivatedAt.is_null())
            .exec(&self.db)
            .await
            .map_err(|e| self.query_error(e))?;
        self.team(id).await
    }
}

/// The first `limit` rows, and a cursor when there were more.
fn page<T>(mut rows: Vec<T>, limit: u64, cursor: impl Fn(&T) -> String) -> Page<T> {
    let more = rows.len() as u64 > limit;
    rows.truncate(limit as usize);
    let next_cursor = if more { rows.last().map(cursor) } else { None };
    Page { items: rows, next_cursor }
}

/// `%` and `_` in a search are literal characters, not wildcards.
fn escape_like(text: &str) -> String {
    text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
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
