//! One conversation as the inbox shows it: the header with the window and
//! the actions, every message, and the contact's panel beside it.

use maud::{Markup, html};

use super::WebState;
use super::composer::{ComposerState, composer};
use super::contact::contact_form;
use super::message::items;
use super::session::Agent;
use super::view::{Names, serde_name, when};
use crate::error::ApiError;
use crate::v1::inbox::{ThreadDetail, ThreadView};
use kairo_core::status::{ConsentStatus, ThreadStatus};

pub(super) async fn conversation(
    state: &WebState,
    agent: &Agent,
    detail: &ThreadDetail,
    names: &Names,
    composer_state: &ComposerState,
) -> Result<Markup, ApiError> {
    let thread = &detail.thread;
    let store = state.api.engine.store();
    let number = names.numbers.iter().find(|n| n.id == thread.number);
    let templates = match number {
        Some(number) => store.templates(number.account_id).await?,
        None => Vec::new(),
    };
    let consent = store.consent(thread.contact, thread.number).await?;
    let opted_in = consent.as_ref().is_some_and(|c| c.status == ConsentStatus::OptedIn);
    let now = state.api.engine.now();
    let panel = panel(state, agent, thread, names, consent.as_ref()).await?;
    Ok(html! {
        section.conversation #conversation aria-labelledby="conversation-title" data-thread=(thread.id)
            data-owner=[thread.owner_user.map(|u| u.to_string())] {
            header.thread-head {
                h2 #conversation-title { (names.contact_name(thread)) }
                p.meta {
                    "on " (thread.display_number) " · " (names.owner(thread)) " · "
                    @if thread.status == ThreadStatus::Open { "open" } @else { "closed" }
                }
                @if let Some(closes) = thread.window_closes_at.filter(|c| *c > now) {
                    p.window.open #window data-closes-at=(closes.to_rfc3339()) {
                        "Reply window open: closes " (when(closes))
                        " (" span.countdown { (countdown(closes - now)) } " left)"
                    }
                } @else {
                    p.window #window { "The 24-hour window is closed: only approved templates can be sent." }
                }
                (actions(agent, thread, names))
            }
            ol.messages aria-label="Messages" {
                (items(&detail.messages, &detail.events, names))
            }
            (composer(agent, thread, &templates, opted_in, composer_state))
        }
        (panel)
    })
}

/// The contact beside the conversation: who, consent on this number, the
/// workflows they are in, their other threads.
async fn panel(
    state: &WebState,
    agent: &Agent,
    thread: &ThreadView,
    names: &Names,
    consent: Option<&kairo_store::Consent>,
) -> Result<Markup, ApiError> {
    let store = state.api.engine.store();
    let contact = names.contacts.get(&thread.contact);
    let enrollments = store.enrollments_of(thread.contact).await?;
    let consent_trail = store.consent_history(thread.contact, thread.number).await?;
    let elsewhere = other_consents(state, thread, names).await?;
    let workflows = store.workflows().await?;
    let filter = kairo_store::ThreadFilter { contact: Some(thread.contact), ..Default::default() };
    let others: Vec<kairo_store::Thread> = store
        .search_threads(&filter, kairo_store::ThreadSort::LastMessage, None, 20, state.api.engine.now())
        .await?
        .items
        .into_iter()
        .filter(|t| t.id != thread.id)
        .collect();
    let workflow_name =
        |id| workflows.iter().find(|w| w.id == id).map_or_else(|| "a workflow".to_string(), |w| w.name.clone());
    let number_of = |id| names.numbers.iter().find(|n| n.id == id).map_or("", |n| n.display_number.as_str());
    Ok(html! {
        aside.panel #panel aria-label="Contact" {
            h2 { "Contact" }
            @if let Some(contact) = contact {
                dl {
                    dt { "Name" } dd { (contact.name.clone().unwrap_or_else(|| "—".into())) }
                    dt { "Phone" } dd { (contact.phone.as_ref().map(|p| format!("+{p}")).unwrap_or_else(|| "—".into())) }
                    @if let Some(mobile) = &contact.mobile_phone { dt { "Mobile phone" } dd { "+" (mobile) } }
                    dt { "WhatsApp id" } dd { (contact.wa_id.clone().unwrap_or_else(|| "—".into())) }
                    @if let Some(user_id) = &contact.user_id { dt { "WhatsApp user id" } dd { (user_id) } }
                    @if let Some(map) = contact.properties.as_object() {
                        @for (key, value) in map {
                            dt { (key) } dd { (value.as_str().map(str::to_string).unwrap_or_else(|| value.to_string())) }
                        }
                    }
                }
                (contact_form(agent, thread.id, contact))
            }
            (consent_section(thread, consent, &consent_trail, &elsewhere))
            h3 { "Workflows" }
            @if enrollments.is_empty() { p { "Not enrolled in any." } }
            ul.enrollments {
                @for enrollment in &enrollments {
                    li {
                        (workflow_name(enrollment.workflow_id)) " · " (serde_name(&enrollment.status))
                        @if let Some(step) = &enrollment.current_step { " at " code { (step) } }
                    }
                }
            }
            @if !others.is_empty() {
                h3 { "Other conversations" }
                ul {
                    @for other in &others {
                        li { a href={ "/inbox/" (other.id) } {
                            (number_of(other.phone_number_id)) " · "
                            @if other.status == ThreadStatus::Open { "open" } @else { "closed" }
                        } }
                    }
                }
            }
        }
    })
}

