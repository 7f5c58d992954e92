//! The composer: free text inside the 24-hour window, approved templates
//! with their parameters and a live preview at any time, and the send,
//! which is `Engine::reply` (the API's window, consent and template
//! checks); a refusal is shown where the agent typed.

use std::collections::HashMap;

use maud::{Markup, html};
use serde_json::Value;

use super::session::Agent;
use crate::v1::inbox::ThreadView;
use kairo_core::content::MessageContent;
use kairo_engine::runtime::{ReplyContent, template_as_seen, template_needs};
use kairo_workflow::catalog::ButtonNeed;

/// A template's parts as the customer sees them, placeholders as written
/// (the preview fills them in as the agent types).
struct TemplateText {
    header: Option<String>,
    body: String,
    footer: Option<String>,
    buttons: Vec<String>,
}

impl TemplateText {
    fn of(template: &kairo_store::Template) -> TemplateText {
        match template_as_seen(template, None, None) {
            MessageContent::Template { header, body, footer, buttons } => {
                TemplateText { header, body, footer, buttons }
            }
            other => TemplateText {
                header: None,
                body: other.summary().unwrap_or_default(),
                footer: None,
                buttons: Vec::new(),
            },
        }
    }
}

/// `button.N.text|payload|coupon_code` fields as the API's button
/// parameters (`{"index": N, "text": …}`), blank ones left out.
fn button_fields(form: &HashMap<String, String>) -> Vec<Value> {
    let mut buttons: Vec<(usize, &str, &String)> = form
        .iter()
        .filter(|(_, value)| !value.trim().is_empty())
        .filter_map(|(key, value)| {
            let (index, kind) = key.strip_prefix("button.")?.split_once('.')?;
            Some((index.parse().ok()?, kind, value))
        })
        .filter(|(_, kind, _)| matches!(*kind, "text" | "payload" | "coupon_code"))
        .collect();
    buttons.sort();
    buttons
        .into_iter()
        .map(|(index, kind, value)| {
            let mut button = serde_json::Map::new();
            button.insert("index".into(), Value::from(index));
            button.insert(kind.into(), Value::String(value.trim().to_string()));
            Value::Object(button)
        })
        .collect()
}

/// What the composer shows again after a refused send.
#[derive(Debug, Default, Clone)]
pub(super) struct ComposerState {
    pub(super) text: String,
    pub(super) error: Option<String>,
    pub(super) notice: Option<String>,
}

pub(super) fn composer(
    agent: &Agent,
    thread: &ThreadView,
    templates: &[kairo_store::Template],
    opted_in: bool,
    composer_state: &ComposerState,
) -> Markup {
    let action = format!("/inbox/{}/reply", thread.id);
    let approved: Vec<&kairo_store::Template> =
        templates.iter().filter(|t| t.status == "APPROVED" && !t.name.starts_with("sample_")).collect();
    html! {
        // The page's script keeps the composer (and what is typed in it)
        // across live refreshes unless its mode changes.
        div.composer #composer data-mode={ (if thread.window_open { "text" } else { "templates" }) "-" (opted_in) } {
            @if let Some(notice) = &composer_state.notice { p.notice role="status" { (notice) } }
            @if let Some(error) = &composer_state.error { p #composer-error .error role="alert" { (error) } }
            @if thread.window_open {
                form.reply method="post" action=(action) data-post data-reply {
                    input type="hidden" name="csrf" value=(agent.csrf());
                    label for="reply-text" { "Reply" }
                    textarea #reply-text name="text" rows="3" maxlength="4096" required
                        placeholder="Write a reply (Ctrl+Enter sends)"
                        aria-describedby=[composer_state.error.as_ref().map(|_| "composer-error")] { (composer_state.text) }
                    button type="submit" { "Send" }
                }
            }
            details.templates open[!thread.window_open] {
                summary { @if thread.window_open { "Send a template instead" } @else { "Send a template (the window is closed)" } }
                @if !opted_in {
                    p.warning { "This contact has not opted in on this number: a template will be refused." }
                }
                @if approved.is_empty() {
                    p { "No approved template on this number's account yet: run " code { "kairo sync" } "." }
                } @else {
                    form.template method="post" action=(action) data-post data-template-form {
                        input type="hidden" name="csrf" value=(agent.csrf());
                        label for="template" { "Template" }
                        select #template name="template" required {
                            @for template in &approved {
                                option value={ (template.name) "|" (template.language) } { (template.name) " (" (template.language) ")" }
                            }
                        }
                        @for (index, template) in approved.iter().enumerate() {
                            @let needs = template_needs(template);
                            @let text = TemplateText::of(template);
                            fieldset.template-fields data-template={ (template.name) "|" (template.language) } hidden[index != 0]
                                disabled[index != 0] {
                                legend { "Parameters of " (template.name) }
                                @if let kairo_workflow::catalog::HeaderNeed::Text(name) = &needs.header {
                                    label for={ "h-" (index) } { "Header " (name) }
                                    input id={ "h-" (index) } name="header" required data-param={ "header:" (name) };
                                }
                                @for name in &needs.body {
                                    label for={ "b-" (index) "-" (name) } { "Body " "{{" (name) "}}" }
                                    input id={ "b-" (index) "-" (name) } name={ "body." (name) } required data-param=(name);
                                }
                                (button_inputs(index, &needs, &text))
                                div.preview aria-live="polite" {
                                    p.preview-title { "Preview" }
                                    @if let Some(header) = &text.header { p.preview-header data-text=(header) { (header) } }
                                    p.preview-body data-text=(text.body) { (text.body) }
                                    @if let Some(footer) = &text.footer { p.preview-footer { (footer) } }
                                    @for button in &text.buttons { span.preview-button { (button) } }
                                }
                            }
                        }
                        button type="submit" { "Send template" }
                    }
                }
            }
        }
    }
}

