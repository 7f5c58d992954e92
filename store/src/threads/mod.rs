//! Threads: a contact's conversation with one business number, its owner,
//! its status and WhatsApp's 24-hour window; the inbox's thread list.
//!
//! Cursors are ids: every id is a UUID v7, so ordering by id is ordering by
//! creation, and "the page after id X" is `id < X` in a descending list.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::{Expr, Func, LikeExpr, Query};
use sea_orm::{ActiveModelTrait, ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::Serialize;

use super::entities::{assignment_rule, contact, message, team, thread, user};
use super::paging::{Page, escape_like, page};
use super::tx::{BATCH_CHUNK, On};
use super::{Contact, OwnerChoice, Store, StoreError, Tx, UnknownOwner};
use kairo_core::ids::{ContactId, PhoneNumberId, TeamId, ThreadId, UserId};
use kairo_core::status::ThreadStatus;

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

    pub(super) fn of(thread: &Thread) -> String {
        let at = last_message_at(thread);
        format!("{}.{:09}_{}", at.timestamp(), at.timestamp_subsec_nanos(), thread.id)
    }
}

/// When a thread's last message was (either way), or it opened.
pub(super) const LAST_MESSAGE_AT: &str = "(CASE WHEN last_inbound_at IS NULL AND last_outbound_at IS NULL THEN opened_at \
    WHEN last_outbound_at IS NULL OR (last_inbound_at IS NOT NULL AND last_inbound_at > last_outbound_at) \
    THEN last_inbound_at ELSE last_outbound_at END)";

/// [`LAST_MESSAGE_AT`] of a thread row, as the database works it out.
pub(super) fn last_message_at(t: &Thread) -> DateTime<Utc> {
    match (t.last_inbound_at, t.last_outbound_at) {
        (None, None) => t.opened_at,
        (Some(i), None) => i,
        (Some(i), Some(o)) if i > o => i,
        (_, Some(o)) => o,
    }
}

pub type Thread = thread::Model;

#[derive(Debug, Clone)]
pub struct NewThread {
    pub contact_id: ContactId,
    pub phone_number_id: PhoneNumberId,
    pub customer_wa_id: String,
}

/// A new open thread, owned as the number's assignment rules said.
pub(super) fn new_thread_row(
    contact: ContactId,
    number: PhoneNumberId,
    customer_wa_id: String,
    (owner_user_id, owner_team_id): (Option<UserId>, Option<TeamId>),
    opened_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> thread::ActiveModel {
    thread::ActiveModel {
        id: Set(ThreadId::new()),
        contact_id: Set(contact),
        phone_number_id: Set(number),
        customer_wa_id: Set(customer_wa_id),
        status: Set(ThreadStatus::Open),
        owner_user_id: Set(owner_user_id),
        owner_team_id: Set(owner_team_id),
        window_closes_at: Set(None),
        last_inbound_at: Set(None),
        last_outbound_at: Set(None),
        first_response_at: Set(None),
        opened_at: Set(opened_at),
        closed_at: Set(None),
        updated_at: Set(now),
    }
}

/// An agent's reply went out on the thread: its last outbound time, and its
/// first response when the contact had written.
pub(super) async fn note_reply<C: sea_orm::ConnectionTrait>(
    db: &C,
    thread_id: ThreadId,
    now: DateTime<Utc>,
) -> Result<(), sea_orm::DbErr> {
    let Some(thread) = thread::Entity::find_by_id(thread_id).one(db).await? else { return Ok(()) };
    let first_response = thread.first_response_at.or(thread.last_inbound_at.map(|_| now));
    thread::Entity::update_many()
        .col_expr(thread::Column::LastOutboundAt, Expr::value(Some(now)))
        .col_expr(thread::Column::FirstResponseAt, Expr::value(first_response))
        .col_expr(thread::Column::UpdatedAt, Expr::value(now))
        .filter(thread::Column::Id.eq(thread.id))
        .exec(db)
        .await?;
    Ok(())
}

async fn open_thread_of(on: &impl On, contact: ContactId, number: PhoneNumberId) -> Result<Option<Thread>, StoreError> {
    thread::Entity::find()
        .filter(thread::Column::ContactId.eq(contact))
        .filter(thread::Column::PhoneNumberId.eq(number))
        .filter(thread::Column::Status.eq(ThreadStatus::Open))
        .one(on.conn())
        .await
        .map_err(|e| on.error(e))
}

impl Store {
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
            query = query.filter(associated_match(associated));
        }
        if let Some(text) = filter.text.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
            query = query.filter(text_match(text));
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

    /// Opens a thread. A contact has at most one open thread per number: a
    /// second one is refused with [`StoreError::Duplicate`].
    pub async fn open_thread(&self, new: NewThread, now: DateTime<Utc>) -> Result<Thread, StoreError> {
        let (contact, number) = (new.contact_id, new.phone_number_id);
        let row = new_thread_row(contact, number, new.customer_wa_id, (None, None), now, now);
        thread::Entity::insert(row)
            .exec_with_returning(&self.db)
            .await
            .map_err(|e| self.insert_error(e, || format!("open thread for contact {contact} on number {number}")))
    }

    pub async fn thread(&self, id: ThreadId) -> Result<Option<Thread>, StoreError> {
        thread::Entity::find_by_id(id).one(&self.db).await.map_err(|e| self.query_error(e))
    }

    /// The contact's open thread on this number, if any.
    pub async fn open_thread_of(
        &self,
        contact: ContactId,
        number: PhoneNumberId,
    ) -> Result<Option<Thread>, StoreError> {
        open_thread_of(self, contact, number).await
    }
}

