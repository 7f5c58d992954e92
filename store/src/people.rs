//! Agents and teams, and the assignment rules that give threads an owner.

use chrono::{DateTime, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder};
use uuid::Uuid;

use super::entities::{assignment_rule, team, team_member, user};
use super::{Store, StoreError, Tx};
use kairo_core::ids::{PhoneNumberId, TeamId, UserId};
use kairo_core::status::UserRole;

/// Who a thread goes to (the `assign_owner` step).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnerChoice {
    User(String),
    Team(String),
    RoundRobin(String),
}

/// An owner an `assign_owner` names that does not exist (any more).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnknownOwner {
    #[error("no user with e-mail `{0}`")]
    User(String),
    #[error("no team named `{0}`")]
    Team(String),
}

pub type User = user::Model;

pub type Team = team::Model;

pub type AssignmentRule = assignment_rule::Model;

#[derive(Debug, Clone)]
pub struct NewUser {
    pub email: String,
    pub name: String,
    pub role: UserRole,
}

/// Assign new inbound threads on a number to a user, or round-robin within a team.
#[derive(Debug, Clone)]
pub struct NewAssignmentRule {
    pub phone_number_id: PhoneNumberId,
    pub user_id: Option<UserId>,
    pub team_id: Option<TeamId>,
    pub position: i32,
}

impl Store {
    /// Why `owner` cannot own a thread: no active user with that e-mail, no
    /// active team with that name. None when it can.
    pub async fn owner_problem(&self, owner: &OwnerChoice) -> Result<Option<String>, StoreError> {
        let q = |e| self.query_error(e);
        Ok(match owner {
            OwnerChoice::User(email) => {
                let found = user::Entity::find()
                    .filter(user::Column::Email.eq(email.as_str()))
                    .filter(user::Column::DeactivatedAt.is_null())
                    .one(&self.db)
                    .await
                    .map_err(q)?;
                found.is_none().then(|| format!("no active user with e-mail `{email}`"))
            }
            OwnerChoice::Team(name) | OwnerChoice::RoundRobin(name) => {
                let found = team::Entity::find()
                    .filter(team::Column::Name.eq(name.as_str()))
                    .filter(team::Column::DeactivatedAt.is_null())
                    .one(&self.db)
                    .await
                    .map_err(q)?;
                found.is_none().then(|| format!("no active team named `{name}`"))
            }
        })
    }

    pub async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        user::Entity::find().order_by_asc(user::Column::Name).all(&self.db).await.map_err(|e| self.query_error(e))
    }

    /// Deactivates a user: no new threads are assigned to them and they
    /// leave every team's round robin; threads they own keep them.
    pub async fn deactivate_user(&self, id: UserId, now: DateTime<Utc>) -> Result<Option<User>, StoreError> {
        user::Entity::update_many()
            .col_expr(user::Column::DeactivatedAt, Expr::value(now))
            .filter(user::Column::Id.eq(id))
            .filter(user::Column::DeactivatedAt.is_null())
            .exec(&self.db)
            .await
            .map_err(|e| self.query_error(e))?;
        self.user(id).await
    }

    pub async fn team(&self, id: TeamId) -> Result<Option<Team>, StoreError> {
        team::Entity::find_by_id(id).one(&self.db).await.map_err(|e| self.query_error(e))
    }

    /// Teams with their members, by name.
    pub async fn list_teams(&self) -> Result<Vec<(Team, Vec<UserId>)>, StoreError> {
        let teams = team::Entity::find()
            .order_by_asc(team::Column::Name)
            .all(&self.db)
            .await
            .map_err(|e| self.query_error(e))?;
        let members = team_member::Entity::find()
            .order_by_asc(team_member::Column::AddedAt)
            .all(&self.db)
            .await
            .map_err(|e| self.query_error(e))?;
        Ok(teams
            .into_iter()
            .map(|t| {
                let ids = members.iter().filter(|m| m.team_id == t.id).map(|m| m.user_id).collect();
                (t, ids)
            })
            .collect())
    }

    /// Deactivates a team: assignment rules naming it assign no more.
    pub async fn deactivate_team(&self, id: TeamId, now: DateTime<Utc>) -> Result<Option<Team>, StoreError> {
        team::Entity::update_many()
            .col_expr(team::Column::DeactivatedAt, Expr::value(now))
            .filter(team::Column::Id.eq(id))
            .filter(team::Column::DeactivatedAt.is_null())
            .exec(&self.db)
            .await
            .map_err(|e| self.query_error(e))?;
        self.team(id).await
    }

    pub async fn insert_user(&self, new: NewUser, now: DateTime<Utc>) -> Result<User, StoreError> {
        let email = new.email.clone();
        let row = user::ActiveModel {
            id: Set(UserId::new()),
            email: Set(new.email),
            name: Set(new.name),
            created_at: Set(now),
            deactivated_at: Set(None),
            role: Set(new.role),
        };
        user::Entity::insert(row)
            .exec_with_returning(&self.db)
            .await
            .map_err(|e| self.insert_error(e, || format!("user {email}")))
    }

    pub async fn user(&self, id: UserId) -> Result<Option<User>, StoreError> {
        user::Entity::find_by_id(id).one(&self.db).await.map_err(|e| self.query_error(e))
    }

    /// The user with this e-mail (stored lowercased), active or not.
    pub async fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        user::Entity::find()
            .filter(user::Column::Email.eq(email.trim().to_lowercase()))
            .one(&self.db)
            .await
            .map_err(|e| self.query_error(e))
    }

    /// Changes what a user may do; returns the user, None when unknown.
    pub async fn set_user_role(&self, id: UserId, role: UserRole) -> Result<Option<User>, StoreError> {
        user::Entity::update_many()
            .col_expr(user::Column::Role, Expr::value(role))
            .filter(user::Column::Id.eq(id))
            .exec(&self.db)
            .await
            .map_err(|e| self.query_error(e))?;
        self.user(id).await
    }

    pub async fn insert_team(&self, name: &str, now: DateTime<Utc>) -> Result<Team, StoreError> {
        let row = team::ActiveModel {
            id: Set(TeamId::new()),
            name: Set(name.to_string()),
            last_assigned_user_id: Set(None),
            created_at: Set(now),
            deactivated_at: Set(None),
        };
        team::Entity::insert(row)
            .exec_with_returning(&self.db)
            .await
            .map_err(|e| self.insert_error(e, || format!("team {name}")))
    }

    pub async fn add_team_member(&self, team: TeamId, user: UserId, now: DateTime<Utc>) -> Result<(), StoreError> {
        let row = team_member::ActiveModel { team_id: Set(team), user_id: Set(user), added_at: Set(now) };
        team_member::Entity::insert(row)
            .exec_without_returning(&self.db)
            .await
            .map_err(|e| self.insert_error(e, || format!("user {user} in team {team}")))?;
        Ok(())
    }

    /// A team's members in the order they joined: the round-robin order.
    pub async fn team_members(&self, team: TeamId) -> Result<Vec<UserId>, StoreError> {
        Ok(team_member::Entity::find()
            .filter(team_member::Column::TeamId.eq(team))
            .order_by_asc(team_member::Column::AddedAt)
            .order_by_asc(team_member::Column::UserId)
            .all(&self.db)
            .await
            .map_err(|e| self.query_error(e))?
            .into_iter()
            .map(|m| m.user_id)
            .collect())
    }

    pub async fn insert_assignment_rule(
        &self,
        new: NewAssignmentRule,
        now: DateTime<Utc>,
    ) -> Result<AssignmentRule, StoreError> {
        let row = assignment_rule::ActiveModel {
            id: Set(Uuid::now_v7()),
            phone_number_id: Set(new.phone_number_id),
            user_id: Set(new.user_id),
            team_id: Set(new.team_id),
            position: Set(new.position),
            created_at: Set(now),
        };
        assignment_rule::Entity::insert(row).exec_with_returning(&self.db).await.map_err(|e| self.query_error(e))
    }

    /// The rules for new threads on a number, in the order they apply.
    pub async fn assignment_rules(&self, number: PhoneNumberId) -> Result<Vec<AssignmentRule>, StoreError> {
        assignment_rule::Entity::find()
            .filter(assignment_rule::Column::PhoneNumberId.eq(number))
            .order_by_asc(assignment_rule::Column::Position)
            .all(&self.db)
            .await
            .map_err(|e| self.query_error(e))
    }
}

