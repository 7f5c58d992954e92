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

use super::WebState;
use super::composer::{ComposerState, reply_content};
use super::conversation::conversation;
use super::layout;
use super::query::{ListQuery, given};
use super::session::{Agent, Posted};
use super::view::{Names, failed, when};
use super::views::views_box;
use crate::error::ApiError;
use crate::v1::inbox::{self as api_inbox, OwnerBody, ThreadDetail, ThreadView};
use kairo_core::ids::{ContactId, ThreadId};
use kairo_core::status::ThreadStatus;

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
    let detail = match open {
        Some(id) => Some(read_thread(state, agent, id).await?),
        None => None,
    };
    let list = api_inbox::search(&state.api, &query.to_api(agent)?).await?;
    let mut contacts: Vec<ContactId> = list.items.iter().map(|t| t.contact).collect();
    contacts.extend(detail.as_ref().map(|d| d.thread.contact));
    let names = Names::load(state, &contacts).await?;
    let reads = Reads::load(state, agent, &list.items).await?;
    let views = crate::v1::views::views(&state.api).await?;
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
                (views_box(agent, query, &views))
                (filters(agent, query, &names))
                div #threads { (thread_list(agent, &list, query, &names, &reads, open)) }
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
        let reads = Reads::load(&state, &agent, &list.items).await?;
        Ok::<_, ApiError>(thread_list(&agent, &list, &query, &names, &reads, None))
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
        let detail = read_thread(&state, &agent, id).await?;
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
                || given(&query.number).is_some() || given(&query.contact).is_some() || !status_all] {
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
            }
            // Filters chosen here narrow the saved view being shown.
            @if let Some(view) = given(&query.view) { input type="hidden" name="view" value=(view); }
            button type="submit" { "Show" }
        }
    }
}

/// One conversation, as the agent opens it: read from now on (for this
/// agent's unread markers).
async fn read_thread(state: &WebState, agent: &Agent, id: ThreadId) -> Result<ThreadDetail, ApiError> {
    let detail = api_inbox::detail(&state.api, id).await?;
    state.api.engine.store().mark_thread_read(id, agent.user.id, state.api.engine.now()).await?;
    Ok(detail)
}

/// When the agent last read each listed thread.
struct Reads(HashMap<ThreadId, chrono::DateTime<chrono::Utc>>);

impl Reads {
    async fn load(state: &WebState, agent: &Agent, threads: &[ThreadView]) -> Result<Reads, ApiError> {
        let ids: Vec<ThreadId> = threads.iter().map(|t| t.id).collect();
        Ok(Reads(state.api.engine.store().threads_read_by(agent.user.id, &ids).await?))
    }

    /// The contact wrote after the agent last read the thread (or the agent
    /// never opened it).
    fn unread(&self, thread: &ThreadView) -> bool {
        thread.last_inbound_at.is_some_and(|wrote| self.0.get(&thread.id).is_none_or(|read| *read < wrote))
    }
}

fn thread_list(
    agent: &Agent,
    list: &api_inbox::ThreadPage,
    query: &ListQuery,
    names: &Names,
    reads: &Reads,
    open: Option<ThreadId>,
) -> Markup {
    let keep = query.keep();
    let suffix = if keep.is_empty() { String::new() } else { format!("?{keep}") };
    html! {
        @if list.items.is_empty() {
            p.none { "No conversation matches." }
        }
        ul.threads {
            @for thread in &list.items {
                @let awaiting = thread.last_inbound_at.is_some_and(|i| thread.last_outbound_at.is_none_or(|o| o < i));
                @let unread = reads.unread(thread) && open != Some(thread.id);
                li.thread.awaiting[awaiting] .unread[unread] .current[open == Some(thread.id)] data-id=(thread.id)
                    data-mine[thread.owner_user == Some(agent.user.id)] {
                    a href={ "/inbox/" (thread.id) (suffix) } aria-current=[(open == Some(thread.id)).then_some("true")] {
                        span.name { (names.contact_name(thread)) }
                        @if unread { span.badge.unread title="New messages since you last opened it" { "unread" } }
                        @else if awaiting { span.badge.awaiting title="The contact wrote last" { "awaiting reply" } }
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
        @if let Some(cursor) = list.next_cursor.as_deref() {
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
    after_action(id, posted.fetch, api_inbox::set_owner(&state.api, id, &owner, Some(posted.agent.user.id)).await)
}

/// `POST /inbox/{id}/close`.
pub async fn close(
    State(state): State<WebState>,
    Path(id): Path<String>,
    posted: Posted<HashMap<String, String>>,
) -> Response {
    let Ok(id) = id.parse::<ThreadId>() else { return (StatusCode::NOT_FOUND, "no such conversation").into_response() };
    after_action(id, posted.fetch, api_inbox::close_thread(&state.api, id, Some(posted.agent.user.id)).await)
}

/// `POST /inbox/{id}/reopen`.
pub async fn reopen(
    State(state): State<WebState>,
    Path(id): Path<String>,
    posted: Posted<HashMap<String, String>>,
) -> Response {
    let Ok(id) = id.parse::<ThreadId>() else { return (StatusCode::NOT_FOUND, "no such conversation").into_response() };
    after_action(id, posted.fetch, api_inbox::reopen_thread(&state.api, id, Some(posted.agent.user.id)).await)
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
