//! `kairo sync`: each configured WhatsApp account's numbers and templates,
//! from the Graph API into the database, with a progress line per account
//! on a terminal. Also the hourly sync that `kairo serve` runs.

use std::process::ExitCode;
use std::time::Duration;

use crate::config::Config;
use anyhow::{Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use kairo_core::clock::{Clock, SystemClock};
use kairo_store::Store;
use kairo_whatsapp::sync::{SyncAccount, SyncProgress, SyncReport, sync_account};
use kairo_whatsapp::{GraphClient, GraphSettings};
use tokio_util::sync::CancellationToken;

/// How often `kairo serve` syncs the catalogue.
pub const SERVE_SYNC_INTERVAL: Duration = Duration::from_secs(3600);

pub async fn run(config: &Config) -> Result<ExitCode> {
    let accounts = accounts(config)?;
    let store = crate::open_existing(config).await?;
    let graph = graph_client(config)?;
    let mut failed = false;
    for account in &accounts {
        let bar = ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {prefix}: {msg} ({elapsed})").expect("a valid progress template"),
        );
        bar.set_prefix(format!("account {}", account.waba_id));
        bar.enable_steady_tick(Duration::from_millis(120));
        let shown = bar.clone();
        let result = sync_account(&graph, &store, account, SystemClock.now(), move |step| match step {
            SyncProgress::NumbersPage { numbers } => shown.set_message(format!("{numbers} numbers read")),
            SyncProgress::TemplatesPage { templates } => shown.set_message(format!("{templates} templates read")),
        })
        .await;
        bar.finish_and_clear();
        match result {
            Ok(report) => println!("account {}: {}", account.waba_id, summary(&report)),
            Err(err) => {
                eprintln!("error: {err}");
                failed = true;
            }
        }
    }
    store.close().await;
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// The accounts to sync; every one needs its access token.
fn accounts(config: &Config) -> Result<Vec<SyncAccount>> {
    if config.whatsapp.accounts.is_empty() {
        bail!(
            "no WhatsApp account is configured: add a [[whatsapp.accounts]] block to kairo.toml (see docs/operations.md)"
        );
    }
    config
        .whatsapp
        .accounts
        .iter()
        .map(|account| {
            let Some(token) = account.access_token.clone() else {
                bail!(
                    "account {} has no access token: set access_token in its [[whatsapp.accounts]] block or KAIRO_WHATSAPP_ACCESS_TOKEN",
                    account.waba_id
                );
            };
            Ok(SyncAccount {
                waba_id: account.waba_id.clone(),
                name: if account.name.is_empty() { account.waba_id.clone() } else { account.name.clone() },
                token,
                numbers: account.numbers.iter().map(|n| n.id.clone()).collect(),
            })
        })
        .collect()
}

fn summary(report: &SyncReport) -> String {
    let mut out = format!(
        "{} numbers, {} templates synced ({} sample templates skipped",
        report.numbers, report.templates, report.samples_skipped
    );
    if report.templates_gone > 0 {
        out.push_str(&format!(", {} no longer listed: marked DELETED", report.templates_gone));
    }
    out.push(')');
    if !report.numbers_paused.is_empty() {
        out.push_str(&format!(
            "; marketing sends paused for {} (see `kairo numbers`)",
            report.numbers_paused.join(", ")
        ));
    }
    if !report.numbers_not_served.is_empty() {
        out.push_str(&format!("; numbers not in kairo.toml, not served: {}", report.numbers_not_served.join(", ")));
    }
    out
}

/// Syncs every account with a token now and then every `every`, until
/// `shutdown`. Failures are logged and tried again next time.
/// After each round `synced` is notified: the workflow folder is validated
/// again against the new catalogue.
pub async fn periodically(
    store: Store,
    config: Config,
    every: Duration,
    synced: std::sync::Arc<tokio::sync::Notify>,
    shutdown: CancellationToken,
) {
    let accounts: Vec<SyncAccount> = match accounts(&config) {
        Ok(accounts) => accounts,
        Err(err) => {
            tracing::warn!("catalogue sync off: {err:#}");
            return;
        }
    };
    let graph = match graph_client(&config) {
        Ok(graph) => graph,
        Err(err) => {
            tracing::error!("catalogue sync off: {err:#}");
            return;
        }
    };
    loop {
        for account in &accounts {
            match sync_account(&graph, &store, account, SystemClock.now(), |_| {}).await {
                Ok(report) => tracing::info!(account = %account.waba_id, "catalogue synced: {}", summary(&report)),
                Err(err) => tracing::warn!("catalogue sync failed; trying again in {}s: {err}", every.as_secs()),
            }
        }
        synced.notify_one();
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// The Graph API client the configuration describes.
pub(crate) fn graph_client(config: &Config) -> Result<GraphClient> {
    let whatsapp = &config.whatsapp;
    let settings = GraphSettings {
        base_url: whatsapp.graph_url.clone(),
        version: whatsapp.graph_version.clone(),
        timeout: Duration::from_secs(whatsapp.timeout_secs.max(1)),
    };
    Ok(GraphClient::new(settings)?)
}
