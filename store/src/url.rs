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
        let mut out = message.to_string();
        for span in password_spans(&self.raw) {
            out = out.replace(&self.raw[span], "***");
        }
        out
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

/// Where a URL's passwords are: after `user:` in
/// `scheme://user:password@host/…`, and the value of a `password=` query
/// parameter (which the PostgreSQL driver also takes). Parsed by hand
/// rather than with a URL parser so that even an unparseable URL is
/// redacted.
fn password_spans(raw: &str) -> Vec<std::ops::Range<usize>> {
    let mut spans = Vec::new();
    let mut query_from = 0;
    if let Some((scheme, rest)) = raw.split_once("://") {
        let rest_start = scheme.len() + 3;
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        query_from = rest_start + authority.len();
        if let Some((userinfo, _)) = authority.rsplit_once('@')
            && let Some((_, password)) = userinfo.split_once(':')
            && !password.is_empty()
        {
            let start = rest_start + userinfo.len() - password.len();
            spans.push(start..start + password.len());
        }
    }
    if let Some(mark) = raw[query_from..].find('?') {
        let query_start = query_from + mark + 1;
        let query_end = raw[query_start..].find('#').map_or(raw.len(), |i| query_start + i);
        let mut at = query_start;
        for pair in raw[query_start..query_end].split('&') {
            if let Some((key, value)) = pair.split_once('=')
                && key.eq_ignore_ascii_case("password")
                && !value.is_empty()
            {
                let start = at + key.len() + 1;
                spans.push(start..start + value.len());
            }
            at += pair.len() + 1;
        }
    }
    spans
}

fn redact(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut from = 0;
    for span in password_spans(raw) {
        out.push_str(&raw[from..span.start]);
        out.push_str("***");
        from = span.end;
    }
    out.push_str(&raw[from..]);
    out
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
    fn a_password_given_as_a_query_parameter_is_hidden_too() {
        let url = DatabaseUrl::new("postgres://kairo@db.example/kairo?sslmode=require&password=s3cr3t#x");
        assert_eq!(url.to_string(), "postgres://kairo@db.example/kairo?sslmode=require&password=***#x");
        assert!(!format!("{url:?}").contains("s3cr3t"));
        assert_eq!(url.scrub("auth failed for s3cr3t"), "auth failed for ***");
        let both = DatabaseUrl::new("postgres://u:one@h/db?PASSWORD=two");
        assert_eq!(both.to_string(), "postgres://u:***@h/db?PASSWORD=***");
    }

    #[test]
    fn password_containing_at_sign_is_hidden_whole() {
        let url = DatabaseUrl::new("postgres://u:p@ss@host/db");
        assert_eq!(url.to_string(), "postgres://u:***@host/db");
    }
}
