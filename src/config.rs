//! Configuration: `kairo.toml`, then `KAIRO_*` environment variables, then
//! command-line flags, each overriding the one before.
//!
//! Secrets (access tokens, app secrets, API tokens) come from here only,
//! never from workflow files, and are held in [`Secret`] or, for the
//! database URL, in [`DatabaseUrl`], which hide them when shown.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::Deserialize;

use kairo_api::ApiSettings;
use kairo_core::secret::Secret;
use kairo_store::DatabaseUrl;

/// The file read when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "kairo.toml";
/// The embedded default: one SQLite file in the working directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://kairo.db";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// Environment variables read, each `KAIRO_` + a key in upper case.
const ENV_KEYS: &[&str] = &["database_url", "listen", "workflows_dir", "log_format"];
/// Secrets read from the environment: `KAIRO_` + the name, and where they go.
const SECRET_ENV_KEYS: &[(&str, &str)] = &[
    ("whatsapp_app_secret", "whatsapp.app_secret"),
    ("whatsapp_verify_token", "whatsapp.verify_token"),
    ("worker_slots", "worker.slots"),
    ("worker_lease_secs", "worker.lease_secs"),
    ("worker_poll_ms", "worker.poll_ms"),
    ("worker_batch", "worker.batch"),
    ("sandbox_record_file", "sandbox.record_file"),
    ("api_rate_limit", "api.rate_limit"),
    ("database_max_connections", "database.max_connections"),
    ("database_acquire_timeout_secs", "database.acquire_timeout_secs"),
    ("api_max_body_bytes", "api.max_body_bytes"),
    ("api_max_bulk_bytes", "api.max_bulk_bytes"),
    ("api_secure_cookies", "api.secure_cookies"),
    ("whatsapp_graph_url", "whatsapp.graph_url"),
    ("whatsapp_graph_version", "whatsapp.graph_version"),
    ("whatsapp_timeout_secs", "whatsapp.timeout_secs"),
];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `sqlite://PATH` (created if absent) or `postgres://USER:PASSWORD@HOST/DB`.
    #[serde(default = "default_database_url")]
    pub database_url: DatabaseUrl,
    /// Where `kairo serve` listens for the HTTP API and the webhook.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The folder of workflow files.
    #[serde(default = "default_workflows_dir")]
    pub workflows_dir: PathBuf,
    #[serde(default)]
    pub log_format: LogFormat,
    #[serde(default)]
    pub whatsapp: WhatsAppConfig,
    #[serde(default)]
    pub worker: WorkerSettings,
    #[serde(default)]
    pub sandbox: SandboxSettings,
    #[serde(default)]
    pub api: ApiSettings,
    #[serde(default)]
    pub database: DatabaseSettings,
}

/// The connections of one process (`[database]`; env
/// `KAIRO_DATABASE_MAX_CONNECTIONS`, `KAIRO_DATABASE_ACQUIRE_TIMEOUT_SECS`).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// Connections this process keeps at most. The default, 10, lets nine
    /// processes (`serve` and workers) share a PostgreSQL server at its
    /// default `max_connections` of 100 with room for the superuser's
    /// reserved connections.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// Seconds a request waits for a free connection before it is answered
    /// 503 `unavailable` (with `Retry-After`).
    #[serde(default = "default_acquire_timeout_secs")]
    pub acquire_timeout_secs: u64,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self { max_connections: default_max_connections(), acquire_timeout_secs: default_acquire_timeout_secs() }
    }
}

impl DatabaseSettings {
    pub fn pool(&self) -> kairo_store::PoolSettings {
        kairo_store::PoolSettings {
            max_connections: self.max_connections.max(1),
            acquire_timeout: std::time::Duration::from_secs(self.acquire_timeout_secs.max(1)),
        }
    }
}

fn default_max_connections() -> u32 {
    10
}

fn default_acquire_timeout_secs() -> u64 {
    10
}

/// How workers run (`[worker]`; env `KAIRO_WORKER_SLOTS`, …).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSettings {
    /// Steps one process runs at the same time.
    #[serde(default = "default_slots")]
    pub slots: usize,
    /// Seconds a claim lasts without renewal: after a worker dies, its steps
    /// are taken over this long after its last renewal.
    #[serde(default = "default_lease_secs")]
    pub lease_secs: u64,
    /// Milliseconds an idle worker waits before looking for due work again.
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
    /// Most steps claimed or committed in one transaction.
    #[serde(default = "default_batch")]
    pub batch: usize,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            slots: default_slots(),
            lease_secs: default_lease_secs(),
            poll_ms: default_poll_ms(),
            batch: default_batch(),
        }
    }
}

