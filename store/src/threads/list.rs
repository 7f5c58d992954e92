//! The thread list: which threads a filter selects (the inbox's search and
//! filters, a saved view's count), in which order, and where a page goes on.
//!
//! Cursors are ids: every id is a UUID v7, so ordering by id is ordering by
//! creation, and "the page after id X" is `id < X` in a descending list.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, Func, LikeExpr, Query};
use sea_orm::{ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::Serialize;

use super::Thread;
use crate::entities::{contact, message, thread};
use crate::paging::{Page, escape_like, page};
use crate::{Store, StoreError};
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

/// The threads `filter` selects, unordered.
fn filtered(filter: &ThreadFilter, now: DateTime<Utc>) -> sea_orm::Select<thread::Entity> {
    let mut query = thread::Entity::find();
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
    query
}

impl Store {
    /// How many threads `filter` selects (a saved view's count).
    pub async fn count_threads(&self, filter: &ThreadFilter, now: DateTime<Utc>) -> Result<u64, StoreError> {
        use sea_orm::PaginatorTrait;
        filtered(filter, now).count(&self.db).await.map_err(|e| self.query_error(e))
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
        let mut query = filtered(filter, now);
        query = match sort {
            ThreadSort::Newest => query.order_by_desc(thread::Column::Id),
            ThreadSort::LastMessage => {
                query.order_by_desc(Expr::cust(LAST_MESSAGE_AT)).order_by_desc(thread::Column::Id)
            }
        };
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
