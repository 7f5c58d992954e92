//! An inbound message object (`value.messages[]`, API.md section 3) read
//! into Kairo's [`MessageContent`]: what the inbox shows for each type.
//!
//! Every type is read as the reference describes it; a type Kairo does not
//! know becomes `Other` with its type name, never an error (the raw payload
//! is kept beside it anyway).

use kairo_core::content::{ContactCard, MessageContent};
use serde_json::Value;

/// The content of one message object of type `kind`.
pub(crate) fn content(kind: &str, message: &Value) -> MessageContent {
    let part = &message[kind];
    match kind {
        "text" => MessageContent::Text { body: text(&part["body"]).unwrap_or_default() },
        "image" | "video" | "audio" | "document" | "sticker" => MessageContent::Media {
            media: kind.to_string(),
            media_id: text(&part["id"]),
            mime_type: text(&part["mime_type"]),
            caption: text(&part["caption"]),
            filename: text(&part["filename"]),
            voice: part["voice"].as_bool().unwrap_or(false),
        },
        "location" => location(part),
        "contacts" => MessageContent::Contacts { cards: part.as_array().into_iter().flatten().map(card).collect() },
        "button" => MessageContent::Reply {
            reply: "button".into(),
            title: text(&part["text"]).or_else(|| text(&part["payload"])).unwrap_or_default(),
            description: None,
            id: text(&part["payload"]),
        },
        "interactive" => interactive(message, part),
        "reaction" => MessageContent::Reaction {
            emoji: text(&part["emoji"]).unwrap_or_default(),
            message: text(&part["message_id"]).unwrap_or_default(),
        },
        "order" => MessageContent::Other { message_type: kind.into(), text: text(&part["text"]) },
        "system" => MessageContent::Other { message_type: kind.into(), text: text(&part["body"]) },
        _ => MessageContent::Other {
            message_type: kind.into(),
            text: message["errors"][0]["title"].as_str().map(str::to_string),
        },
    }
}

fn location(part: &Value) -> MessageContent {
    match (number(&part["latitude"]), number(&part["longitude"])) {
        (Some(latitude), Some(longitude)) => MessageContent::Location {
            latitude,
            longitude,
            name: text(&part["name"]),
            address: text(&part["address"]),
            url: text(&part["url"]),
        },
        _ => MessageContent::Other { message_type: "location".into(), text: text(&part["name"]) },
    }
}

/// `interactive`: a reply button, a list row, or a Flow's answer.
fn interactive(message: &Value, part: &Value) -> MessageContent {
    let kind = part["type"].as_str().unwrap_or_default();
    let reply = &part[kind];
    match kind {
        "button_reply" | "list_reply" => MessageContent::Reply {
            reply: kind.to_string(),
            title: text(&reply["title"]).unwrap_or_default(),
            description: text(&reply["description"]),
            id: text(&reply["id"]),
        },
        _ => MessageContent::Other {
            message_type: format!("interactive {kind}").trim().to_string(),
            text: text(&reply["body"]).or_else(|| text(&message["text"]["body"])),
        },
    }
}

fn card(card: &Value) -> ContactCard {
    let name = &card["name"];
    let joined = [text(&name["first_name"]), text(&name["last_name"])].into_iter().flatten().collect::<Vec<_>>();
    ContactCard {
        name: text(&name["formatted_name"]).unwrap_or_else(|| joined.join(" ")),
        phones: card["phones"].as_array().into_iter().flatten().filter_map(|p| text(&p["phone"])).collect(),
        emails: card["emails"].as_array().into_iter().flatten().filter_map(|e| text(&e["email"])).collect(),
        organization: text(&card["org"]["company"]),
    }
}

fn text(value: &Value) -> Option<String> {
    value.as_str().map(str::trim).filter(|s| !s.is_empty()).map(str::to_string)
}

/// Coordinates are numbers; a string holding one is read too.
fn number(value: &Value) -> Option<f64> {
    value.as_f64().or_else(|| value.as_str()?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture_message(name: &str) -> Value {
        let path = format!("{}/../fixtures/whatsapp/{name}", env!("CARGO_MANIFEST_DIR"));
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("the fixture")).expect("JSON");
        doc["entry"][0]["changes"][0]["value"]["messages"][0].clone()
    }

    fn content_of(name: &str) -> MessageContent {
        let message = fixture_message(name);
        content(message["type"].as_str().expect("a type"), &message)
    }

    #[test]
    fn an_image_keeps_its_caption_type_and_media_id() {
        let MessageContent::Media { media, media_id, mime_type, .. } = content_of("webhook_image_message.json") else {
            panic!("not media");
        };
        assert_eq!(media, "image");
        assert!(media_id.is_some());
        assert_eq!(mime_type.as_deref(), Some("image/jpeg"));
    }

    #[test]
    fn a_location_keeps_its_place_and_coordinates() {
        let MessageContent::Location { latitude, longitude, .. } = content_of("webhook_location.json") else {
            panic!("not a location");
        };
        assert!(latitude != 0.0 && longitude != 0.0);
    }

    #[test]
    fn replies_and_reactions_name_what_was_tapped_or_reacted_to() {
        let MessageContent::Reply { reply, title, .. } = content_of("webhook_interactive_button_reply.json") else {
            panic!("not a reply");
        };
        assert_eq!(reply, "button_reply");
        assert!(!title.is_empty());
        let MessageContent::Reply { reply, .. } = content_of("webhook_template_quick_reply_button.json") else {
            panic!("not a quick reply");
        };
        assert_eq!(reply, "button");
        let MessageContent::Reaction { emoji, message } = content_of("webhook_reaction.json") else {
            panic!("not a reaction");
        };
        assert!(!emoji.is_empty() && message.starts_with("wamid."));
    }

    #[test]
    fn contact_cards_list_names_phones_and_emails() {
        let message = serde_json::json!({
            "type": "contacts",
            "contacts": [{
                "name": { "formatted_name": "Dana Reyes", "first_name": "Dana" },
                "phones": [{ "phone": "+1 555 010 9999", "wa_id": "15550109999", "type": "CELL" }],
                "emails": [{ "email": "dana@example.com", "type": "WORK" }],
                "org": { "company": "Reyes & Co" }
            }]
        });
        let MessageContent::Contacts { cards } = content("contacts", &message) else { panic!("not contacts") };
        assert_eq!(cards[0].name, "Dana Reyes");
        assert_eq!(cards[0].phones, vec!["+1 555 010 9999"]);
        assert_eq!(cards[0].emails, vec!["dana@example.com"]);
        assert_eq!(cards[0].organization.as_deref(), Some("Reyes & Co"));
    }

    #[test]
    fn an_unknown_type_is_kept_by_name() {
        let message = serde_json::json!({ "type": "poll", "poll": {} });
        assert_eq!(content("poll", &message), MessageContent::Other { message_type: "poll".into(), text: None });
        let unsupported = content_of("webhook_unsupported_message.json");
        assert!(matches!(unsupported, MessageContent::Other { ref message_type, .. } if message_type == "unsupported"));
    }
}
