//! Agents and teams, and the assignment rules that give threads an owner.

use chrono::{DateTime, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use uuid::Uuid;

use super::entities::{assignment_rule, team, team_member, user};
use super::{Store, StoreError};
use kairo_core::ids::{PhoneNumberId, TeamId, UserId};

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
        };
        user::Entity::insert(row)
            .exec_with_returning(&self.db)
            .await
            .map_err(|e| self.insert_error(e, || format!("user {email}")))
    }

    pub async fn user(&self, id: UserId) -> Result<Option<User>, StoreError> {
        user::Entity::find_by_id(id).one(&self.db).await.map_err(|e| self.query_error(e))
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