fn default_slots() -> usize {
    // A slot is a step in flight: cheap while it waits on the network, and
    // a claim takes as many due steps as there are free slots, so more
    // slots mean fewer claims (and commits) per step.
    128
}

fn default_lease_secs() -> u64 {
    30
}

fn default_poll_ms() -> u64 {
    200
}

fn default_batch() -> usize {
    256
}

/// The sandbox channel (`[sandbox]`): used while no WhatsApp sending is
/// configured. Sends are recorded in the inbox and, when set, appended to
/// `record_file` as JSON lines.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxSettings {
    #[serde(default)]
    pub record_file: Option<PathBuf>,
}

/// A WABA holds at most this many phone numbers (API.md, section 8).
pub const MAX_NUMBERS_PER_ACCOUNT: usize = 25;

/// The Meta app whose webhook Kairo receives, and its WhatsApp accounts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhatsAppConfig {
    /// HMAC key of webhook signatures (env `KAIRO_WHATSAPP_APP_SECRET`).
    #[serde(default)]
    pub app_secret: Option<Secret>,
    /// Token of the GET verification handshake (env `KAIRO_WHATSAPP_VERIFY_TOKEN`).
    #[serde(default)]
    pub verify_token: Option<Secret>,
    /// Whole-message keywords that opt a contact in (matched trimmed, NFKC, any case).
    #[serde(default = "default_opt_in")]
    pub opt_in_keywords: Vec<String>,
    /// Whole-message keywords that opt a contact out.
    #[serde(default = "default_opt_out")]
    pub opt_out_keywords: Vec<String>,
    #[serde(default)]
    pub accounts: Vec<AccountConfig>,
    /// The Graph API's base URL (env `KAIRO_WHATSAPP_GRAPH_URL`); tests and
    /// proxies change it.
    #[serde(default = "default_graph_url")]
    pub graph_url: String,
    /// The Graph API version every call names (env `KAIRO_WHATSAPP_GRAPH_VERSION`).
    #[serde(default = "default_graph_version")]
    pub graph_version: String,
    /// How long one Graph API call may take, in seconds (env `KAIRO_WHATSAPP_TIMEOUT_SECS`).
    #[serde(default = "default_graph_timeout")]
    pub timeout_secs: u64,
}

impl WhatsAppConfig {
    /// True when some account can send: sends then go through the Cloud
    /// API instead of the sandbox.
    pub fn can_send(&self) -> bool {
        self.accounts.iter().any(|a| a.access_token.is_some())
    }
}

fn default_graph_url() -> String {
    "https://graph.facebook.com".into()
}

fn default_graph_version() -> String {
    "v25.0".into()
}

fn default_graph_timeout() -> u64 {
    15
}

impl Default for WhatsAppConfig {
    fn default() -> Self {
        Self {
            app_secret: None,
            verify_token: None,
            opt_in_keywords: default_opt_in(),
            opt_out_keywords: default_opt_out(),
            accounts: Vec::new(),
            graph_url: default_graph_url(),
            graph_version: default_graph_version(),
            timeout_secs: default_graph_timeout(),
        }
    }
}

fn default_opt_in() -> Vec<String> {
    ["YES", "START", "SUBSCRIBE"].map(String::from).to_vec()
}

fn default_opt_out() -> Vec<String> {
    ["STOP", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "STOPALL"].map(String::from).to_vec()
}

/// One WhatsApp Business Account and the numbers Kairo serves on it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    pub waba_id: String,
    #[serde(default)]
    pub name: String,
    /// The Graph API access token (or env `KAIRO_WHATSAPP_ACCESS_TOKEN` for all accounts).
    #[serde(default)]
    pub access_token: Option<Secret>,
    #[serde(default)]
    pub numbers: Vec<NumberConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NumberConfig {
    /// The Graph API phone-number id.
    pub id: String,
    /// As displayed, e.g. `+1 555-000-1111`.
    pub display_number: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Values given on the command line; they win over the file and the environment.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub database_url: Option<String>,
    pub listen: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path} does not exist: create it or leave out --config")]
    MissingFile { path: PathBuf },
    #[error(
        "invalid configuration: whatsapp account {waba_id} lists {count} numbers; WhatsApp allows at most {MAX_NUMBERS_PER_ACCOUNT} per account"
    )]
    TooManyNumbers { waba_id: String, count: usize },
    /// figment's message names the key and where its value came from (the
    /// file, or the environment variable).
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

