//! The inbox: threads searched and filtered (saved views in `views.rs`), one thread with
//! its messages, replies (free-form inside the 24-hour window, templates at
//! any time to opted-in contacts), owners, close and reopen.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::contacts::ContactView;
use super::timeline::SentBy;
use super::{ApiState, PageParams, idempotent, resolve_number};
use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody, parse_body};
use kairo_core::ids::{
    ContactId, EnrollmentId, MessageId, PhoneNumberId, SavedViewId, StepExecutionId, TeamId, ThreadId, UserId, Wamid,
};
use kairo_core::status::{DeliveryStatus, Direction, ThreadStatus};
use kairo_engine::runtime::ReplyContent;
use kairo_store::{Message, StoreError, Thread, ThreadFilter};

/// A message in a thread.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MessageView {
    pub id: MessageId,
    pub direction: Direction,
    pub wamid: Option<Wamid>,
    /// `text`, `template`, `image`, …
    #[serde(rename = "type")]
    pub message_type: String,
    /// The words of the message: a text's body, a caption, a tapped
    /// button's title, a template's body as the customer read it.
    pub body: Option<String>,
    /// What the message holds, by `kind` (`text`, `media`, `location`,
    /// `contacts`, `reply`, `reaction`, `template`, `other`); none for
    /// messages recorded before it was kept.
    pub content: Option<kairo_core::content::MessageContent>,
    pub status: DeliveryStatus,
    pub error_code: Option<i32>,
    pub error_title: Option<String>,
    pub error_details: Option<String>,
    /// What to do about the failure, where Kairo knows better than
    /// WhatsApp's title.
    pub error_advice: Option<String>,
    pub template_name: Option<String>,
    pub template_language: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub template_params: Option<Value>,
    /// The enrollment and step that sent it, for workflow messages.
    pub enrollment: Option<EnrollmentId>,
    pub step_execution: Option<StepExecutionId>,
    pub occurred_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub read_at: Option<DateTime<Utc>>,
    pub failed_at: Option<DateTime<Utc>>,
    /// The agent who sent this reply from the inbox; none for workflow
    /// sends, replies through an API token and inbound messages.
    pub sent_by: Option<SentBy>,
}

impl From<Message> for MessageView {
    fn from(m: Message) -> Self {
        MessageView {
            id: m.id,
            direction: m.direction,
            wamid: m.wamid,
            message_type: m.message_type,
            body: m.body,
            content: m.content.and_then(|c| serde_json::from_value(c).ok()),
            status: m.status,
            error_code: m.error_code,
            error_title: m.error_title,
            error_details: m.error_details,
            error_advice: m.error_advice,
            template_name: m.template_name,
            template_language: m.template_language,
            template_params: m.template_params,
            enrollment: m.enrollment_id,
            step_execution: m.step_execution_id,
            occurred_at: m.occurred_at,
            sent_at: m.sent_at,
            delivered_at: m.delivered_at,
            read_at: m.read_at,
            failed_at: m.failed_at,
            sent_by: m.sent_by_user_id.map(|id| SentBy { id, email: None, name: None }),
        }
    }
}

/// A conversation of one contact on one business number.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ThreadView {
    pub id: ThreadId,
    pub contact: ContactId,
    pub number: PhoneNumberId,
    pub display_number: String,
    pub customer_wa_id: String,
    pub status: ThreadStatus,
    pub owner_user: Option<UserId>,
    pub owner_team: Option<TeamId>,
    /// Whether free-form replies are allowed now.
    pub window_open: bool,
    /// 24 hours after the contact's last message.
    pub window_closes_at: Option<DateTime<Utc>>,
    pub last_inbound_at: Option<DateTime<Utc>>,
    pub last_outbound_at: Option<DateTime<Utc>>,
    pub first_response_at: Option<DateTime<Utc>>,
    pub opened_at: DateTime<Utc>,
    pub closed_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

