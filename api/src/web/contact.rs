//! The contact beside a conversation, edited in place: name, phones and
//! properties, through the API's own change (`v1::contacts::change_contact`:
//! phone numbers normalised, a phone another contact has refused).

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde_json::{Map, Value};

use super::WebState;
use super::session::{Agent, Posted};
use crate::v1::contacts::{ContactInput, change_contact};
use kairo_core::ids::ThreadId;
use kairo_store::Contact;

/// The form that edits the contact (folded until the agent opens it).
pub(super) fn contact_form(agent: &Agent, thread: ThreadId, contact: &Contact) -> Markup {
    let properties: Vec<(&String, &Value)> =
        contact.properties.as_object().map(|m| m.iter().collect()).unwrap_or_default();
    html! {
        details.edit-contact {
            summary { "Edit contact" }
            form.contact-form method="post" action={ "/inbox/" (thread) "/contact" } data-post data-contact {
                input type="hidden" name="csrf" value=(agent.csrf());
                label for="c-name" { "Name" }
                input #c-name name="name" value=[contact.name.as_deref()] maxlength="200";
                label for="c-phone" { "Phone (international form)" }
                input #c-phone name="phone" type="tel" value=[contact.phone.as_ref().map(|p| format!("+{p}"))]
                    placeholder="+44 7700 900123";
                label for="c-mobile" { "Mobile phone" }
                input #c-mobile name="mobile_phone" type="tel"
                    value=[contact.mobile_phone.as_ref().map(|p| format!("+{p}"))];
                @for (index, (key, value)) in properties.iter().enumerate() {
                    label for={ "c-prop-" (index) } { (key) }
                    input id={ "c-prop-" (index) } name={ "prop." (key) } value=(plain(value))
                        title="Empty removes the property";
                }
                fieldset {
                    legend { "New property" }
                    label for="c-new-key" { "Name" }
                    input #c-new-key name="new_key" maxlength="100";
                    label for="c-new-value" { "Value" }
                    input #c-new-value name="new_value";
                }
                button type="submit" { "Save contact" }
            }
        }
    }
}

fn plain(value: &Value) -> String {
    value.as_str().map_or_else(|| value.to_string(), str::to_string)
}

/// The change a posted form asks for: blank name or phones stay as they
/// are; a blank property is removed; a new property is added.
fn input_from(form: &HashMap<String, String>) -> ContactInput {
    let given = |name: &str| form.get(name).map(|v| v.trim()).filter(|v| !v.is_empty()).map(str::to_string);
    let mut properties = Map::new();
    for (key, value) in form.iter().filter_map(|(k, v)| Some((k.strip_prefix("prop.")?, v))) {
        let value = value.trim();
        properties
            .insert(key.to_string(), if value.is_empty() { Value::Null } else { Value::String(value.to_string()) });
    }
    if let (Some(key), Some(value)) = (given("new_key"), given("new_value")) {
        properties.insert(key, Value::String(value));
    }
    ContactInput {
        name: given("name"),
        phone: given("phone"),
        mobile_phone: given("mobile_phone"),
        properties: (!properties.is_empty()).then_some(properties),
        ..ContactInput::default()
    }
}

/// `POST /inbox/{id}/contact`: the thread's contact changed.
pub async fn save(
    State(state): State<WebState>,
    Path(id): Path<String>,
    posted: Posted<HashMap<String, String>>,
) -> Response {
    let Ok(id) = id.parse::<ThreadId>() else { return (StatusCode::NOT_FOUND, "no such conversation").into_response() };
    let thread = match state.api.engine.store().thread(id).await {
        Ok(Some(thread)) => thread,
        Ok(None) => return (StatusCode::NOT_FOUND, "no such conversation").into_response(),
        Err(err) => return super::view::failed(err.into()),
    };
    match change_contact(&state.api, thread.contact_id, input_from(&posted.form)).await {
        Ok(_) if posted.fetch => StatusCode::NO_CONTENT.into_response(),
        Ok(_) => Redirect::to(&format!("/inbox/{id}")).into_response(),
        Err(err) if posted.fetch => (err.status, err.message).into_response(),
        Err(err) => super::view::failed(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blank_field_stays_a_blank_property_goes_and_a_new_one_comes() {
        let form: HashMap<String, String> = [
            ("name", " Ana Souza "),
            ("phone", ""),
            ("prop.city", ""),
            ("prop.plan", "gold"),
            ("new_key", "tier"),
            ("new_value", "2"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let input = input_from(&form);
        assert_eq!(input.name.as_deref(), Some("Ana Souza"));
        assert_eq!(input.phone, None);
        let properties = input.properties.expect("properties");
        assert_eq!(properties["city"], Value::Null);
        assert_eq!(properties["plan"], "gold");
        assert_eq!(properties["tier"], "2");
    }
}
