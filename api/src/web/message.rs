//! One item of a conversation: a message shown for what it is (text, a
//! photo's caption and file, a place, contact cards, a tapped button, a
//! template as the customer read it), with its reactions, delivery ticks
//! and failure; or one of the thread's events between the messages.

use maud::{Markup, html};
use serde_json::Value;

use super::view::{Names, serde_name, when};
use crate::v1::inbox::MessageView;
use crate::v1::timeline::{TimelineEvent, TimelineKind};
use kairo_core::content::MessageContent;
use kairo_core::status::{DeliveryStatus, Direction};

/// A conversation's items in time order: messages and events. A reaction
/// is shown on the message it reacts to when that message is here.
pub(super) fn items(messages: &[MessageView], events: &[TimelineEvent], names: &Names) -> Markup {
    let reacts_to = |m: &MessageView| match &m.content {
        Some(MessageContent::Reaction { message, .. }) => Some(message.clone()),
        _ => None,
    };
    let shown: Vec<&MessageView> = messages
        .iter()
        .filter(|m| {
            reacts_to(m).is_none_or(|target| !messages.iter().any(|o| o.wamid.as_ref().is_some_and(|w| w.0 == target)))
        })
        .collect();
    let reactions_on = |m: &MessageView| -> Vec<String> {
        let Some(wamid) = &m.wamid else { return Vec::new() };
        // The latest reaction of the contact counts; an empty one took it back.
        let latest = messages.iter().rev().find(|r| reacts_to(r).as_deref() == Some(wamid.0.as_str()));
        match latest.and_then(|r| r.content.as_ref()) {
            Some(MessageContent::Reaction { emoji, .. }) if !emoji.is_empty() => vec![emoji.clone()],
            _ => Vec::new(),
        }
    };
    let mut events = events.iter().peekable();
    html! {
        @for message in shown {
            @while let Some(event) = events.next_if(|e| e.at <= message.occurred_at) {
                (event_item(event, names))
            }
            (message_item(message, &reactions_on(message)))
        }
        @for event in events {
            (event_item(event, names))
        }
    }
}

fn message_item(message: &MessageView, reactions: &[String]) -> Markup {
    let outbound = message.direction == Direction::Outbound;
    html! {
        li.message.out[outbound].in[!outbound] #{ "m-" (message.id) } data-status=(serde_name(&message.status))
            data-kind=(message.message_type) {
            div.bubble {
                @match &message.content {
                    Some(content) => (content_of(content)),
                    None => (legacy(message)),
                }
                @if !reactions.is_empty() {
                    span.reactions aria-label="Reactions" { @for emoji in reactions { span.reaction { (emoji) } } }
                }
            }
            p.meta {
                (when(message.occurred_at))
                @if message.message_type != "text" { " · " (message.message_type) }
                @if let Some(by) = &message.sent_by {
                    " · sent by " (by.name.clone().unwrap_or_else(|| "a removed user".into()))
                } @else if outbound && message.enrollment.is_some() {
                    " · sent by a workflow"
                }
                @if outbound { " " (ticks(message.status)) }
            }
            @if message.status == DeliveryStatus::Failed {
                p.error role="note" {
                    "Not delivered"
                    @if let Some(code) = message.error_code { " (WhatsApp code " (code) ")" }
                    @if let Some(title) = &message.error_title { ": " (title) }
                    @if let Some(details) = &message.error_details { ". " (details) }
                    @if let Some(advice) = &message.error_advice { span.advice { " What to do: " (advice) } }
                }
            }
        }
    }
}

/// What a message holds, as the customer sent or saw it.
fn content_of(content: &MessageContent) -> Markup {
    match content {
        MessageContent::Text { body } => html! { p.body { (body) } },
        MessageContent::Media { media, mime_type, caption, filename, voice, .. } => html! {
            p.attachment {
                span.kind { (media_name(media, *voice)) }
                @if let Some(name) = filename { " " span.filename { (name) } }
                @if let Some(mime) = mime_type { " " span.mime { "(" (mime) ")" } }
            }
            @if let Some(caption) = caption { p.body.caption { (caption) } }
        },
        MessageContent::Location { latitude, longitude, name, address, url } => html! {
            p.location {
                span.kind { "Location" }
                @if let Some(name) = name { " " strong { (name) } }
                @if let Some(address) = address { br; span.address { (address) } }
                br;
                span.coordinates { (format!("{latitude:.5}, {longitude:.5}")) }
                @if let Some(url) = url.as_deref().filter(|u| u.starts_with("https://")) {
                    " · " a href=(url) rel="noopener noreferrer" target="_blank" { "open the place" }
                }
            }
        },
        MessageContent::Contacts { cards } => html! {
            ul.cards aria-label="Contact cards" {
                @for card in cards {
                    li.card {
                        strong { (card.name) }
                        @if let Some(org) = &card.organization { " · " (org) }
                        @for phone in &card.phones { br; span.phone { (phone) } }
                        @for email in &card.emails { br; span.email { (email) } }
                    }
                }
            }
        },
        MessageContent::Reply { reply, title, description, .. } => html! {
            p.reply-choice {
                span.kind { @if reply == "list_reply" { "Picked from a list" } @else { "Tapped a button" } }
                " " strong.choice { (title) }
                @if let Some(description) = description { br; span.description { (description) } }
            }
        },
        MessageContent::Reaction { emoji, .. } => html! {
            p.body.reaction-alone {
                @if emoji.is_empty() { "Took a reaction back" } @else { "Reacted " (emoji) " to a message" }
            }
        },
        MessageContent::Template { header, body, footer, buttons } => html! {
            div.template-seen {
                @if let Some(header) = header { p.template-header { (header) } }
                p.body { (body) }
                @if let Some(footer) = footer { p.template-footer { (footer) } }
                @if !buttons.is_empty() {
                    p.template-buttons { @for button in buttons { span.template-button { (button) } } }
                }
            }
        },
        MessageContent::Other { message_type, text } => html! {
            p.body.kind { "[" (message_type) "]" @if let Some(text) = text { " " (text) } }
        },
    }
}

