//! The OpenAPI document, generated from the handlers and their types; the
//! copy committed at `docs/openapi.json` is checked against it by a test.

use axum::response::IntoResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{bulk, contacts, enrollments, inbox, people, views, workflows};

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
        views::create_view, views::list_views, views::show_view, views::update_view, views::delete_view,
    ),
    components(schemas(kairo_store::ThreadSort, kairo_store::WindowFilter)),
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
        // The answers every operation can give, whatever it does: bad
        // tokens, scopes, rate limits, a busy database, a bad query string,
        // a body that does not fit.
        for item in openapi.paths.paths.values_mut() {
            let operations =
                [&mut item.get, &mut item.post, &mut item.patch, &mut item.put, &mut item.delete].into_iter().flatten();
            for operation in operations {
                let secured = operation.security.as_ref().is_some_and(|s| !s.is_empty());
                let has_body = operation.request_body.is_some();
                let has_query = operation.parameters.as_ref().is_some_and(|ps| {
                    ps.iter().any(|p| matches!(p.parameter_in, utoipa::openapi::path::ParameterIn::Query))
                });
                let mut common: Vec<(&str, &str)> = Vec::new();
                if secured {
                    common.extend([
                        ("401", "No token, or an unknown or revoked one (`missing_token`, `invalid_token`)"),
                        ("403", "The token lacks the scope this operation takes (`insufficient_scope`)"),
                        ("429", "Over the token's rate limit, or too many failed tokens from this address"),
                        ("503", "The database is unavailable or busy: retry after `Retry-After`"),
                    ]);
                }
                if has_body || has_query {
                    common.push(("400", "A body or query string that cannot be read"));
                }
                if has_body || has_query {
                    common.push(("422", "A field that does not fit (`details.field` names it)"));
                    common.push((
                        "404",
                        "What the request acts on, or a name in its query string, is not there (`not_found`, \
                         `unknown_workflow`, `unknown_contact`, `unknown_number`, `unknown_user`, `unknown_team`)",
                    ));
                }
                if has_body {
                    common.push((
                        "409",
                        "The request conflicts with what is there now, or a name in its body is not there \
                         (`unknown_number`, `unknown_user`, `unknown_team`, `unknown_template`): the `code` says what",
                    ));
                }
                for (status, description) in common {
                    operation.responses.responses.entry(status.to_string()).or_insert_with(|| {
                        utoipa::openapi::RefOr::T(
                            utoipa::openapi::ResponseBuilder::new()
                                .description(description)
                                .content(
                                    "application/json",
                                    utoipa::openapi::ContentBuilder::new()
                                        .schema(Some(utoipa::openapi::Ref::from_schema_name("ErrorBody")))
                                        .build(),
                                )
                                .build(),
                        )
                    });
                }
            }
        }
    }
}

/// The document as JSON, pretty-printed (what `docs/openapi.json` holds).
pub fn document_json() -> String {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    let mut doc = serde_json::to_value(&doc).expect("the OpenAPI document serialises");
    constrain(&mut doc);
    let mut text = serde_json::to_string_pretty(&doc).expect("the OpenAPI document serialises");
    text.push('\n');
    text
}

/// Control characters (`char::is_control`), which names refuse.
const CONTROL: &str = "\\u0000-\\u001f\\u007f-\\u009f";
/// What `str::trim` takes away (Unicode `White_Space`).
const SPACE: &str = "\\t\\n\\u000b\\u000c\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";

/// The rules the handlers enforce that the Rust types cannot say, written
/// into the document so that clients (and schemathesis) know them: phone
/// numbers' form, names that are not blank (user and team names without
/// control characters either), a contact named by `id` or `phone`, a reply
/// that is `text` or `template`, the threads' cursor.
fn constrain(doc: &mut serde_json::Value) {
    use serde_json::json;
    let phone = kairo_core::phone::documented_pattern();
    let not_blank = format!("[^{SPACE}]");
    let clean_name = format!("^[^{CONTROL}]*[^{CONTROL}{SPACE}][^{CONTROL}]*$");
    let schemas = &mut doc["components"]["schemas"];
    for field in ["phone", "mobile_phone"] {
        schemas["ContactInput"]["properties"][field]["pattern"] = json!(phone);
    }
    // Creating a contact (POST /v1/contacts) takes its phone and no id; a
    // change (PATCH) names the contact in its path. The same fields as
    // ContactInput otherwise (the handlers read that type).
    let mut change = schemas["ContactInput"].clone();
    if let Some(properties) = change["properties"].as_object_mut() {
        properties.remove("id");
    }
    change["description"] = json!("What to change on a contact (named by the path).");
    let mut create = change.clone();
    create["description"] = json!("A contact to create, or to update when one has this phone.");
    create["required"] = json!(["phone"]);
    create["properties"]["phone"]["type"] = json!("string");
    schemas["ContactChange"] = change;
    schemas["ContactCreate"] = create;
    for (path, method, schema) in
        [("/v1/contacts/{id}", "patch", "ContactChange"), ("/v1/contacts", "post", "ContactCreate")]
    {
        doc["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"] =
            json!({ "$ref": format!("#/components/schemas/{schema}") });
    }
    let schemas = &mut doc["components"]["schemas"];
    schemas["ContactInput"]["anyOf"] = json!([
        { "required": ["id"], "properties": { "id": { "type": "string" } } },
        { "required": ["phone"], "properties": { "phone": { "type": "string" } } },
    ]);
    schemas["ReplyBody"]["properties"]["text"]["pattern"] = json!(not_blank);
    schemas["ReplyBody"]["oneOf"] = json!([
        { "required": ["text"], "properties": { "text": { "type": "string" }, "template": { "type": "null" } } },
        { "required": ["template"], "properties": { "template": { "type": "object" }, "text": { "type": "null" } } },
    ]);
    for body in ["NewUserBody", "NewTeamBody"] {
        schemas[body]["properties"]["name"]["pattern"] = json!(clean_name);
    }
    for body in ["NewViewBody", "ViewChange"] {
        schemas[body]["properties"]["name"]["pattern"] = json!(not_blank);
    }
    let mut pattern = |path: &str, name: &str, pattern: &str| {
        if let Some(parameters) = doc["paths"][path]["get"]["parameters"].as_array_mut() {
            for parameter in parameters.iter_mut().filter(|p| p["name"] == name) {
                parameter["schema"]["pattern"] = json!(pattern);
            }
        }
    };
    pattern("/v1/contacts", "phone", phone);
    pattern("/v1/threads", "cursor", kairo_store::ThreadCursor::PATTERN);
}

/// `GET /v1/openapi.json` (no token needed).
pub async fn document() -> impl IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], document_json())
}
