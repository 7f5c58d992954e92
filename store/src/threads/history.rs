//! A thread's own history (`thread_events`: opened, assigned, closed,
//! reopened) and when each agent last read it (`thread_reads`).
//!
//! Invariants:
//! - An event is written by the operation that makes the change, in the
//!   same transaction: a thread is never closed without its `closed`.
//! - A read only moves forward: reading an older page never marks newer
//!   messages unread again.

use chrono::{DateTime, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder};
use uuid::Uuid;

use crate::entities::{thread_event, thread_read};
use crate::{Store, StoreError};
use kairo_core::ids::{TeamId, ThreadId, UserId};
use kairo_core::status::ThreadEventKind;

pub type ThreadEvent = thread_event::Model;

/// Who changed a thread, and the owner it has after the change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ThreadChange {
    /// The agent who did it; none for rules, workflows and API tokens.
    pub actor: Option<UserId>,
    pub owner: (Option<UserId>, Option<TeamId>),
}

/// Records one event of a thread.
pub(super) async fn record<C: ConnectionTrait>(
    db: &C,
    thread: ThreadId,
    kind: ThreadEventKind,
    change: ThreadChange,
    at: DateTime<Utc>,
) -> Result<(), DbErr> {
    let row = thread_event::ActiveModel {
        id: Set(Uuid::now_v7()),
        thread_id: Set(thread),
        kind: Set(kind),
        actor_user_id: Set(change.actor),
        owner_user_id: Set(change.owner.0),
        owner_team_id: Set(change.owner.1),
        occurred_at: Set(at),
    };
    thread_event::Entity::insert(row).exec_without_returning(db).await?;
    Ok(())
}

/// `opened` for each of a batch of new threads, owned as their rows say.
pub(super) async fn record_opened<C: ConnectionTrait>(
    db: &C,
    threads: &[crate::entities::thread::ActiveModel],
    at: DateTime<Utc>,
) -> Result<(), DbErr> {
    let rows: Vec<thread_event::ActiveModel> = threads
        .iter()
        .filter_map(|t| {
            let owner = (t.owner_user_id.clone().take().flatten(), t.owner_team_id.clone().take().flatten());
            Some(thread_event::ActiveModel {
                id: Set(Uuid::now_v7()),
                thread_id: Set(t.id.clone().take()?),
                kind: Set(ThreadEventKind::Opened),
                actor_user_id: Set(None),
                owner_user_id: Set(owner.0),
                owner_team_id: Set(owner.1),
                occurred_at: Set(at),
            })
        })
        .collect();
    if rows.is_empty() {
        return Ok(());
    }
    thread_event::Entity::insert_many(rows).exec_without_returning(db).await?;
    Ok(())
}

/// The event an owner change is: assigned, or unassigned when nobody owns it.
pub(super) fn owner_event(owner: (Option<UserId>, Option<TeamId>)) -> ThreadEventKind {
    match owner {
        (None, None) => ThreadEventKind::Unassigned,
        _ => ThreadEventKind::Assigned,
    }
}

impl Store {
    /// A thread's events, oldest first.
    pub async fn thread_events(&self, thread: ThreadId) -> Result<Vec<ThreadEvent>, StoreError> {
        thread_event::Entity::find()
            .filter(thread_event::Column::ThreadId.eq(thread))
            .order_by_asc(thread_event::Column::OccurredAt)
            .order_by_asc(thread_event::Column::Id)
            .all(&self.db)
            .await
            .map_err(|e| self.query_error(e))
    }

    /// `user` has read `thread` up to `at` (kept when it is later than what
    /// was read before).
    pub async fn mark_thread_read(&self, thread: ThreadId, user: UserId, at: DateTime<Utc>) -> Result<(), StoreError> {
        let row = thread_read::ActiveModel { thread_id: Set(thread), user_id: Set(user), read_at: Set(at) };
        let later = Expr::cust(
            "CASE WHEN excluded.read_at > thread_reads.read_at THEN excluded.read_at ELSE thread_reads.read_at END",
        );
        thread_read::Entity::insert(row)
            .on_conflict(
                OnConflict::columns([thread_read::Column::ThreadId, thread_read::Column::UserId])
                    .value(thread_read::Column::ReadAt, later)
                    .to_owned(),
            )
            .exec_without_returning(&self.db)
            .await
            .map_err(|e| self.query_error(e))?;
        Ok(())
    }

    /// When `user` last read each of `threads` (those never read are absent).
    pub async fn threads_read_by(
        &self,
        user: UserId,
        threads: &[ThreadId],
    ) -> Result<std::collections::HashMap<ThreadId, DateTime<Utc>>, StoreError> {
        if threads.is_empty() {
            return Ok(Default::default());
        }
        let rows = thread_read::Entity::find()
            .filter(thread_read::Column::UserId.eq(user))
            .filter(thread_read::Column::ThreadId.is_in(threads.iter().copied()))
            .all(&self.db)
            .await
            .map_err(|e| self.query_error(e))?;
        Ok(rows.into_iter().map(|r| (r.thread_id, r.read_at)).collect())
    }
}
