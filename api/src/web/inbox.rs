//! The inbox: the thread list with its search and filters, one
//! conversation with its composer, and the contact beside it.
//!
//! The page works without JavaScript (links and forms); `inbox.js` adds
//! live updates (it re-reads the list and the open conversation when the
//! live feed names them), posting without a reload, the composer's
//! template preview and keyboard shortcuts. Every read and write goes
//! through the functions `/v1` uses: `v1::inbox::search` (the list),
//! `v1::inbox::detail` (a conversation), `Engine::reply` (the composer:
//! window, consent and template checks), `v1::inbox::set_owner`,
//! `close_thread` and `reopen_thread`.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::{Deserialize, Serialize};

use super::WebState;
use super::composer::{ComposerState, reply_content};
use super::conversation::conversation;
use super::layout;
use super::session::{Agent, Posted};
use super::view::{Names, failed, when};
use crate::error::ApiError;
use crate::v1::inbox::{self as api_inbox, OwnerBody, ThreadDetail, ThreadQuery, ThreadView};
use kairo_core::ids::{ContactId, ThreadId};
use kairo_core::status::ThreadStatus;

/// Threads per page of the list.
const PAGE_SIZE: u64 = 50;

/// The list's filters, as the page's form sends them.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct ListQuery {
    #[serde(default, skip_serializing_if = "is_blank")]
    q: Option<String>,
    /// `open` (default), `closed` or `all`.
    #[serde(default, skip_serializing_if = "is_blank")]
    status: Option<String>,
    /// `open` or `closed`.
    #[serde(default, skip_serializing_if = "is_blank")]
    window: Option<String>,
    /// `mine`, `unassigned` or a user's id.
    #[serde(default, skip_serializing_if = "is_blank")]
    owner: Option<String>,
    #[serde(default, skip_serializing_if = "is_blank")]
    team: Option<String>,
    #[serde(default, skip_serializing_if = "is_blank")]
    number: Option<String>,
    /// `known` or `unknown` contacts.
    #[serde(default, skip_serializing_if = "is_blank")]
    contact: Option<String>,
    #[serde(default, skip_serializing_if = "is_blank")]
    view: Option<String>,
    #[serde(default, skip_serializing_if = "is_blank")]
    cursor: Option<String>,
}

fn is_blank(value: &Option<String>) -> bool {
    value.as_deref().is_none_or(|v| v.trim().is_empty())
}

fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

impl ListQuery {
    /// The API's query for these filters.
    fn to_api(&self, agent: &Agent) -> Result<ThreadQuery, ApiError> {
        let mut query = ThreadQuery { q: given(&self.q).map(str::to_string), ..ThreadQuery::default() };
        query.status = match given(&self.status) {
            None | Some("open") => Some(ThreadStatus::Open),
            Some("closed") => Some(ThreadStatus::Closed),
            Some(_) => None,
        };
        query.window = match given(&self.window) {
            Some("open") => Some(kairo_store::WindowFilter::Open),
            Some("closed") => Some(kairo_store::WindowFilter::Closed),
            _ => None,
        };
        match given(&self.owner) {
            Some("mine") => query.owner = Some(agent.user.id.to_string()),
            Some("unassigned") => query.unassigned = Some(true),
            Some(user) => query.owner = Some(user.to_string()),
            None => {}
        }
        query.team = given(&self.team).map(str::to_string);
        query.number = given(&self.number).map(str::to_string);
        query.associated = match given(&self.contact) {
            Some("known") => Some(true),
            Some("unknown") => Some(false),
            _ => None,
        };
        if let Some(view) = given(&self.view) {
            query.view = Some(
                view.parse().map_err(|_| ApiError::bad_request("invalid_view", "the saved view is not one of ours"))?,
            );
        }
        query.cursor = given(&self.cursor).map(str::to_string);
        query.limit = Some(PAGE_SIZE);
        query.sort = Some(kairo_store::ThreadSort::LastMessage);
        Ok(query)
    }

    /// The query string that keeps these filters (without the cursor).
    fn keep(&self) -> String {
        let kept = ListQuery { cursor: None, ..self.clone() };
        serde_urlencoded::to_string(&kept).unwrap_or_default()
    }
}

/// `GET /inbox`: the list (and no conversation yet).
pub async fn page(State(state): State<WebState>, agent: Agent, Query(query): Query<ListQuery>) -> Response {
    match inbox_page(&state, &agent, &query, None).await {
        Ok(page) => page.into_response(),
        Err(err) => failed(err),
    }
}

