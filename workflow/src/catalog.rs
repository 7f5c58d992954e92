//! The synced catalogue of business numbers and templates that send steps are
//! checked against: read from the database, or from a JSON file (`--catalog`)
//! so validation runs offline in an editor or CI.
//!
//! The file holds, per account, its numbers and its templates as the Graph
//! API lists them (`GET /{waba-id}/message_templates` items):
//!
//! ```json
//! {"accounts": [{"waba_id": "102290129340398",
//!   "numbers": [{"id": "106540352242922", "display_phone_number": "+1 555-010-0100"}],
//!   "templates": [{"name": "order_update", "language": "en_US", "status": "APPROVED",
//!                  "category": "UTILITY", "parameter_format": "POSITIONAL", "components": [...]}]}]}
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

use kairo_core::phone::names_number;
use regex::Regex;
use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Catalog {
    pub accounts: Vec<CatalogAccount>,
    /// The inbox's users and teams that owners may name; `None`: not
    /// checked (a catalogue file without them).
    #[serde(default)]
    pub people: Option<CatalogPeople>,
}

/// Who threads can be assigned to: users by e-mail, teams by name.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CatalogPeople {
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub teams: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct CatalogAccount {
    #[serde(default)]
    pub waba_id: String,
    #[serde(default)]
    pub numbers: Vec<CatalogNumber>,
    #[serde(default)]
    pub templates: Vec<CatalogTemplate>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CatalogNumber {
    /// The Graph API phone-number id.
    pub id: String,
    pub display_phone_number: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CatalogTemplate {
    pub name: String,
    pub language: String,
    pub status: String,
    #[serde(default)]
    pub category: String,
    #[serde(default = "positional")]
    pub parameter_format: String,
    #[serde(default)]
    pub components: Vec<serde_json::Value>,
}

fn positional() -> String {
    "POSITIONAL".into()
}

/// What a template needs at send time, read from its components (API.md 7.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateNeeds {
    pub named: bool,
    pub header: HeaderNeed,
    /// Positional: `{{1}}`..`{{n}}` gives n entries `"1"`..`"n"`; named: the names.
    pub body: BTreeSet<String>,
    /// Button index → what that button needs.
    pub buttons: BTreeMap<usize, ButtonNeed>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderNeed {
    None,
    /// A text header with a placeholder (positional `1`, or a name).
    Text(String),
    /// `IMAGE`, `VIDEO`, `DOCUMENT` or `LOCATION`.
    Media(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ButtonNeed {
    /// A URL button whose URL ends in `{{1}}`: the suffix is required.
    UrlSuffix,
    /// A copy-code button: the code is required.
    CouponCode,
    /// A quick-reply button: a payload is optional.
    OptionalPayload,
}

static PLACEHOLDER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}").expect("the placeholder pattern is valid"));

fn placeholders(text: &str) -> BTreeSet<String> {
    PLACEHOLDER.captures_iter(text).map(|c| c[1].to_string()).collect()
}

impl CatalogTemplate {
    pub fn needs(&self) -> TemplateNeeds {
        let mut needs = TemplateNeeds {
            named: self.parameter_format.eq_ignore_ascii_case("NAMED"),
            header: HeaderNeed::None,
            body: BTreeSet::new(),
            buttons: BTreeMap::new(),
        };
        for component in &self.components {
            let kind = component["type"].as_str().unwrap_or_default().to_ascii_uppercase();
            let text = component["text"].as_str().unwrap_or_default();
            match kind.as_str() {
                "HEADER" => {
                    let format = component["format"].as_str().unwrap_or("TEXT").to_ascii_uppercase();
                    needs.header = if format == "TEXT" {
                        placeholders(text).into_iter().next().map_or(HeaderNeed::None, HeaderNeed::Text)
                    } else {
                        HeaderNeed::Media(format)
                    };
                }
                "BODY" => needs.body = placeholders(text),
                "BUTTONS" => {
                    let buttons = component["buttons"].as_array().cloned().unwrap_or_default();
                    for (index, button) in buttons.iter().enumerate() {
                        let need = match button["type"].as_str().unwrap_or_default().to_ascii_uppercase().as_str() {
                            "URL" if !placeholders(button["url"].as_str().unwrap_or_default()).is_empty() => {
                                Some(ButtonNeed::UrlSuffix)
                            }
                            "COPY_CODE" => Some(ButtonNeed::CouponCode),
                            "QUICK_REPLY" => Some(ButtonNeed::OptionalPayload),
                            _ => None,
                        };
                        if let Some(need) = need {
                            needs.buttons.insert(index, need);
                        }
                    }
                }
                _ => {}
            }
        }
        needs
    }
}

impl CatalogTemplate {
    /// The template as the customer sees it with these parameters (the
    /// same shapes [`TemplateNeeds::problems`] checks): the header, the
    /// body with its placeholders filled in, the footer and the buttons'
    /// labels. A placeholder without a value is left as written; a media
    /// header shows its kind (`[image]`).
    pub fn as_seen(
        &self,
        header: Option<&serde_json::Value>,
        body: Option<&serde_json::Value>,
    ) -> kairo_core::content::MessageContent {
        let mut seen_header = None;
        let mut seen_body = String::new();
        let mut footer = None;
        let mut buttons = Vec::new();
        for component in &self.components {
            let kind = component["type"].as_str().unwrap_or_default().to_ascii_uppercase();
            let text = component["text"].as_str().unwrap_or_default();
            match kind.as_str() {
                "HEADER" => {
                    let format = component["format"].as_str().unwrap_or("TEXT").to_ascii_uppercase();
                    seen_header = Some(if format == "TEXT" {
                        // A reply sends the header's text as a string, a
                        // workflow as `{"text": …}`.
                        let value = header.and_then(|h| h.as_str().or_else(|| h["text"].as_str()));
                        fill(text, |_| value.map(str::to_string))
                    } else {
                        format!("[{}]", format.to_lowercase())
                    });
                }
                "BODY" => seen_body = fill(text, |name| body_value(body, name)),
                "FOOTER" => footer = Some(text.to_string()).filter(|t| !t.is_empty()),
                "BUTTONS" => {
                    let list = component["buttons"].as_array().cloned().unwrap_or_default();
                    buttons.extend(list.iter().filter_map(|b| b["text"].as_str().map(str::to_string)));
                }
                _ => {}
            }
        }
        kairo_core::content::MessageContent::Template { header: seen_header, body: seen_body, footer, buttons }
    }
}

/// `text` with each `{{name}}` replaced by its value, where there is one.
fn fill(text: &str, value: impl Fn(&str) -> Option<String>) -> String {
    PLACEHOLDER
        .replace_all(text, |c: &regex::Captures<'_>| value(&c[1]).unwrap_or_else(|| c[0].to_string()))
        .into_owned()
}

/// A body parameter by placeholder: `{{2}}` is the second of a list, a
/// name is the key of an object.
fn body_value(body: Option<&serde_json::Value>, name: &str) -> Option<String> {
    let value = match body? {
        serde_json::Value::Array(values) => values.get(name.parse::<usize>().ok()?.checked_sub(1)?)?,
        serde_json::Value::Object(values) => values.get(name)?,
        _ => return None,
    };
    Some(value.as_str().map_or_else(|| value.to_string(), str::to_string))
}

impl TemplateNeeds {
    /// What is wrong with the parameters of a template sent as JSON (an
    /// inbox reply): `body` a list (positional) or an object (named),
    /// `header` text or `{"image"|"video"|"document": link}`, `buttons`
    /// `[{"index", "text"|"payload"|"coupon_code"}]`. Empty when they fit;
    /// the same rules as `kairo validate` applies to a workflow's send.
    pub fn problems(
        &self,
        header: Option<&serde_json::Value>,
        body: Option<&serde_json::Value>,
        buttons: &[serde_json::Value],
    ) -> Vec<String> {
        let mut problems = Vec::new();
        self.body_problems(body, &mut problems);
        self.header_problems(header, &mut problems);
        self.button_problems(buttons, &mut problems);
        problems
    }

    fn body_problems(&self, body: Option<&serde_json::Value>, problems: &mut Vec<String>) {
        use serde_json::Value;
        let names = |set: &BTreeSet<String>| set.iter().cloned().collect::<Vec<_>>().join(", ");
        match (body.filter(|b| !b.is_null()), self.named) {
            (None, _) if !self.body.is_empty() => problems.push(format!(
                "`body` is missing: the template takes {} body parameter(s) ({})",
                self.body.len(),
                names(&self.body)
            )),
            (None, _) => {}
            (Some(Value::Array(values)), false) if values.len() != self.body.len() => problems.push(format!(
                "`body` has {} parameter(s); the template takes {} ({})",
                values.len(),
                self.body.len(),
                names(&self.body)
            )),
            (Some(Value::Array(_)), false) => {}
            (Some(Value::Object(values)), true) => {
                let given: BTreeSet<String> = values.keys().cloned().collect();
                let missing: BTreeSet<String> = self.body.difference(&given).cloned().collect();
                let unknown: BTreeSet<String> = given.difference(&self.body).cloned().collect();
                if !missing.is_empty() {
                    problems.push(format!("`body` lacks the parameter(s) {}", names(&missing)));
                }
                if !unknown.is_empty() {
                    problems.push(format!(
                        "`body` has parameter(s) {} the template does not take; it takes {}",
                        names(&unknown),
                        names(&self.body)
                    ));
                }
            }
            (Some(_), false) => problems.push(format!(
                "the template takes positional parameters: send `body` as a list of {} value(s)",
                self.body.len()
            )),
            (Some(_), true) => problems.push(format!(
                "the template takes named parameters: send `body` as an object of {}",
                names(&self.body)
            )),
        }
    }

    fn header_problems(&self, header: Option<&serde_json::Value>, problems: &mut Vec<String>) {
        match (&self.header, header.filter(|h| !h.is_null())) {
            (HeaderNeed::None, Some(_)) => {
                problems.push("the template has no header parameter: leave out `header`".into())
            }
            (HeaderNeed::Text(_), None) => {
                problems.push("`header` is missing: the template's header takes a text".into())
            }
            (HeaderNeed::Text(_), Some(value)) if !value.is_string() => {
                problems.push("the template's header takes a text: send `header` as a string".into())
            }
            (HeaderNeed::Media(kind), None) => problems.push(format!(
                "`header` is missing: the template has a {kind} header, send `header: {{\"{}\": link}}`",
                kind.to_lowercase()
            )),
            (HeaderNeed::Media(kind), Some(value)) if !value.is_object() => problems.push(format!(
                "the template has a {kind} header: send `header: {{\"{}\": link}}`",
                kind.to_lowercase()
            )),
            _ => {}
        }
    }

    fn button_problems(&self, buttons: &[serde_json::Value], problems: &mut Vec<String>) {
        use serde_json::Value;
        let given: BTreeSet<usize> =
            buttons.iter().filter_map(|b| b.get("index").and_then(Value::as_u64)).map(|i| i as usize).collect();
        for (index, need) in &self.buttons {
            match need {
                ButtonNeed::UrlSuffix if !given.contains(index) => problems
                    .push(format!("button {index} is a URL with a variable: add `{{\"index\": {index}, \"text\": …}}` to `buttons`")),
                ButtonNeed::CouponCode if !given.contains(index) => problems.push(format!(
                    "button {index} is a copy-code button: add `{{\"index\": {index}, \"coupon_code\": …}}` to `buttons`"
                )),
                _ => {}
            }
        }
        for index in given {
            if !self.buttons.contains_key(&index) {
                problems.push(format!("the template has no button {index} that takes a parameter"));
            }
        }
    }
}

impl Catalog {
    /// The account and number a workflow names, by Graph id, display form or digits.
    pub fn find_number(&self, reference: &str) -> Option<(&CatalogAccount, &CatalogNumber)> {
        self.accounts.iter().find_map(|account| {
            account
                .numbers
                .iter()
                .find(|n| names_number(reference, &n.id, &n.display_phone_number))
                .map(|n| (account, n))
        })
    }

    pub fn numbers(&self) -> impl Iterator<Item = &CatalogNumber> {
        self.accounts.iter().flat_map(|a| a.numbers.iter())
    }

    pub fn is_empty(&self) -> bool {
        self.accounts.iter().all(|a| a.numbers.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn needs_follow_the_components() {
        let template: CatalogTemplate = serde_json::from_value(json!({
            "name": "order_update", "language": "en_US", "status": "APPROVED",
            "components": [
                {"type": "HEADER", "format": "IMAGE"},
                {"type": "BODY", "text": "Hi {{1}}, order {{2}} ({{1}})"},
                {"type": "FOOTER", "text": "Shop"},
                {"type": "BUTTONS", "buttons": [
                    {"type": "QUICK_REPLY", "text": "Talk"},
                    {"type": "URL", "text": "Track", "url": "https://x.test/t/{{1}}"},
                    {"type": "URL", "text": "Home", "url": "https://x.test/"}
                ]}
            ]
        }))
        .expect("template");
        let needs = template.needs();
        assert!(!needs.named);
        assert_eq!(needs.header, HeaderNeed::Media("IMAGE".into()));
        assert_eq!(needs.body, BTreeSet::from(["1".to_string(), "2".to_string()]));
        assert_eq!(needs.buttons, BTreeMap::from([(0, ButtonNeed::OptionalPayload), (1, ButtonNeed::UrlSuffix)]));
    }

    #[test]
    fn a_template_is_seen_with_its_parameters_filled_in() {
        let template: CatalogTemplate = serde_json::from_value(json!({
            "name": "order_update", "language": "en_US", "status": "APPROVED",
            "components": [
                {"type": "HEADER", "format": "TEXT", "text": "Order {{1}}"},
                {"type": "BODY", "text": "Hi {{1}}, order {{2}} ships {{3}}."},
                {"type": "FOOTER", "text": "Kairo Demo Store"},
                {"type": "BUTTONS", "buttons": [{"type": "QUICK_REPLY", "text": "Talk to us"}]}
            ]
        }))
        .expect("template");
        let seen = template.as_seen(Some(&json!("A-17")), Some(&json!(["Ana", "A-17"])));
        assert_eq!(
            seen,
            kairo_core::content::MessageContent::Template {
                header: Some("Order A-17".into()),
                body: "Hi Ana, order A-17 ships {{3}}.".into(),
                footer: Some("Kairo Demo Store".into()),
                buttons: vec!["Talk to us".into()],
            }
        );
        let named: CatalogTemplate = serde_json::from_value(json!({
            "name": "welcome", "language": "en", "status": "APPROVED", "parameter_format": "NAMED",
            "components": [{"type": "HEADER", "format": "IMAGE"}, {"type": "BODY", "text": "Hello {{first_name}}!"}]
        }))
        .expect("template");
        let kairo_core::content::MessageContent::Template { header, body, .. } =
            named.as_seen(None, Some(&json!({"first_name": "Bruno"})))
        else {
            panic!("a template")
        };
        assert_eq!((header.as_deref(), body.as_str()), (Some("[image]"), "Hello Bruno!"));
    }
}
