//! Catalogue sync: an account's phone numbers (throughput, quality,
//! messaging limit) and message templates (every page, every language),
//! read from the Graph API and stored.
//!
//! Paging follows `paging.next` until it is absent (API.md 7.1): a short or
//! empty page does not end the list. The next page is asked for with the
//! `after` cursor on our own base URL, never by following the `next` URL,
//! which names Meta's host (and would bypass a configured mock or proxy).
//! `sample_` templates are never stored. A template the account no longer
//! lists is kept, marked `DELETED`, so workflows that use it are flagged.

use std::collections::HashSet;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use chrono::{DateTime, Utc};
use kairo_core::outbound::{CallError, FailureKind};
use kairo_core::secret::Secret;
use kairo_store::{NewAccount, NewPhoneNumber, NewTemplate, Store, StoreError};
use serde_json::Value;

use super::graph::GraphClient;

const TEMPLATE_FIELDS: &str =
    "id,name,language,status,category,parameter_format,components,quality_score,rejected_reason";
const NUMBER_FIELDS: &str = "id,display_phone_number,verified_name,quality_rating,status,platform_type,throughput,\
whatsapp_business_manager_messaging_limit,messaging_limit_tier";
const PAGE_SIZE: &str = "100";
/// Safety stop for a server that keeps answering with a `next` page.
const MAX_PAGES: usize = 10_000;
/// Meta's default throughput of a number (messages per second).
pub const DEFAULT_THROUGHPUT: i32 = 80;

/// One account to sync, as configured.
#[derive(Debug, Clone)]
pub struct SyncAccount {
    pub waba_id: String,
    pub name: String,
    pub token: Secret,
    /// Graph ids of the numbers Kairo serves; the account's other numbers
    /// are reported, not stored.
    pub numbers: Vec<String>,
}

/// What a sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub numbers: usize,
    /// Numbers of the account that kairo.toml does not list.
    pub numbers_not_served: Vec<String>,
    /// Numbers whose marketing sends this sync paused (low quality,
    /// flagged, restricted), with the reason.
    pub numbers_paused: Vec<String>,
    pub templates: usize,
    pub samples_skipped: usize,
    /// Templates stored before that the account no longer lists.
    pub templates_gone: usize,
    pub pages: usize,
}