/// `GET /inbox/{id}`: the list and one conversation.
pub async fn thread_page(
    State(state): State<WebState>,
    agent: Agent,
    Path(id): Path<String>,
    Query(query): Query<ListQuery>,
) -> Response {
    let Ok(id) = id.parse::<ThreadId>() else {
        return super::error_page(StatusCode::NOT_FOUND, "No such conversation", "This link names no conversation.");
    };
    match inbox_page(&state, &agent, &query, Some(id)).await {
        Ok(page) => page.into_response(),
        Err(err) => failed(err),
    }
}

async fn inbox_page(
    state: &WebState,
    agent: &Agent,
    query: &ListQuery,
    open: Option<ThreadId>,
) -> Result<Html<String>, ApiError> {
    let list = api_inbox::search(&state.api, &query.to_api(agent)?).await?;
    let detail = match open {
        Some(id) => Some(api_inbox::detail(&state.api, id).await?),
        None => None,
    };
    let mut contacts: Vec<ContactId> = list.items.iter().map(|t| t.contact).collect();
    contacts.extend(detail.as_ref().map(|d| d.thread.contact));
    let names = Names::load(state, &contacts).await?;
    let conversation = match &detail {
        Some(detail) => Some(conversation(state, agent, detail, &names, &ComposerState::default()).await?),
        None => None,
    };
    let title = match &detail {
        Some(detail) => names.contact_name(&detail.thread),
        None => "Inbox".to_string(),
    };
    let body = html! {
        main #main .inbox data-thread=[open.map(|id| id.to_string())] data-filters=(query.keep()) {
            section.list aria-labelledby="list-title" {
                h1 #list-title .visually-hidden { "Conversations" }
                (filters(agent, query, &names))
                div #threads { (thread_list(agent, &list.items, list.next_cursor.as_deref(), query, &names, open)) }
            }
            @if let Some(conversation) = conversation {
                (conversation)
            } @else {
                section.conversation.empty #conversation aria-label="Conversation" {
                    p { "Pick a conversation on the left (" kbd { "j" } " and " kbd { "k" } " move, " kbd { "Enter" } " opens, "
                        kbd { "/" } " searches)." }
                }
            }
        }
    };
    Ok(layout::page(agent, &title, body))
}

/// `GET /inbox/threads`: the list alone, for the live updates and paging.
pub async fn list_fragment(State(state): State<WebState>, agent: Agent, Query(query): Query<ListQuery>) -> Response {
    let result = async {
        let list = api_inbox::search(&state.api, &query.to_api(&agent)?).await?;
        let contacts: Vec<ContactId> = list.items.iter().map(|t| t.contact).collect();
        let names = Names::load(&state, &contacts).await?;
        Ok::<_, ApiError>(thread_list(&agent, &list.items, list.next_cursor.as_deref(), &query, &names, None))
    };
    match result.await {
        Ok(markup) => Html(markup.into_string()).into_response(),
        Err(err) => (err.status, err.message).into_response(),
    }
}

/// `GET /inbox/{id}/conversation`: one conversation alone.
pub async fn conversation_fragment(State(state): State<WebState>, agent: Agent, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<ThreadId>() else { return (StatusCode::NOT_FOUND, "no such conversation").into_response() };
    let result = async {
        let detail = api_inbox::detail(&state.api, id).await?;
        let names = Names::load(&state, &[detail.thread.contact]).await?;
        conversation(&state, &agent, &detail, &names, &ComposerState::default()).await
    };
    match result.await {
        Ok(markup) => Html(markup.into_string()).into_response(),
        Err(err) => (err.status, err.message).into_response(),
    }
}

/// `GET /inbox/session`: 204 while signed in (the page's script asks when
/// its live feed drops, to tell a network break from a lost session).
pub async fn session_check(_agent: Agent) -> StatusCode {
    StatusCode::NO_CONTENT
}

