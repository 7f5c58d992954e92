//! Send limits shared by every worker process: one timeline of send slots
//! per business number (`send_pacing`), and the messaging limit: unique
//! recipients reached outside a service window per business portfolio in a
//! moving 24 hours (`messaging_reach`).
//!
//! A worker reserves a run of consecutive slots, spaced by the number's
//! send interval, in one short transaction (a row lock on PostgreSQL, the
//! single writer on SQLite), so the runs of different workers never
//! overlap and the number's rate holds however many processes send. Only
//! slots that start within a horizon are handed out: a send that finds
//! none waits (durably, as a deferred step) instead of queueing in memory.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, Statement, Value};

use sea_orm::EntityTrait;

use super::entities::{business_portfolio, whatsapp_account};
use super::{Backend, PhoneNumber, Store, StoreError};
use kairo_core::ids::PhoneNumberId;

/// The moving window of the messaging limit.
const REACH_WINDOW: chrono::Duration = chrono::Duration::hours(24);

/// Whether a recipient may be reached outside a service window now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    Allowed,
    /// The portfolio's limit is used up until then (when its oldest
    /// recipient leaves the moving window).
    WaitUntil(DateTime<Utc>),
}

/// Unique recipients per moving 24 hours that a messaging-limit tier
/// allows (the portfolio tiers of October 2025 and the older per-number
/// ones); None for unlimited, not set, or a value Kairo does not know.
pub fn messaging_limit(tier: &str) -> Option<i64> {
    match tier.trim().to_ascii_uppercase().as_str() {
        "TIER_50" | "50" => Some(50),
        "TIER_250" | "250" => Some(250),
        "TIER_1K" | "1000" => Some(1_000),
        "TIER_2K" | "2000" => Some(2_000),
        "TIER_10K" | "10000" => Some(10_000),
        "TIER_100K" | "100000" => Some(100_000),
        _ => None,
    }
}

/// A run of send slots: `granted` slots from `start`, one per `interval`.
/// With `granted == 0`, `start` is the next free slot, beyond the horizon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotGrant {
    pub start: DateTime<Utc>,
    pub interval: Duration,
    pub granted: u32,
}

impl SlotGrant {
    /// The time of slot `i` of the run.
    pub fn slot(&self, i: u32) -> DateTime<Utc> {
        self.start + chrono::Duration::from_std(self.interval * i).unwrap_or_default()
    }
}

impl Store {
    /// Reserves up to `want` slots of `number` that start before
    /// `now + horizon`, at `rate` sends per second (slowed while a
    /// rate-limit answer's slowdown lasts).
    pub async fn reserve_send_slots(
        &self,
        number: PhoneNumberId,
        rate: f64,
        want: u32,
        now: DateTime<Utc>,
        horizon: Duration,
    ) -> Result<SlotGrant, StoreError> {
        // Each statement stands alone (no transaction around them): a row
        // lock lives only as long as its own statement, so a worker paused
        // or killed here never holds back another worker's sends.
        let backend = self.db_backend();
        let id = || Value::Uuid(Some(number.as_uuid()));
        let q = |e| self.query_error(e);
        self.db
            .execute_raw(Statement::from_sql_and_values(
                backend,
                "INSERT INTO send_pacing (phone_number_id) VALUES ($1) ON CONFLICT (phone_number_id) DO NOTHING",
                [id()],
            ))
            .await
            .map_err(q)?;
        let (greatest, least) = match self.backend {
            Backend::Postgres => ("GREATEST", "LEAST"),
            Backend::Sqlite => ("MAX", "MIN"),
        };
        let now_us = now.timestamp_micros();
        let horizon_us = horizon.as_micros() as i64;
        // The run starts at the next free slot (or now); it holds the slots
        // that start before the horizon ends (rounded up: at least one
        // whenever the first free slot is inside it), at most `want`.
        let sql = format!(
            "UPDATE send_pacing SET grant_start_us = {greatest}(next_slot_us, $2), \
             next_slot_us = CASE WHEN $2 + $3 - {greatest}(next_slot_us, $2) > 0 \
             THEN {greatest}(next_slot_us, $2) + {least}(($2 + $3 - {greatest}(next_slot_us, $2) + $4 - 1) / $4, $5) * $4 \
             ELSE next_slot_us END \
             WHERE phone_number_id = $1 AND slow_until_us = $6 AND slow_percent = $7 \
             RETURNING grant_start_us, next_slot_us"
        );
        // The slowdown is read first; the update applies only when it is
        // still the same (else it is read again).
        for _ in 0..8 {
            let (slow_until, slow_percent) = self.pacing_slowdown(number).await?;
            let rate = if slow_until > now_us { rate * f64::from(slow_percent.clamp(1, 100)) / 100.0 } else { rate };
            let interval_us = ((1_000_000.0 / rate.max(0.001)).ceil() as i64).max(1);
            let values = [
                id(),
                Value::BigInt(Some(now_us)),
                Value::BigInt(Some(horizon_us)),
                Value::BigInt(Some(interval_us)),
                Value::BigInt(Some(i64::from(want))),
                Value::BigInt(Some(slow_until)),
                Value::Int(Some(slow_percent)),
            ];
            let Some(row) =
                self.db.query_one_raw(Statement::from_sql_and_values(backend, &sql, values)).await.map_err(q)?
            else {
                continue;
            };
            let start: i64 = row.try_get_by_index(0).map_err(q)?;
            let next: i64 = row.try_get_by_index(1).map_err(q)?;
            let granted = u32::try_from(((next - start) / interval_us).max(0)).unwrap_or(u32::MAX).min(want);
            return Ok(SlotGrant {
                start: DateTime::from_timestamp_micros(start).unwrap_or(now),
                interval: Duration::from_micros(interval_us as u64),
                granted,
            });
        }
        Err(self.missing("a send pacing row that stays still long enough to reserve from"))
    }

