//! Secrets (access tokens, app secrets, verify tokens, API tokens): a type
//! that never shows its value by accident.
//!
//! `Debug` and `Display` print `[redacted]`; serialising a `Secret` is not
//! possible, so a config dump or an error cannot carry one. The value is read
//! only through [`Secret::expose`], which makes each use easy to find.

use serde::{Deserialize, Deserializer};

/// A string that must not reach logs, error messages or `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret value itself; call only where it is used (a header, a HMAC key).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let secret = Secret::new("EAAG-very-secret-token");
        assert_eq!(format!("{secret:?}"), "[redacted]");
        assert_eq!(format!("{secret}"), "[redacted]");
        #[derive(Debug)]
        #[allow(dead_code)]
        struct Holder {
            token: Secret,
        }
        let shown = format!("{:?}", Holder { token: secret.clone() });
        assert!(!shown.contains("very-secret"), "{shown}");
        assert_eq!(secret.expose(), "EAAG-very-secret-token");
    }
}
