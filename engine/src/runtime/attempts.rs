//! `attempting` marks written together: every send writes one before it
//! leaves, and at a thousand sends a second one commit each would keep
//! the database's single writer busy. A send queues its mark with the
//! group-commit writer ([`crate::group_commit`]), which writes every mark
//! queued so far in one transaction and tells each send whether its claim
//! still held.

use std::sync::OnceLock;

use chrono::{DateTime, Utc};

use crate::group_commit::GroupCommit;
use crate::ids::StepExecutionId;
use crate::store::{Store, StoreError};

/// The most marks one transaction writes.
const MAX_BATCH: usize = 256;

/// One mark: the step, what it is about to send, when, and the lease it
/// renews.
type Mark = (StepExecutionId, Option<serde_json::Value>, DateTime<Utc>, DateTime<Utc>);

/// Why a mark was not written.
#[derive(Debug, thiserror::Error)]
pub(super) enum MarkError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the attempts' writer has stopped")]
    Stopped,
}

#[derive(Debug, Default)]
pub(super) struct AttemptMarks {
    /// Started on the first mark (inside the runtime), for this engine's
    /// store and worker name.
    writer: OnceLock<GroupCommit<Mark, Result<bool, StoreError>>>,
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
        let writer = self.writer.get_or_init(|| {
            let (store, owner) = (store.clone(), owner.to_string());
            GroupCommit::spawn(MAX_BATCH, move |marks: Vec<Mark>| {
                let (store, owner) = (store.clone(), owner.clone());
                async move { write_marks(&store, &owner, marks).await }
            })
        });
        match writer.submit((step, output, now, lease_until)).await {
            Ok(answer) => Ok(answer?),
            Err(_) => Err(MarkError::Stopped),
        }
    }
}

/// One statement for the group, at the first mark's time and lease; when
/// it fails (on PostgreSQL a deadlock with the lease renewal can abort it),
/// each mark alone, so one failure does not hold back the others.
async fn write_marks(store: &Store, owner: &str, marks: Vec<Mark>) -> Vec<Result<bool, StoreError>> {
    let (now, lease_until) = (marks[0].2, marks[0].3);
    let steps: Vec<_> = marks.iter().map(|(id, output, _, _)| (*id, output.clone())).collect();
    match store.mark_attempting_many(owner, &steps, now, lease_until).await {
        Ok(marked) => marks.iter().map(|(id, ..)| Ok(marked.contains(id))).collect(),
        Err(err) => {
            tracing::debug!(%err, marks = marks.len(), "writing attempting marks together failed; one by one");
            let mut answers = Vec::with_capacity(marks.len());
            for (id, output, now, lease_until) in marks {
                let alone = store.mark_attempting(id, owner, output, now, lease_until).await;
                answers.push(alone);
            }
            answers
        }
    }
}
