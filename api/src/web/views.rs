//! Saved views in the inbox: each view with how many threads it shows, the
//! list's filters saved as a new view, a view renamed or deleted. Every
//! change goes through `v1::views` (the API's rules: a name is needed and
//! unique, a saved filter holds no paging).

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};

use super::WebState;
use super::query::ListQuery;
use super::session::{Agent, Posted};
use crate::error::ApiError;
use crate::v1::views::{self as api_views, ViewView};
use kairo_core::ids::SavedViewId;

/// Why a change to a view was refused, as the page shows it (a code in the
/// URL, never text a link could forge).
fn problem_text(code: &str) -> Option<&'static str> {
    Some(match code {
        "invalid_name" => "A saved view needs a name.",
        "name_taken" => "A saved view of that name already exists: pick another name.",
        "invalid_filter" => "These filters cannot be saved as a view.",
        "not_found" => "That saved view is gone (someone deleted it).",
        _ => return None,
    })
}

/// The saved views beside the list, with their counts and forms.
pub(super) fn views_box(agent: &Agent, query: &ListQuery, views: &[ViewView]) -> Markup {
    let current = query.view_id();
    let problem = query.view_problem().and_then(problem_text);
    html! {
        section.views aria-labelledby="views-title" {
            h2 #views-title { "Saved views" }
            @if let Some(problem) = problem { p #view-problem .error role="alert" { (problem) } }
            @if views.is_empty() { p.none { "No saved view yet." } }
            ul.view-list {
                @for view in views {
                    li {
                        a href={ "/inbox?view=" (view.id) } aria-current=[(current == Some(view.id)).then_some("true")] {
                            (view.name) " " span.count aria-label={ (view.threads) " threads" } { (view.threads) }
                        }
                    }
                }
            }
            details.save-view open[problem.is_some()] {
                summary { "Save these filters as a view" }
                form method="post" action="/inbox/views" {
                    input type="hidden" name="csrf" value=(agent.csrf());
                    @for (name, value) in query.filter_fields() {
                        input type="hidden" name=(name) value=(value);
                    }
                    // Kept only to come back to it if the name is refused.
                    @if let Some(view) = current { input type="hidden" name="view" value=(view); }
                    label for="view-name" { "Name of the view" }
                    input #view-name name="name" required maxlength="100"
                        aria-describedby=[problem.map(|_| "view-problem")];
                    button type="submit" { "Save view" }
                }
            }
            @if let Some(view) = views.iter().find(|v| Some(v.id) == current) {
                details.edit-view {
                    summary { "Rename or delete " q { (view.name) } }
                    form method="post" action={ "/inbox/views/" (view.id) } {
                        input type="hidden" name="csrf" value=(agent.csrf());
                        label for="view-rename" { "New name" }
                        input #view-rename name="name" required maxlength="100" value=(view.name);
                        button type="submit" { "Rename" }
                    }
                    form method="post" action={ "/inbox/views/" (view.id) "/delete" } {
                        input type="hidden" name="csrf" value=(agent.csrf());
                        button.danger type="submit" { "Delete this view" }
                    }
                }
            }
        }
    }
}

/// Back to the list after a change: the view shown, or the refusal's code.
fn back(result: Result<Option<SavedViewId>, ApiError>, filters: &ListQuery) -> Response {
    match result {
        Ok(Some(id)) => Redirect::to(&format!("/inbox?view={id}")).into_response(),
        Ok(None) => Redirect::to("/inbox").into_response(),
        Err(err) if err.status.is_client_error() => {
            let kept = filters.keep();
            let sep = if kept.is_empty() { "" } else { "&" };
            Redirect::to(&format!("/inbox?{kept}{sep}view_problem={}", err.code)).into_response()
        }
        Err(err) => super::view::failed(err),
    }
}

/// `POST /inbox/views`: the posted filters saved under `name`.
pub async fn create(State(state): State<WebState>, posted: Posted<HashMap<String, String>>) -> Response {
    let filters = ListQuery::from_form(&posted.form);
    let name = posted.form.get("name").cloned().unwrap_or_default();
    let result = async {
        let query = filters.to_filter(&posted.agent)?;
        Ok::<_, ApiError>(Some(api_views::save_view(&state.api, &name, &query).await?.id))
    };
    back(result.await, &filters)
}

/// `POST /inbox/views/{id}`: a new name.
pub async fn rename(
    State(state): State<WebState>,
    Path(id): Path<String>,
    posted: Posted<HashMap<String, String>>,
) -> Response {
    let Ok(id) = id.parse::<SavedViewId>() else {
        return back(Err(ApiError::not_found("saved view")), &ListQuery::default());
    };
    let name = posted.form.get("name").cloned().unwrap_or_default();
    let result = api_views::change_view(&state.api, id, Some(&name), None).await.map(|v| Some(v.id));
    back(result, &ListQuery::with_view(id))
}

/// `POST /inbox/views/{id}/delete`.
pub async fn delete(
    State(state): State<WebState>,
    Path(id): Path<String>,
    _posted: Posted<HashMap<String, String>>,
) -> Response {
    let Ok(id) = id.parse::<SavedViewId>() else {
        return back(Err(ApiError::not_found("saved view")), &ListQuery::default());
    };
    back(api_views::remove_view(&state.api, id).await.map(|()| None), &ListQuery::default())
}
