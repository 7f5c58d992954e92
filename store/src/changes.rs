//! What changed since a moment, for the live inbox: the threads whose row
//! or messages were written after it (`updated_at`, indexed on both).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::Store;
use super::StoreError;
use super::entities::{message, thread};
use kairo_core::ids::ThreadId;

impl Store {
    /// The threads changed after `since` (the thread itself: owner,
    /// status, window; or one of its messages: recorded, or a status
    /// applied), each with its latest change, oldest first, at most about
    /// `limit`. When a table had more, only changes up to the last one read
    /// of it are returned, so that a caller going on from the newest time
    /// returned misses nothing.
    pub async fn threads_changed_since(
        &self,
        since: DateTime<Utc>,
        limit: u64,
    ) -> Result<Vec<(ThreadId, DateTime<Utc>)>, StoreError> {
        let q = |e| self.query_error(e);
        let threads: Vec<(ThreadId, DateTime<Utc>)> = thread::Entity::find()
            .select_only()
            .column(thread::Column::Id)
            .column(thread::Column::UpdatedAt)
            .filter(thread::Column::UpdatedAt.gt(since))
            .order_by_asc(thread::Column::UpdatedAt)
            .limit(limit)
            .into_tuple()
            .all(&self.db)
            .await
            .map_err(q)?;
        let messages: Vec<(ThreadId, DateTime<Utc>)> = message::Entity::find()
            .select_only()
            .column(message::Column::ThreadId)
            .column(message::Column::UpdatedAt)
            .filter(message::Column::UpdatedAt.gt(since))
            .order_by_asc(message::Column::UpdatedAt)
            .limit(limit)
            .into_tuple()
            .all(&self.db)
            .await
            .map_err(q)?;
        let horizon = [&threads, &messages]
            .iter()
            .filter(|rows| rows.len() as u64 >= limit)
            .filter_map(|rows| rows.last().map(|(_, at)| *at))
            .min();
        let mut latest: HashMap<ThreadId, DateTime<Utc>> = HashMap::new();
        for (id, at) in threads.into_iter().chain(messages) {
            if horizon.is_some_and(|h| at > h) {
                continue;
            }
            let entry = latest.entry(id).or_insert(at);
            *entry = (*entry).max(at);
        }
        let mut changed: Vec<(ThreadId, DateTime<Utc>)> = latest.into_iter().collect();
        changed.sort_by_key(|(id, at)| (*at, *id));
        Ok(changed)
    }
}