/// The fields a template's buttons take: a URL's ending, a code to copy,
/// a quick reply's optional payload.
fn button_inputs(index: usize, needs: &kairo_workflow::catalog::TemplateNeeds, text: &TemplateText) -> Markup {
    html! {
        @for (button, need) in &needs.buttons {
            @let (field, what) = match need {
                ButtonNeed::UrlSuffix => ("text", "the end of its link"),
                ButtonNeed::CouponCode => ("coupon_code", "the code to copy"),
                ButtonNeed::OptionalPayload => ("payload", "what a tap sends back (optional)"),
            };
            @let label = text.buttons.get(*button).cloned().unwrap_or_else(|| format!("{}", button + 1));
            label for={ "btn-" (index) "-" (button) } { "Button " q { (label) } ": " (what) }
            input id={ "btn-" (index) "-" (button) } name={ "button." (button) "." (field) }
                required[*need != ButtonNeed::OptionalPayload];
        }
    }
}

/// The composer's form: `text`, or `template` (`name|language`) with its
/// `header` and `body.N` (or `body.name`) fields.
pub(super) fn reply_content(
    form: &HashMap<String, String>,
    templates: &[kairo_store::Template],
) -> Result<ReplyContent, &'static str> {
    if let Some(choice) = form.get("template").filter(|t| !t.is_empty()) {
        let (name, language) = choice.split_once('|').ok_or("pick a template")?;
        let template = templates.iter().find(|t| t.name == name && t.language == language);
        let named = template.is_some_and(|t| template_needs(t).named);
        let mut fields: Vec<(&String, &String)> = form.iter().filter(|(k, _)| k.starts_with("body.")).collect();
        fields.sort_by_key(|(k, _)| {
            let key = &k["body.".len()..];
            (key.parse::<u32>().unwrap_or(u32::MAX), key.to_string())
        });
        let body = if fields.is_empty() {
            None
        } else if named {
            Some(Value::Object(
                fields.iter().map(|(k, v)| (k["body.".len()..].to_string(), Value::String((*v).clone()))).collect(),
            ))
        } else {
            Some(Value::Array(fields.iter().map(|(_, v)| Value::String((*v).clone())).collect()))
        };
        let header = form.get("header").filter(|h| !h.is_empty()).map(|h| Value::String(h.clone()));
        return Ok(ReplyContent::Template {
            name: name.to_string(),
            language: language.to_string(),
            header,
            body,
            buttons: button_fields(form),
        });
    }
    match form.get("text").map(|t| t.trim()).filter(|t| !t.is_empty()) {
        Some(text) => Ok(ReplyContent::Text { text: text.to_string() }),
        None => Err("write a reply first"),
    }
}