fn filters(agent: &Agent, query: &ListQuery, names: &Names) -> Markup {
    let selected = |value: &Option<String>, option: &str| given(value) == Some(option);
    let status_all = given(&query.status).is_none();
    html! {
        form.filters method="get" action="/inbox" role="search" {
            label for="q" { "Search" }
            input #q type="search" name="q" value=[given(&query.q)] placeholder="Message, name or phone" accesskey="s";
            details open[given(&query.owner).is_some() || given(&query.window).is_some() || given(&query.team).is_some()
                || given(&query.number).is_some() || given(&query.contact).is_some() || given(&query.view).is_some()
                || !status_all] {
                summary { "Filters" }
                label for="f-status" { "Status" }
                select #f-status name="status" {
                    option value="open" selected[status_all || selected(&query.status, "open")] { "Open" }
                    option value="closed" selected[selected(&query.status, "closed")] { "Closed" }
                    option value="all" selected[selected(&query.status, "all")] { "Open and closed" }
                }
                label for="f-owner" { "Owner" }
                select #f-owner name="owner" {
                    option value="" { "Anyone" }
                    option value="mine" selected[selected(&query.owner, "mine")] { "Mine" }
                    option value="unassigned" selected[selected(&query.owner, "unassigned")] { "Unassigned" }
                    @for user in names.users.iter().filter(|u| u.deactivated_at.is_none() && u.id != agent.user.id) {
                        option value=(user.id) selected[selected(&query.owner, &user.id.to_string())] { (user.name) }
                    }
                }
                label for="f-team" { "Team" }
                select #f-team name="team" {
                    option value="" { "Any team" }
                    @for team in names.teams.iter().filter(|t| t.deactivated_at.is_none()) {
                        option value=(team.id) selected[selected(&query.team, &team.id.to_string())] { (team.name) }
                    }
                }
                label for="f-window" { "Reply window" }
                select #f-window name="window" {
                    option value="" { "Open or closed" }
                    option value="open" selected[selected(&query.window, "open")] { "Open (free text)" }
                    option value="closed" selected[selected(&query.window, "closed")] { "Closed (templates only)" }
                }
                label for="f-number" { "Business number" }
                select #f-number name="number" {
                    option value="" { "Every number" }
                    @for number in &names.numbers {
                        option value=(number.id) selected[selected(&query.number, &number.id.to_string())] { (number.display_number) }
                    }
                }
                label for="f-contact" { "Contact" }
                select #f-contact name="contact" {
                    option value="" { "Known or not" }
                    option value="known" selected[selected(&query.contact, "known")] { "Known (a phone on record)" }
                    option value="unknown" selected[selected(&query.contact, "unknown")] { "From a WhatsApp profile only" }
                }
                @if !names.views.is_empty() {
                    label for="f-view" { "Saved view" }
                    select #f-view name="view" {
                        option value="" { "None" }
                        @for view in &names.views {
                            option value=(view.id) selected[selected(&query.view, &view.id.to_string())] { (view.name) }
                        }
                    }
                }
            }
            button type="submit" { "Show" }
        }
    }
}

fn thread_list(
    agent: &Agent,
    threads: &[ThreadView],
    next_cursor: Option<&str>,
    query: &ListQuery,
    names: &Names,
    open: Option<ThreadId>,
) -> Markup {
    let keep = query.keep();
    let suffix = if keep.is_empty() { String::new() } else { format!("?{keep}") };
    html! {
        @if threads.is_empty() {
            p.none { "No conversation matches." }
        }
        ul.threads {
            @for thread in threads {
                @let awaiting = thread.last_inbound_at.is_some_and(|i| thread.last_outbound_at.is_none_or(|o| o < i));
                li.thread.awaiting[awaiting] .current[open == Some(thread.id)] data-id=(thread.id)
                    data-mine[thread.owner_user == Some(agent.user.id)] {
                    a href={ "/inbox/" (thread.id) (suffix) } aria-current=[(open == Some(thread.id)).then_some("true")] {
                        span.name { (names.contact_name(thread)) }
                        @if awaiting { span.badge.unread title="The contact wrote last" { "new" } }
                        span.meta {
                            (thread.display_number) " · " (names.owner(thread))
                            @if thread.status == ThreadStatus::Closed { " · closed" }
                        }
                        span.meta {
                            @if thread.window_open { span.window.open { "window open" } } @else { span.window { "templates only" } }
                            " · " (when(thread.last_inbound_at.or(thread.last_outbound_at).unwrap_or(thread.opened_at)))
                        }
                    }
                }
            }
        }
        @if let Some(cursor) = next_cursor {
            @let older = ListQuery { cursor: Some(cursor.to_string()), ..query.clone() };
            a.more href={ "/inbox?" (serde_urlencoded::to_string(&older).unwrap_or_default()) } data-more {
                "Older conversations"
            }
        }
    }
}

/// The answer to a thread action: a status for the script, else the
/// conversation again.
fn after_action(id: ThreadId, fetch: bool, result: Result<ThreadDetail, ApiError>) -> Response {
    match result {
        Ok(_) if fetch => StatusCode::NO_CONTENT.into_response(),
        Ok(_) => Redirect::to(&format!("/inbox/{id}")).into_response(),
        Err(err) if fetch => (err.status, err.message).into_response(),
        Err(err) => failed(err),
    }
}