/// A message recorded before its content was kept: its body, and a
/// template's name and parameters.
fn legacy(message: &MessageView) -> Markup {
    html! {
        @if message.message_type == "template" {
            p.template-name { "Template " code { (message.template_name.clone().unwrap_or_default()) }
                " (" (message.template_language.clone().unwrap_or_default()) ")" }
        }
        @match &message.body {
            Some(body) if !body.is_empty() => p.body { (body) },
            _ => p.body.kind { "[" (message.message_type) "]" },
        }
        @if message.message_type == "template" {
            @if let Some(params) = message.template_params.as_ref().and_then(|p| p.get("body")).filter(|b| !b.is_null()) {
                p.params { "Parameters: " (params_text(params)) }
            }
        }
    }
}

fn media_name(media: &str, voice: bool) -> &'static str {
    match media {
        "image" => "Photo",
        "video" => "Video",
        "audio" if voice => "Voice message",
        "audio" => "Audio",
        "document" => "Document",
        "sticker" => "Sticker",
        _ => "Attachment",
    }
}

fn event_item(event: &TimelineEvent, names: &Names) -> Markup {
    let by = event.by.as_ref().map(|b| b.name.clone().unwrap_or_else(|| "a removed user".into()));
    let owner = names.owner_of(event.owner_user, event.owner_team);
    let text = match event.kind {
        TimelineKind::Opened if event.owner_user.is_some() || event.owner_team.is_some() => {
            format!("Conversation opened, assigned to {owner} by the number's rules")
        }
        TimelineKind::Opened => "Conversation opened".to_string(),
        TimelineKind::Assigned => match &by {
            Some(by) => format!("{by} assigned it to {owner}"),
            None => format!("Assigned to {owner}"),
        },
        TimelineKind::Unassigned => format!("{} took the owner away", by.as_deref().unwrap_or("Someone")),
        TimelineKind::Closed => format!("Closed{}", by.as_ref().map(|b| format!(" by {b}")).unwrap_or_default()),
        TimelineKind::Reopened => format!("Reopened{}", by.as_ref().map(|b| format!(" by {b}")).unwrap_or_default()),
        TimelineKind::OptedIn | TimelineKind::OptedOut => {
            let what = if event.kind == TimelineKind::OptedIn { "Opted in" } else { "Opted out" };
            match (&event.keyword, event.source.map(|s| serde_name(&s))) {
                (Some(keyword), _) => format!("{what} by writing {keyword}"),
                (None, Some(source)) => format!("{what} (by {source})"),
                (None, None) => what.to_string(),
            }
        }
        TimelineKind::Enrolled => {
            format!("Enrolled in the workflow {}", event.workflow.as_deref().unwrap_or("(removed)"))
        }
    };
    html! {
        li.event data-kind=(serde_name(&event.kind)) {
            span { (text) } " · " (when(event.at))
        }
    }
}

fn ticks(status: DeliveryStatus) -> Markup {
    let (mark, label) = match status {
        DeliveryStatus::Sending => ("…", "sending"),
        DeliveryStatus::Sent => ("✓", "sent"),
        DeliveryStatus::Delivered => ("✓✓", "delivered"),
        DeliveryStatus::Read => ("✓✓", "read"),
        DeliveryStatus::Failed => ("!", "failed"),
        DeliveryStatus::Received => ("", "received"),
    };
    html! { span.ticks.(label) role="img" aria-label=(label) title=(label) { (mark) } }
}

fn params_text(params: &Value) -> String {
    match params {
        Value::Array(items) => items
            .iter()
            .map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()))
            .collect::<Vec<_>>()
            .join(", "),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| format!("{k}: {}", v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())))
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    }
}
