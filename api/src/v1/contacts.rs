//! Contacts: create, update, get (with consent per business number and its
//! audit trail), list, and consent changes from the API.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::{IntoParams, ToSchema};

use super::{ApiState, PageParams, idempotent, resolve_number};
use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody, parse_body};
use kairo_core::ids::{ContactId, PhoneNumberId, Wamid};
use kairo_core::phone::normalize_phone;
use kairo_core::status::{ConsentSource, ConsentStatus};
use kairo_store::{ConsentChange, Contact, ContactUpdate, NewContact};

/// A contact to find or create, and what to change on it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactInput {
    /// An existing contact's id.
    pub id: Option<ContactId>,
    /// International form (`+44 7700 900123`): finds the contact with this
    /// phone, or creates one.
    pub phone: Option<String>,
    pub mobile_phone: Option<String>,
    pub name: Option<String>,
    /// Merged into the contact's properties (`null` removes a key).
    #[schema(value_type = Option<Object>)]
    pub properties: Option<Map<String, Value>>,
    /// Business numbers (display number or id) to opt the contact in on,
    /// recorded in the consent audit trail as coming from the API.
    #[serde(default)]
    pub opt_in: Vec<String>,
}

/// A contact as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ContactView {
    pub id: ContactId,
    pub name: Option<String>,
    /// Digits of the international form.
    pub phone: Option<String>,
    pub mobile_phone: Option<String>,
    pub wa_id: Option<String>,
    #[schema(value_type = Object)]
    pub properties: Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A contact with its consent on each business number.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ContactDetail {
    #[serde(flatten)]
    pub contact: ContactView,
    pub consents: Vec<ConsentView>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ConsentView {
    pub number: PhoneNumberId,
    pub display_number: String,
    pub status: ConsentStatus,
    pub changed_at: DateTime<Utc>,
    /// Every change, oldest first: when, from where, which keyword and message.
    pub history: Vec<ConsentEventView>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ConsentEventView {
    pub status: ConsentStatus,
    pub source: ConsentSource,
    pub keyword: Option<String>,
    pub wamid: Option<Wamid>,
    pub occurred_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ContactPage {
    pub items: Vec<ContactView>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ContactQuery {
    /// Only contacts with this phone (international form).
    #[param(min_length = 1)]
    pub phone: Option<String>,
    /// The `next_cursor` of the previous page.
    #[param(pattern = "^$|^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")]
    pub cursor: Option<String>,
    /// Items per page (default 50, at most 500).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u64>,
}

/// A consent change from the API.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsentBody {
    /// The business number (display number or id).
    #[schema(min_length = 1)]
    pub number: String,
    pub status: ConsentStatus,
}

impl From<Contact> for ContactView {
    fn from(c: Contact) -> Self {
        ContactView {
            id: c.id,
            name: c.name,
            phone: c.phone,
            mobile_phone: c.mobile_phone,
            wa_id: c.wa_id,
            properties: c.properties,
            created_at: c.created_at,
            updated_at: c.updated_at,
        }
    }
}

/// Finds the contact `input` names (by id, else by phone) or creates it,
/// applies its name, mobile phone and properties, and records its opt-ins.
/// `field` names the input in errors (`contact`, `rows[3].contact`, …).
pub(crate) async fn upsert_contact(state: &ApiState, input: &ContactInput, field: &str) -> Result<Contact, ApiError> {
    let store = state.engine.store();
    let now = state.engine.now();
    let phone = normalized(input.phone.as_deref(), &format!("{field}.phone"))?;
    let mobile = normalized(input.mobile_phone.as_deref(), &format!("{field}.mobile_phone"))?;
    let mut numbers = Vec::new();
    for name in &input.opt_in {
        numbers.push(resolve_number(state, name).await.map_err(ApiError::named_in_body)?);
    }
    let existing = match (input.id, &phone) {
        (Some(id), _) => Some(store.contact(id).await?.ok_or_else(|| {
            ApiError::new(StatusCode::NOT_FOUND, "unknown_contact", format!("no contact {id} ({field}.id)"))
        })?),
        (None, Some(phone)) => store.contacts_by_phone(phone).await?.into_iter().next(),
        (None, None) => {
            return Err(ApiError::unprocessable(
                "missing_contact",
                format!("name the contact by `{field}.id` or `{field}.phone`"),
            ));
        }
    };
    let contact = match existing {
        Some(contact) => update_found(state, contact, input, mobile).await?,
        None => {
            let new = NewContact {
                name: input.name.clone(),
                phone: phone.clone(),
                mobile_phone: mobile.clone(),
                // The WhatsApp address is learnt from the contact's first
                // inbound message; until then sends go to `phone`, then
                // `mobile_phone`.
                wa_id: None,
                user_id: None,
                properties: Value::Object(input.properties.clone().unwrap_or_default()),
            };
            match store.insert_contact(new, now).await {
                Ok(contact) => contact,
                // Phones are unique: a concurrent request created this
                // number's contact a moment ago; this request updates it.
                Err(kairo_store::StoreError::Duplicate { .. }) if phone.is_some() => {
                    let phone = phone.as_deref().unwrap_or_default();
                    let found = store.contacts_by_phone(phone).await?.into_iter().next().ok_or_else(|| {
                        ApiError::internal(&format!(
                            "the contact of {phone} was refused as a duplicate but is not there"
                        ))
                    })?;
                    update_found(state, found, input, mobile).await?
                }
                Err(err) => return Err(err.into()),
            }
        }
    };
    for number in numbers {
        let current = store.consent(contact.id, number.id).await?;
        if current.map(|c| c.status) != Some(ConsentStatus::OptedIn) {
            store.record_consent(ConsentChange::from_api(contact.id, number.id, ConsentStatus::OptedIn), now).await?;
        }
    }
    Ok(contact)
}

/// An upsert of a contact that exists: the input's name, mobile phone and
/// properties applied.
async fn update_found(
    state: &ApiState,
    contact: Contact,
    input: &ContactInput,
    mobile: Option<String>,
) -> Result<Contact, ApiError> {
    let store = state.engine.store();
    let now = state.engine.now();
    let change = ContactUpdate {
        name: input.name.clone(),
        phone: None,
        mobile_phone: mobile,
        properties: input.properties.clone(),
    };
    if change.name.is_none() && change.mobile_phone.is_none() && change.properties.is_none() {
        return Ok(contact);
    }
    Ok(store.update_contact(contact.id, change, now).await?.unwrap_or(contact))
}

pub(crate) fn normalized(phone: Option<&str>, field: &str) -> Result<Option<String>, ApiError> {
    phone
        .map(|p| {
            normalize_phone(p).map_err(|e| {
                ApiError::unprocessable("invalid_phone", format!("{field}: {e}"))
                    .with_details(json!({ "field": field }))
            })
        })
        .transpose()
}

/// Create a contact (or update the one with this phone).
#[utoipa::path(post, path = "/v1/contacts", tag = "contacts", request_body = ContactInput,
    params(("Idempotency-Key" = Option<String>, Header, description = "A repeat with the same key and body returns the first answer", min_length = 1, max_length = 255, pattern = "^[!-~]+$")),
    responses((status = 201, body = ContactDetail), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, ApiError> {
    let input: ContactInput = parse_body(body.clone())?;
    if input.id.is_some() {
        return Err(ApiError::unprocessable("invalid_body", "a new contact has no `id`; use PATCH /v1/contacts/{id}"));
    }
    let task_state = state.clone();
    idempotent(&state, &caller, &headers, "POST /v1/contacts", &body, move || async move {
        let contact = upsert_contact(&task_state, &input, "body").await?;
        let detail = contact_detail(&task_state, contact).await?;
        Ok((StatusCode::CREATED, serde_json::to_value(detail).expect("a contact serialises")))
    })
    .await
}

/// List contacts, newest first.
#[utoipa::path(get, path = "/v1/contacts", tag = "contacts", params(ContactQuery),
    responses((status = 200, body = ContactPage), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<ApiState>,
    _caller: Caller,
    ApiQuery(query): ApiQuery<ContactQuery>,
) -> Result<ApiJson<ContactPage>, ApiError> {
    let phone = normalized(query.phone.as_deref(), "phone")?;
    let paging = PageParams { cursor: query.cursor, limit: query.limit };
    let page = state.engine.store().list_contacts(phone.as_deref(), paging.cursor()?, paging.limit()?).await?;
    Ok(ApiJson(ContactPage {
        items: page.items.into_iter().map(ContactView::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// One contact with its consent per number and its audit trail.
#[utoipa::path(get, path = "/v1/contacts/{id}", tag = "contacts", params(("id" = ContactId, Path)),
    responses((status = 200, body = ContactDetail), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn show(
    State(state): State<ApiState>,
    _caller: Caller,
    ApiPath(id): ApiPath<ContactId>,
) -> Result<ApiJson<ContactDetail>, ApiError> {
    let contact = find(&state, id).await?;
    Ok(ApiJson(contact_detail(&state, contact).await?))
}

/// Change a contact's name, phones or properties (`null` removes a property).
#[utoipa::path(patch, path = "/v1/contacts/{id}", tag = "contacts", params(("id" = ContactId, Path)),
    request_body = ContactInput,
    responses((status = 200, body = ContactDetail), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn update(
    State(state): State<ApiState>,
    _caller: Caller,
    ApiPath(id): ApiPath<ContactId>,
    ApiJson(input): ApiJson<ContactInput>,
) -> Result<ApiJson<ContactDetail>, ApiError> {
    let contact = change_contact(&state, id, input).await?;
    Ok(ApiJson(contact_detail(&state, contact).await?))
}

/// Changes a contact's name, phones, properties and opt-ins (the API's and
/// the inbox panel's one rule).
pub(crate) async fn change_contact(state: &ApiState, id: ContactId, input: ContactInput) -> Result<Contact, ApiError> {
    find(state, id).await?;
    if input.id.is_some_and(|other| other != id) {
        return Err(ApiError::unprocessable("invalid_body", "`id` in the body differs from the path"));
    }
    let change = ContactUpdate {
        name: input.name.clone(),
        phone: normalized(input.phone.as_deref(), "phone")?,
        mobile_phone: normalized(input.mobile_phone.as_deref(), "mobile_phone")?,
        properties: input.properties.clone(),
    };
    let store = state.engine.store();
    let contact = store
        .update_contact(id, change, state.engine.now())
        .await?
        .ok_or_else(|| ApiError::not_found(format_args!("contact {id}")))?;
    let with_opt_ins = ContactInput { id: Some(id), opt_in: input.opt_in, ..Default::default() };
    if !with_opt_ins.opt_in.is_empty() {
        upsert_contact(state, &with_opt_ins, "body").await?;
    }
    Ok(contact)
}

/// Opt a contact in or out on a business number (audited as from the API).
#[utoipa::path(post, path = "/v1/contacts/{id}/consent", tag = "contacts", params(("id" = ContactId, Path)),
    request_body = ConsentBody,
    responses((status = 200, body = ContactDetail), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn set_consent(
    State(state): State<ApiState>,
    _caller: Caller,
    ApiPath(id): ApiPath<ContactId>,
    ApiJson(body): ApiJson<ConsentBody>,
) -> Result<ApiJson<ContactDetail>, ApiError> {
    let contact = find(&state, id).await?;
    let number = resolve_number(&state, &body.number).await.map_err(ApiError::named_in_body)?;
    state
        .engine
        .store()
        .record_consent(ConsentChange::from_api(id, number.id, body.status), state.engine.now())
        .await?;
    Ok(ApiJson(contact_detail(&state, contact).await?))
}

async fn find(state: &ApiState, id: ContactId) -> Result<Contact, ApiError> {
    state.engine.store().contact(id).await?.ok_or_else(|| ApiError::not_found(format_args!("contact {id}")))
}

pub(crate) async fn contact_detail(state: &ApiState, contact: Contact) -> Result<ContactDetail, ApiError> {
    let store = state.engine.store();
    let numbers = store.phone_numbers().await?;
    let mut consents = Vec::new();
    for number in &numbers {
        let Some(current) = store.consent(contact.id, number.id).await? else { continue };
        let history = store
            .consent_history(contact.id, number.id)
            .await?
            .into_iter()
            .map(|e| ConsentEventView {
                status: e.status,
                source: e.source,
                keyword: e.keyword,
                wamid: e.wamid,
                occurred_at: e.occurred_at,
            })
            .collect();
        consents.push(ConsentView {
            number: number.id,
            display_number: number.display_number.clone(),
            status: current.status,
            changed_at: current.changed_at,
            history,
        });
    }
    Ok(ContactDetail { contact: contact.into(), consents })
}
