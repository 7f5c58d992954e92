//! Pacing sends in one process: slots come from the store's shared
//! timeline in runs (one reservation covers [`RUN`] of the number's sends)
//! and are handed to this process's sends one by one.
//!
//! Kairo paces at [`HEADROOM`] of a number's throughput so that scheduling
//! and network jitter never push a one-second window over Meta's limit. A
//! send gets a slot within [`HORIZON`] and sleeps until it, or, when none is
//! free that soon, goes back to the queue (its step deferred, no attempt
//! spent) until one is.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

use kairo_core::clock::Clock;
use kairo_core::ids::PhoneNumberId;
use kairo_store::{PhoneNumber, SlotGrant, Store, StoreError};

/// The share of a number's throughput Kairo uses.
pub const HEADROOM: f64 = 0.97;
/// How much of a number's sending one reservation covers.
const RUN: Duration = Duration::from_millis(100);
/// How far ahead a send may hold a slot (and sleep for it).
pub const HORIZON: Duration = Duration::from_secs(1);
/// How late after its slot a send may still leave: with slots at 97 % of a
/// number's throughput, no one-second window can then hold more than the
/// throughput (for 80 messages/s and up).
pub(super) const LATE: chrono::Duration = chrono::Duration::milliseconds(20);
/// Meta's default throughput, for numbers the catalogue says nothing about.
pub(super) const DEFAULT_THROUGHPUT: f64 = 80.0;

/// When a send may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pace {
    /// At this time (now or within the horizon).
    At(DateTime<Utc>),
    /// Not within the horizon: try again at this time.
    Wait(DateTime<Utc>),
}

#[derive(Debug, Default)]
pub(super) struct Pacer {
    runs: Mutex<HashMap<PhoneNumberId, Arc<tokio::sync::Mutex<Run>>>>,
}

/// The slots this process holds for one number.
#[derive(Debug, Default)]
struct Run {
    grant: Option<SlotGrant>,
    next: u32,
}

impl Pacer {
    /// A slot for one send of `number`.
    /// The time is read after this process's turn for the number comes, so
    /// that a slot is never judged against a stale clock.
    pub(super) async fn slot(
        &self,
        store: &Store,
        clock: &dyn Clock,
        number: &PhoneNumber,
    ) -> Result<Pace, StoreError> {
        let run = self.runs.lock().expect("pacer lock is never poisoned").entry(number.id).or_default().clone();
        let mut run = run.lock().await;
        let now = clock.now();
        if let Some(grant) = run.grant {
            // A slot more than `LATE` past was missed for good; one just
            // past may still be used, as a send may leave `LATE` after its
            // slot (the headroom covers it).
            while run.next < grant.granted && grant.slot(run.next) < now - LATE {
                run.next += 1;
            }
            if run.next < grant.granted {
                run.next += 1;
                return Ok(Pace::At(grant.slot(run.next - 1)));
            }
        }
        let throughput = if number.throughput_mps > 0 { f64::from(number.throughput_mps) } else { DEFAULT_THROUGHPUT };
        let rate = throughput * HEADROOM;
        let want = (rate * RUN.as_secs_f64()).ceil().max(1.0) as u32;
        let grant = store.reserve_send_slots(number.id, rate, want, now, HORIZON).await?;
        if grant.granted == 0 {
            run.grant = None;
            // The next free slot enters the horizon then.
            let free = grant.start - chrono::Duration::from_std(HORIZON).unwrap_or_default();
            return Ok(Pace::Wait(free.max(now + chrono::Duration::milliseconds(1))));
        }
        *run = Run { grant: Some(grant), next: 1 };
        Ok(Pace::At(grant.slot(0)))
    }
}