/// Where a sync is, for a progress bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncProgress {
    NumbersPage { numbers: usize },
    TemplatesPage { templates: usize },
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("account {waba_id}: {error}")]
    Graph { waba_id: String, error: CallError },
    #[error("account {waba_id}: the Graph API answered something that is not a list ({what})")]
    Shape { waba_id: String, what: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Syncs one account's numbers and templates into `store`.
pub async fn sync_account(
    graph: &GraphClient,
    store: &Store,
    account: &SyncAccount,
    now: DateTime<Utc>,
    mut progress: impl FnMut(SyncProgress),
) -> Result<SyncReport, SyncError> {
    let mut report = SyncReport::default();
    let stored = store
        .upsert_account(
            NewAccount { waba_id: account.waba_id.clone(), name: account.name.clone(), portfolio_id: None },
            now,
        )
        .await?;

    let numbers = list(graph, account, "phone_numbers", NUMBER_FIELDS, &mut report, |seen| {
        progress(SyncProgress::NumbersPage { numbers: seen })
    })
    .await?;
    for number in numbers {
        let Some(graph_id) = number.get("id").and_then(Value::as_str) else { continue };
        if !account.numbers.iter().any(|n| n == graph_id) {
            report.numbers_not_served.push(graph_id.to_string());
            continue;
        }
        let stored_number = store.upsert_phone_number(phone_number(stored.id, graph_id, &number), now).await?;
        let text = |key: &str| number.get(key).and_then(Value::as_str);
        if let Some(reason) =
            store.note_number_health(stored_number.id, text("quality_rating"), text("status"), now).await?
        {
            tracing::error!(
                number = %stored_number.display_number,
                %reason,
                "marketing sends from this number are paused; once its quality is back, resume them with `kairo numbers resume {}`",
                stored_number.display_number
            );
            report.numbers_paused.push(format!("{} ({reason})", stored_number.display_number));
        }
        report.numbers += 1;
    }

    let templates = list(graph, account, "message_templates", TEMPLATE_FIELDS, &mut report, |seen| {
        progress(SyncProgress::TemplatesPage { templates: seen })
    })
    .await?;
    let mut seen = HashSet::new();
    for item in templates {
        let text = |key: &str| item.get(key).and_then(Value::as_str).unwrap_or_default().to_string();
        let (name, language) = (text("name"), text("language"));
        if name.is_empty() || language.is_empty() {
            continue;
        }
        if name.starts_with("sample_") {
            report.samples_skipped += 1;
            continue;
        }
        let parameter_format = match text("parameter_format") {
            f if f.is_empty() => "POSITIONAL".to_string(),
            f => f,
        };
        let template = NewTemplate {
            account_id: stored.id,
            graph_id: text("id"),
            name: name.clone(),
            language: language.clone(),
            status: text("status"),
            category: text("category"),
            parameter_format,
            components: item.get("components").cloned().unwrap_or(Value::Array(Vec::new())),
        };
        store.upsert_template(template, now).await?;
        seen.insert((name, language));
        report.templates += 1;
    }
    report.templates_gone = store.mark_templates_gone(stored.id, &seen, now).await?;
    Ok(report)
}

fn phone_number(account: kairo_core::ids::AccountId, graph_id: &str, number: &Value) -> NewPhoneNumber {
    let text = |key: &str| number.get(key).and_then(Value::as_str).map(str::to_string);
    let display = text("display_phone_number").unwrap_or_else(|| graph_id.to_string());
    let throughput = match number.pointer("/throughput/level").and_then(Value::as_str) {
        Some("HIGH") => 1000,
        _ => DEFAULT_THROUGHPUT,
    };
    NewPhoneNumber {
        account_id: account,
        graph_id: graph_id.to_string(),
        normalized_number: kairo_core::phone::PhoneDigits::of(&display).into_string(),
        display_number: display,
        verified_name: text("verified_name"),
        quality_rating: text("quality_rating"),
        throughput_mps: throughput,
        // The portfolio's limit; the per-number tier only when it is absent.
        messaging_limit_tier: text("whatsapp_business_manager_messaging_limit")
            .or_else(|| text("messaging_limit_tier")),
    }
}

/// Every item of `GET /{waba}/{edge}`, page after page.
async fn list(
    graph: &GraphClient,
    account: &SyncAccount,
    edge: &str,
    fields: &str,
    report: &mut SyncReport,
    mut progress: impl FnMut(usize),
) -> Result<Vec<Value>, SyncError> {
    let path = format!("{}/{edge}", account.waba_id);
    let mut items = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let mut query = vec![("fields", fields), ("limit", PAGE_SIZE)];
        if let Some(cursor) = &after {
            query.push(("after", cursor.as_str()));
        }
        let page = get_with_retries(graph, &account.token, &path, &query)
            .await
            .map_err(|error| SyncError::Graph { waba_id: account.waba_id.clone(), error })?;
        report.pages += 1;
        let data = page.get("data").and_then(Value::as_array).ok_or_else(|| SyncError::Shape {
            waba_id: account.waba_id.clone(),
            what: format!("{edge} without `data`"),
        })?;
        items.extend(data.iter().cloned());
        progress(items.len());
        let next = page.pointer("/paging/next").and_then(Value::as_str).is_some();
        after = page.pointer("/paging/cursors/after").and_then(Value::as_str).map(str::to_string);
        if !next {
            return Ok(items);
        }
        if after.is_none() {
            return Err(SyncError::Shape {
                waba_id: account.waba_id.clone(),
                what: format!("{edge}: a next page without an `after` cursor"),
            });
        }
    }
    Err(SyncError::Shape { waba_id: account.waba_id.clone(), what: format!("{edge}: more than {MAX_PAGES} pages") })
}

/// A read, retried with backoff and jitter while the failure is temporary
/// or a limit (a few times; management endpoints allow ~200 calls an hour).
async fn get_with_retries(
    graph: &GraphClient,
    token: &Secret,
    path: &str,
    query: &[(&str, &str)],
) -> Result<Value, CallError> {
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(10))
        .with_max_times(4)
        .with_jitter();
    (|| graph.get(token, path, query))
        .retry(backoff)
        .when(|e: &CallError| match e.kind {
            FailureKind::Temporary => true,
            // A limit that asks for more than a short wait (the hourly
            // management quota) ends this sync; the next one tries again.
            FailureKind::Throttled => e.retry_after.is_none_or(|wait| wait <= Duration::from_secs(10)),
            _ => false,
        })
        .notify(|e: &CallError, wait: Duration| tracing::warn!(error = %e, ?wait, "Graph API read failed; retrying"))
        .await
}