fn default_database_url() -> DatabaseUrl {
    DatabaseUrl::new(DEFAULT_DATABASE_URL)
}

fn default_listen() -> SocketAddr {
    DEFAULT_LISTEN.parse().expect("the default listen address is a valid socket address")
}

fn default_workflows_dir() -> PathBuf {
    PathBuf::from("workflows")
}

impl Config {
    /// Loads the configuration. `file` is the `--config` path: it must exist
    /// when given; without it `./kairo.toml` is read if present.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let path = match file {
            Some(path) if !path.exists() => return Err(ConfigError::MissingFile { path: path.to_path_buf() }),
            Some(path) => Some(path.to_path_buf()),
            None => Some(PathBuf::from(DEFAULT_CONFIG_FILE)).filter(|p| p.exists()),
        };
        let mut figment = Figment::new();
        if let Some(path) = path {
            figment = figment.merge(Toml::file_exact(path));
        }
        figment = figment.merge(Env::prefixed("KAIRO_").filter_map(|key| {
            // figment hands the key over in the case it was written in.
            let key = key.as_str().to_ascii_lowercase();
            let key = key.as_str();
            if ENV_KEYS.contains(&key) {
                Some(key.to_string().into())
            } else {
                SECRET_ENV_KEYS.iter().find(|(env, _)| *env == key).map(|(_, path)| path.to_string().into())
            }
        }));
        if let Some(url) = &overrides.database_url {
            figment = figment.merge(Serialized::default("database_url", url));
        }
        if let Some(listen) = &overrides.listen {
            figment = figment.merge(Serialized::default("listen", listen));
        }
        let mut config: Config = figment.extract().map_err(|err| ConfigError::Invalid(describe(err)))?;
        if let Ok(token) = std::env::var("KAIRO_WHATSAPP_ACCESS_TOKEN") {
            for account in config.whatsapp.accounts.iter_mut().filter(|a| a.access_token.is_none()) {
                account.access_token = Some(Secret::new(token.clone()));
            }
        }
        for account in &config.whatsapp.accounts {
            if account.numbers.len() > MAX_NUMBERS_PER_ACCOUNT {
                return Err(ConfigError::TooManyNumbers {
                    waba_id: account.waba_id.clone(),
                    count: account.numbers.len(),
                });
            }
        }
        Ok(config)
    }
}