impl Tx {
    /// Applies the number's first assignment rule: a user, or the next active
    /// member of a team after the one assigned last (round-robin).
    pub(super) async fn assign_new_thread(
        &self,
        number: PhoneNumberId,
    ) -> Result<(Option<UserId>, Option<TeamId>), StoreError> {
        let q = |e| self.err(e);
        let Some(rule) = assignment_rule::Entity::find()
            .filter(assignment_rule::Column::PhoneNumberId.eq(number))
            .order_by_asc(assignment_rule::Column::Position)
            .one(&self.txn)
            .await
            .map_err(q)?
        else {
            return Ok((None, None));
        };
        if let Some(user) = rule.user_id {
            return Ok((Some(user), None));
        }
        let Some(team_id) = rule.team_id else { return Ok((None, None)) };
        self.round_robin(team_id).await
    }

    /// The next active member of a team after the one assigned last, and
    /// the team; the team alone when no member is active.
    pub(super) async fn round_robin(&self, team_id: TeamId) -> Result<(Option<UserId>, Option<TeamId>), StoreError> {
        let q = |e| self.err(e);
        let Some(team) = team::Entity::find_by_id(team_id).one(&self.txn).await.map_err(q)? else {
            return Ok((None, None));
        };
        // A deactivated team takes no new threads.
        if team.deactivated_at.is_some() {
            return Ok((None, None));
        }
        let members: Vec<UserId> = team_member::Entity::find()
            .filter(team_member::Column::TeamId.eq(team_id))
            .order_by_asc(team_member::Column::AddedAt)
            .order_by_asc(team_member::Column::UserId)
            .all(&self.txn)
            .await
            .map_err(q)?
            .into_iter()
            .map(|m| m.user_id)
            .collect();
        let active: Vec<UserId> = user::Entity::find()
            .filter(user::Column::Id.is_in(members.clone()))
            .filter(user::Column::DeactivatedAt.is_null())
            .all(&self.txn)
            .await
            .map_err(q)?
            .into_iter()
            .map(|u| u.id)
            .collect();
        let in_turn: Vec<UserId> = members.into_iter().filter(|m| active.contains(m)).collect();
        if in_turn.is_empty() {
            return Ok((None, Some(team_id)));
        }
        let next = match team.last_assigned_user_id.and_then(|last| in_turn.iter().position(|m| *m == last)) {
            Some(i) => in_turn[(i + 1) % in_turn.len()],
            None => in_turn[0],
        };
        let mut cursor = team.into_active_model();
        cursor.last_assigned_user_id = Set(Some(next));
        cursor.update(&self.txn).await.map_err(q)?;
        Ok((Some(next), Some(team_id)))
    }
}
