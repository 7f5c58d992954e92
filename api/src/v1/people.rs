//! Users and teams: the inbox agents threads are assigned to, and the
//! groups that round-robin assignment picks from. Deactivated, never
//! deleted, so that the threads they owned keep their history.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::ApiState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiPath, ErrorBody};
use kairo_core::ids::{TeamId, UserId};
use kairo_core::status::UserRole;
use kairo_store::{StoreError, Team, User};

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUserBody {
    #[schema(format = Email, min_length = 3)]
    pub email: String,
    #[schema(min_length = 1)]
    pub name: String,
    /// `agent` (the default) or `admin`.
    #[serde(default)]
    pub role: Option<UserRole>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UserView {
    pub id: UserId,
    pub email: String,
    pub name: String,
    pub role: UserRole,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub deactivated_at: Option<DateTime<Utc>>,
    /// Only in the answer to a create: the password to sign in with once
    /// (the first sign-in chooses a new one). Shown once, never kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub one_time_password: Option<String>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTeamBody {
    #[schema(min_length = 1)]
    pub name: String,
    /// Members in round-robin order: user ids or emails.
    #[serde(default)]
    pub members: Vec<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TeamView {
    pub id: TeamId,
    pub name: String,
    pub members: Vec<UserId>,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub deactivated_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UserList {
    pub items: Vec<UserView>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TeamList {
    pub items: Vec<TeamView>,
}

impl From<User> for UserView {
    fn from(u: User) -> Self {
        UserView {
            id: u.id,
            email: u.email,
            name: u.name,
            role: u.role,
            active: u.deactivated_at.is_none(),
            created_at: u.created_at,
            deactivated_at: u.deactivated_at,
            one_time_password: None,
        }
    }
}

fn team_view(t: Team, members: Vec<UserId>) -> TeamView {
    TeamView {
        id: t.id,
        name: t.name,
        members,
        active: t.deactivated_at.is_none(),
        created_at: t.created_at,
        deactivated_at: t.deactivated_at,
    }
}

/// Create an inbox agent or admin; the answer carries their one-time password (shown once).
#[utoipa::path(post, path = "/v1/users", tag = "people", request_body = NewUserBody,
    responses((status = 201, body = UserView), (status = 409, description = "Email taken", body = ErrorBody),
        (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_user(
    State(state): State<ApiState>,
    _caller: Caller,
    ApiJson(body): ApiJson<NewUserBody>,
) -> Result<(StatusCode, ApiJson<UserView>), ApiError> {
    use kairo_engine::people::{PeopleError, create_user, reset_password};
    let store = state.engine.store();
    let now = state.engine.now();
    let role = body.role.unwrap_or(UserRole::Agent);
    let user = create_user(store, &body.email, &body.name, role, now).await.map_err(|err| match err {
        PeopleError::InvalidEmail(_) => ApiError::unprocessable("invalid_email", err.to_string()),
        PeopleError::EmptyName | PeopleError::ControlInName => ApiError::unprocessable("invalid_name", err.to_string()),
        PeopleError::EmailTaken(_) => ApiError::conflict("email_taken", err.to_string()),
        PeopleError::Store(err) => err.into(),
        other => ApiError::unprocessable("invalid_user", other.to_string()),
    })?;
    let password = reset_password(store, &user, now).await.map_err(|err| match err {
        PeopleError::Store(err) => ApiError::from(err),
        other => ApiError::unprocessable("invalid_user", other.to_string()),
    })?;
    let mut view = UserView::from(user);
    view.one_time_password = Some(password.expose().to_string());
    Ok((StatusCode::CREATED, ApiJson(view)))
}

/// Every user, by name.
#[utoipa::path(get, path = "/v1/users", tag = "people", responses((status = 200, body = UserList)),
    security(("bearer" = [])))]
pub async fn list_users(State(state): State<ApiState>, _caller: Caller) -> Result<ApiJson<UserList>, ApiError> {
    let users = state.engine.store().list_users().await?;
    Ok(ApiJson(UserList { items: users.into_iter().map(UserView::from).collect() }))
}

/// Deactivate a user: no new threads, out of every round robin, signed out of the web pages at once.
#[utoipa::path(post, path = "/v1/users/{id}/deactivate", tag = "people", params(("id" = String, Path, description = "The user's id or email")),
    responses((status = 200, body = UserView), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn deactivate_user(
    State(state): State<ApiState>,
    _caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<ApiJson<UserView>, ApiError> {
    let id = resolve_user(&state, &id, "the path").await.map_err(not_found_in_path)?.id;
    let user = state.engine.store().deactivate_user(id, state.engine.now()).await?;
    // Their sessions would be refused anyway (a session is read with its
    // user); ending them keeps the table tidy.
    state.engine.store().end_web_sessions_of(id).await?;
    user.map(|u| ApiJson(u.into())).ok_or_else(|| ApiError::not_found(format_args!("user {id}")))
}

/// Create a team with its members.
#[utoipa::path(post, path = "/v1/teams", tag = "people", request_body = NewTeamBody,
    responses((status = 201, body = TeamView), (status = 409, description = "Name taken", body = ErrorBody),
        (status = 422, description = "Unknown member", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_team(
    State(state): State<ApiState>,
    _caller: Caller,
    ApiJson(body): ApiJson<NewTeamBody>,
) -> Result<(StatusCode, ApiJson<TeamView>), ApiError> {
    let store = state.engine.store();
    let now = state.engine.now();
    let name = body.name.trim();
    if name.chars().any(char::is_control) {
        return Err(ApiError::unprocessable(
            "invalid_name",
            "a team's name holds no control characters (line breaks, tabs…)",
        ));
    }
    if name.is_empty() {
        return Err(ApiError::unprocessable("invalid_name", "a team needs a name"));
    }
    let mut ids = Vec::new();
    for member in &body.members {
        ids.push(resolve_user(&state, member, "members").await.map_err(ApiError::named_in_body)?.id);
    }
    let team = match store.insert_team(name, now).await {
        Ok(team) => team,
        Err(StoreError::Duplicate { .. }) => {
            return Err(ApiError::conflict("name_taken", format!("a team named `{name}` already exists")));
        }
        Err(err) => return Err(err.into()),
    };
    let mut members = Vec::new();
    for member in ids {
        if members.contains(&member) {
            continue;
        }
        store.add_team_member(team.id, member, now).await?;
        members.push(member);
    }
    Ok((StatusCode::CREATED, ApiJson(team_view(team, members))))
}

/// Every team with its members, by name.
#[utoipa::path(get, path = "/v1/teams", tag = "people", responses((status = 200, body = TeamList)),
    security(("bearer" = [])))]
pub async fn list_teams(State(state): State<ApiState>, _caller: Caller) -> Result<ApiJson<TeamList>, ApiError> {
    let teams = state.engine.store().list_teams().await?;
    Ok(ApiJson(TeamList { items: teams.into_iter().map(|(t, m)| team_view(t, m)).collect() }))
}

/// Deactivate a team: its assignment rules assign no more threads.
#[utoipa::path(post, path = "/v1/teams/{id}/deactivate", tag = "people", params(("id" = String, Path, description = "The team's id or name")),
    responses((status = 200, body = TeamView), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn deactivate_team(
    State(state): State<ApiState>,
    _caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<ApiJson<TeamView>, ApiError> {
    let id = resolve_team(&state, &id, "the path").await.map_err(not_found_in_path)?.id;
    let store = state.engine.store();
    let team = store
        .deactivate_team(id, state.engine.now())
        .await?
        .ok_or_else(|| ApiError::not_found(format_args!("team {id}")))?;
    let members = store.team_members(id).await?;
    Ok(ApiJson(team_view(team, members)))
}

/// A user named by id or by email (as workflows name them), any case.
pub(crate) async fn resolve_user(state: &ApiState, name: &str, field: &str) -> Result<kairo_store::User, ApiError> {
    let store = state.engine.store();
    let found = match name.trim().parse::<UserId>() {
        Ok(id) => store.user(id).await?,
        Err(_) => store.list_users().await?.into_iter().find(|u| u.email.eq_ignore_ascii_case(name.trim())),
    };
    found.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_user",
            format!("no user `{name}` ({field}): name a user by id or email"),
        )
    })
}

/// A team named by id or by name, any case.
pub(crate) async fn resolve_team(state: &ApiState, name: &str, field: &str) -> Result<kairo_store::Team, ApiError> {
    let store = state.engine.store();
    let found = match name.trim().parse::<TeamId>() {
        Ok(id) => store.team(id).await?,
        Err(_) => {
            store.list_teams().await?.into_iter().map(|(t, _)| t).find(|t| t.name.eq_ignore_ascii_case(name.trim()))
        }
    };
    found.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_team",
            format!("no team `{name}` ({field}): name a team by id or name"),
        )
    })
}

/// An unknown user or team in the path is the path's `not_found`.
fn not_found_in_path(err: ApiError) -> ApiError {
    if matches!(err.code, "unknown_user" | "unknown_team") {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", err.message)
    } else {
        err
    }
}