impl Tx {
    /// The contact's open thread on the number, opened now when there is
    /// none (owned by the number's assignment rules). True when opened now.
    pub async fn ensure_thread(
        &self,
        contact: &Contact,
        number: PhoneNumberId,
        now: DateTime<Utc>,
    ) -> Result<(super::Thread, bool), StoreError> {
        if let Some(open) = self.open_thread_of(contact.id, number).await? {
            return Ok((open, false));
        }
        let customer = contact.wa_id.clone().or_else(|| contact.phone.clone()).unwrap_or_default();
        Ok((self.open_assigned_thread(contact.id, number, customer, now, now).await?, true))
    }

    /// The contact's open thread on this number, if any.
    pub async fn open_thread_of(
        &self,
        contact: ContactId,
        number: PhoneNumberId,
    ) -> Result<Option<Thread>, StoreError> {
        open_thread_of(self, contact, number).await
    }

    /// Opens a thread owned by the number's assignment rules.
    pub async fn open_assigned_thread(
        &self,
        contact: ContactId,
        number: PhoneNumberId,
        customer_wa_id: String,
        opened_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Thread, StoreError> {
        let owners = self.assign_new_thread(number).await?;
        let row = new_thread_row(contact, number, customer_wa_id, owners, opened_at, now);
        row.insert(&self.txn).await.map_err(|e| self.err(e))
    }

    /// Notes a contact's message on its thread: the times given (`None`
    /// leaves one as it is) and the thread's last change.
    pub async fn note_inbound(
        &self,
        thread: ThreadId,
        last_inbound_at: Option<DateTime<Utc>>,
        window_closes_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut update = thread::Entity::update_many().col_expr(thread::Column::UpdatedAt, Expr::value(now));
        if let Some(at) = last_inbound_at {
            update = update.col_expr(thread::Column::LastInboundAt, Expr::value(Some(at)));
        }
        if let Some(closes) = window_closes_at {
            update = update.col_expr(thread::Column::WindowClosesAt, Expr::value(Some(closes)));
        }
        update.filter(thread::Column::Id.eq(thread)).exec(&self.txn).await.map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The contact's threads that answered to its old WhatsApp id answer to
    /// the new one (the contact changed number).
    pub async fn move_threads_to_wa_id(&self, contact: ContactId, old: &str, new: &str) -> Result<(), StoreError> {
        thread::Entity::update_many()
            .col_expr(thread::Column::CustomerWaId, Expr::value(new))
            .filter(thread::Column::ContactId.eq(contact))
            .filter(thread::Column::CustomerWaId.eq(old))
            .exec(&self.txn)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The contact's open threads (on any number), newest first.
    pub async fn open_threads(&self, contact: ContactId) -> Result<Vec<super::Thread>, StoreError> {
        thread::Entity::find()
            .filter(thread::Column::ContactId.eq(contact))
            .filter(thread::Column::Status.eq(ThreadStatus::Open))
            .order_by_desc(thread::Column::Id)
            .all(&self.txn)
            .await
            .map_err(|e| self.err(e))
    }

    /// Gives a thread an owner: a user by e-mail, a team by name, or the next
    /// member of a team in turn. Returns the owner set, or which owner was
    /// not found.
    pub async fn assign_owner(
        &self,
        thread_id: ThreadId,
        owner: &OwnerChoice,
        now: DateTime<Utc>,
    ) -> Result<Result<(Option<UserId>, Option<TeamId>), UnknownOwner>, StoreError> {
        let found = match owner {
            OwnerChoice::User(email) => {
                let found = user::Entity::find()
                    .filter(user::Column::Email.eq(email.as_str()))
                    .one(&self.txn)
                    .await
                    .map_err(|e| self.err(e))?;
                match found {
                    Some(u) => (Some(u.id), None),
                    None => return Ok(Err(UnknownOwner::User(email.clone()))),
                }
            }
            OwnerChoice::Team(name) | OwnerChoice::RoundRobin(name) => {
                let found = team::Entity::find()
                    .filter(team::Column::Name.eq(name.as_str()))
                    .one(&self.txn)
                    .await
                    .map_err(|e| self.err(e))?;
                let Some(team) = found else { return Ok(Err(UnknownOwner::Team(name.clone()))) };
                match owner {
                    OwnerChoice::RoundRobin(_) => self.round_robin(team.id).await?,
                    _ => (None, Some(team.id)),
                }
            }
        };
        thread::Entity::update_many()
            .col_expr(thread::Column::OwnerUserId, Expr::value(found.0))
            .col_expr(thread::Column::OwnerTeamId, Expr::value(found.1))
            .col_expr(thread::Column::UpdatedAt, Expr::value(now))
            .filter(thread::Column::Id.eq(thread_id))
            .exec(&self.txn)
            .await
            .map_err(|e| self.err(e))?;
        Ok(Ok(found))
    }

    /// The threads' last outbound message is now (sends recorded).
    pub(super) async fn touch_outbound_many(
        &self,
        threads: Vec<ThreadId>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        for chunk in threads.chunks(BATCH_CHUNK) {
            thread::Entity::update_many()
                .col_expr(thread::Column::LastOutboundAt, Expr::value(Some(now)))
                .col_expr(thread::Column::UpdatedAt, Expr::value(now))
                .filter(thread::Column::Id.is_in(chunk.iter().copied()))
                .exec(&self.txn)
                .await
                .map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// The open thread of each send's contact and number, opened (and
    /// assigned by the number's rules) where there is none.
    pub(super) async fn threads_for_sends(
        &self,
        sends: &[(&Contact, PhoneNumberId)],
        now: DateTime<Utc>,
    ) -> Result<HashMap<(ContactId, PhoneNumberId), ThreadId>, StoreError> {
        let contacts: HashSet<ContactId> = sends.iter().map(|(c, _)| c.id).collect();
        let mut threads: HashMap<(ContactId, PhoneNumberId), ThreadId> = HashMap::new();
        for chunk in contacts.into_iter().collect::<Vec<_>>().chunks(BATCH_CHUNK) {
            let open = thread::Entity::find()
                .filter(thread::Column::ContactId.is_in(chunk.iter().copied()))
                .filter(thread::Column::Status.eq(ThreadStatus::Open))
                .all(&self.txn)
                .await
                .map_err(|e| self.err(e))?;
            threads.extend(open.into_iter().map(|t| ((t.contact_id, t.phone_number_id), t.id)));
        }
        let mut has_rules: HashMap<PhoneNumberId, bool> = HashMap::new();
        let mut new_threads = Vec::new();
        for (contact, number) in sends {
            let number = *number;
            let key = (contact.id, number);
            if threads.contains_key(&key) {
                continue;
            }
            let ruled = match has_rules.get(&number) {
                Some(ruled) => *ruled,
                None => {
                    let ruled = assignment_rule::Entity::find()
                        .filter(assignment_rule::Column::PhoneNumberId.eq(number))
                        .one(&self.txn)
                        .await
                        .map_err(|e| self.err(e))?
                        .is_some();
                    has_rules.insert(number, ruled);
                    ruled
                }
            };
            let owners = if ruled { self.assign_new_thread(number).await? } else { (None, None) };
            let customer = contact.wa_id.clone().or_else(|| contact.phone.clone()).unwrap_or_default();
            let row = new_thread_row(contact.id, number, customer, owners, now, now);
            threads.insert(key, *row.id.as_ref());
            new_threads.push(row);
        }
        for chunk in new_threads.chunks(BATCH_CHUNK) {
            thread::Entity::insert_many(chunk.to_vec())
                .exec_without_returning(&self.txn)
                .await
                .map_err(|e| self.err(e))?;
        }
        Ok(threads)
    }

    pub async fn touch_outbound(&self, thread_id: ThreadId, at: DateTime<Utc>) -> Result<(), StoreError> {
        thread::Entity::update_many()
            .col_expr(thread::Column::LastOutboundAt, Expr::value(Some(at)))
            .col_expr(thread::Column::UpdatedAt, Expr::value(at))
            .filter(thread::Column::Id.eq(thread_id))
            .exec(&self.txn)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}

/// Threads whose contact has (`true`) or lacks (`false`) a phone number.
fn associated_match(associated: bool) -> sea_orm::sea_query::SimpleExpr {
    let known = Query::select()
        .column(contact::Column::Id)
        .from(contact::Entity)
        .cond_where(
            Condition::any().add(contact::Column::Phone.is_not_null()).add(contact::Column::MobilePhone.is_not_null()),
        )
        .to_owned();
    if associated {
        thread::Column::ContactId.in_subquery(known)
    } else {
        thread::Column::ContactId.not_in_subquery(known)
    }
}

/// Threads with a message whose body holds `text`, or whose contact's name
/// holds it (any case), or whose contact's phone holds its digits (three or
/// more).
fn text_match(text: &str) -> Condition {
    use sea_orm::sea_query::ExprTrait;
    let pattern = format!("%{}%", escape_like(&text.to_lowercase()));
    let lower_like = |col: Expr| Expr::expr(Func::lower(col)).like(LikeExpr::new(&pattern).escape('\\'));
    let in_messages = Query::select()
        .column(message::Column::ThreadId)
        .from(message::Entity)
        .and_where(lower_like(Expr::col(message::Column::Body)))
        .to_owned();
    let digits = kairo_core::phone::PhoneDigits::of(text).into_string();
    let mut contact_match = Condition::any().add(lower_like(Expr::col(contact::Column::Name)));
    if digits.len() >= 3 {
        let digits = format!("%{digits}%");
        contact_match =
            contact_match.add(contact::Column::Phone.like(&digits)).add(contact::Column::MobilePhone.like(&digits));
    }
    let in_contacts =
        Query::select().column(contact::Column::Id).from(contact::Entity).cond_where(contact_match).to_owned();
    Condition::any()
        .add(thread::Column::Id.in_subquery(in_messages))
        .add(thread::Column::ContactId.in_subquery(in_contacts))
}
