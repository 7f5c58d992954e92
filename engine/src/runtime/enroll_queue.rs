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

use super::{BulkRow, Engine, EngineError};
use crate::group_commit::GroupCommit;
use kairo_store::RowResult;

/// The most requests one transaction takes.
const MAX_BATCH: usize = 256;

/// One queued request: the workflow and the row to enroll.
type Request = (String, BulkRow);
type Answer = Result<RowResult, QueueError>;

/// The handle of the enrolling task; cheap to clone.
#[derive(Debug, Clone)]
pub struct EnrollQueue {
    writer: GroupCommit<Request, Answer>,
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
        let writer = GroupCommit::spawn(MAX_BATCH, move |batch: Vec<Request>| {
            let engine = engine.clone();
            async move { enroll_batch(&engine, batch).await }
        });
        EnrollQueue { writer }
    }

    /// Enrolls one row into `workflow`, with whatever else is queued.
    pub async fn enroll(&self, workflow: &str, row: BulkRow) -> Result<RowResult, QueueError> {
        self.writer.submit((workflow.to_string(), row)).await.map_err(|_| QueueError::Stopped)?
    }
}

/// One transaction for the batch, answered in its order; a workflow that
/// cannot take API enrollments fails only its own requests. Nothing is
/// answered `Ok` before the transaction committed.
async fn enroll_batch(engine: &Engine, batch: Vec<Request>) -> Vec<Answer> {
    let size = batch.len();
    let mut by_workflow: BTreeMap<String, Vec<(usize, BulkRow)>> = BTreeMap::new();
    for (i, (workflow, row)) in batch.into_iter().enumerate() {
        by_workflow.entry(workflow).or_default().push((i, row));
    }
    let now = engine.now();
    let tx = match engine.store.begin().await {
        Ok(tx) => tx,
        Err(err) => return failed(size, &err.to_string()),
    };
    let mut answers: Vec<Option<Answer>> = (0..size).map(|_| None).collect();
    for (workflow, jobs) in by_workflow {
        // Lines are positions in the group, to give each request its result.
        let (indices, rows): (Vec<usize>, Vec<BulkRow>) =
            jobs.into_iter().enumerate().map(|(line, (i, row))| (i, BulkRow { line: line as u64, ..row })).unzip();
        match engine.enroll_rows(&tx, &workflow, None, rows, now).await {
            Ok(mut results) => {
                results.sort_by_key(|r| r.line);
                for (i, result) in indices.into_iter().zip(results) {
                    answers[i] = Some(Ok(result));
                }
            }
            Err(
                err @ (EngineError::UnknownWorkflow(_)
                | EngineError::NotApiEnrollable { .. }
                | EngineError::WorkflowNotActive { .. }),
            ) => {
                for i in indices {
                    answers[i] = Some(Err(QueueError::Engine(refusal(&err))));
                }
            }
            Err(err) => {
                drop(tx);
                return failed(size, &err.to_string());
            }
        }
    }
    if let Err(err) = tx.commit().await {
        return failed(size, &err.to_string());
    }
    engine.notify();
    answers.into_iter().map(|a| a.unwrap_or_else(|| Err(QueueError::Failed("not enrolled".into())))).collect()
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

/// Every request of a batch whose transaction failed gets its error.
fn failed(size: usize, message: &str) -> Vec<Answer> {
    tracing::warn!(error = %message, "a batch of API enrollments failed; each request is answered with the error");
    (0..size).map(|_| Err(QueueError::Failed(message.to_string()))).collect()
}
