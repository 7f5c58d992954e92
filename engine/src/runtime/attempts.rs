//! `attempting` marks written together: every send writes one before it
//! leaves, and at a thousand sends a second one commit each would keep
//! the database's single writer busy. A send queues its mark; whoever
//! holds the writer's turn writes every mark queued so far in one
//! transaction and tells each send whether its claim still held.
//!
//! Unlike the other group commits ([`crate::group_commit`]) the marks are
//! written by the callers themselves, never by a task of their own: a mark
//! must not be written for a send whose worker has dropped it (a mark
//! without a call is an `uncertain` send that never left).

use std::sync::Mutex;

use chrono::{DateTime, Utc};
use tokio::sync::oneshot;

use crate::ids::StepExecutionId;
use crate::store::{Store, StoreError};

type Waiting = (StepExecutionId, Option<serde_json::Value>, oneshot::Sender<Result<bool, StoreError>>);

/// Why a mark was not written.
#[derive(Debug, thiserror::Error)]
pub(super) enum MarkError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the attempt's writer went away")]
    Gone,
}

#[derive(Debug, Default)]
pub(super) struct AttemptMarks {
    queued: Mutex<Vec<Waiting>>,
    turn: tokio::sync::Mutex<()>,
}

impl AttemptMarks {
    /// Marks `step` attempting (with `output`) under `owner`'s claim, its
    /// lease renewed until `lease_until`. True when the claim held and the
    /// call may be made.
    pub(super) async fn mark(
        &self,
        store: &Store,
        owner: &str,
        step: StepExecutionId,
        output: Option<serde_json::Value>,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<bool, MarkError> {
        let (done, answer) = oneshot::channel();
        self.queued.lock().expect("attempt queue lock is never poisoned").push((step, output, done));
        {
            let _turn = self.turn.lock().await;
            let batch = std::mem::take(&mut *self.queued.lock().expect("attempt queue lock is never poisoned"));
            if !batch.is_empty() {
                write_marks(store, owner, batch, now, lease_until).await;
            }
        }
        Ok(answer.await.map_err(|_| MarkError::Gone)??)
    }
}

/// One statement for the group; when it fails (on PostgreSQL a deadlock
/// with the lease renewal can abort it), each mark alone, so one failure
/// does not hold back the others.
async fn write_marks(store: &Store, owner: &str, batch: Vec<Waiting>, now: DateTime<Utc>, lease_until: DateTime<Utc>) {
    let steps: Vec<_> = batch.iter().map(|(id, output, _)| (*id, output.clone())).collect();
    match store.mark_attempting_many(owner, &steps, now, lease_until).await {
        Ok(marked) => {
            for (id, _, done) in batch {
                let _ = done.send(Ok(marked.contains(&id)));
            }
        }
        Err(err) => {
            tracing::debug!(%err, marks = batch.len(), "writing attempting marks together failed; one by one");
            for (id, output, done) in batch {
                let _ = done.send(store.mark_attempting(id, owner, output, now, lease_until).await);
            }
        }
    }
}
