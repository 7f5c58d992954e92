//! Database URLs that can be shown: the password is replaced by `***`
//! whenever the URL is displayed or debugged.

/// A database URL; `Display` and `Debug` hide the password.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl {
    raw: String,
    shown: String,
}

impl DatabaseUrl {
    pub fn new(raw: &str) -> Self {
        Self { raw: raw.to_string(), shown: redact(raw) }
    }

    /// The URL with its password, for the driver only.
    pub(crate) fn expose(&self) -> &str {
        &self.raw
    }

    /// The scheme in lower case (`sqlite`, `postgres`), or the whole URL when it has none.
    pub fn scheme(&self) -> String {
        self.raw.split(':').next().unwrap_or_default().to_ascii_lowercase()
    }

    /// Removes the password from a driver message that might quote the URL.
    pub(crate) fn scrub(&self, message: &str) -> String {
        match password(&self.raw) {
            Some(password) if !password.is_empty() => message.replace(password, "***"),
            _ => message.to_string(),
        }
    }
}

impl<'de> serde::Deserialize<'de> for DatabaseUrl {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(|raw| DatabaseUrl::new(&raw))
    }
}

impl std::fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DatabaseUrl({})", self.shown)
    }
}

/// The password part of `scheme://user:password@host/…`, if any. Parsed by
/// hand rather than with a URL parser so that even an unparseable URL is
/// redacted.
fn password(raw: &str) -> Option<&str> {
    let rest = raw.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let userinfo = authority.rsplit_once('@')?.0;
    Some(userinfo.split_once(':')?.1)
}

fn redact(raw: &str) -> String {
    match password(raw) {
        Some(password) => {
            let start = password.as_ptr() as usize - raw.as_ptr() as usize;
            format!("{}***{}", &raw[..start], &raw[start + password.len()..])
        }
        None => raw.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_is_hidden_when_shown() {
        let url = DatabaseUrl::new("postgres://kairo:s3cr3t@db.example:5432/kairo?sslmode=require");
        assert_eq!(url.to_string(), "postgres://kairo:***@db.example:5432/kairo?sslmode=require");
        assert!(!format!("{url:?}").contains("s3cr3t"));
        assert_eq!(url.scrub("failed for s3cr3t"), "failed for ***");
    }

    #[test]
    fn urls_without_password_are_shown_as_they_are() {
        assert_eq!(DatabaseUrl::new("sqlite://kairo.db").to_string(), "sqlite://kairo.db");
        assert_eq!(
            DatabaseUrl::new("postgres://kairo@localhost/kairo").to_string(),
            "postgres://kairo@localhost/kairo"
        );
    }

    #[test]
    fn password_containing_at_sign_is_hidden_whole() {
        let url = DatabaseUrl::new("postgres://u:p@ss@host/db");
        assert_eq!(url.to_string(), "postgres://u:***@host/db");
    }
}