/// `POST /inbox/{id}/owner`: `user` (an id), or `owner` (`user:ID`,
/// `team:ID`, or empty to unassign).
pub async fn assign(
    State(state): State<WebState>,
    Path(id): Path<String>,
    posted: Posted<HashMap<String, String>>,
) -> Response {
    let Ok(id) = id.parse::<ThreadId>() else { return (StatusCode::NOT_FOUND, "no such conversation").into_response() };
    let form = &posted.form;
    let mut owner = OwnerBody::default();
    if let Some(user) = form.get("user").filter(|u| !u.is_empty()) {
        owner.user = Some(user.clone());
    } else if let Some(choice) = form.get("owner").filter(|o| !o.is_empty()) {
        match choice.split_once(':') {
            Some(("user", user)) => owner.user = Some(user.to_string()),
            Some(("team", team)) => owner.team = Some(team.to_string()),
            _ => return (StatusCode::UNPROCESSABLE_ENTITY, "pick a user or a team").into_response(),
        }
    }
    after_action(id, posted.fetch, api_inbox::set_owner(&state.api, id, &owner).await)
}

/// `POST /inbox/{id}/close`.
pub async fn close(
    State(state): State<WebState>,
    Path(id): Path<String>,
    posted: Posted<HashMap<String, String>>,
) -> Response {
    let Ok(id) = id.parse::<ThreadId>() else { return (StatusCode::NOT_FOUND, "no such conversation").into_response() };
    after_action(id, posted.fetch, api_inbox::close_thread(&state.api, id).await)
}

/// `POST /inbox/{id}/reopen`.
pub async fn reopen(
    State(state): State<WebState>,
    Path(id): Path<String>,
    posted: Posted<HashMap<String, String>>,
) -> Response {
    let Ok(id) = id.parse::<ThreadId>() else { return (StatusCode::NOT_FOUND, "no such conversation").into_response() };
    after_action(id, posted.fetch, api_inbox::reopen_thread(&state.api, id).await)
}

/// `POST /inbox/{id}/reply`: the composer's send.
pub async fn reply(
    State(state): State<WebState>,
    Path(id): Path<String>,
    posted: Posted<HashMap<String, String>>,
) -> Response {
    let Ok(id) = id.parse::<ThreadId>() else { return (StatusCode::NOT_FOUND, "no such conversation").into_response() };
    let Posted { agent, form, fetch } = posted;
    let store = state.api.engine.store();
    let thread = match store.thread(id).await {
        Ok(Some(thread)) => thread,
        Ok(None) => return (StatusCode::NOT_FOUND, "no such conversation").into_response(),
        Err(err) => return failed(err.into()),
    };
    let numbers = store.phone_numbers().await.unwrap_or_default();
    let account = numbers.iter().find(|n| n.id == thread.phone_number_id).map(|n| n.account_id);
    let templates = match account {
        Some(account) => store.templates(account).await.unwrap_or_default(),
        None => Vec::new(),
    };
    let outcome = match reply_content(&form, &templates) {
        Ok(content) => state.api.engine.reply(id, content, Some(agent.user.id)).await.map_err(ApiError::from),
        Err(problem) => Err(ApiError::unprocessable("invalid_reply", problem)),
    };
    match outcome {
        Ok(_) if fetch => StatusCode::NO_CONTENT.into_response(),
        Ok(_) => Redirect::to(&format!("/inbox/{id}")).into_response(),
        Err(err) => {
            if fetch {
                return (err.status, err.message).into_response();
            }
            // Without the script: the page again, the text kept, the
            // reason where the agent typed.
            let composer_state = ComposerState {
                text: form.get("text").cloned().unwrap_or_default(),
                error: Some(err.message.clone()),
                notice: None,
            };
            let page = async {
                let detail = api_inbox::detail(&state.api, id).await?;
                let names = Names::load(&state, &[detail.thread.contact]).await?;
                let body = conversation(&state, &agent, &detail, &names, &composer_state).await?;
                Ok::<_, ApiError>(layout::page(
                    &agent,
                    &names.contact_name(&detail.thread),
                    html! {
                        main #main .inbox data-thread=(id) { (body) }
                    },
                ))
            };
            match page.await {
                Ok(html) => (err.status, html).into_response(),
                Err(other) => failed(other),
            }
        }
    }
}