    /// A number's slowdown as its pacing row holds it: until when (µs) and to
    /// what percent of its throughput.
    async fn pacing_slowdown(&self, number: PhoneNumberId) -> Result<(i64, i32), StoreError> {
        let q = |e| self.query_error(e);
        let row = self
            .db
            .query_one_raw(Statement::from_sql_and_values(
                self.db_backend(),
                "SELECT slow_until_us, slow_percent FROM send_pacing WHERE phone_number_id = $1",
                [Value::Uuid(Some(number.as_uuid()))],
            ))
            .await
            .map_err(q)?
            .ok_or_else(|| self.missing("send pacing row just inserted"))?;
        Ok((row.try_get_by_index(0).map_err(q)?, row.try_get_by_index(1).map_err(q)?))
    }

    /// Slows a number's sends to `percent` of its throughput until `until`
    /// (after a rate-limit answer from WhatsApp).
    pub async fn slow_down_sends(
        &self,
        number: PhoneNumberId,
        percent: i32,
        until: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let sql = "INSERT INTO send_pacing (phone_number_id, slow_until_us, slow_percent) VALUES ($1, $2, $3) \
                   ON CONFLICT (phone_number_id) DO UPDATE SET slow_until_us = $2, slow_percent = $3";
        let values = [
            Value::Uuid(Some(number.as_uuid())),
            Value::BigInt(Some(until.timestamp_micros())),
            Value::Int(Some(percent.clamp(1, 100))),
        ];
        let tx = self.begin().await?;
        let backend = tx.txn.get_database_backend();
        tx.txn.execute_raw(Statement::from_sql_and_values(backend, sql, values)).await.map_err(|e| tx.err(e))?;
        tx.commit().await
    }
}

impl Store {
    /// Counts `recipient` against the messaging limit of `number`'s
    /// business portfolio (or account, when it has none), unless reached
    /// already in the last 24 hours. A limit Kairo does not know is not
    /// enforced here (WhatsApp still enforces it).
    pub async fn reach_recipient(
        &self,
        number: &PhoneNumber,
        recipient: &str,
        now: DateTime<Utc>,
    ) -> Result<Reach, StoreError> {
        let Some((scope, limit)) = self.reach_scope(number).await? else { return Ok(Reach::Allowed) };
        let tx = self.begin().await?;
        let backend = tx.txn.get_database_backend();
        let run = |sql: &str, values: Vec<Value>| Statement::from_sql_and_values(backend, sql, values);
        if self.backend == Backend::Postgres {
            // One portfolio's budget is counted by one transaction at a time.
            tx.txn
                .execute_raw(run("SELECT pg_advisory_xact_lock(hashtext($1))", vec![scope.to_string().into()]))
                .await
                .map_err(|e| tx.err(e))?;
        }
        let now_us = now.timestamp_micros();
        let since = (now - REACH_WINDOW).timestamp_micros();
        let id = || Value::Uuid(Some(scope));
        tx.txn
            .execute_raw(run(
                "DELETE FROM messaging_reach WHERE scope_id = $1 AND reached_us <= $2",
                vec![id(), since.into()],
            ))
            .await
            .map_err(|e| tx.err(e))?;
        let known = tx
            .txn
            .query_one_raw(run(
                "SELECT reached_us FROM messaging_reach WHERE scope_id = $1 AND recipient = $2",
                vec![id(), recipient.into()],
            ))
            .await
            .map_err(|e| tx.err(e))?;
        if known.is_some() {
            tx.commit().await?;
            return Ok(Reach::Allowed);
        }
        let row = tx
            .txn
            .query_one_raw(run("SELECT COUNT(*), MIN(reached_us) FROM messaging_reach WHERE scope_id = $1", vec![id()]))
            .await
            .map_err(|e| tx.err(e))?
            .ok_or_else(|| self.missing("a count"))?;
        let used: i64 = row.try_get_by_index(0).map_err(|e| tx.err(e))?;
        let oldest: Option<i64> = row.try_get_by_index(1).map_err(|e| tx.err(e))?;
        if used >= limit {
            tx.commit().await?;
            let frees = oldest.and_then(DateTime::from_timestamp_micros).map_or(now, |t| t + REACH_WINDOW);
            return Ok(Reach::WaitUntil(frees.max(now + chrono::Duration::seconds(1))));
        }
        tx.txn
            .execute_raw(run(
                "INSERT INTO messaging_reach (scope_id, recipient, reached_us) VALUES ($1, $2, $3)",
                vec![id(), recipient.into(), now_us.into()],
            ))
            .await
            .map_err(|e| tx.err(e))?;
        tx.commit().await?;
        Ok(Reach::Allowed)
    }

