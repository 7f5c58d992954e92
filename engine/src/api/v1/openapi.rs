//! The OpenAPI document, generated from the handlers and their types; the
//! copy committed at `docs/openapi.json` is checked against it by a test.

use axum::response::IntoResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{bulk, contacts, enrollments, inbox, people, workflows};

#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "Kairo API", description = "Enrollments, run history, contacts and the WhatsApp inbox. \
        Every request needs `Authorization: Bearer <token>` (`kairo token create`). Errors are \
        `{\"error\": {\"code\", \"message\", \"details\"}}`."),
    paths(
        enrollments::enroll, enrollments::list, enrollments::show, enrollments::cancel, enrollments::retry,
        bulk::upload, bulk::list, bulk::show, bulk::rows,
        workflows::list, workflows::show, workflows::pause, workflows::resume,
        contacts::create, contacts::list, contacts::show, contacts::update, contacts::set_consent,
        people::create_user, people::list_users, people::deactivate_user,
        people::create_team, people::list_teams, people::deactivate_team,
        inbox::unmatched_statuses, inbox::list, inbox::show, inbox::reply, inbox::assign, inbox::close, inbox::reopen,
        inbox::create_view, inbox::list_views,
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "enrollments", description = "Enroll contacts, one or in bulk; read and steer runs"),
        (name = "workflows", description = "Workflows, versions and funnels"),
        (name = "contacts", description = "Contacts and consent"),
        (name = "people", description = "Inbox agents and teams"),
        (name = "inbox", description = "Threads, replies, owners and saved views"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document as JSON, pretty-printed (what `docs/openapi.json` holds).
pub fn document_json() -> String {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    let mut text = doc.to_pretty_json().expect("the OpenAPI document serialises");
    text.push('\n');
    text
}

/// `GET /v1/openapi.json` (no token needed).
pub async fn document() -> impl IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], document_json())
}
