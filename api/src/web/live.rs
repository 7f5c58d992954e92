//! The live feed of the inbox: server-sent events naming the threads that
//! changed (a message recorded, a status applied, an owner or status
//! changed), so that every open page re-reads what it shows.
//!
//! One poller per process asks the database twice a second for what
//! changed (`Store::threads_changed_since`), however many agents are
//! connected, and hands each change to every connection through a
//! broadcast channel. The database is the source, not this process's own
//! writes, so a change made by another `kairo serve` process, a worker or
//! the webhook applier appears as well.
//!
//! Each event's id is the time of its latest change. A browser that lost
//! its connection sends that id back (`Last-Event-ID`, which `EventSource`
//! does by itself) and is first told every thread changed since, so no
//! change is lost across a reconnect; a connection that fell behind the
//! broadcast gets `resync` (re-read everything).
//!
//! Changes are read again from [`OVERLAP`] before the newest one seen, and
//! what was already sent is skipped: a transaction that took its
//! timestamp before a later one but committed after it, or a process whose
//! clock runs a little behind, is still seen.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use chrono::{DateTime, Utc};
use futures::Stream;
use tokio::sync::broadcast;

use super::WebState;
use super::cookies::Jar;
use super::session::Agent;
use kairo_core::ids::ThreadId;
use kairo_engine::runtime::Engine;

/// How often the poller asks the database.
const POLL_EVERY: Duration = Duration::from_millis(500);
/// How far back each poll reads again (see the module's doc).
pub const OVERLAP: chrono::Duration = chrono::Duration::seconds(3);
/// How often a connection checks that its session still holds.
const SESSION_CHECK_EVERY: Duration = Duration::from_secs(5);
/// The most threads one poll reads.
const POLL_LIMIT: u64 = 2_000;

/// Threads that changed, up to `at`.
#[derive(Debug, Clone)]
pub struct Change {
    pub at: DateTime<Utc>,
    pub threads: Vec<ThreadId>,
}

/// The process's live feed.
#[derive(Debug, Clone)]
pub struct Hub {
    sender: broadcast::Sender<Arc<Change>>,
    connected: Arc<AtomicUsize>,
}

impl Hub {
    /// Starts the poller; it stops with `shutdown`.
    pub fn start(engine: Arc<Engine>, shutdown: tokio_util::sync::CancellationToken) -> Hub {
        let (sender, _) = broadcast::channel(256);
        let hub = Hub { sender, connected: Arc::default() };
        let poller = hub.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = poller.poll(engine) => {}
                () = shutdown.cancelled() => {}
            }
        });
        hub
    }

    /// How many live connections this process serves.
    pub fn connected(&self) -> usize {
        self.connected.load(Ordering::Relaxed)
    }

    async fn poll(&self, engine: Arc<Engine>) {
        let mut newest = engine.now();
        let mut sent: HashMap<ThreadId, DateTime<Utc>> = HashMap::new();
        let mut ticker = tokio::time::interval(POLL_EVERY);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            if self.sender.receiver_count() == 0 {
                // Nobody listens: nothing to read, and a reconnecting page
                // catches up from its own Last-Event-ID.
                newest = newest.max(engine.now() - OVERLAP);
                sent.clear();
                continue;
            }
            let changed = match engine.store().threads_changed_since(newest - OVERLAP, POLL_LIMIT).await {
                Ok(changed) => changed,
                Err(err) => {
                    tracing::warn!(%err, "the live inbox feed could not read the changes; it tries again");
                    continue;
                }
            };
            let fresh: Vec<(ThreadId, DateTime<Utc>)> =
                changed.into_iter().filter(|(id, at)| sent.get(id).is_none_or(|seen| at > seen)).collect();
            if fresh.is_empty() {
                continue;
            }
            for (id, at) in &fresh {
                sent.insert(*id, *at);
                newest = newest.max(*at);
            }
            let horizon = newest - OVERLAP - OVERLAP;
            sent.retain(|_, at| *at > horizon);
            let change = Change { at: newest, threads: fresh.into_iter().map(|(id, _)| id).collect() };
            let _ = self.sender.send(Arc::new(change));
        }
    }
}

fn event_of(change: &Change) -> Event {
    let ids: Vec<String> = change.threads.iter().map(ToString::to_string).collect();
    Event::default()
        .event("threads")
        .id(change.at.timestamp_micros().to_string())
        .data(serde_json::json!({ "threads": ids }).to_string())
}

/// Counts a connection while it lives.
struct Connected(Arc<AtomicUsize>);

impl Drop for Connected {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Connection {
    state: WebState,
    jar: Jar,
    receiver: broadcast::Receiver<Arc<Change>>,
    first: Option<Event>,
    check: tokio::time::Interval,
    ended: bool,
    _connected: Connected,
}

/// `GET /inbox/events`: the live feed of a signed-in agent.
pub async fn events(
    State(state): State<WebState>,
    _agent: Agent,
    jar: Jar,
    headers: HeaderMap,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    // Subscribe before catching up, so nothing falls between the two.
    let receiver = state.live.sender.subscribe();
    state.live.connected.fetch_add(1, Ordering::Relaxed);
    let connected = Connected(state.live.connected.clone());
    let resumed = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok())
        .and_then(DateTime::<Utc>::from_timestamp_micros);
    let first = match resumed {
        None => Some(Event::default().event("hello").data("{}")),
        Some(since) => match state.api.engine.store().threads_changed_since(since - OVERLAP, POLL_LIMIT).await {
            Ok(changed) if changed.is_empty() => Some(Event::default().event("hello").data("{}")),
            Ok(changed) => {
                let at = changed.iter().map(|(_, at)| *at).max().unwrap_or(since);
                Some(event_of(&Change { at, threads: changed.into_iter().map(|(id, _)| id).collect() }))
            }
            Err(_) => Some(Event::default().event("resync").data("{}")),
        },
    };
    let mut check = tokio::time::interval(SESSION_CHECK_EVERY);
    check.reset();
    let connection = Connection { state, jar, receiver, first, check, ended: false, _connected: connected };
    let stream = futures::stream::unfold(connection, |mut c| async move {
        if c.ended {
            return None;
        }
        if let Some(event) = c.first.take() {
            return Some((Ok(event), c));
        }
        loop {
            tokio::select! {
                received = c.receiver.recv() => match received {
                    Ok(change) => return Some((Ok(event_of(&change)), c)),
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        return Some((Ok(Event::default().event("resync").data("{}")), c));
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                _ = c.check.tick() => {
                    if !matches!(Agent::from_jar(&c.state, &c.jar).await, Ok(Some(_)) | Err(_)) {
                        c.ended = true;
                        return Some((Ok(Event::default().event("signedout").data("{}")), c));
                    }
                }
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
