//! Expressions: handlebars templates over the step context.
//!
//! The context is one JSON object with `contact` (id, name, phone, …,
//! `properties`' keys too), `trigger` (the trigger data), `steps.<id>.output`,
//! `workflow` (id, name, version) and `now` (RFC 3339). Rendering is strict:
//! a variable that is missing is an error, unless wrapped in `default`.
//! Nothing is HTML-escaped: the output goes to WhatsApp, not a browser.
//!
//! Helpers:
//! - `{{default contact.name "there"}}`: the value, or the fallback when missing or empty;
//! - `{{upper x}}`, `{{lower x}}`;
//! - `{{date trigger.delivery_at "%A %-d %B" "Europe/Paris"}}`: a date-time
//!   (RFC 3339) formatted with strftime codes in a time zone (UTC when omitted).

use handlebars::{
    Context, Handlebars, Helper, HelperDef, RenderContext, RenderError as HandlebarsError, RenderErrorReason,
    ScopedJson,
};
use serde_json::Value;

/// Renders expressions; build one and reuse it.
#[derive(Debug)]
pub struct Renderer {
    registry: Handlebars<'static>,
}

impl Default for Renderer {
    fn default() -> Self {
        Self::new()
    }
}

/// `upper` and `lower`: a missing value is named by its path, as a
/// missing variable is.
struct CaseHelper {
    name: &'static str,
    change: fn(&str) -> String,
}

impl HelperDef for CaseHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, HandlebarsError> {
        let name = self.name;
        let param = h.param(0).ok_or_else(|| {
            HandlebarsError::from(RenderErrorReason::Other(format!(
                "`{name}` needs a value: `{{{{{name} contact.name}}}}`"
            )))
        })?;
        let text = match param.value() {
            Value::String(text) => text.clone(),
            Value::Null => {
                let path = param.relative_path().map_or_else(|| "its value".to_string(), |p| format!("`{p}`"));
                return Err(HandlebarsError::from(RenderErrorReason::Other(format!(
                    "{path} has no value for this contact (in `{name}`): give it one, or write \
                     `{{{{{name} (default {} \"…\")}}}}`",
                    param.relative_path().map_or("…", |p| p.as_str())
                ))));
            }
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            other => other.to_string(),
        };
        Ok(ScopedJson::Derived(Value::String((self.change)(&text))))
    }
}

struct DefaultHelper;

impl HelperDef for DefaultHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, HandlebarsError> {
        let value = h.param(0).map(|p| p.value().clone()).unwrap_or(Value::Null);
        let fallback = h.param(1).map(|p| p.value().clone()).unwrap_or(Value::Null);
        let empty = matches!(&value, Value::Null) || value.as_str().is_some_and(str::is_empty);
        Ok(ScopedJson::Derived(if empty { fallback } else { value }))
    }
}

struct DateHelper;

impl HelperDef for DateHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, HandlebarsError> {
        let invalid = |why: String| HandlebarsError::from(RenderErrorReason::Other(why));
        let value = h
            .param(0)
            .and_then(|p| p.value().as_str().map(str::to_string))
            .ok_or_else(|| invalid("`date` needs a date-time (RFC 3339 text) as its first parameter".to_string()))?;
        let format = h.param(1).and_then(|p| p.value().as_str().map(str::to_string)).unwrap_or("%Y-%m-%d %H:%M".into());
        let zone = h.param(2).and_then(|p| p.value().as_str().map(str::to_string)).unwrap_or("UTC".into());
        let at = chrono::DateTime::parse_from_rfc3339(&value)
            .map_err(|_| invalid(format!("`date`: `{value}` is not an RFC 3339 date-time")))?;
        let tz: chrono_tz::Tz = zone.parse().map_err(|_| invalid(format!("`date`: unknown time zone `{zone}`")))?;
        let mut out = String::new();
        use std::fmt::Write;
        write!(out, "{}", at.with_timezone(&tz).format(&format))
            .map_err(|_| invalid(format!("`date`: invalid format `{format}`")))?;
        Ok(ScopedJson::Derived(Value::String(out)))
    }
}

impl Renderer {
    pub fn new() -> Self {
        let mut registry = Handlebars::new();
        registry.set_strict_mode(true);
        registry.register_escape_fn(handlebars::no_escape);
        registry.register_helper("upper", Box::new(CaseHelper { name: "upper", change: str::to_uppercase }));
        registry.register_helper("lower", Box::new(CaseHelper { name: "lower", change: str::to_lowercase }));
        registry.register_helper("default", Box::new(DefaultHelper));
        registry.register_helper("date", Box::new(DateHelper));
        Renderer { registry }
    }

    /// Renders `template` against `context`; the error says what was missing or wrong.
    pub fn render(&self, template: &str, context: &Value) -> Result<String, RenderError> {
        self.registry.render_template(template, context).map_err(|err| match err.reason() {
            RenderErrorReason::MissingVariable(Some(path)) => RenderError::Missing(path.clone()),
            RenderErrorReason::Other(message) => RenderError::Invalid(message.clone()),
            other => RenderError::Invalid(other.to_string()),
        })
    }
}

/// Why a text did not render.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// A variable the text names has no value (strict mode).
    #[error("`{0}` has no value for this contact")]
    Missing(String),
    /// Anything else: a helper's own message (which names the value it
    /// missed and what to write instead), or the template's syntax.
    #[error("{0}")]
    Invalid(String),
}

impl RenderError {
    /// The error with what was being rendered (`the header`, `url`).
    pub fn of(self, what: impl Into<String>) -> RenderFailure {
        RenderFailure { what: what.into(), error: self }
    }
}

/// A render error and what was being rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {error}")]
pub struct RenderFailure {
    pub what: String,
    pub error: RenderError,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx() -> Value {
        json!({"contact": {"name": "Ana", "city": ""}, "trigger": {"at": "2026-12-24T08:30:00Z"}, "now": "2026-12-01T00:00:00Z"})
    }

    #[test]
    fn a_missing_value_in_a_helper_is_named_by_its_path() {
        let r = Renderer::new();
        let err = r.render("Hi {{upper contact.plan}}", &ctx()).expect_err("missing").to_string();
        assert!(err.contains("`contact.plan` has no value") && err.contains("default contact.plan"), "{err}");
        assert!(!err.contains("param with name"), "{err}");
        let err = r.render("{{lower trigger.code}}", &ctx()).expect_err("missing").to_string();
        assert!(err.contains("`trigger.code`"), "{err}");
    }

    #[test]
    fn helpers_render() {
        let r = Renderer::new();
        assert_eq!(r.render("Hi {{upper contact.name}}", &ctx()), Ok("Hi ANA".into()));
        assert_eq!(r.render("{{lower \"ÉTÉ\"}}", &ctx()), Ok("été".into()));
        assert_eq!(r.render("{{default contact.missing \"there\"}}", &ctx()), Ok("there".into()));
        assert_eq!(r.render("{{default contact.city \"nowhere\"}}", &ctx()), Ok("nowhere".into()));
        assert_eq!(r.render("{{date trigger.at \"%H:%M %Z\" \"Europe/Paris\"}}", &ctx()), Ok("09:30 CET".into()));
        assert_eq!(r.render("<b>{{contact.name}} & co</b>", &ctx()), Ok("<b>Ana & co</b>".into()));
    }

    #[test]
    fn a_missing_variable_is_an_error_naming_it() {
        let err = Renderer::new().render("Hi {{contact.surname}}", &ctx()).expect_err("strict");
        assert_eq!(err, RenderError::Missing("contact.surname".into()));
        let err = err.to_string();
        assert!(err.contains("contact.surname"), "{err}");
    }
}
