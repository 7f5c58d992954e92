//! The worker loop: claim due steps in batches, run them in a bounded number
//! of slots, commit their results in batches, keep leases alive, and do the
//! periodic work (timers, events, schedules, steps left by dead workers).
//!
//! Shutdown: one `CancellationToken`. The loop stops claiming, lets running
//! steps finish up to a grace period and commits them, then gives back the
//! claims it still holds; a step cut off mid-call stays `attempting` and is
//! settled by its unknown-outcome policy when its lease runs out.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::commit::{Claimed, Finished};
use super::context::RunContext;
use super::{Engine, EngineError};
use kairo_core::ids::EnrollmentId;
use kairo_store::StepExecution;

/// How one worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Steps running at the same time in this process.
    pub slots: usize,
    /// How often an idle worker looks for due work.
    pub poll_interval: Duration,
    /// How often timers, events and schedules are looked at.
    pub maintenance_interval: Duration,
    /// How long running steps may take to finish after shutdown is asked.
    pub shutdown_grace: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            slots: 128,
            poll_interval: Duration::from_millis(200),
            maintenance_interval: Duration::from_millis(500),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// What a worker did before it stopped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerReport {
    pub steps: u64,
}

/// What one [`Engine::tick`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TickReport {
    pub steps: usize,
    pub timers: usize,
    pub events: usize,
    pub schedules: usize,
}

impl TickReport {
    pub fn is_idle(&self) -> bool {
        *self == TickReport::default()
    }
}

/// Most batches of timers or events one maintenance pass handles, so steps
/// are not starved while a backlog drains.
const MAINTENANCE_BATCHES: usize = 16;

/// Timers fired per transaction by the timer task, in step batches: firing
/// is a few set-based statements, so larger batches cost little more.
const TIMER_BATCH_FACTOR: usize = 4;

/// The shortest pause of an idle timer task.
const TIMER_MIN_PAUSE: Duration = Duration::from_millis(20);
/// How long a result that could not be written waits before it is written
/// again (the database restarting, a lock timeout).
const UNSAVED_RETRY: Duration = Duration::from_secs(1);
/// How long finished steps are gathered before their batch commits.
const COMMIT_GATHER: Duration = Duration::from_millis(5);

impl Engine {
    /// The run contexts of a batch of claimed steps.
    pub(super) async fn contexts(
        &self,
        claims: &[StepExecution],
    ) -> Result<HashMap<EnrollmentId, RunContext>, EngineError> {
        let ids: Vec<EnrollmentId> =
            claims.iter().map(|c| c.enrollment_id).collect::<HashSet<_>>().into_iter().collect();
        let rows = self.store.run_rows(&ids).await?;
        for enrollment in &rows.enrollments {
            self.plan(enrollment.workflow_version_id).await?;
        }
        let plans = self.plans.read().expect("plan cache lock is never poisoned").clone();
        Ok(RunContext::from_rows(rows, &plans))
    }

    /// Claims up to `limit` due steps, with their contexts.
    async fn claim(&self, limit: usize) -> Result<Vec<Claimed>, EngineError> {
        let now = self.now();
        let claims = self.store.claim_due_steps(self.owner(), now, now + self.lease(), limit as u64).await?;
        if claims.is_empty() {
            return Ok(Vec::new());
        }
        self.hold(claims.iter().map(|c| c.id));
        let contexts = match self.contexts(&claims).await {
            Ok(contexts) => contexts,
            Err(err) => {
                self.give_back(&claims.iter().map(|c| c.id).collect::<Vec<_>>()).await;
                return Err(err);
            }
        };
        let mut out = Vec::with_capacity(claims.len());
        let mut unreadable = Vec::new();
        for claim in claims {
            match contexts.get(&claim.enrollment_id) {
                Some(ctx) => out.push(Claimed { ctx: ctx.clone(), claim }),
                None => {
                    tracing::error!(enrollment = %claim.enrollment_id, step = %claim.step_id, "claimed a step whose enrollment cannot be read");
                    unreadable.push(claim.id);
                }
            }
        }
        self.give_back(&unreadable).await;
        Ok(out)
    }