/// A thread with its contact and every message, oldest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ThreadDetail {
    #[serde(flatten)]
    pub thread: ThreadView,
    pub contact_detail: Option<ContactView>,
    pub messages: Vec<MessageView>,
    /// Assignments, closes, reopens, consent changes and enrollments while
    /// the thread was open, oldest first.
    pub events: Vec<super::timeline::TimelineEvent>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ThreadPage {
    pub items: Vec<ThreadView>,
    pub next_cursor: Option<String>,
}

/// Thread filters; every one given narrows the list.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams, ToSchema)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ThreadQuery {
    /// Text in a message, or in the contact's name or phone.
    pub q: Option<String>,
    /// The business number (display number, Graph id or id).
    #[param(min_length = 1)]
    #[schema(min_length = 1)]
    pub number: Option<String>,
    /// Owned by this user (id or email).
    #[param(min_length = 1)]
    #[schema(min_length = 1)]
    pub owner: Option<String>,
    /// Owned by this team (id or name).
    #[param(min_length = 1)]
    #[schema(min_length = 1)]
    pub team: Option<String>,
    /// `open`: the contact's 24-hour window is open (free-form replies
    /// go); `closed`: it is closed or never opened (templates only).
    pub window: Option<kairo_store::WindowFilter>,
    /// `newest` (default: newest thread first) or `last_message` (the
    /// thread with the latest message first).
    #[schema(ignore)]
    pub sort: Option<kairo_store::ThreadSort>,
    /// `true`: no owner.
    pub unassigned: Option<bool>,
    pub status: Option<ThreadStatus>,
    /// Threads of this contact.
    pub contact: Option<ContactId>,
    /// `true`: the contact is known (a phone on record); `false`: made from
    /// a WhatsApp profile alone.
    pub associated: Option<bool>,
    /// Start from this saved view's filter; other parameters narrow it.
    #[schema(ignore)]
    pub view: Option<SavedViewId>,
    /// The `next_cursor` of the previous page: the thread it ended with
    /// (its last message's time and its id), its place in either `sort`.
    /// (Its pattern is `ThreadCursor::PATTERN`, written in by openapi.rs.)
    #[schema(ignore)]
    pub cursor: Option<String>,
    /// Threads per page (default 50, at most 500).
    #[schema(ignore)]
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u64>,
}

/// A template reply.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateReply {
    pub name: String,
    pub language: String,
    #[schema(value_type = Option<Object>)]
    pub header: Option<Value>,
    /// Positional (`["Ana"]`) or named (`{"first_name": "Ana"}`) parameters.
    #[schema(value_type = Option<Object>)]
    pub body: Option<Value>,
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub buttons: Vec<Value>,
}

/// A reply: `text` (inside the window) or `template`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplyBody {
    pub text: Option<String>,
    pub template: Option<TemplateReply>,
}

/// The new owner: a user, a team, or neither (unassigned).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OwnerBody {
    /// A user's id or email.
    #[schema(min_length = 1)]
    pub user: Option<String>,
    /// A team's id or name.
    #[schema(min_length = 1)]
    pub team: Option<String>,
}

/// Search and filter threads, newest first.
#[utoipa::path(get, path = "/v1/threads", tag = "inbox", params(ThreadQuery),
    responses((status = 200, body = ThreadPage), (status = 404, description = "Unknown view", body = ErrorBody),
        (status = 422, description = "Unknown number", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<ApiState>,
    _caller: Caller,
    ApiQuery(query): ApiQuery<ThreadQuery>,
) -> Result<ApiJson<ThreadPage>, ApiError> {
    Ok(ApiJson(search(&state, &query).await?))
}

/// The threads a query finds (the API's and the inbox page's one search).
pub(crate) async fn search(state: &ApiState, query: &ThreadQuery) -> Result<ThreadPage, ApiError> {
    let mut filter = match query.view {
        Some(id) => view_filter(state, id).await?,
        None => ThreadFilter::default(),
    };
    narrow(state, &mut filter, query).await?;
    let paging = PageParams { cursor: query.cursor.clone(), limit: query.limit };
    let sort = query.sort.unwrap_or_default();
    let cursor = match query.cursor.as_deref().filter(|c| !c.is_empty()) {
        None => None,
        Some(text) => Some(
            kairo_store::ThreadCursor::parse(text)
                .ok_or_else(|| ApiError::bad_request("invalid_cursor", "`cursor` is not one this API gave out"))?,
        ),
    };
    let page = state.engine.store().search_threads(&filter, sort, cursor, paging.limit()?, state.engine.now()).await?;
    let mut items = Vec::with_capacity(page.items.len());
    let numbers = state.engine.store().phone_numbers().await?;
    for thread in page.items {
        items.push(thread_view(state, thread, &numbers));
    }
    Ok(ThreadPage { items, next_cursor: page.next_cursor })
}

/// The filter a saved view holds.
async fn view_filter(state: &ApiState, id: SavedViewId) -> Result<ThreadFilter, ApiError> {
    let view = state
        .engine
        .store()
        .saved_view(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format_args!("saved view {id}")))?;
    serde_json::from_value(view.filter).map_err(|e| ApiError::internal(&format!("saved view {id} is unreadable: {e}")))
}

