//! `kairo serve` and `kairo worker`: the wiring of one process (store,
//! channel, engine, webhook, API, the workflow folder's watch) and its
//! shutdown on a signal.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::{open_migrated, sandbox, sync};
use anyhow::{Context, Result};
use kairo_api as api;
use kairo_core::clock::Clock;
use kairo_core::outbound::Outbound;
use kairo_core::secret::Secret;
use kairo_engine::inbox::Keywords;
use kairo_engine::inbox::journal::Ingestor;
use kairo_engine::registry;
use kairo_engine::runtime::http_client::ReqwestHttp;
use kairo_engine::runtime::{Engine, EngineConfig, WorkerConfig, default_owner};
use kairo_store::{NewAccount, NewPhoneNumber, Store};
use kairo_whatsapp::sandbox::SandboxChannel;
use kairo_whatsapp::sync::DEFAULT_THROUGHPUT;
use kairo_whatsapp::{CloudApiChannel, WhatsAppWebhook};
use tokio_util::sync::CancellationToken;

pub async fn serve(config: &Config) -> Result<()> {
    let store = open_migrated(config).await?;
    let shutdown = CancellationToken::new();
    // The sandbox's demo catalogue is registered before the workflows load,
    // so that they are checked against it.
    let webhook = webhook(&store, config, shutdown.clone()).await?;
    load_workflows(&store, config).await?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}: is another process using it? set --listen", config.listen))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    tracing::info!(database = %store.url(), "database ready");
    if sandbox::active(config) {
        sandbox::announce(&addr.to_string());
    }
    // Watching starts before the server says it listens, so that no change
    // made after that is missed.
    let watch = match kairo_workflow::watch::FolderWatch::start(&config.workflows_dir) {
        Ok(watch) => Some(watch),
        Err(err) => {
            tracing::warn!(dir = %config.workflows_dir.display(), %err, "cannot watch the workflow folder: changes load at the next start");
            None
        }
    };
    cancel_on_signal(shutdown.clone());
    println!("kairo listening on http://{addr}");
    let engine = build_engine(&store, config)?;
    let synced = Arc::new(tokio::sync::Notify::new());
    if config.whatsapp.can_send() {
        let every = sync::SERVE_SYNC_INTERVAL;
        tokio::spawn(sync::periodically(store.clone(), config.clone(), every, synced.clone(), shutdown.clone()));
    }
    tokio::spawn(watch_workflows(watch, store.clone(), engine.clone(), config.clone(), synced, shutdown.clone()));
    let workers = tokio::spawn({
        let (engine, settings, shutdown) = (engine.clone(), worker_config(config), shutdown.clone());
        async move { engine.run(settings, shutdown).await }
    });
    let metrics = api::metrics::Metrics::install()?;
    engine.refresh().await.context("loading workflows and numbers into the engine")?;
    let api_state = api::v1::ApiState {
        engine: engine.clone(),
        queue: kairo_engine::runtime::EnrollQueue::spawn(engine.clone()),
        limiter: api::auth::token_limiter(config.api.rate_limit),
        failed_auth: Default::default(),
        settings: config.api.clone(),
    };
    let web = api::web::WebState::start(api_state.clone(), shutdown.clone());
    let app = api::router(api::AppState {
        store: store.clone(),
        webhook,
        api: Some(api_state),
        metrics: Some(metrics),
        web: Some(web),
    });
    let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    let served = axum::serve(listener, app).with_graceful_shutdown(shutdown.clone().cancelled_owned()).await;
    shutdown.cancel();
    match workers.await {
        Ok(Ok(report)) => tracing::info!(steps = report.steps, "workers stopped"),
        Ok(Err(err)) => tracing::error!(%err, "workers stopped with an error"),
        Err(err) => tracing::error!(%err, "workers ended abnormally"),
    }
    served.context("HTTP server failed")?;
    tracing::info!("shut down cleanly");
    store.close().await;
    Ok(())
}

/// Registers the configured accounts and numbers, and builds the webhook
/// when an app secret is configured.
async fn webhook(
    store: &Store,
    config: &Config,
    shutdown: CancellationToken,
) -> Result<Option<api::webhook::WebhookState>> {
    register_accounts(store, config).await?;
    let whatsapp = &config.whatsapp;
    let (app_secret, verify_token) = if sandbox::active(config) {
        sandbox::register(store).await?;
        let secret = whatsapp.app_secret.clone().unwrap_or_else(|| Secret::new(sandbox::SANDBOX_APP_SECRET));
        let verify = whatsapp.verify_token.clone().unwrap_or_else(|| Secret::new(sandbox::SANDBOX_VERIFY_TOKEN));
        (Some(secret), Some(verify))
    } else {
        (whatsapp.app_secret.clone(), whatsapp.verify_token.clone())
    };
    if app_secret.is_none() {
        tracing::warn!("no whatsapp.app_secret configured: the webhook answers 503 until one is set");
        return Ok(None);
    }
    let channel = Arc::new(WhatsAppWebhook { app_secret, verify_token });
    let keywords = Keywords::new(&whatsapp.opt_in_keywords, &whatsapp.opt_out_keywords);
    let ingestor = Ingestor::spawn(store.clone(), keywords, process_clock(), shutdown);
    Ok(Some(api::webhook::WebhookState { channel, ingestor }))
}

