//! What a message holds, in Kairo's terms: the words and the parts a person
//! sees (a photo's caption, a document's file name, a place, a contact
//! card, the button a customer tapped, a reaction, a template as the
//! customer read it).
//!
//! The channel crate fills this from its wire format when a message comes
//! in; the engine fills it when it sends (a template rendered with its
//! parameters). The inbox shows it and the API returns it, so neither reads
//! a channel's JSON. Stored as JSON beside the message (`messages.content`);
//! messages recorded before it existed have none and show their body.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One message's content, by kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MessageContent {
    /// Text as typed.
    Text { body: String },
    /// A photo, video, voice note or audio file, document or sticker. The
    /// channel's media id is kept so that the file can be fetched while the
    /// channel still holds it.
    Media {
        /// `image`, `video`, `audio`, `document` or `sticker`.
        media: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        media_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mime_type: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        caption: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        filename: Option<String>,
        /// A push-to-talk voice note rather than an audio file.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        voice: bool,
    },
    /// A place or a shared position.
    Location {
        latitude: f64,
        longitude: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        address: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        url: Option<String>,
    },
    /// Contact cards.
    Contacts { cards: Vec<ContactCard> },
    /// A tap on a button or a pick in a list: a template's quick reply, an
    /// interactive reply button or a list row.
    Reply {
        /// `button` (a template's quick reply), `button_reply` or `list_reply`.
        reply: String,
        title: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
        /// The id or payload the business gave the button or row.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    /// A reaction to another message; an empty emoji takes it back.
    Reaction {
        emoji: String,
        /// The wamid of the message reacted to.
        message: String,
    },
    /// A template as the customer saw it: parameters filled in.
    Template {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        header: Option<String>,
        body: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        footer: Option<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        buttons: Vec<String>,
    },
    /// Anything else (an order, a system notice, a type WhatsApp cannot
    /// relay): its type and the words it carries, if any.
    Other {
        #[serde(rename = "type")]
        message_type: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
    },
}

/// One contact card of a `contacts` message.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
pub struct ContactCard {
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phones: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub emails: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization: Option<String>,
}

impl MessageContent {
    /// The words a search or a notification shows for it, if any.
    pub fn summary(&self) -> Option<String> {
        match self {
            MessageContent::Text { body } => Some(body.clone()),
            MessageContent::Media { caption, filename, .. } => caption.clone().or_else(|| filename.clone()),
            MessageContent::Location { name, address, .. } => name.clone().or_else(|| address.clone()),
            MessageContent::Contacts { cards } => {
                Some(cards.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ")).filter(|s| !s.is_empty())
            }
            MessageContent::Reply { title, .. } => Some(title.clone()),
            MessageContent::Reaction { emoji, .. } => Some(emoji.clone()).filter(|e| !e.is_empty()),
            MessageContent::Template { body, .. } => Some(body.clone()),
            MessageContent::Other { text, .. } => text.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_serialises_with_its_kind_and_reads_back() {
        let media = MessageContent::Media {
            media: "document".into(),
            media_id: Some("1".into()),
            mime_type: Some("application/pdf".into()),
            caption: None,
            filename: Some("invoice.pdf".into()),
            voice: false,
        };
        let json = serde_json::to_value(&media).expect("serialises");
        assert_eq!(json["kind"], "media");
        assert!(json.get("voice").is_none(), "false flags are left out: {json}");
        assert_eq!(serde_json::from_value::<MessageContent>(json).expect("reads back"), media);
        let other = MessageContent::Other { message_type: "order".into(), text: None };
        assert_eq!(serde_json::to_value(&other).expect("serialises")["type"], "order");
    }
}