/// One line per problem; figment's own text already names key and source.
/// A value is never quoted back, as it might be a secret.
fn describe(err: figment::Error) -> String {
    err.into_iter()
        .map(|e| {
            let key = e.path.join(".");
            // A file is named by the path it was read from: figment's own
            // display shortens it relative to the working directory when
            // close by (`../x/kairo.toml`), which depends on where one runs.
            let source = e.metadata.as_ref().map(|m| match &m.source {
                Some(figment::Source::File(path)) => path.display().to_string(),
                Some(source) => source.to_string(),
                None => m.name.to_string(),
            });
            let kind = match &e.kind {
                figment::error::Kind::InvalidType(_, expected) => format!("wrong type, expected {expected}"),
                figment::error::Kind::InvalidValue(_, expected) => format!("invalid value, expected {expected}"),
                other => other.to_string(),
            };
            match (key.is_empty(), source) {
                (false, Some(source)) => format!("key `{key}` in {source}: {kind}"),
                (false, None) => format!("key `{key}`: {kind}"),
                (true, Some(source)) => format!("{source}: {kind}"),
                (true, None) => kind,
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &tempfile::TempDir, text: &str) -> PathBuf {
        let path = dir.path().join("kairo.toml");
        std::fs::write(&path, text).expect("write config");
        path
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail decides the closure's error type
    fn nested_settings_come_from_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("KAIRO_WORKER_SLOTS", "7");
            jail.set_env("KAIRO_SANDBOX_RECORD_FILE", "/tmp/sends.jsonl");
            jail.set_env("KAIRO_WHATSAPP_APP_SECRET", "s3cret");
            let config = Config::load(None, &Overrides::default()).expect("config");
            assert_eq!(config.worker.slots, 7);
            assert_eq!(config.sandbox.record_file, Some(PathBuf::from("/tmp/sends.jsonl")));
            assert_eq!(config.whatsapp.app_secret.as_ref().map(|s| s.expose().to_string()), Some("s3cret".into()));
            Ok(())
        });
    }

    #[test]
    fn defaults_apply_when_nothing_is_configured() {
        let config = Config::load(None, &Overrides::default()).expect("defaults");
        assert_eq!(config.database_url.to_string(), "sqlite://kairo.db");
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.workflows_dir, PathBuf::from("workflows"));
        assert_eq!(config.log_format, LogFormat::Text);
    }

    #[test]
    fn file_values_are_read_and_flags_override_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path =
            write(&dir, "database_url = \"sqlite://from-file.db\"\nlisten = \"0.0.0.0:9000\"\nlog_format = \"json\"\n");
        let config = Config::load(Some(&path), &Overrides::default()).expect("file");
        assert_eq!(config.database_url.to_string(), "sqlite://from-file.db");
        assert_eq!(config.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(config.log_format, LogFormat::Json);
        let overrides =
            Overrides { database_url: Some("sqlite://from-flag.db".into()), listen: Some("127.0.0.1:7000".into()) };
        let config = Config::load(Some(&path), &overrides).expect("file + flags");
        assert_eq!(config.database_url.to_string(), "sqlite://from-flag.db");
        assert_eq!(config.listen.to_string(), "127.0.0.1:7000");
    }

    #[test]
    fn a_bad_value_is_reported_with_its_key_and_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write(&dir, "listen = \"not-an-address\"\n");
        let err = Config::load(Some(&path), &Overrides::default()).expect_err("bad listen").to_string();
        assert!(err.contains("key `listen`"), "{err}");
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn an_unknown_key_is_reported_with_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write(&dir, "databse_url = \"sqlite://x.db\"\n");
        let err = Config::load(Some(&path), &Overrides::default()).expect_err("typo").to_string();
        assert!(err.contains("databse_url"), "{err}");
        assert!(err.contains(&path.display().to_string()), "{err}");
    }

    #[test]
    fn a_wrong_type_does_not_quote_the_value_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write(&dir, "database_url = 12345678\n");
        let err = Config::load(Some(&path), &Overrides::default()).expect_err("wrong type").to_string();
        assert!(err.contains("key `database_url`"), "{err}");
        assert!(!err.contains("12345678"), "{err}");
    }

    #[test]
    fn a_missing_config_file_given_explicitly_is_an_error() {
        let err = Config::load(Some(Path::new("/nonexistent/kairo.toml")), &Overrides::default())
            .expect_err("missing")
            .to_string();
        assert_eq!(err, "config file /nonexistent/kairo.toml does not exist: create it or leave out --config");
    }

    #[test]
    fn whatsapp_secrets_and_accounts_are_read_and_never_shown() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write(
            &dir,
            "[whatsapp]\napp_secret = \"s3cret-app\"\nverify_token = \"v3rify\"\n\n[[whatsapp.accounts]]\nwaba_id = \"1\"\naccess_token = \"EAAG-token\"\nnumbers = [{id = \"106540352242922\", display_number = \"+1 555-000-1111\"}]\n",
        );
        let config = Config::load(Some(&path), &Overrides::default()).expect("config");
        assert_eq!(config.whatsapp.app_secret.as_ref().map(Secret::expose), Some("s3cret-app"));
        assert_eq!(config.whatsapp.accounts[0].numbers[0].id, "106540352242922");
        assert_eq!(config.whatsapp.opt_in_keywords, ["YES", "START", "SUBSCRIBE"]);
        let shown = format!("{config:?}");
        for secret in ["s3cret-app", "v3rify", "EAAG-token"] {
            assert!(!shown.contains(secret), "{secret} leaked: {shown}");
        }
    }

    #[test]
    fn more_than_25_numbers_in_an_account_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let numbers: Vec<String> =
            (0..26).map(|i| format!("{{id = \"{i}\", display_number = \"+1 555 000 {i:04}\"}}")).collect();
        let path =
            write(&dir, &format!("[[whatsapp.accounts]]\nwaba_id = \"77\"\nnumbers = [{}]\n", numbers.join(", ")));
        let err = Config::load(Some(&path), &Overrides::default()).expect_err("26 numbers").to_string();
        assert_eq!(
            err,
            "invalid configuration: whatsapp account 77 lists 26 numbers; WhatsApp allows at most 25 per account"
        );
    }

    #[test]
    fn debug_output_of_the_config_hides_the_database_password() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write(&dir, "database_url = \"postgres://kairo:pa55word@db/kairo\"\n");
        let config = Config::load(Some(&path), &Overrides::default()).expect("config");
        let shown = format!("{config:?}");
        assert!(!shown.contains("pa55word"), "{shown}");
        assert!(shown.contains("postgres://kairo:***@db/kairo"), "{shown}");
    }
}
