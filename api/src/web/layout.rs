//! The frame every page shares: the document head, the top bar with the
//! signed-in person and sign-out, and the assets (by content hash, so a
//! new build is never served a stale script from a browser's cache).

use axum::response::Html;
use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::assets;
use super::session::Agent;

/// A page of a signed-in agent.
pub fn page(agent: &Agent, title: &str, body: Markup) -> Html<String> {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            (head(title, Some(agent.csrf())))
            body data-user=(agent.user.id) {
                a.skip href="#main" { "Skip to the conversation list" }
                header.topbar {
                    a.brand href="/inbox" { "Kairo" }
                    nav aria-label="Sections" { a href="/inbox" aria-current="page" { "Inbox" } }
                    span.who { (agent.user.name) " · " (agent.user.role.as_str()) }
                    form method="post" action="/signout" {
                        input type="hidden" name="csrf" value=(agent.csrf());
                        button type="submit" { "Sign out" }
                    }
                }
                (body)
                script src=(assets::url("inbox.js")) {}
            }
        }
    };
    Html(markup.into_string())
}

/// A page before sign-in (or an error page).
pub fn bare(title: &str, body: Markup) -> Html<String> {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            (head(title, None))
            body.bare { (body) }
        }
    };
    Html(markup.into_string())
}

fn head(title: &str, csrf: Option<&str>) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            @if let Some(token) = csrf { meta name="csrf-token" content=(token); }
            title { (title) " · Kairo" }
            link rel="stylesheet" href=(assets::url("app.css"));
            link rel="icon" href=(PreEscaped("data:,"));
        }
    }
}
