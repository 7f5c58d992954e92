//! Threads: a contact's conversation with one business number, its owner,
//! its status and WhatsApp's 24-hour window. The thread list (filters,
//! counts, order and cursors) is in `list.rs`; a thread's events and each
//! agent's reads in `history.rs`.

mod history;
mod list;

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder};

use super::entities::{assignment_rule, team, thread, user};
use super::tx::{BATCH_CHUNK, On};
use super::{Contact, OwnerChoice, Store, StoreError, Tx, UnknownOwner};
use kairo_core::ids::{ContactId, PhoneNumberId, TeamId, ThreadId, UserId};
use kairo_core::status::{ThreadEventKind, ThreadStatus};

use self::history::ThreadChange;
pub use self::history::ThreadEvent;
pub use self::list::{ThreadCursor, ThreadFilter, ThreadSort, WindowFilter};

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
    /// Sets a thread's owner (a user, a team, or nobody), by `actor` (an
    /// agent, or none for an API token), with its event.
    pub async fn assign_thread(
        &self,
        id: ThreadId,
        owner: (Option<UserId>, Option<TeamId>),
        actor: Option<UserId>,
        now: DateTime<Utc>,
    ) -> Result<Option<Thread>, StoreError> {
        let q = |e| self.query_error(e);
        let txn = self.begin_write().await.map_err(q)?;
        let res = thread::Entity::update_many()
            .col_expr(thread::Column::OwnerUserId, Expr::value(owner.0))
            .col_expr(thread::Column::OwnerTeamId, Expr::value(owner.1))
            .col_expr(thread::Column::UpdatedAt, Expr::value(now))
            .filter(thread::Column::Id.eq(id))
            .exec(&txn)
            .await
            .map_err(q)?;
        if res.rows_affected == 1 {
            history::record(&txn, id, history::owner_event(owner), ThreadChange { actor, owner }, now)
                .await
                .map_err(q)?;
        }
        txn.commit().await.map_err(q)?;
        self.thread(id).await
    }

    /// Closes an open thread, by `actor`; `false` when it was not open.
    pub async fn close_thread(
        &self,
        id: ThreadId,
        actor: Option<UserId>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.move_thread(id, (ThreadStatus::Open, ThreadStatus::Closed), actor, now).await
    }

    /// Reopens a closed thread, by `actor`. Refused with
    /// [`StoreError::Duplicate`] when the contact already has another open
    /// thread on the number (one open thread per contact and number);
    /// `false` when it was not closed.
    pub async fn reopen_thread(
        &self,
        id: ThreadId,
        actor: Option<UserId>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.move_thread(id, (ThreadStatus::Closed, ThreadStatus::Open), actor, now).await
    }

    /// Moves a thread from one status to the other (a single conditional
    /// UPDATE: `false` when it was not in `from`), with its event, in one
    /// transaction.
    async fn move_thread(
        &self,
        id: ThreadId,
        (from, to): (ThreadStatus, ThreadStatus),
        actor: Option<UserId>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let q = |e| self.query_error(e);
        let closed_at = (to == ThreadStatus::Closed).then_some(now);
        let txn = self.begin_write().await.map_err(q)?;
        let res = thread::Entity::update_many()
            .col_expr(thread::Column::Status, Expr::value(to))
            .col_expr(thread::Column::ClosedAt, Expr::value(closed_at))
            .col_expr(thread::Column::UpdatedAt, Expr::value(now))
            .filter(thread::Column::Id.eq(id))
            .filter(thread::Column::Status.eq(from))
            .exec(&txn)
            .await
            .map_err(|e| self.insert_error(e, || format!("an open thread of the contact beside thread {id}")))?;
        let moved = res.rows_affected == 1;
        if moved {
            let kind = if to == ThreadStatus::Closed { ThreadEventKind::Closed } else { ThreadEventKind::Reopened };
            let change = ThreadChange { actor, ..ThreadChange::default() };
            history::record(&txn, id, kind, change, now).await.map_err(q)?;
        }
        txn.commit().await.map_err(q)?;
        Ok(moved)
    }

    /// Opens a thread. A contact has at most one open thread per number: a
    /// second one is refused with [`StoreError::Duplicate`].
    pub async fn open_thread(&self, new: NewThread, now: DateTime<Utc>) -> Result<Thread, StoreError> {
        let (contact, number) = (new.contact_id, new.phone_number_id);
        let row = new_thread_row(contact, number, new.customer_wa_id, (None, None), now, now);
        let q = |e| self.query_error(e);
        let txn = self.begin_write().await.map_err(q)?;
        let opened = thread::Entity::insert(row)
            .exec_with_returning(&txn)
            .await
            .map_err(|e| self.insert_error(e, || format!("open thread for contact {contact} on number {number}")))?;
        history::record(&txn, opened.id, ThreadEventKind::Opened, ThreadChange::default(), now).await.map_err(q)?;
        txn.commit().await.map_err(q)?;
        Ok(opened)
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
        let opened = row.insert(&self.txn).await.map_err(|e| self.err(e))?;
        let change = ThreadChange { actor: None, owner: owners };
        history::record(&self.txn, opened.id, ThreadEventKind::Opened, change, opened_at)
            .await
            .map_err(|e| self.err(e))?;
        Ok(opened)
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
        let change = ThreadChange { actor: None, owner: found };
        history::record(&self.txn, thread_id, history::owner_event(found), change, now)
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
            history::record_opened(&self.txn, chunk, now).await.map_err(|e| self.err(e))?;
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
