//! Graph API errors, classified by `error.code` (never by HTTP status or
//! message text; API.md section 10), and what each class asks of Kairo.

use std::time::Duration;

use kairo_core::outbound::{CallError, FailureKind, ThrottleScope};
use serde_json::Value;

/// An error answer from the Graph API, as its envelope carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphError {
    pub http_status: u16,
    pub code: i64,
    pub subcode: Option<i64>,
    /// `message`, which Graph starts with `(#code)` and the title.
    pub message: String,
    /// `error_data.details`: the explanation, when given.
    pub details: Option<String>,
    pub fbtrace_id: Option<String>,
}

impl GraphError {
    /// Reads the `{"error": {...}}` envelope; `None` when the body is not one
    /// (an HTML page from a proxy, an empty body).
    pub fn parse(http_status: u16, body: &[u8]) -> Option<Self> {
        let value: Value = serde_json::from_slice(body).ok()?;
        let error = value.get("error")?;
        let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
        Some(Self {
            http_status,
            code: error.get("code").and_then(Value::as_i64)?,
            subcode: error.get("error_subcode").and_then(Value::as_i64),
            message: text(error.get("message")).unwrap_or_default(),
            details: text(error.pointer("/error_data/details")),
            fbtrace_id: text(error.get("fbtrace_id")),
        })
    }

    /// What to do about it.
    pub fn class(&self) -> (FailureKind, Option<Duration>) {
        classify(self.code, self.subcode, self.http_status)
    }

    /// A readable reason: code, Meta's message and details, and what to do.
    /// Never carries a token (Graph does not echo them in errors).
    pub fn reason(&self) -> String {
        let mut out = format!("WhatsApp error {}", self.code);
        if !self.message.is_empty() {
            out.push_str(&format!(": {}", self.message));
        }
        if let Some(details) = &self.details {
            out.push_str(&format!(" ({details})"));
        }
        if let Some(advice) = advice(self.code, self.subcode) {
            out.push_str(&format!(". {advice}"));
        }
        if let Some(trace) = &self.fbtrace_id {
            out.push_str(&format!(" [fbtrace_id {trace}]"));
        }
        out
    }

    pub fn to_call_error(&self) -> CallError {
        let (kind, wait) = self.class();
        let mut error = CallError::new(kind, self.reason());
        error.retry_after = wait;
        error.code = Some(self.code);
        error.throttle = throttle_scope(self.code);
        error
    }
}

/// Which limit a throttling code names: the runtime slows the number down
/// for 130429 and spaces sends to the recipient for 131056.
pub fn throttle_scope(code: i64) -> Option<ThrottleScope> {
    match code {
        130429 => Some(ThrottleScope::Number),
        131056 => Some(ThrottleScope::Recipient),
        _ => None,
    }
}

/// The class of a Graph error code, and how long a limit asks to wait.
pub fn classify(code: i64, subcode: Option<i64>, http_status: u16) -> (FailureKind, Option<Duration>) {
    use FailureKind::*;
    let secs = |s: u64| Some(Duration::from_secs(s));
    match code {
        // Credentials, permissions, account or number configuration.
        0 | 3 | 10 | 33 | 190 | 200..=299 | 368 => (Auth, None),
        100 if subcode == Some(33) => (Auth, None),
        131005 | 131031 | 131037 | 131042 | 131045 | 131063 | 133000 | 133010 => (Auth, None),
        // Limits: wait, never fail for that alone.
        130429 => (Throttled, secs(1)),
        131056 => (Throttled, secs(6)),
        4 | 80007 => (Throttled, secs(60)),
        131048 | 131064 | 132069 | 133016 => (Throttled, secs(3600)),
        131049 => (Throttled, secs(24 * 3600)),
        // Meta's side, for now.
        1 | 2 | 131000 | 131016 | 133004 => (Temporary, None),
        131057 => (Temporary, secs(10)),
        // Will not work as sent.
        100 | 130403 | 130472 | 130497 | 131008 | 131009 | 131021 | 131026 | 131047 | 131050 | 131051 | 131052
        | 131053 | 131062 | 132000 | 132001 | 132005 | 132007 | 132012 | 132015 | 132016 | 132018 | 132068 | 135000
        | 137000 => (Permanent, None),
        _ if http_status >= 500 => (Temporary, None),
        _ => (Permanent, None),
    }
}

/// What an operator or author should do next, for the codes where Kairo
/// knows better than Meta's text.
pub(crate) fn advice(code: i64, subcode: Option<i64>) -> Option<&'static str> {
    Some(match code {
        0 | 190 => {
            "The access token is expired or revoked: set a new one (KAIRO_WHATSAPP_ACCESS_TOKEN or the account's access_token) and restart"
        }
        3 | 10 | 200..=299 | 131005 => {
            "The access token lacks a permission: grant whatsapp_business_messaging and whatsapp_business_management"
        }
        100 if subcode == Some(33) => {
            "The phone number or account id is wrong or not reachable with this token: check kairo.toml"
        }
        131047 => "More than 24 hours since the contact's last message: send a template instead",
        131026 => "The recipient cannot receive WhatsApp messages (not on WhatsApp, or an old app)",
        131050 => "The contact stopped marketing messages from this business in WhatsApp",
        132000 | 132012 => "The parameters do not match the template: run `kairo sync` and `kairo validate`",
        132001 => "No approved template of this name and language: run `kairo sync` and check the workflow",
        132015 => "The template is paused for low quality",
        132016 => "The template is disabled",
        133010 => "The number is not registered with the Cloud API",
        131042 => "Fix the business's payment method",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_classified_by_code_not_status() {
        assert_eq!(classify(130429, None, 400).0, FailureKind::Throttled);
        assert_eq!(classify(131056, None, 400), (FailureKind::Throttled, Some(Duration::from_secs(6))));
        assert_eq!(throttle_scope(130429), Some(ThrottleScope::Number));
        assert_eq!(throttle_scope(131056), Some(ThrottleScope::Recipient));
        assert_eq!(throttle_scope(80007), None);
        assert_eq!(classify(190, Some(463), 401).0, FailureKind::Auth);
        assert_eq!(classify(100, Some(33), 400).0, FailureKind::Auth);
        assert_eq!(classify(100, None, 400).0, FailureKind::Permanent);
        assert_eq!(classify(131000, None, 500).0, FailureKind::Temporary);
        assert_eq!(classify(999_999, None, 503).0, FailureKind::Temporary);
        assert_eq!(classify(999_999, None, 400).0, FailureKind::Permanent);
    }
}