/// Stores the configured accounts and numbers, so that webhooks and sends
/// find them before the first sync.
async fn register_accounts(store: &Store, config: &Config) -> Result<()> {
    let now = kairo_core::clock::SystemClock.now();
    for account in &config.whatsapp.accounts {
        let name = if account.name.is_empty() { account.waba_id.clone() } else { account.name.clone() };
        let stored = store
            .upsert_account(NewAccount { waba_id: account.waba_id.clone(), name, portfolio_id: None }, now)
            .await?;
        for number in &account.numbers {
            let digits = kairo_core::phone::PhoneDigits::of(&number.display_number).into_string();
            let known = store.phone_number_by_graph_id(&number.id).await?;
            store
                .upsert_phone_number(
                    NewPhoneNumber {
                        account_id: stored.id,
                        graph_id: number.id.clone(),
                        display_number: number.display_number.clone(),
                        normalized_number: digits,
                        // What a sync learnt stays until the next sync.
                        verified_name: known.as_ref().and_then(|n| n.verified_name.clone()),
                        quality_rating: known.as_ref().and_then(|n| n.quality_rating.clone()),
                        throughput_mps: known.as_ref().map_or(DEFAULT_THROUGHPUT, |n| n.throughput_mps),
                        messaging_limit_tier: known.as_ref().and_then(|n| n.messaging_limit_tier.clone()),
                    },
                    now,
                )
                .await?;
        }
    }
    Ok(())
}

/// Loads the workflow folder: valid files become versions; invalid ones are
/// reported with their positions and not loaded.
async fn load_workflows(store: &Store, config: &Config) -> Result<()> {
    let dir = &config.workflows_dir;
    if !dir.exists() {
        tracing::warn!(dir = %dir.display(), "workflow folder not found: no workflows loaded");
        return Ok(());
    }
    let catalog = Some(registry::catalog(store).await?).filter(|c| !c.is_empty());
    let report = registry::load_workflows(store, dir, catalog.as_ref(), kairo_core::clock::SystemClock.now()).await?;
    // A reload that changed nothing and found the same problems says nothing.
    static LAST_PROBLEMS: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);
    let problems: String =
        report.rejected.iter().flat_map(|(_, problems)| problems.iter().map(|p| format!("{p}\n"))).collect();
    let same = LAST_PROBLEMS.lock().map(|mut last| last.replace(problems.clone()) == Some(problems)).unwrap_or(false);
    if same && report.new_versions.is_empty() && report.archived.is_empty() {
        return Ok(());
    }
    for saved in &report.new_versions {
        tracing::info!(workflow = %saved.workflow.key, version = saved.version.version, "workflow version loaded");
    }
    for (file, problems) in &report.rejected {
        for problem in problems {
            tracing::warn!(file = %file.display(), "workflow not loaded: {problem}");
        }
    }
    for key in &report.archived {
        tracing::warn!(workflow = %key, "workflow file removed: the workflow is archived (nothing new enrolls, its schedules stop; running enrollments finish)");
    }
    tracing::info!(
        new = report.new_versions.len(),
        unchanged = report.unchanged.len(),
        rejected = report.rejected.len(),
        dir = %dir.display(),
        "workflows loaded"
    );
    Ok(())
}

/// How many times a worker retries its start when the database fails (one a second).
const STARTUP_RETRIES: u32 = 30;

/// How often `kairo serve` validates the workflow folder again without a change.
const RELOAD_EVERY: Duration = Duration::from_secs(30);

/// Reloads the workflow folder whenever a file in it changes: a valid
/// change becomes a new version at once; an invalid one is reported with
/// path:line:column and the previous version keeps running.
async fn watch_workflows(
    mut watch: Option<kairo_workflow::watch::FolderWatch>,
    store: Store,
    engine: Arc<Engine>,
    config: Config,
    synced: Arc<tokio::sync::Notify>,
    shutdown: CancellationToken,
) {
    let dir = config.workflows_dir.clone();
    if watch.is_some() {
        tracing::info!(dir = %dir.display(), "watching the workflow folder for changes");
    }
    loop {
        // Also looked at again every little while: a file rejected for a
        // template a sync had not brought yet, or a team not created yet,
        // loads once they are there. A folder that is not there yet is
        // looked for every second, and watched once it is made.
        match watch.as_mut() {
            Some(folder) => tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = folder.changed() => if changed.is_none() { return },
                // A sync may bring the templates a rejected file named.
                _ = synced.notified() => {}
                _ = tokio::time::sleep(RELOAD_EVERY) => {}
            },
            None => {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                if !dir.is_dir() {
                    continue;
                }
                match kairo_workflow::watch::FolderWatch::start(&dir) {
                    Ok(started) => {
                        tracing::info!(dir = %dir.display(), "the workflow folder appeared: loading and watching it");
                        watch = Some(started);
                    }
                    Err(err) => {
                        tracing::warn!(dir = %dir.display(), %err, "cannot watch the workflow folder yet");
                        continue;
                    }
                }
            }
        }
        if let Err(err) = load_workflows(&store, &config).await {
            tracing::error!(%err, "reloading the workflow folder failed; the loaded versions keep running");
            continue;
        }
        if let Err(err) = engine.refresh().await {
            tracing::error!(%err, "the engine could not take the reloaded workflows");
        }
    }
}

