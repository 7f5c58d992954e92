//! What the inbox's pages share: the names they show (people, teams,
//! numbers, contacts), times, and a failure as a page.

use std::collections::HashMap;

use axum::response::Response;
use chrono::{DateTime, Utc};
use maud::{Markup, html};

use super::WebState;
use crate::error::ApiError;
use crate::v1::inbox::ThreadView;
use kairo_core::ids::{ContactId, UserId};
use kairo_store::{Contact, Team, User};

/// Who and what the page names: people, teams, numbers, contacts.
pub(super) struct Names {
    pub(super) users: Vec<User>,
    pub(super) teams: Vec<Team>,
    pub(super) numbers: Vec<kairo_store::PhoneNumber>,
    pub(super) contacts: HashMap<ContactId, Contact>,
}

impl Names {
    pub(super) async fn load(state: &WebState, contacts: &[ContactId]) -> Result<Names, ApiError> {
        let store = state.api.engine.store();
        let users = store.list_users().await?;
        let teams = store.list_teams().await?.into_iter().map(|(team, _)| team).collect();
        let numbers = store.phone_numbers().await?;
        let contacts = store.contacts_by_ids(contacts).await?.into_iter().map(|c| (c.id, c)).collect();
        Ok(Names { users, teams, numbers, contacts })
    }

    fn user(&self, id: UserId) -> String {
        self.users.iter().find(|u| u.id == id).map_or_else(|| "a removed user".to_string(), |u| u.name.clone())
    }

    pub(super) fn owner(&self, thread: &ThreadView) -> String {
        self.owner_of(thread.owner_user, thread.owner_team)
    }

    /// A user's name, `team NAME`, or `unassigned`.
    pub(super) fn owner_of(&self, user: Option<UserId>, team: Option<kairo_core::ids::TeamId>) -> String {
        match (user, team) {
            (Some(user), _) => self.user(user),
            (None, Some(team)) => self
                .teams
                .iter()
                .find(|t| t.id == team)
                .map_or_else(|| "a removed team".to_string(), |t| format!("team {}", t.name)),
            (None, None) => "unassigned".to_string(),
        }
    }

    pub(super) fn contact_name(&self, thread: &ThreadView) -> String {
        let contact = self.contacts.get(&thread.contact);
        contact
            .and_then(|c| c.name.clone().filter(|n| !n.trim().is_empty()))
            .or_else(|| contact.and_then(|c| c.phone.clone()).map(|p| format!("+{p}")))
            .unwrap_or_else(|| format!("+{}", thread.customer_wa_id))
    }
}

/// A page's failure from an API error: shown in the page, with its status.
pub(super) fn failed(err: ApiError) -> Response {
    super::error_page(err.status, "Something went wrong", &err.message)
}

/// A time as the page shows it (UTC; the script turns it into local time).
pub(super) fn when(at: DateTime<Utc>) -> Markup {
    html! { time datetime=(at.to_rfc3339()) { (at.format("%Y-%m-%d %H:%M UTC")) } }
}

/// An enum's name as the API spells it.
pub(super) fn serde_name<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}
