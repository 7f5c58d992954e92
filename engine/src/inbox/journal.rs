//! The webhook journal's two tasks: the writer that commits deliveries
//! before their 200 (a group commit), and the applier that carries them into
//! the inbox afterwards, in arrival order.
//!
//! Invariants:
//! - Deliveries arriving together commit together: one writer task drains
//!   what is queued into one transaction; one delivery the database refuses
//!   does not fail the others of its group.
//! - A delivery is applied exactly once: its effects and its `applied_at`
//!   commit in one transaction (the store's `claim_deliveries` makes
//!   concurrent PostgreSQL appliers skip each other's rows); after a crash
//!   the applier resumes with what was journaled.
//! - A delivery that cannot be applied does not hold up the others: after a
//!   failed batch each is tried alone, and one that keeps failing is set
//!   aside after `MAX_APPLY_ATTEMPTS` with its error.
//! - Webhooks first: the applier steps aside while webhook requests wait for
//!   the journal (SQLite has one write lock), for at most
//!   [`MAX_APPLY_DEFERRAL`].

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{IngestReport, Keywords, apply};
use crate::group_commit::GroupCommit;
use kairo_core::channel::InboundEvent;
use kairo_core::clock::Clock;
use kairo_store::{JournaledDelivery, Store, StoreError, Tx};

/// How many deliveries one journal transaction takes at most.
const MAX_BATCH: usize = 256;
/// How many deliveries one apply transaction takes: small enough that the
/// journal writer, which the webhook's 200 waits for, never queues long
/// behind the applier for SQLite's single write lock.
const APPLY_BATCH: u64 = 8;
/// The batch the applier takes when it stops deferring to webhooks: under
/// sustained load the inbox gets about a quarter of the writer's time.
const DEFERRED_APPLY_BATCH: u64 = 32;

/// The group-commit writer's handle; cheap to clone.
#[derive(Debug, Clone)]
pub struct Ingestor {
    journal: GroupCommit<Vec<InboundEvent>, Result<(), StoreError>>,
    /// Webhook requests waiting for their journal commit: while there are
    /// some, the applier steps aside (for at most [`MAX_APPLY_DEFERRAL`]).
    in_flight: Arc<AtomicUsize>,
    /// Wakes the applier once a delivery is journaled and its request no
    /// longer waits, so that it applies at once rather than defer to it.
    wake: Arc<Notify>,
}

/// How often the applier looks at the journal when nothing wakes it.
const APPLY_POLL: Duration = Duration::from_millis(500);
/// The longest the applier defers to waiting webhook requests: under
/// sustained load the inbox still moves at least this often.
const MAX_APPLY_DEFERRAL: Duration = Duration::from_millis(100);

impl Ingestor {
    /// Starts the journal writer and the applier that carries journaled
    /// deliveries into the inbox. The writer ends when every handle is
    /// dropped; the applier when `shutdown` is cancelled.
    pub fn spawn(store: Store, keywords: Keywords, clock: Arc<dyn Clock>, shutdown: CancellationToken) -> Ingestor {
        let wake = Arc::new(Notify::new());
        let in_flight = Arc::new(AtomicUsize::new(0));
        let waiting = in_flight.clone();
        let (writer_store, writer_clock, applier_wake) = (store.clone(), clock.clone(), wake.clone());
        let journal = GroupCommit::spawn(MAX_BATCH, move |deliveries: Vec<Vec<InboundEvent>>| {
            let (store, clock) = (writer_store.clone(), writer_clock.clone());
            async move { journal_group(&store, clock.as_ref(), deliveries).await }
        });
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(APPLY_POLL) => {}
                }
                let mut last_applied = tokio::time::Instant::now();
                loop {
                    // Webhooks first: their 200 waits for the journal, the inbox can lag a little.
                    let busy = waiting.load(Ordering::Acquire) > 0;
                    if busy && last_applied.elapsed() < MAX_APPLY_DEFERRAL {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                        continue;
                    }
                    let batch = if busy { DEFERRED_APPLY_BATCH } else { APPLY_BATCH };
                    last_applied = tokio::time::Instant::now();
                    match apply_journal(&store, &keywords, batch, clock.now()).await {
                        Ok(0) => break,
                        Ok(_) => continue,
                        Err(err) => {
                            tracing::warn!(%err, "applying webhook deliveries failed; retrying shortly");
                            break;
                        }
                    }
                }
            }
        });
        Ingestor { journal, in_flight, wake: applier_wake }
    }

    /// Commits one delivery to the journal (with whatever else is queued).
    pub async fn submit(&self, events: Vec<InboundEvent>) -> Result<(), JournalError> {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        let outcome = self.journal(events).await;
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.wake.notify_one();
        outcome
    }

    async fn journal(&self, events: Vec<InboundEvent>) -> Result<(), JournalError> {
        let stored = self.journal.submit(events).await.map_err(|_| JournalError::Stopped)?;
        Ok(stored?)
    }
}