/// Adds the query's filters to `filter`.
pub(super) async fn narrow(state: &ApiState, filter: &mut ThreadFilter, query: &ThreadQuery) -> Result<(), ApiError> {
    if let Some(q) = query.q.as_ref().filter(|q| !q.trim().is_empty()) {
        filter.text = Some(q.clone());
    }
    if let Some(number) = &query.number {
        filter.number = Some(resolve_number(state, number).await?.id);
    }
    if let Some(owner) = &query.owner {
        filter.owner_user = Some(super::people::resolve_user(state, owner, "owner").await?.id);
    }
    if let Some(team) = &query.team {
        filter.owner_team = Some(super::people::resolve_team(state, team, "team").await?.id);
    }
    filter.window = query.window.or(filter.window);
    filter.unassigned = query.unassigned.or(filter.unassigned);
    filter.status = query.status.or(filter.status);
    filter.contact = query.contact.or(filter.contact);
    filter.associated = query.associated.or(filter.associated);
    Ok(())
}

/// One thread with its messages.
#[utoipa::path(get, path = "/v1/threads/{id}", tag = "inbox", params(("id" = ThreadId, Path)),
    responses((status = 200, body = ThreadDetail), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn show(
    State(state): State<ApiState>,
    _caller: Caller,
    ApiPath(id): ApiPath<ThreadId>,
) -> Result<ApiJson<ThreadDetail>, ApiError> {
    Ok(ApiJson(detail(&state, id).await?))
}

/// Reply in a thread: `text` inside the 24-hour window, or an approved
/// `template` to an opted-in contact at any time.
#[utoipa::path(post, path = "/v1/threads/{id}/replies", tag = "inbox", params(("id" = ThreadId, Path),
        ("Idempotency-Key" = Option<String>, Header, description = "A repeat with the same key and body sends nothing new", min_length = 1, max_length = 255, pattern = "^[!-~]+$")),
    request_body = ReplyBody,
    responses((status = 201, body = MessageView), (status = 404, body = ErrorBody),
        (status = 409, description = "Window closed (use a template) or contact not opted in", body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 502, description = "WhatsApp refused it", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn reply(
    State(state): State<ApiState>,
    caller: Caller,
    ApiPath(id): ApiPath<ThreadId>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, ApiError> {
    let request: ReplyBody = parse_body(body.clone())?;
    let content = match (request.text, request.template) {
        (Some(text), None) if !text.trim().is_empty() => ReplyContent::Text { text },
        (None, Some(t)) => ReplyContent::Template {
            name: t.name,
            language: t.language,
            header: t.header,
            body: t.body,
            buttons: t.buttons,
        },
        _ => {
            return Err(ApiError::unprocessable(
                "invalid_reply",
                "send either a non-empty `text` or a `template` (with `name` and `language`)",
            ));
        }
    };
    let endpoint = format!("POST /v1/threads/{id}/replies");
    let task_state = state.clone();
    idempotent(&state, &caller, &headers, &endpoint, &body, move || async move {
        let message = task_state.engine.reply(id, content, None).await?;
        Ok((StatusCode::CREATED, serde_json::to_value(MessageView::from(message)).expect("a message serialises")))
    })
    .await
}

/// Assign or reassign the owner (a user or a team; neither to unassign).
#[utoipa::path(post, path = "/v1/threads/{id}/owner", tag = "inbox", params(("id" = ThreadId, Path)),
    request_body = OwnerBody,
    responses((status = 200, body = ThreadDetail), (status = 404, body = ErrorBody),
        (status = 422, description = "Unknown or inactive user or team", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn assign(
    State(state): State<ApiState>,
    _caller: Caller,
    ApiPath(id): ApiPath<ThreadId>,
    ApiJson(body): ApiJson<OwnerBody>,
) -> Result<ApiJson<ThreadDetail>, ApiError> {
    Ok(ApiJson(set_owner(&state, id, &body, None).await?))
}

/// Gives a thread a new owner (the API's and the inbox page's one rule);
/// `actor` is the agent who did it (none through an API token).
pub(crate) async fn set_owner(
    state: &ApiState,
    id: ThreadId,
    body: &OwnerBody,
    actor: Option<UserId>,
) -> Result<ThreadDetail, ApiError> {
    let store = state.engine.store();
    let mut owner = (None, None);
    if let Some(user) = &body.user {
        let user = super::people::resolve_user(state, user, "user").await.map_err(ApiError::named_in_body)?;
        if user.deactivated_at.is_some() {
            return Err(ApiError::conflict("inactive_user", format!("user {} is deactivated", user.email)));
        }
        owner.0 = Some(user.id);
    }
    if let Some(team) = &body.team {
        let team = super::people::resolve_team(state, team, "team").await.map_err(ApiError::named_in_body)?;
        if team.deactivated_at.is_some() {
            return Err(ApiError::conflict("inactive_team", format!("team {} is deactivated", team.name)));
        }
        owner.1 = Some(team.id);
    }
    store
        .assign_thread(id, owner, actor, state.engine.now())
        .await?
        .ok_or_else(|| ApiError::not_found(format_args!("thread {id}")))?;
    detail(state, id).await
}

/// Close an open thread.
#[utoipa::path(post, path = "/v1/threads/{id}/close", tag = "inbox", params(("id" = ThreadId, Path)),
    responses((status = 200, body = ThreadDetail), (status = 404, body = ErrorBody),
        (status = 409, description = "Already closed", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn close(
    State(state): State<ApiState>,
    _caller: Caller,
    ApiPath(id): ApiPath<ThreadId>,
) -> Result<ApiJson<ThreadDetail>, ApiError> {
    Ok(ApiJson(close_thread(&state, id, None).await?))
}

/// Closes an open thread, by `actor`.
pub(crate) async fn close_thread(
    state: &ApiState,
    id: ThreadId,
    actor: Option<UserId>,
) -> Result<ThreadDetail, ApiError> {
    let thread = find(state, id).await?;
    if !state.engine.store().close_thread(id, actor, state.engine.now()).await? {
        return Err(ApiError::conflict("already_closed", format!("thread {} is already closed", thread.id)));
    }
    detail(state, id).await
}

/// Reopen a closed thread (refused while the contact has another open
/// thread on the number).
#[utoipa::path(post, path = "/v1/threads/{id}/reopen", tag = "inbox", params(("id" = ThreadId, Path)),
    responses((status = 200, body = ThreadDetail), (status = 404, body = ErrorBody),
        (status = 409, description = "Already open, or another thread is open", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn reopen(
    State(state): State<ApiState>,
    _caller: Caller,
    ApiPath(id): ApiPath<ThreadId>,
) -> Result<ApiJson<ThreadDetail>, ApiError> {
    Ok(ApiJson(reopen_thread(&state, id, None).await?))
}

/// Reopens a closed thread, by `actor`.
pub(crate) async fn reopen_thread(
    state: &ApiState,
    id: ThreadId,
    actor: Option<UserId>,
) -> Result<ThreadDetail, ApiError> {
    find(state, id).await?;
    match state.engine.store().reopen_thread(id, actor, state.engine.now()).await {
        Ok(true) => detail(state, id).await,
        Ok(false) => Err(ApiError::conflict("already_open", format!("thread {id} is already open"))),
        Err(StoreError::Duplicate { .. }) => Err(ApiError::conflict(
            "another_thread_open",
            format!(
                "the contact has another open thread on this number; answer there or close it before reopening {id}"
            ),
        )),
        Err(err) => Err(err.into()),
    }
}

async fn find(state: &ApiState, id: ThreadId) -> Result<Thread, ApiError> {
    state.engine.store().thread(id).await?.ok_or_else(|| ApiError::not_found(format_args!("thread {id}")))
}

pub(crate) async fn detail(state: &ApiState, id: ThreadId) -> Result<ThreadDetail, ApiError> {
    let store = state.engine.store();
    let thread = find(state, id).await?;
    let numbers = store.phone_numbers().await?;
    let contact = store.contact(thread.contact_id).await?.map(ContactView::from);
    let mut messages: Vec<MessageView> = store.messages(id).await?.into_iter().map(MessageView::from).collect();
    let users = store.list_users().await?;
    for by in messages.iter_mut().filter_map(|m| m.sent_by.as_mut()) {
        if let Some(user) = users.iter().find(|u| u.id == by.id) {
            by.email = Some(user.email.clone());
            by.name = Some(user.name.clone());
        }
    }
    let events = super::timeline::timeline(store, &thread, &users).await?;
    Ok(ThreadDetail { thread: thread_view(state, thread, &numbers), contact_detail: contact, messages, events })
}

fn thread_view(state: &ApiState, t: Thread, numbers: &[kairo_store::PhoneNumber]) -> ThreadView {
    let now = state.engine.now();
    let display_number =
        numbers.iter().find(|n| n.id == t.phone_number_id).map(|n| n.display_number.clone()).unwrap_or_default();
    ThreadView {
        id: t.id,
        contact: t.contact_id,
        number: t.phone_number_id,
        display_number,
        customer_wa_id: t.customer_wa_id,
        status: t.status,
        owner_user: t.owner_user_id,
        owner_team: t.owner_team_id,
        window_open: t.window_closes_at.is_some_and(|c| c > now),
        window_closes_at: t.window_closes_at,
        last_inbound_at: t.last_inbound_at,
        last_outbound_at: t.last_outbound_at,
        first_response_at: t.first_response_at,
        opened_at: t.opened_at,
        closed_at: t.closed_at,
        updated_at: t.updated_at,
    }
}

/// A status WhatsApp reported for a message Kairo has not recorded.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UnmatchedStatusView {
    pub wamid: Wamid,
    pub status: DeliveryStatus,
    pub occurred_at: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    /// The send's `biz_opaque_callback_data`, when it had one.
    pub callback_data: Option<String>,
    /// The status object as WhatsApp sent it.
    pub payload: Value,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UnmatchedStatuses {
    /// How many are kept in all.
    pub total: u64,
    /// The newest, at most `limit`.
    pub items: Vec<UnmatchedStatusView>,
}

#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UnmatchedQuery {
    /// At most this many (1-500, default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u64>,
}

/// Statuses for messages Kairo has not recorded: sent by another tool on
/// the number, or whose send has not been settled yet. Each is applied, and
/// leaves this list, when its message is recorded.
#[utoipa::path(get, path = "/v1/statuses/unmatched", tag = "inbox", params(UnmatchedQuery),
    responses((status = 200, body = UnmatchedStatuses), (status = 422, body = ErrorBody)), security(("bearer" = [])))]
pub async fn unmatched_statuses(
    State(state): State<ApiState>,
    _caller: Caller,
    ApiQuery(query): ApiQuery<UnmatchedQuery>,
) -> Result<ApiJson<UnmatchedStatuses>, ApiError> {
    let limit = query.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::unprocessable("invalid_limit", "`limit` is from 1 to 500"));
    }
    let (items, total) = state.engine.store().unmatched_statuses(limit).await?;
    let items = items
        .into_iter()
        .map(|s| UnmatchedStatusView {
            wamid: s.wamid,
            status: s.status,
            occurred_at: s.occurred_at,
            received_at: s.received_at,
            callback_data: s.callback_data,
            payload: s.payload,
        })
        .collect();
    Ok(ApiJson(UnmatchedStatuses { total, items }))
}
