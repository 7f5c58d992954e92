//! The `kairo` binary: command-line parsing, the configuration and wiring
//! only. Every capability lives in the library crates (`kairo-workflow`,
//! `kairo-store`, `kairo-engine`, `kairo-api`, `kairo-whatsapp`).

mod config;
mod report;
mod sandbox;
mod serve;
mod simulate;
mod sync;
mod token;
mod user;
mod validate;

use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::{Config, LogFormat, Overrides};
use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use kairo_store::Store;

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
    /// Create the people who sign in to the inbox and give them passwords.
    User {
        #[command(subcommand)]
        action: UserAction,
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
pub(crate) struct UsageError(String);

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
pub(crate) enum TokenAction {
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

#[derive(Debug, Clone, Subcommand)]
pub(crate) enum UserAction {
    /// Create a user and print a one-time password (the first sign-in
    /// chooses a new one).
    Create {
        /// Their e-mail: what they sign in with (unique).
        #[arg(long)]
        email: String,
        /// Their name, as agents and contacts see it.
        #[arg(long)]
        name: String,
        /// admin (manages people, teams and numbers too) or agent.
        #[arg(long, default_value = "agent")]
        role: String,
    },
    /// Print a new one-time password for a user and sign their browsers out.
    Password {
        /// The user's e-mail.
        email: String,
    },
    /// List users: e-mail, name, role, state.
    List,
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
        Command::Serve { .. } => serve::serve(&config).await.map(|()| ExitCode::SUCCESS),
        Command::Worker { slots } => serve::worker(&config, slots).await.map(|()| ExitCode::SUCCESS),
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
            print!("{}", kairo_api::v1::openapi::document_json());
            Ok(ExitCode::SUCCESS)
        }
        Command::Token { action } => token::token(&config, action).await,
        Command::User { action } => user::user(&config, action).await,
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