pub async fn worker(config: &Config, slots: Option<usize>) -> Result<()> {
    let store = Store::open_with(&config.database_url, config.database.pool()).await?;
    // Migrating may meet a database that restarts (not one that cannot be
    // reached at all: that fails at once, above, saying why).
    let mut tries = 0;
    while let Err(err) = store.migrate().await {
        if tries >= STARTUP_RETRIES {
            return Err(err.into());
        }
        tries += 1;
        tracing::warn!(%err, "migrating failed; retrying in a second");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // A database restarting while the worker starts is back in a moment.
    let mut tries = 0;
    loop {
        let started = async {
            register_accounts(&store, config).await?;
            load_workflows(&store, config).await
        };
        match started.await {
            Ok(()) => break,
            Err(err) if tries < STARTUP_RETRIES => {
                tries += 1;
                tracing::warn!(%err, "starting the worker failed; retrying in a second");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(err) => return Err(err),
        }
    }
    let engine = build_engine(&store, config)?;
    let mut settings = worker_config(config);
    settings.slots = slots.unwrap_or(settings.slots);
    let shutdown = CancellationToken::new();
    cancel_on_signal(shutdown.clone());
    println!("kairo worker {} running with {} slots", engine.owner(), settings.slots);
    let report = engine.run(settings, shutdown).await?;
    println!("kairo worker stopped after {} steps", report.steps);
    store.close().await;
    Ok(())
}

/// The runtime, wired to the WhatsApp Cloud API when an account has an
/// access token (else to the sandbox channel) and to the HTTP client.
fn build_engine(store: &Store, config: &Config) -> Result<Arc<Engine>> {
    // reqwest is built without a default crypto provider; install ring once.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let outbound: Arc<dyn Outbound> = if config.whatsapp.can_send() {
        tracing::info!(graph = %config.whatsapp.graph_url, version = %config.whatsapp.graph_version, "sending through the WhatsApp Cloud API");
        Arc::new(CloudApiChannel::new(sync::graph_client(config)?, sending_tokens(config)))
    } else {
        let record_file = config.sandbox.record_file.clone();
        match &record_file {
            Some(file) => {
                tracing::warn!(file = %file.display(), "sandbox: no account has an access token; sends are recorded in the inbox and the file, not sent")
            }
            None => tracing::warn!(
                "sandbox: no account has an access token; sends are recorded in the inbox, not sent to WhatsApp"
            ),
        }
        Arc::new(SandboxChannel::new(record_file))
    };
    let http = ReqwestHttp::new()?;
    let engine_config = EngineConfig {
        owner: default_owner(),
        lease: Duration::from_secs(config.worker.lease_secs.max(1)),
        batch: config.worker.batch.max(1),
    };
    Ok(Engine::new(store.clone(), process_clock(), outbound, Arc::new(http), engine_config))
}

/// The clock of this process: the wall clock, moved forward by the seconds
/// in `KAIRO_CLOCK_OFFSET_FILE` when that is set (tests and demos drive
/// waits of hours through the real binary with it; docs/operations.md).
fn process_clock() -> Arc<dyn kairo_core::clock::Clock> {
    match std::env::var_os("KAIRO_CLOCK_OFFSET_FILE") {
        Some(file) => Arc::new(kairo_core::clock::OffsetClock::new(std::path::PathBuf::from(file))),
        None => Arc::new(kairo_core::clock::SystemClock),
    }
}

/// Each configured number's access token: its account's.
fn sending_tokens(config: &Config) -> HashMap<String, Secret> {
    let mut tokens = HashMap::new();
    for account in &config.whatsapp.accounts {
        if let Some(token) = &account.access_token {
            for number in &account.numbers {
                tokens.insert(number.id.clone(), token.clone());
            }
        }
    }
    tokens
}

fn worker_config(config: &Config) -> WorkerConfig {
    WorkerConfig {
        slots: config.worker.slots.max(1),
        poll_interval: Duration::from_millis(config.worker.poll_ms.max(10)),
        ..WorkerConfig::default()
    }
}

/// Cancels `token` on SIGINT or SIGTERM. The handlers are installed before
/// this returns: a signal that comes right after the start banner (a
/// supervisor stopping what it just started) stops Kairo cleanly instead of
/// killing it.
fn cancel_on_signal(token: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
            (Ok(mut int), Ok(mut term)) => {
                tokio::spawn(async move {
                    tokio::select! {
                        _ = int.recv() => {}
                        _ = term.recv() => {}
                    }
                    tracing::info!("shutdown requested");
                    token.cancel();
                });
                return;
            }
            (_, Err(err)) | (Err(err), _) => {
                tracing::warn!(%err, "cannot listen for SIGTERM; only Ctrl-C stops Kairo");
            }
        }
    }
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutdown requested");
        token.cancel();
    });
}
