//! Group commit for enrollments from the API: requests arriving together
//! are enrolled in one transaction, so that a burst of single enrollments
//! costs one commit (one fsync on SQLite) per batch instead of one per
//! request, as the webhook journal does for deliveries.
//!
//! Invariant: a request is answered only after the transaction holding its
//! enrollment has committed; when the transaction fails, every request in
//! it gets the error and nothing of it is kept.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::{BulkRow, Engine, EngineError};
use crate::store::RowResult;

/// The most requests one transaction takes.
const MAX_BATCH: usize = 256;

struct Job {
    workflow: String,
    row: BulkRow,
    done: oneshot::Sender<Result<RowResult, QueueError>>,
}

/// The handle of the enrolling task; cheap to clone.
#[derive(Debug, Clone)]
pub struct EnrollQueue {
    queue: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").field("workflow", &self.workflow).field("line", &self.row.line).finish()
    }
}

/// Why a queued enrollment did not happen.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The batch's transaction failed (the database, most likely).
    #[error("{0}")]
    Failed(String),
    #[error("the enrolling task has stopped (the server is shutting down)")]
    Stopped,
}

impl EnrollQueue {
    /// Starts the task; it ends when every handle is dropped.
    pub fn spawn(engine: Arc<Engine>) -> EnrollQueue {
        let (queue, jobs) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(run(engine, jobs));
        EnrollQueue { queue }
    }

    /// Enrolls one row into `workflow`, with whatever else is queued.
    pub async fn enroll(&self, workflow: &str, row: BulkRow) -> Result<RowResult, QueueError> {
        let (done, answer) = oneshot::channel();
        let job = Job { workflow: workflow.to_string(), row, done };
        self.queue.send(job).await.map_err(|_| QueueError::Stopped)?;
        answer.await.map_err(|_| QueueError::Stopped)?
    }
}

async fn run(engine: Arc<Engine>, mut jobs: mpsc::Receiver<Job>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while jobs.recv_many(&mut batch, MAX_BATCH).await > 0 {
        enroll_batch(&engine, std::mem::take(&mut batch)).await;
    }
}

/// One transaction for the batch; a workflow that cannot take API
/// enrollments fails only its own requests.
async fn enroll_batch(engine: &Engine, batch: Vec<Job>) {
    let mut by_workflow: BTreeMap<String, Vec<Job>> = BTreeMap::new();
    for job in batch {
        by_workflow.entry(job.workflow.clone()).or_default().push(job);
    }
    let now = engine.now();
    let tx = match engine.store.begin().await {
        Ok(tx) => tx,
        Err(err) => return fail_all(by_workflow.into_values().flatten(), &err.to_string()),
    };
    let mut answers: Vec<(oneshot::Sender<Result<RowResult, QueueError>>, RowResult)> = Vec::new();
    let mut refused = Vec::new();
    for (workflow, jobs) in by_workflow {
        // Lines are positions in the batch, to give each request its result.
        let (rows, senders): (Vec<BulkRow>, Vec<_>) =
            jobs.into_iter().enumerate().map(|(i, job)| (BulkRow { line: i as u64, ..job.row }, job.done)).unzip();
        match engine.enroll_rows(&tx, &workflow, None, rows, now).await {
            Ok(mut results) => {
                results.sort_by_key(|r| r.line);
                answers.extend(senders.into_iter().zip(results));
            }
            Err(
                err @ (EngineError::UnknownWorkflow(_)
                | EngineError::NotApiEnrollable { .. }
                | EngineError::WorkflowNotActive { .. }),
            ) => {
                refused.extend(senders.into_iter().map(|s| (s, refusal(&err))));
            }
            Err(err) => {
                drop(tx);
                let message = err.to_string();
                fail_all_senders(answers.into_iter().map(|(s, _)| s).chain(senders), &message);
                fail_all_senders(refused.into_iter().map(|(s, _)| s), &message);
                return;
            }
        }
    }
    if let Err(err) = tx.commit().await {
        let message = err.to_string();
        fail_all_senders(answers.into_iter().map(|(s, _)| s).chain(refused.into_iter().map(|(s, _)| s)), &message);
        return;
    }
    engine.notify();
    for (sender, result) in answers {
        let _ = sender.send(Ok(result));
    }
    for (sender, refused) in refused {
        let _ = sender.send(Err(QueueError::Engine(refused)));
    }
}

fn fail_all(jobs: impl Iterator<Item = Job>, message: &str) {
    fail_all_senders(jobs.map(|j| j.done), message);
}

/// The same refusal, for each request it answers.
fn refusal(err: &EngineError) -> EngineError {
    match err {
        EngineError::UnknownWorkflow(key) => EngineError::UnknownWorkflow(key.clone()),
        EngineError::NotApiEnrollable { workflow } => EngineError::NotApiEnrollable { workflow: workflow.clone() },
        EngineError::WorkflowNotActive { workflow, state } => {
            EngineError::WorkflowNotActive { workflow: workflow.clone(), state: *state }
        }
        other => EngineError::UnknownWorkflow(other.to_string()),
    }
}

fn fail_all_senders(senders: impl Iterator<Item = oneshot::Sender<Result<RowResult, QueueError>>>, message: &str) {
    tracing::warn!(error = %message, "a batch of API enrollments failed; each request is answered with the error");
    for sender in senders {
        let _ = sender.send(Err(QueueError::Failed(message.to_string())));
    }
}