    /// Lets go of claimed steps this worker will not run: their leases run
    /// out at once, for whoever comes next.
    pub(super) async fn give_back(&self, steps: &[kairo_core::ids::StepExecutionId]) {
        if steps.is_empty() {
            return;
        }
        self.let_go(steps.iter().copied());
        if let Err(err) = self.store.abandon_claims(self.owner(), steps).await {
            tracing::warn!(%err, steps = steps.len(), "cannot give back claimed steps; their leases run out");
        }
    }

    /// One pass over periodic work: steps left by dead workers, due timers,
    /// new events and schedule ticks. Returns the steps it leaves claimed by
    /// this worker, to run now.
    /// Timers are fired here only when `timers` is set: the worker loop
    /// fires them in a task of its own.
    async fn maintain(&self, report: &mut TickReport, timers: bool) -> Result<Vec<Claimed>, EngineError> {
        let batch = self.config.batch as u64;
        self.refresh().await?;
        self.store.requeue_expired_claims(self.now()).await?;
        let chained = self.settle_unknown_outcomes(batch).await?;
        if timers {
            for _ in 0..MAINTENANCE_BATCHES {
                let fired = self.fire_timers(batch).await?;
                report.timers += fired;
                if fired < batch as usize {
                    break;
                }
            }
        }
        for _ in 0..MAINTENANCE_BATCHES {
            let applied = self.apply_events(batch).await?;
            report.events += applied;
            if applied < batch as usize {
                break;
            }
        }
        report.schedules += self.fire_schedules().await?;
        Ok(chained)
    }

    /// Runs everything due now until nothing is left: periodic work, then
    /// steps (and the steps they lead to), again until idle. Tests and
    /// `kairo simulate` drive the engine with this and a fake clock.
    pub async fn tick(self: &Arc<Self>) -> Result<TickReport, EngineError> {
        let mut total = TickReport::default();
        for _ in 0..10_000 {
            let mut round = TickReport::default();
            let mut ready: VecDeque<Claimed> = self.maintain(&mut round, true).await?.into();
            loop {
                if ready.is_empty() {
                    ready.extend(self.claim(self.config.batch).await?);
                }
                if ready.is_empty() {
                    break;
                }
                let mut running = JoinSet::new();
                for claimed in ready.drain(..) {
                    self.spawn_step(&mut running, claimed);
                }
                let finished = running.join_all().await;
                round.steps += finished.len();
                let mut unsaved = Vec::new();
                ready.extend(self.commit(finished, &mut unsaved).await);
            }
            total.steps += round.steps;
            total.timers += round.timers;
            total.events += round.events;
            total.schedules += round.schedules;
            if round.is_idle() {
                break;
            }
        }
        Ok(total)
    }

    fn spawn_step(self: &Arc<Self>, running: &mut JoinSet<Finished>, claimed: Claimed) {
        let engine = self.clone();
        running.spawn(async move {
            let outcome = engine.run_step(&claimed.claim, &claimed.ctx).await;
            Finished { claim: claimed.claim, ctx: claimed.ctx, outcome }
        });
    }

