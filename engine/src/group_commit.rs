//! Group commit: requests that arrive together are written in one
//! transaction, so that a burst costs one commit (one fsync on SQLite) per
//! batch instead of one per request. The webhook journal's writer
//! (`inbox::journal::Ingestor`) and the API's enroll queue use it; the workers' `attempting`
//! marks are grouped by their callers instead (`runtime/attempts.rs`).
//!
//! Invariants:
//! - A request is answered only once the batch holding it was written (or
//!   failed); the writer is a task of its own, so a caller that goes away
//!   (an HTTP client hanging up) never cuts a batch short.
//! - Batches are written one at a time, in arrival order, at most
//!   `max_batch` requests each; a request waits for at most the batch
//!   before it.
//! - What a failed batch does (each request alone, or the same error for
//!   all) is the writer's choice: it answers every request of its batch.

use std::future::Future;

use tokio::sync::{mpsc, oneshot};

/// The writer stopped (the process is shutting down) before answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the group-commit writer has stopped")]
pub struct Stopped;

/// The handle of one group-commit writer; cheap to clone. Requests of type
/// `T` are answered with an `R` each.
pub struct GroupCommit<T, R> {
    queue: mpsc::Sender<(T, oneshot::Sender<R>)>,
}

impl<T, R> std::fmt::Debug for GroupCommit<T, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit").field("queued", &(self.queue.max_capacity() - self.queue.capacity())).finish()
    }
}

impl<T, R> Clone for GroupCommit<T, R> {
    fn clone(&self) -> Self {
        GroupCommit { queue: self.queue.clone() }
    }
}

impl<T: Send + 'static, R: Send + 'static> GroupCommit<T, R> {
    /// Starts the writer: `write` gets each batch, in arrival order, and
    /// returns one answer per request, in the same order. The writer ends
    /// when every handle is dropped.
    pub fn spawn<W, F>(max_batch: usize, mut write: W) -> GroupCommit<T, R>
    where
        W: FnMut(Vec<T>) -> F + Send + 'static,
        F: Future<Output = Vec<R>> + Send,
    {
        let (queue, mut requests) = mpsc::channel::<(T, oneshot::Sender<R>)>(4 * max_batch);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(max_batch);
            while requests.recv_many(&mut batch, max_batch).await > 0 {
                let (items, waiters): (Vec<T>, Vec<_>) = std::mem::take(&mut batch).into_iter().unzip();
                let expected = items.len();
                let answers = write(items).await;
                debug_assert_eq!(answers.len(), expected, "a group-commit writer answers every request");
                for (waiter, answer) in waiters.into_iter().zip(answers) {
                    let _ = waiter.send(answer);
                }
            }
        });
        GroupCommit { queue }
    }

    /// Queues one request and waits for its batch to be written.
    pub async fn submit(&self, item: T) -> Result<R, Stopped> {
        let (done, answer) = oneshot::channel();
        self.queue.send((item, done)).await.map_err(|_| Stopped)?;
        answer.await.map_err(|_| Stopped)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn requests_arriving_together_share_a_batch_and_each_gets_its_answer() {
        let batches = Arc::new(Mutex::new(Vec::new()));
        let seen = batches.clone();
        let writer = GroupCommit::spawn(4, move |items: Vec<u32>| {
            let seen = seen.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                seen.lock().expect("lock").push(items.len());
                items.into_iter().map(|i| i * 10).collect::<Vec<_>>()
            }
        });
        let answers: Vec<u32> = futures::future::join_all((0..10).map(|i| {
            let writer = writer.clone();
            async move { writer.submit(i).await.expect("answered") }
        }))
        .await;
        assert_eq!(answers, (0..10).map(|i| i * 10).collect::<Vec<_>>());
        let batches = batches.lock().expect("lock").clone();
        assert_eq!(batches.iter().sum::<usize>(), 10);
        assert!(batches.iter().all(|&n| n <= 4), "at most max_batch per batch: {batches:?}");
        assert!(batches.len() < 10, "requests shared batches: {batches:?}");
    }

    #[tokio::test]
    async fn a_caller_that_goes_away_does_not_cut_its_batch_short() {
        let written = Arc::new(Mutex::new(Vec::new()));
        let log = written.clone();
        let writer = GroupCommit::spawn(8, move |items: Vec<u32>| {
            let log = log.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(30)).await;
                log.lock().expect("lock").extend(items.iter().copied());
                vec![(); items.len()]
            }
        });
        let impatient = writer.clone();
        let gone = tokio::spawn(async move { impatient.submit(1).await });
        tokio::time::sleep(Duration::from_millis(5)).await;
        gone.abort();
        writer.submit(2).await.expect("the next request is answered");
        assert_eq!(*written.lock().expect("lock"), [1, 2], "the abandoned request was still written");
    }
}