/// Why a delivery was not journaled (answered 503: Meta delivers it again).
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("the journal writer has stopped")]
    Stopped,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One journal insert for a group of deliveries. One delivery the database
/// refuses must not fail the others of its group: when the group fails,
/// each is stored alone, and only those that still fail are answered with
/// an error.
async fn journal_group(
    store: &Store,
    clock: &dyn Clock,
    deliveries: Vec<Vec<InboundEvent>>,
) -> Vec<Result<(), StoreError>> {
    match store.journal_deliveries("whatsapp", &deliveries, clock.now()).await {
        Ok(()) => deliveries.iter().map(|_| Ok(())).collect(),
        Err(err) => {
            tracing::warn!(%err, deliveries = deliveries.len(), "storing a group of webhook deliveries failed; storing them one by one");
            let mut answers = Vec::with_capacity(deliveries.len());
            for delivery in deliveries {
                let alone = store.journal_deliveries("whatsapp", std::slice::from_ref(&delivery), clock.now()).await;
                if let Err(err) = &alone {
                    tracing::error!(%err, "a webhook delivery was not stored; Meta will deliver it again");
                }
                answers.push(alone);
            }
            answers
        }
    }
}

/// Applies up to `limit` journaled deliveries, oldest first, stopping early
/// once `limit` events have been applied. Returns how many deliveries were
/// applied (0: nothing was waiting).
pub async fn apply_journal(
    store: &Store,
    keywords: &Keywords,
    limit: u64,
    now: DateTime<Utc>,
) -> Result<usize, StoreError> {
    match apply_batch(store, keywords, limit, now).await {
        Ok(applied) => Ok(applied),
        Err(err) => {
            tracing::warn!(%err, "applying a batch of webhook deliveries failed; trying them one by one");
            apply_one_by_one(store, keywords, limit, now).await
        }
    }
}

async fn apply_batch(store: &Store, keywords: &Keywords, limit: u64, now: DateTime<Utc>) -> Result<usize, StoreError> {
    let tx = store.begin().await?;
    let rows = tx.claim_deliveries(limit).await?;
    // The budget counts events, not deliveries: a batch of 10-message
    // deliveries must not hold the write lock ten times longer.
    let (mut applied, mut events) = (0, 0);
    for row in &rows {
        events += apply_delivery(&tx, row, keywords, now).await?;
        applied += 1;
        if events >= limit as usize {
            break;
        }
    }
    tx.commit().await?;
    Ok(applied)
}

async fn apply_one_by_one(
    store: &Store,
    keywords: &Keywords,
    limit: u64,
    now: DateTime<Utc>,
) -> Result<usize, StoreError> {
    let mut applied = 0;
    for _ in 0..limit {
        let tx = store.begin().await?;
        let Some(row) = tx.claim_deliveries(1).await?.pop() else { break };
        match apply_delivery(&tx, &row, keywords, now).await {
            Ok(_) => {
                tx.commit().await?;
                applied += 1;
            }
            Err(err) => {
                tx.rollback().await?;
                tracing::error!(%err, delivery = %row.id, attempt = row.attempts + 1, "webhook delivery could not be applied");
                store.note_apply_failure(row.id, &err.to_string()).await?;
                // The rest waits for the next pass, so the database can recover.
                break;
            }
        }
    }
    Ok(applied)
}

/// One delivery's events and its `applied_at`, in the caller's transaction.
/// Returns how many events it held.
async fn apply_delivery(
    tx: &Tx,
    row: &JournaledDelivery,
    keywords: &Keywords,
    now: DateTime<Utc>,
) -> Result<usize, StoreError> {
    let events = tx.events_of(row)?;
    let mut report = IngestReport::default();
    for event in &events {
        apply(tx, event, keywords, now, &mut report).await?;
    }
    tx.mark_delivery_applied(row.id, now).await?;
    Ok(events.len())
}