    /// Runs steps until `shutdown` is cancelled.
    ///
    /// Lease renewal and periodic work (steps left by dead workers, events,
    /// schedules) run in tasks of their own, as timers do: a statement that
    /// waits (a lock, a slow database) never stops this loop from claiming
    /// and committing, nor the leases from being renewed.
    pub async fn run(
        self: &Arc<Self>,
        config: WorkerConfig,
        shutdown: CancellationToken,
    ) -> Result<WorkerReport, EngineError> {
        if !self.wait_for_store(&shutdown).await {
            return Ok(WorkerReport::default());
        }
        let slots = config.slots.max(1);
        let mut report = WorkerReport::default();
        let mut running: JoinSet<Finished> = JoinSet::new();
        let mut ready: VecDeque<Claimed> = VecDeque::new();
        let mut unsaved: Vec<Finished> = Vec::new();
        let mut last_save_try = Instant::now();
        tracing::info!(owner = self.owner(), slots, "worker started");
        let timers = tokio::spawn(self.clone().fire_timers_until(config.poll_interval, shutdown.clone()));
        let (chain, mut chained) = tokio::sync::mpsc::unbounded_channel();
        let maintenance =
            tokio::spawn(self.clone().maintain_until(config.maintenance_interval, chain, shutdown.clone()));
        // Leases are renewed until the last step has been committed or given
        // back, after the loop ends.
        let renewing = CancellationToken::new();
        let renewal = tokio::spawn(self.clone().renew_until(renewing.clone()));
        while !shutdown.is_cancelled() {
            while let Ok(claimed) = chained.try_recv() {
                ready.push_back(claimed);
            }
            if !unsaved.is_empty() && last_save_try.elapsed() >= UNSAVED_RETRY {
                let batch = std::mem::take(&mut unsaved);
                ready.extend(self.commit(batch, &mut unsaved).await);
                last_save_try = Instant::now();
            }
            while running.len() < slots {
                let Some(claimed) = ready.pop_front() else { break };
                self.spawn_step(&mut running, claimed);
            }
            if running.len() < slots {
                match self.claim((slots - running.len()).min(self.config.batch)).await {
                    Ok(claimed) => claimed.into_iter().for_each(|c| self.spawn_step(&mut running, c)),
                    Err(err) => tracing::warn!(%err, "claiming steps failed; retrying"),
                }
            }
            if running.is_empty() {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = self.wakeup.notified() => {}
                    Some(claimed) = chained.recv() => ready.push_back(claimed),
                    _ = tokio::time::sleep(config.poll_interval) => {}
                }
                continue;
            }
            let finished = self.gather_finished(&mut running, config.poll_interval).await;
            report.steps += finished.len() as u64;
            ready.extend(self.commit(finished, &mut unsaved).await);
        }
        if let Err(err) = maintenance.await {
            tracing::error!(%err, "the maintenance task ended abnormally");
        }
        while let Ok(claimed) = chained.try_recv() {
            ready.push_back(claimed);
        }
        drop(ready); // claimed, not started: given back by `drain`
        self.drain(running, unsaved, config.shutdown_grace, &mut report).await;
        renewing.cancel();
        for (task, what) in [(timers, "timer"), (renewal, "lease renewal")] {
            if let Err(err) = task.await {
                tracing::error!(%err, "the {what} task ended abnormally");
            }
        }
        tracing::info!(owner = self.owner(), steps = report.steps, "worker stopped");
        Ok(report)
    }

    /// Waits until the workflows and numbers can be read: a database that is
    /// restarting now is back in a moment. False when shut down meanwhile.
    async fn wait_for_store(&self, shutdown: &CancellationToken) -> bool {
        while let Err(err) = self.refresh().await {
            tracing::warn!(%err, "cannot read the workflows and numbers; retrying in a second");
            tokio::select! {
                _ = shutdown.cancelled() => return false,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
        true
    }

    /// The steps that finished: the first one to finish (or none within
    /// `poll`), then those that finish one by one (sends leaving in their
    /// slots) for a moment more, so they commit together: one transaction
    /// per send would leave no time to claim more.
    async fn gather_finished(&self, running: &mut JoinSet<Finished>, poll: Duration) -> Vec<Finished> {
        let mut finished = Vec::new();
        tokio::select! {
            joined = running.join_next() => finished.extend(joined.and_then(log_join)),
            _ = tokio::time::sleep(poll) => {}
        }
        let gather_until = tokio::time::Instant::now() + COMMIT_GATHER;
        loop {
            while let Some(joined) = running.try_join_next() {
                finished.extend(log_join(joined));
            }
            if finished.is_empty() || running.is_empty() || finished.len() >= self.config.batch {
                return finished;
            }
            tokio::select! {
                joined = running.join_next() => finished.extend(joined.and_then(log_join)),
                _ = tokio::time::sleep_until(gather_until) => return finished,
            }
        }
    }

    /// Periodic work every `every` until `shutdown`; the steps it leaves
    /// claimed by this worker go to the loop through `chain`.
    async fn maintain_until(
        self: Arc<Self>,
        every: Duration,
        chain: tokio::sync::mpsc::UnboundedSender<Claimed>,
        shutdown: CancellationToken,
    ) {
        while !shutdown.is_cancelled() {
            let mut tick = TickReport::default();
            match self.maintain(&mut tick, false).await {
                Ok(claimed) => {
                    for c in claimed {
                        let _ = chain.send(c);
                    }
                    if tick.events > 0 || tick.schedules > 0 {
                        self.wakeup.notify_waiters();
                    }
                }
                Err(err) => tracing::warn!(%err, "periodic work failed; retrying"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(every) => {}
            }
        }
    }

    /// Renews this worker's leases every third of a lease until `stop`.
    async fn renew_until(self: Arc<Self>, stop: CancellationToken) {
        let every = self.config.lease / 3;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(every) => {}
            }
            let now = self.now();
            let held = self.held_steps();
            if let Err(err) = self.store.renew_leases(self.owner(), &held, now + self.lease()).await {
                tracing::warn!(%err, "cannot renew leases; retrying");
            }
        }
    }

    /// Fires timers as they fall due until `shutdown`: batch after batch
    /// while a backlog lasts, else a look every `poll` (or sooner, when the
    /// next timer is nearer). A task of its own, so a burst of timers is not
    /// held back behind step batches and steps are not held behind timers.
    async fn fire_timers_until(self: Arc<Self>, poll: Duration, shutdown: CancellationToken) {
        let batch = (self.config.batch * TIMER_BATCH_FACTOR) as u64;
        while !shutdown.is_cancelled() {
            let started = Instant::now();
            let fired = self.fire_timers(batch).await;
            if let Ok(fired @ 1..) = fired {
                tracing::debug!(fired, ms = started.elapsed().as_millis() as u64, "timers fired");
            }
            let pause = match fired {
                Ok(fired) if fired as u64 >= batch => continue,
                Ok(_) => match self.store.next_timer().await {
                    // Not sooner than TIMER_MIN_PAUSE: a due timer left over
                    // is one another PostgreSQL worker holds right now.
                    Ok(Some(next)) => (next.wake_at - self.now())
                        .to_std()
                        .unwrap_or_default()
                        .clamp(TIMER_MIN_PAUSE, poll.max(TIMER_MIN_PAUSE)),
                    Ok(None) => poll,
                    Err(err) => {
                        tracing::warn!(%err, "cannot read the next timer; retrying");
                        poll
                    }
                },
                Err(err) => {
                    tracing::warn!(%err, "firing timers failed; retrying");
                    poll
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Lets running steps finish within `grace`, commits them, and gives
    /// back every claim this worker still holds.
    async fn drain(
        &self,
        mut running: JoinSet<Finished>,
        unsaved: Vec<Finished>,
        grace: Duration,
        report: &mut WorkerReport,
    ) {
        let deadline = tokio::time::sleep(grace);
        tokio::pin!(deadline);
        let mut finished = unsaved;
        while !running.is_empty() {
            tokio::select! {
                joined = running.join_next() => finished.extend(joined.and_then(log_join)),
                _ = &mut deadline => break,
            }
        }
        running.abort_all();
        report.steps += finished.len() as u64;
        // Successors claimed by this last commit are given back below; a
        // result that still cannot be written keeps its step claimed (sent:
        // `attempting`) until its lease runs out.
        let mut lost = Vec::new();
        drop(self.commit(finished, &mut lost).await);
        self.let_go(self.held_steps());
        match self.store.release_claims(self.owner()).await {
            Ok(released) if released > 0 => tracing::info!(released, "claims given back at shutdown"),
            Ok(_) => {}
            Err(err) => tracing::warn!(%err, "cannot give back claims; they return when their lease runs out"),
        }
    }
}

fn log_join(joined: Result<Finished, tokio::task::JoinError>) -> Option<Finished> {
    match joined {
        Ok(finished) => Some(finished),
        Err(err) => {
            tracing::error!(%err, "a step task ended abnormally; its step is retried when its lease runs out");
            None
        }
    }
}
