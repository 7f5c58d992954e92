//! Configuration: `kairo.toml`, then `KAIRO_*` environment variables, then
//! command-line flags, each overriding the one before.
//!
//! Secrets (access tokens, app secrets, API tokens) come from here only,
//! never from workflow files, and are held in [`crate::Secret`] or, for the
//! database URL, in [`DatabaseUrl`], which hide them when shown.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::Deserialize;

use crate::store::DatabaseUrl;

/// The file read when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "kairo.toml";
/// The embedded default: one SQLite file in the working directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://kairo.db";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// Environment variables read, each `KAIRO_` + a key in upper case.
const ENV_KEYS: &[&str] = &["database_url", "listen", "workflows_dir", "log_format"];

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
        figment = figment.merge(Env::prefixed("KAIRO_").filter(|key| ENV_KEYS.contains(&key.as_str())));
        if let Some(url) = &overrides.database_url {
            figment = figment.merge(Serialized::default("database_url", url));
        }
        if let Some(listen) = &overrides.listen {
            figment = figment.merge(Serialized::default("listen", listen));
        }
        figment.extract().map_err(|err| ConfigError::Invalid(describe(err)))
    }
}

/// One line per problem; figment's own text already names key and source.
/// A value is never quoted back, as it might be a secret.
fn describe(err: figment::Error) -> String {
    err.into_iter()
        .map(|e| {
            let key = e.path.join(".");
            let source = e.metadata.as_ref().map(|m| match &m.source {
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