/// The contact's consent on the other business numbers: (number, consent).
async fn other_consents(
    state: &WebState,
    thread: &ThreadView,
    names: &Names,
) -> Result<Vec<(String, kairo_store::Consent)>, ApiError> {
    let mut out = Vec::new();
    for number in names.numbers.iter().filter(|n| n.id != thread.number) {
        if let Some(consent) = state.api.engine.store().consent(thread.contact, number.id).await? {
            out.push((number.display_number.clone(), consent));
        }
    }
    Ok(out)
}

/// Consent on the thread's number, with its history (newest first), and
/// on the other numbers.
fn consent_section(
    thread: &ThreadView,
    consent: Option<&kairo_store::Consent>,
    consent_trail: &[kairo_store::ConsentEvent],
    elsewhere: &[(String, kairo_store::Consent)],
) -> Markup {
    html! {
        h3 { "Consent on " (thread.display_number) }
        @match consent {
            Some(c) => p.consent { (consent_name(c.status)) " since " (when(c.changed_at)) },
            None => p.consent { "Never opted in on this number: templates are refused." },
        }
        @if !consent_trail.is_empty() {
            details.consent-trail {
                summary { "Consent history (" (consent_trail.len()) ")" }
                ol {
                    @for change in consent_trail.iter().rev() {
                        li {
                            (consent_name(change.status)) " · " (when(change.occurred_at)) " · "
                            @match &change.keyword {
                                Some(keyword) => { "wrote " q { (keyword) } },
                                None => { "by " (serde_name(&change.source)) },
                            }
                        }
                    }
                }
            }
        }
        @if !elsewhere.is_empty() {
            p.hint { "On other numbers:" }
            ul.consent-elsewhere {
                @for (number, c) in elsewhere {
                    li { (number) ": " (consent_name(c.status)) " since " (when(c.changed_at)) }
                }
            }
        }
    }
}

fn countdown(left: chrono::Duration) -> String {
    let minutes = left.num_minutes().max(0);
    format!("{}h {:02}m", minutes / 60, minutes % 60)
}

fn consent_name(status: ConsentStatus) -> &'static str {
    match status {
        ConsentStatus::OptedIn => "Opted in",
        ConsentStatus::OptedOut => "Opted out",
    }
}

fn actions(agent: &Agent, thread: &ThreadView, names: &Names) -> Markup {
    let base = format!("/inbox/{}", thread.id);
    html! {
        div.actions role="group" aria-label="Thread actions" {
            @if thread.owner_user != Some(agent.user.id) {
                form method="post" action={ (base) "/owner" } data-post {
                    input type="hidden" name="csrf" value=(agent.csrf());
                    input type="hidden" name="user" value=(agent.user.id);
                    button type="submit" { "Assign to me" }
                }
            }
            form.assign method="post" action={ (base) "/owner" } data-post {
                input type="hidden" name="csrf" value=(agent.csrf());
                label for="assign-to" { "Assign to" }
                select #assign-to name="owner" {
                    option value="" { "Nobody (unassigned)" }
                    @for user in names.users.iter().filter(|u| u.deactivated_at.is_none()) {
                        option value={ "user:" (user.id) } selected[thread.owner_user == Some(user.id)] { (user.name) }
                    }
                    @for team in names.teams.iter().filter(|t| t.deactivated_at.is_none()) {
                        option value={ "team:" (team.id) } selected[thread.owner_user.is_none() && thread.owner_team == Some(team.id)] {
                            "Team " (team.name)
                        }
                    }
                }
                button type="submit" { "Assign" }
            }
            @if thread.status == ThreadStatus::Open {
                form method="post" action={ (base) "/close" } data-post {
                    input type="hidden" name="csrf" value=(agent.csrf());
                    button type="submit" { "Close" }
                }
            } @else {
                form method="post" action={ (base) "/reopen" } data-post {
                    input type="hidden" name="csrf" value=(agent.csrf());
                    button type="submit" { "Reopen" }
                }
            }
        }
    }
}
