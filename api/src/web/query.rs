//! The thread list's search, filters and paging as the page's forms and
//! links carry them, and the API's query they stand for (`v1::inbox::search`
//! reads it; a saved view keeps it without the paging).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::session::Agent;
use crate::error::ApiError;
use crate::v1::inbox::ThreadQuery;
use kairo_core::ids::SavedViewId;
use kairo_core::status::ThreadStatus;

/// Threads per page of the list.
const PAGE_SIZE: u64 = 50;
/// The most pages a refresh of the list reads at once (the API's limit of
/// 500 threads).
const MAX_PAGES: u64 = 10;

/// The list's filters, as the page's form sends them.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct ListQuery {
    #[serde(default, skip_serializing_if = "is_blank")]
    pub(super) q: Option<String>,
    /// `open` (default), `closed` or `all`.
    #[serde(default, skip_serializing_if = "is_blank")]
    pub(super) status: Option<String>,
    /// `open` or `closed`.
    #[serde(default, skip_serializing_if = "is_blank")]
    pub(super) window: Option<String>,
    /// `mine`, `unassigned` or a user's id.
    #[serde(default, skip_serializing_if = "is_blank")]
    pub(super) owner: Option<String>,
    #[serde(default, skip_serializing_if = "is_blank")]
    pub(super) team: Option<String>,
    #[serde(default, skip_serializing_if = "is_blank")]
    pub(super) number: Option<String>,
    /// `known` or `unknown` contacts.
    #[serde(default, skip_serializing_if = "is_blank")]
    pub(super) contact: Option<String>,
    #[serde(default, skip_serializing_if = "is_blank")]
    pub(super) view: Option<String>,
    #[serde(default, skip_serializing_if = "is_blank")]
    pub(super) cursor: Option<String>,
    /// How many pages the list shows at once (the script asks for as
    /// many as the agent has scrolled through when it refreshes the list).
    #[serde(default, skip_serializing)]
    pub(super) pages: Option<String>,
    /// Why the last change to a saved view was refused (a code).
    #[serde(default, skip_serializing)]
    pub(super) view_problem: Option<String>,
}

fn is_blank(value: &Option<String>) -> bool {
    value.as_deref().is_none_or(|v| v.trim().is_empty())
}

pub(super) fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

impl ListQuery {
    /// The filters a form posted (other fields are ignored).
    pub(super) fn from_form(form: &HashMap<String, String>) -> ListQuery {
        serde_json::to_value(form).ok().and_then(|v| serde_json::from_value(v).ok()).unwrap_or_default()
    }

    /// The list of one saved view.
    pub(super) fn with_view(view: SavedViewId) -> ListQuery {
        ListQuery { view: Some(view.to_string()), ..ListQuery::default() }
    }

    pub(super) fn view_id(&self) -> Option<SavedViewId> {
        given(&self.view).and_then(|v| v.parse().ok())
    }

    pub(super) fn view_problem(&self) -> Option<&str> {
        given(&self.view_problem)
    }

    /// The filters as form fields (no view, no paging): what a new saved
    /// view keeps.
    pub(super) fn filter_fields(&self) -> Vec<(&'static str, String)> {
        let fields = [
            ("q", &self.q),
            ("status", &self.status),
            ("window", &self.window),
            ("owner", &self.owner),
            ("team", &self.team),
            ("number", &self.number),
            ("contact", &self.contact),
        ];
        fields.into_iter().filter_map(|(name, value)| given(value).map(|v| (name, v.to_string()))).collect()
    }

    /// The API's filters for these (no view, no paging): what a saved view
    /// holds. `mine` is the agent who saves it.
    pub(super) fn to_filter(&self, agent: &Agent) -> Result<ThreadQuery, ApiError> {
        let mut query = self.to_api(agent)?;
        query.view = None;
        query.cursor = None;
        query.limit = None;
        query.sort = None;
        Ok(query)
    }

    /// The API's query for these filters.
    pub(super) fn to_api(&self, agent: &Agent) -> Result<ThreadQuery, ApiError> {
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
        let pages = given(&self.pages).and_then(|p| p.parse::<u64>().ok()).unwrap_or(1).clamp(1, MAX_PAGES);
        query.limit = Some(PAGE_SIZE * pages);
        query.sort = Some(kairo_store::ThreadSort::LastMessage);
        Ok(query)
    }

    /// The query string that keeps these filters (without the cursor).
    pub(super) fn keep(&self) -> String {
        let kept = ListQuery { cursor: None, ..self.clone() };
        serde_urlencoded::to_string(&kept).unwrap_or_default()
    }
}
