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
//!
//! A mark's instant is taken once its transaction holds a connection, and
//! the mark's output (who marked, when) is built then: a fault between
//! that instant and the request is what leaves a send `uncertain` without
//! its request having left. Taken before, the instant also counted the
//! wait for a connection, which after a database restart (a pool of ten
//! re-opened at once) took up to 650 ms on the 2-core test machine.

use std::collections::HashSet;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::sync::oneshot;

use kairo_core::clock::Clock;
use kairo_core::ids::StepExecutionId;
use kairo_store::{Store, StoreError};

/// Builds a mark's output from the instant of the mark.
pub(super) type Stamp = Box<dyn Fn(DateTime<Utc>) -> Value + Send + Sync>;

struct Waiting {
    step: StepExecutionId,
    output: Option<Stamp>,
    /// The mark's instant, or None when the claim no longer held.
    done: oneshot::Sender<Result<Option<DateTime<Utc>>, StoreError>>,
}

/// Why a mark was not written.
#[derive(Debug, thiserror::Error)]
pub(super) enum MarkError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the attempt's writer went away")]
    Gone,
}

#[derive(Default)]
pub(super) struct AttemptMarks {
    queued: Mutex<Vec<Waiting>>,
    turn: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for AttemptMarks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttemptMarks").finish_non_exhaustive()
    }
}

impl AttemptMarks {
    /// Marks `step` attempting (with the output `output` builds) under
    /// `owner`'s claim, its lease renewed for `lease` from the mark. The
    /// mark's instant when the claim held and the call may be made.
    pub(super) async fn mark(
        &self,
        store: &Store,
        clock: &dyn Clock,
        owner: &str,
        step: StepExecutionId,
        output: Option<Stamp>,
        lease: chrono::Duration,
    ) -> Result<Option<DateTime<Utc>>, MarkError> {
        let (done, answer) = oneshot::channel();
        self.queued.lock().expect("attempt queue lock is never poisoned").push(Waiting { step, output, done });
        {
            let _turn = self.turn.lock().await;
            let batch = std::mem::take(&mut *self.queued.lock().expect("attempt queue lock is never poisoned"));
            if !batch.is_empty() {
                write_marks(store, clock, owner, batch, lease).await;
            }
        }
        Ok(answer.await.map_err(|_| MarkError::Gone)??)
    }
}

/// One statement for the group; when it fails (a cut connection), each
/// mark alone, so one failure does not hold back the others.
async fn write_marks(store: &Store, clock: &dyn Clock, owner: &str, batch: Vec<Waiting>, lease: chrono::Duration) {
    match write_group(store, clock, owner, &batch, lease).await {
        Ok((at, marked)) => {
            for waiting in batch {
                let _ = waiting.done.send(Ok(marked.contains(&waiting.step).then_some(at)));
            }
        }
        Err(err) => {
            tracing::debug!(%err, marks = batch.len(), "writing attempting marks together failed; one by one");
            for waiting in batch {
                let alone = write_group(store, clock, owner, std::slice::from_ref(&waiting), lease).await;
                let _ = waiting.done.send(alone.map(|(at, marked)| marked.contains(&waiting.step).then_some(at)));
            }
        }
    }
}

async fn write_group(
    store: &Store,
    clock: &dyn Clock,
    owner: &str,
    group: &[Waiting],
    lease: chrono::Duration,
) -> Result<(DateTime<Utc>, HashSet<StepExecutionId>), StoreError> {
    let tx = store.begin().await?;
    let at = clock.now();
    // A send dropped while its mark waited (a worker stopping) gets none:
    // a mark without a call would be an `uncertain` send that never left.
    let steps: Vec<_> = group
        .iter()
        .filter(|w| !w.done.is_closed())
        .map(|w| (w.step, w.output.as_ref().map(|stamp| stamp(at))))
        .collect();
    if steps.is_empty() {
        return Ok((at, HashSet::new()));
    }
    let marked = tx.mark_attempting_many(owner, &steps, at, at + lease).await?;
    tx.commit().await?;
    Ok((at, marked))
}