    /// The messaging limit that binds `number`: the scope it is counted in
    /// (its portfolio, else its account) and the recipients allowed per
    /// moving 24 hours; None when no known limit applies.
    async fn reach_scope(&self, number: &PhoneNumber) -> Result<Option<(uuid::Uuid, i64)>, StoreError> {
        let account = whatsapp_account::Entity::find_by_id(number.account_id)
            .one(&self.db)
            .await
            .map_err(|e| self.query_error(e))?
            .ok_or_else(|| self.missing("the number's account"))?;
        let portfolio = match account.portfolio_id {
            Some(id) => {
                business_portfolio::Entity::find_by_id(id).one(&self.db).await.map_err(|e| self.query_error(e))?
            }
            None => None,
        };
        let tier =
            portfolio.as_ref().and_then(|p| p.messaging_limit.clone()).or_else(|| number.messaging_limit_tier.clone());
        let Some(limit) = tier.as_deref().and_then(messaging_limit) else { return Ok(None) };
        Ok(Some((portfolio.map_or(account.id.as_uuid(), |p| p.id.as_uuid()), limit)))
    }

    /// Where `number`'s sending stands: its next free slot, the pace it
    /// keeps now, and what is left of its messaging limit.
    pub async fn send_budget(&self, number: &PhoneNumber, now: DateTime<Utc>) -> Result<SendBudget, StoreError> {
        let backend = self.db_backend();
        let row = self
            .db
            .query_one_raw(Statement::from_sql_and_values(
                backend,
                "SELECT next_slot_us, slow_until_us, slow_percent FROM send_pacing WHERE phone_number_id = $1",
                [Value::Uuid(Some(number.id.as_uuid()))],
            ))
            .await
            .map_err(|e| self.query_error(e))?;
        let (next_slot_us, slow_until_us, slow_percent) = match row {
            Some(row) => (
                row.try_get_by_index::<i64>(0).map_err(|e| self.query_error(e))?,
                row.try_get_by_index::<i64>(1).map_err(|e| self.query_error(e))?,
                row.try_get_by_index::<i32>(2).map_err(|e| self.query_error(e))?,
            ),
            None => (0, 0, 100),
        };
        let slowed = slow_until_us > now.timestamp_micros();
        let limit = match self.reach_scope(number).await? {
            Some((scope, limit)) => {
                let since = (now - REACH_WINDOW).timestamp_micros();
                let row = self
                    .db
                    .query_one_raw(Statement::from_sql_and_values(
                        backend,
                        "SELECT COUNT(*) FROM messaging_reach WHERE scope_id = $1 AND reached_us > $2",
                        [Value::Uuid(Some(scope)), since.into()],
                    ))
                    .await
                    .map_err(|e| self.query_error(e))?
                    .ok_or_else(|| self.missing("a count"))?;
                let used: i64 = row.try_get_by_index(0).map_err(|e| self.query_error(e))?;
                Some((limit, used.min(limit)))
            }
            None => None,
        };
        Ok(SendBudget {
            next_slot: DateTime::from_timestamp_micros(next_slot_us).unwrap_or(now).max(now),
            pace_percent: if slowed { slow_percent.clamp(1, 100) } else { 100 },
            messaging_limit: limit.map(|(limit, _)| limit),
            reached: limit.map(|(_, used)| used),
        })
    }
}

/// Where one number's sending stands ([`Store::send_budget`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendBudget {
    /// The earliest time its next send may go.
    pub next_slot: DateTime<Utc>,
    /// The share of its throughput it sends at now (100, or less after a
    /// rate-limit answer).
    pub pace_percent: i32,
    /// Recipients allowed outside a service window per moving 24 hours;
    /// None when no known limit applies.
    pub messaging_limit: Option<i64>,
    /// Recipients reached in the last 24 hours.
    pub reached: Option<i64>,
}
