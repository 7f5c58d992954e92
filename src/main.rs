//! The `kairo` binary: command-line parsing and wiring only. Every capability
//! lives in the `kairo-engine` and `kairo-actions` crates.

mod report;
mod sandbox;
mod simulate;
mod sync;
mod validate;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use kairo_actions::http::ReqwestHttp;
use kairo_actions::sandbox::SandboxChannel;
use kairo_actions::whatsapp::sync::DEFAULT_THROUGHPUT;
use kairo_actions::whatsapp::{CloudApiChannel, GraphClient, GraphSettings, WhatsAppWebhook};
use kairo_engine::api::webhook::Ingestor;
use kairo_engine::config::{Config, LogFormat, Overrides};
use kairo_engine::runtime::{Engine, EngineConfig, Outbound, WorkerConfig, default_owner};
use kairo_engine::{Clock, Secret, Store, api, registry};
use kairo_store::{Keywords, NewAccount, NewPhoneNumber};
use tokio_util::sync::CancellationToken;

/// Durable workflow automation for WhatsApp business messaging.
#[derive(Debug, Parser)]
#[command(name = "kairo", version, about, propagate_version = true)]
struct Cli {
    /// Configuration file [default: ./kairo.toml when present].
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Database URL: sqlite://PATH (created if absent) or postgres://USER:PASSWORD@HOST/DB
    /// [default: sqlite://kairo.db].
    #[arg(long, global = true, value_name = "URL", env = "KAIRO_DATABASE_URL", hide_env_values = true)]
    database: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP API, the webhook and the workers in one process (migrates first).
    Serve {
        /// Address to listen on [default: 127.0.0.1:8080].
        #[arg(long, value_name = "ADDR", env = "KAIRO_LISTEN")]
        listen: Option<String>,
    },
    /// Run a worker daemon that executes workflow steps (migrates first).
    ///
    /// Many workers may run against one PostgreSQL database, on one machine
    /// or many; each step is claimed by exactly one. SIGTERM stops claiming,
    /// lets running steps finish and gives back the rest.
    Worker {
        /// Steps run at the same time [default: 128, or worker.slots].
        #[arg(long, value_name = "N")]
        slots: Option<usize>,
    },
    /// Apply or inspect database migrations.
    Migrate {
        #[command(subcommand)]
        action: Option<MigrateAction>,
    },
    /// Check workflow files and report every problem with file:line:column.
    ///
    /// Exit status: 0 when every file is valid, 1 when a file has problems,
    /// 2 on a usage error (a path or catalogue that cannot be read).
    Validate {
        /// Workflow files or folders [default: the configured workflows folder].
        paths: Vec<PathBuf>,
        /// Check numbers and templates against this catalogue file (JSON)
        /// instead of the one synced into the database.
        #[arg(long, value_name = "FILE")]
        catalog: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Fetch each WhatsApp account's phone numbers and message templates
    /// from the Graph API into the database (`kairo serve` also does this
    /// every hour). Needs the accounts' access tokens.
    Sync,
    /// List the business numbers: quality, limits, pauses, queued sends and
    /// when the last of them should go out; `resume` lifts a pause.
    Numbers {
        #[command(subcommand)]
        action: Option<NumbersAction>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// List the workflows with their state and version; `pause` stops new
    /// enrollments (triggers, schedules, the API), `resume` lets them in again.
    Workflows {
        #[command(subcommand)]
        action: Option<WorkflowsAction>,
    },
    /// Show each workflow's enrollments, and per step its executions, the
    /// delivery of the messages it sent and failures by WhatsApp error code.
    Status {
        /// Only this workflow (its id).
        workflow: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Print the JSON Schema of workflow files, for editors.
    Schema,
    /// Print the OpenAPI document of the HTTP API (also at /v1/openapi.json).
    Openapi,
    /// Create, list and revoke the HTTP API's bearer tokens.
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Run a workflow for one contact on an in-memory store, with a fake
    /// clock: prints each step, its rendered parameters, each wait (skipped
    /// over) and each branch taken. Nothing is sent; no network is used.
    Simulate {
        /// The workflow file.
        workflow: PathBuf,
        /// The contact, as JSON: {"name", "phone", "properties": {…}, "opted_in": true}.
        #[arg(long, value_name = "CONTACT.json")]
        contact: PathBuf,
        /// The trigger data, as JSON (its "kind" names the trigger; default api).
        #[arg(long, value_name = "EVENT.json")]
        event: Option<PathBuf>,
        /// When the enrollment starts (RFC 3339) [default: now].
        #[arg(long, value_name = "TIME")]
        at: Option<String>,
        /// Check numbers and templates against this catalogue file (JSON).
        #[arg(long, value_name = "FILE")]
        catalog: Option<PathBuf>,
        /// The contact replies with this text, this long after the start
        /// (`YES@2h`; without `@`, as soon as the workflow waits). Repeatable.
        #[arg(long, value_name = "TEXT[@AFTER]")]
        reply: Vec<String>,
        /// The contact taps a quick-reply button with this title (`Yes@1d`).
        #[arg(long, value_name = "TITLE[@AFTER]")]
        button: Vec<String>,
        /// WhatsApp reports this status (sent, delivered, read, failed) for
        /// the last message sent (`read@10m`).
        #[arg(long, value_name = "STATUS[@AFTER]")]
        status: Vec<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Try Kairo without a WhatsApp account: inject messages into a
    /// `kairo serve` running in sandbox mode.
    Sandbox {
        #[command(subcommand)]
        action: SandboxAction,
    },
    /// Print the version of kairo and of its database schema.
    Version,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Text,
    Json,
}

/// An error that exits with status 2: the command was used wrongly.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct UsageError(String);

#[derive(Debug, Clone, Subcommand)]
enum NumbersAction {
    /// Lift a number's pause (quality drop, credentials, restriction) once
    /// the cause is fixed; its held sends go at once.
    Resume {
        /// The number as displayed (+1 555-000-1111, digits are enough, quotes
        /// optional) or its Graph id.
        #[arg(required = true, num_args = 1..)]
        number: Vec<String>,
    },
}

#[derive(Debug, Clone, Subcommand)]
enum WorkflowsAction {
    /// Stop new enrollments into a workflow; running ones go on.
    Pause {
        /// The workflow's id.
        workflow: String,
    },
    /// Let a paused workflow enroll again.
    Resume {
        /// The workflow's id.
        workflow: String,
    },
}

#[derive(Debug, Clone, Subcommand)]
enum SandboxAction {
    /// Send a signed inbound text message to the running server's webhook,
    /// as if a contact had written on WhatsApp (YES opts them in).
    Inbound {
        /// The contact's phone, international form (+44 7700 900123).
        #[arg(long)]
        from: String,
        /// The message text.
        #[arg(long)]
        text: String,
        /// The business number written to [default: +1 555-000-1111].
        #[arg(long)]
        to: Option<String>,
        /// The contact's WhatsApp profile name.
        #[arg(long)]
        name: Option<String>,
        /// Where kairo serve listens [default: http://LISTEN from the configuration].
        #[arg(long)]
        url: Option<String>,
    },
}

#[derive(Debug, Clone, Subcommand)]
enum TokenAction {
    /// Create a token and print it once (only its hash is stored).
    Create {
        /// A name to know it by (unique).
        #[arg(long)]
        name: String,
        /// What it may do: admin, enroll or inbox (repeat for several).
        #[arg(long = "scope", value_name = "SCOPE", required = true)]
        scopes: Vec<String>,
    },
    /// List tokens: name, scopes, created, revoked.
    List,
    /// Revoke a token by name; requests with it are refused at once.
    Revoke { name: String },
}

#[derive(Debug, Clone, Copy, Subcommand)]
enum MigrateAction {
    /// Apply every pending migration (the default).
    Up,
    /// List migrations and whether each has been applied.
    Status,
}

fn main() -> ExitCode {
    quiet_on_closed_pipe();
    // reqwest is built without a default TLS crypto provider: every command
    // that calls out (sync, serve, worker, sandbox) uses ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(err) => {
            // One line: the chain of contexts, outermost first.
            eprintln!("error: {err:#}");
            if err.downcast_ref::<UsageError>().is_some() { ExitCode::from(2) } else { ExitCode::FAILURE }
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let listen = match &cli.command {
        Command::Serve { listen } => listen.clone(),
        _ => None,
    };
    let overrides = Overrides { database_url: cli.database.clone(), listen };
    let config = Config::load(cli.config.as_deref(), &overrides)?;
    init_logging(config.log_format);
    match cli.command {
        Command::Serve { .. } => serve(&config).await.map(|()| ExitCode::SUCCESS),
        Command::Worker { slots } => worker(&config, slots).await.map(|()| ExitCode::SUCCESS),
        Command::Migrate { action } => {
            migrate(&config, action.unwrap_or(MigrateAction::Up)).await.map(|()| ExitCode::SUCCESS)
        }
        Command::Validate { paths, catalog, format } => {
            validate::run(&config, paths, catalog.as_deref(), format == Format::Json).await
        }
        Command::Sync => sync::run(&config).await,
        Command::Numbers { action: None, format } => report::numbers(&config, format == Format::Json).await,
        Command::Numbers { action: Some(NumbersAction::Resume { number }), .. } => {
            report::resume(&config, &number.join(" ")).await
        }
        Command::Status { workflow, format } => {
            report::status(&config, workflow.as_deref(), format == Format::Json).await
        }
        Command::Workflows { action: None } => report::workflows(&config).await,
        Command::Workflows { action: Some(WorkflowsAction::Pause { workflow }) } => {
            report::set_workflow_state(&config, &workflow, kairo_store::WorkflowState::Paused).await
        }
        Command::Workflows { action: Some(WorkflowsAction::Resume { workflow }) } => {
            report::set_workflow_state(&config, &workflow, kairo_store::WorkflowState::Active).await
        }
        Command::Schema => {
            let schema = kairo_workflow::json_schema();
            println!("{}", serde_json::to_string_pretty(&schema).context("printing the schema")?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Simulate { workflow, contact, event, at, catalog, reply, button, status, format } => {
            simulate::run(simulate::Args {
                workflow: &workflow,
                contact: &contact,
                event: event.as_deref(),
                at: at.as_deref(),
                catalog: catalog.as_deref(),
                replies: &reply,
                buttons: &button,
                statuses: &status,
                json: format == Format::Json,
            })
            .await
        }
        Command::Openapi => {
            print!("{}", kairo_engine::api::v1::openapi::document_json());
            Ok(ExitCode::SUCCESS)
        }
        Command::Token { action } => token(&config, action).await,
        Command::Sandbox { action: SandboxAction::Inbound { from, text, to, name, url } } => {
            let args = sandbox::Inbound {
                from: &from,
                text: &text,
                to: to.as_deref(),
                name: name.as_deref(),
                url: url.as_deref(),
            };
            sandbox::inbound(&config, args).await
        }
        Command::Version => {
            let (count, last) = kairo_store::schema_version();
            println!("kairo {}", env!("CARGO_PKG_VERSION"));
            println!("database schema {count} ({last})");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `kairo numbers | head`: when the reader of stdout goes away, the command
/// stops quietly instead of panicking on the write (Rust ignores SIGPIPE, so
/// the write fails with EPIPE and `println!` panics).
fn quiet_on_closed_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.contains("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,sea_orm=warn,sea_orm_migration=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// The SQLite file a `sqlite:` URL names, when it names one on disk.
pub(crate) fn sqlite_file(url: &kairo_store::DatabaseUrl) -> Option<PathBuf> {
    if url.scheme() != "sqlite" {
        return None;
    }
    let path = url.to_string().trim_start_matches("sqlite://").trim_start_matches("sqlite:").to_string();
    let path = path.split('?').next().unwrap_or_default().to_string();
    (!path.is_empty() && !path.contains(":memory:")).then(|| PathBuf::from(path))
}

/// The database of a command that reads or changes what `serve` keeps
/// (tokens, numbers, workflows): a SQLite file that does not exist is not
/// created (it would be an empty database nobody serves); the error says
/// which file was looked for and what to do.
pub(crate) async fn open_existing(config: &Config) -> Result<Store> {
    if let Some(file) = sqlite_file(&config.database_url)
        && !file.exists()
    {
        let absolute = std::env::current_dir().map(|d| d.join(&file)).unwrap_or(file);
        return Err(UsageError(format!(
            "no Kairo database at {}: run this in the folder where `kairo serve` runs, pass --database \
             sqlite://PATH (or set KAIRO_DATABASE_URL), or create it with `kairo migrate`",
            absolute.display()
        ))
        .into());
    }
    open_migrated(config).await
}

pub(crate) async fn open_migrated(config: &Config) -> Result<Store> {
    let store = Store::open_with(&config.database_url, config.database.pool()).await?;
    store.migrate().await?;
    Ok(store)
}

async fn migrate(config: &Config, action: MigrateAction) -> Result<()> {
    let store = Store::open_with(&config.database_url, config.database.pool()).await?;
    match action {
        MigrateAction::Up => {
            let before = store.migration_status().await?;
            store.migrate().await?;
            let applied = before.iter().filter(|m| !m.applied).count();
            println!("{} migration(s) applied to {}; schema is up to date", applied, store.url());
        }
        MigrateAction::Status => {
            for m in store.migration_status().await? {
                println!("{:<8} {}", if m.applied { "applied" } else { "pending" }, m.name);
            }
        }
    }
    store.close().await;
    Ok(())
}

async fn serve(config: &Config) -> Result<()> {
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
    println!("kairo listening on http://{addr}");
    tokio::spawn(cancel_on_signal(shutdown.clone()));
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
    let app =
        api::router(api::AppState { store: store.clone(), webhook, api: Some(api_state), metrics: Some(metrics) });
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

async fn token(config: &Config, action: TokenAction) -> Result<ExitCode> {
    use kairo_engine::api::auth::{Scope, TokenError, create_token};
    let store = open_existing(config).await?;
    let now = kairo_engine::SystemClock.now();
    match action {
        TokenAction::Create { name, scopes } => {
            let mut parsed = Vec::new();
            for scope in &scopes {
                let found = Scope::parse(scope)
                    .ok_or_else(|| UsageError(format!("unknown scope `{scope}`: use admin, enroll or inbox")))?;
                if !parsed.contains(&found) {
                    parsed.push(found);
                }
            }
            let created = match create_token(&store, &name, &parsed, now).await {
                Ok(created) => created,
                Err(err @ (TokenError::NameTaken(_) | TokenError::EmptyName)) => {
                    return Err(UsageError(err.to_string()).into());
                }
                Err(TokenError::Store(err)) => return Err(err.into()),
            };
            let scopes: Vec<&str> = parsed.iter().map(|s| s.as_str()).collect();
            eprintln!(
                "token `{}` created with scope {} in {}; it is shown once, keep it now:",
                created.record.name,
                scopes.join(", "),
                store.url()
            );
            println!("{}", created.secret.expose());
        }
        TokenAction::List => {
            for t in store.api_tokens().await? {
                let scopes: Vec<String> = t
                    .scopes
                    .as_array()
                    .map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect())
                    .unwrap_or_default();
                let state = match t.revoked_at {
                    Some(at) => format!("revoked {}", at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
                    None => "live".to_string(),
                };
                println!(
                    "{:<24} {:<20} created {}  {}",
                    t.name,
                    scopes.join(","),
                    t.created_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    state
                );
            }
        }
        TokenAction::Revoke { name } => {
            if !store.revoke_api_token(&name, now).await? {
                return Err(UsageError(format!("no live token named `{name}` (kairo token list shows them)")).into());
            }
            println!("token `{name}` revoked");
        }
    }
    store.close().await;
    Ok(ExitCode::SUCCESS)
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
    let now = kairo_engine::SystemClock.now();
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
    let report = registry::load_workflows(store, dir, catalog.as_ref(), kairo_engine::SystemClock.now()).await?;
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

async fn worker(config: &Config, slots: Option<usize>) -> Result<()> {
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
    tokio::spawn(cancel_on_signal(shutdown.clone()));
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
        Arc::new(CloudApiChannel::new(graph_client(config)?, sending_tokens(config)))
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
fn process_clock() -> Arc<dyn kairo_engine::Clock> {
    match std::env::var_os("KAIRO_CLOCK_OFFSET_FILE") {
        Some(file) => Arc::new(kairo_engine::OffsetClock::new(std::path::PathBuf::from(file))),
        None => Arc::new(kairo_engine::SystemClock),
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

/// Cancels `token` on SIGINT or SIGTERM.
async fn cancel_on_signal(token: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(err) => {
                tracing::warn!(%err, "cannot listen for SIGTERM; only Ctrl-C stops the server");
                let _ = ctrl_c.await;
                token.cancel();
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown requested");
    token.cancel();
}
