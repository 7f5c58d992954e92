//! The HTTP API's settings (`[api]` of the configuration).

use serde::Deserialize;

/// The HTTP API (`[api]`; env `KAIRO_API_RATE_LIMIT`, …).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSettings {
    /// Requests per second one token may make (with a burst of as many).
    #[serde(default = "default_rate_limit")]
    pub rate_limit: u32,
    /// The largest JSON body accepted, in bytes.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// The largest bulk enrollment body (NDJSON or CSV), in bytes.
    #[serde(default = "default_max_bulk_body")]
    pub max_bulk_bytes: u64,
    /// The pages' cookies are `Secure` (sent over HTTPS only): set it when
    /// Kairo is reached through HTTPS (a TLS-terminating proxy).
    #[serde(default)]
    pub secure_cookies: bool,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            rate_limit: default_rate_limit(),
            max_body_bytes: default_max_body(),
            max_bulk_bytes: default_max_bulk_body(),
            secure_cookies: false,
        }
    }
}

fn default_rate_limit() -> u32 {
    1_000
}

fn default_max_body() -> usize {
    1024 * 1024
}

fn default_max_bulk_body() -> u64 {
    2 * 1024 * 1024 * 1024
}
