//! The inbox: agents and teams, assignment rules, threads, messages, and
//! statuses that arrived before their message.

use chrono::{DateTime, Utc};
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use uuid::Uuid;

use super::entities::{assignment_rule, message, pending_status, saved_view, team, team_member, thread, user};
use super::status::{DeliveryStatus, Direction, ThreadStatus};
use super::{Store, StoreError};
use crate::ids::{
    ContactId, EnrollmentId, MessageId, PhoneNumberId, SavedViewId, StepExecutionId, TeamId, ThreadId, UserId, Wamid,
};

pub type User = user::Model;
pub type Team = team::Model;
pub type AssignmentRule = assignment_rule::Model;
pub type Thread = thread::Model;
pub type Message = message::Model;
pub type PendingStatus = pending_status::Model;
pub type SavedView = saved_view::Model;

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

#[derive(Debug, Clone)]
pub struct NewThread {
    pub contact_id: ContactId,
    pub phone_number_id: PhoneNumberId,
    pub customer_wa_id: String,
}

#[derive(Debug, Clone)]
pub struct NewMessage {
    pub thread_id: ThreadId,
    pub direction: Direction,
    pub wamid: Option<Wamid>,
    pub message_type: String,
    pub body: Option<String>,
    /// The message as the channel delivered or sent it, kept whole.
    pub payload: serde_json::Value,
    pub status: DeliveryStatus,
    pub template_name: Option<String>,
    pub template_language: Option<String>,
    pub template_params: Option<serde_json::Value>,
    pub enrollment_id: Option<EnrollmentId>,
    pub step_execution_id: Option<StepExecutionId>,
    pub occurred_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct NewSavedView {
    pub name: String,
    pub owner_user_id: Option<UserId>,
    pub filter: serde_json::Value,
}

impl Store {
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

    /// Opens a thread. A contact has at most one open thread per number: a
    /// second one is refused with [`StoreError::Duplicate`].
    pub async fn open_thread(&self, new: NewThread, now: DateTime<Utc>) -> Result<Thread, StoreError> {
        let (contact, number) = (new.contact_id, new.phone_number_id);
        let row = new_thread_row(contact, number, new.customer_wa_id, (None, None), now, now);
        thread::Entity::insert(row)
            .exec_with_returning(&self.db)
            .await
            .map_err(|e| self.insert_error(e, || format!("open thread for contact {contact} on number {number}")))
    }

    pub async fn thread(&self, id: ThreadId) -> Result<Option<Thread>, StoreError> {
        thread::Entity::find_by_id(id).one(&self.db).await.map_err(|e| self.query_error(e))
    }

    /// The contact's open thread on this number, if any.
    pub async fn open_thread_of(
        &self,
        contact: ContactId,
        number: PhoneNumberId,
    ) -> Result<Option<Thread>, StoreError> {
        thread::Entity::find()
            .filter(thread::Column::ContactId.eq(contact))
            .filter(thread::Column::PhoneNumberId.eq(number))
            .filter(thread::Column::Status.eq(ThreadStatus::Open))
            .one(&self.db)
            .await
            .map_err(|e| self.query_error(e))
    }

    /// Records a message. A wamid is unique: recording it twice is refused
    /// with [`StoreError::Duplicate`], which is how duplicate deliveries are
    /// stored once.
    pub async fn record_message(&self, new: NewMessage, now: DateTime<Utc>) -> Result<Message, StoreError> {
        let wamid = new.wamid.clone();
        let row = message_row(new, now);
        message::Entity::insert(row)
            .exec_with_returning(&self.db)
            .await
            .map_err(|e| self.insert_error(e, || format!("message {}", wamid.map(|w| w.0).unwrap_or_default())))
    }

    pub async fn message_by_wamid(&self, wamid: &Wamid) -> Result<Option<Message>, StoreError> {
        message::Entity::find()
            .filter(message::Column::Wamid.eq(wamid.clone()))
            .one(&self.db)
            .await
            .map_err(|e| self.query_error(e))
    }

    /// A thread's messages in the order they happened.
    pub async fn messages(&self, thread: ThreadId) -> Result<Vec<Message>, StoreError> {
        message::Entity::find()
            .filter(message::Column::ThreadId.eq(thread))
            .order_by_asc(message::Column::OccurredAt)
            .order_by_asc(message::Column::Id)
            .all(&self.db)
            .await
            .map_err(|e| self.query_error(e))
    }

    /// Keeps a status for a wamid not recorded yet, to apply when it is.
    pub async fn keep_pending_status(
        &self,
        wamid: Wamid,
        status: DeliveryStatus,
        payload: serde_json::Value,
        occurred_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<PendingStatus, StoreError> {
        let callback_data = payload.get("callback_data").and_then(serde_json::Value::as_str).map(str::to_string);
        let row = pending_status::ActiveModel {
            id: Set(Uuid::now_v7()),
            wamid: Set(wamid),
            status: Set(status),
            callback_data: Set(callback_data),
            payload: Set(payload),
            occurred_at: Set(occurred_at),
            received_at: Set(now),
        };
        pending_status::Entity::insert(row).exec_with_returning(&self.db).await.map_err(|e| self.query_error(e))
    }

    /// The wamid of a status kept for an unrecorded send whose
    /// `biz_opaque_callback_data` was `callback_data`: the send reached
    /// WhatsApp even if its answer never reached Kairo.
    pub async fn wamid_for_callback(&self, callback_data: &str) -> Result<Option<Wamid>, StoreError> {
        pending_status::Entity::find()
            .select_only()
            .column(pending_status::Column::Wamid)
            .filter(pending_status::Column::CallbackData.eq(callback_data))
            .into_tuple()
            .one(&self.db)
            .await
            .map_err(|e| self.query_error(e))
    }

    pub async fn pending_statuses(&self, wamid: &Wamid) -> Result<Vec<PendingStatus>, StoreError> {
        pending_status::Entity::find()
            .filter(pending_status::Column::Wamid.eq(wamid.clone()))
            .order_by_asc(pending_status::Column::OccurredAt)
            .all(&self.db)
            .await
            .map_err(|e| self.query_error(e))
    }

    /// Statuses kept for messages Kairo has not recorded (yet), newest
    /// first, at most `limit`; and how many there are in all.
    pub async fn unmatched_statuses(&self, limit: u64) -> Result<(Vec<PendingStatus>, u64), StoreError> {
        use sea_orm::{PaginatorTrait, QuerySelect};
        let q = |e| self.query_error(e);
        let total = pending_status::Entity::find().count(&self.db).await.map_err(q)?;
        let items = pending_status::Entity::find()
            .order_by_desc(pending_status::Column::ReceivedAt)
            .limit(limit)
            .all(&self.db)
            .await
            .map_err(q)?;
        Ok((items, total))
    }

    pub async fn insert_saved_view(&self, new: NewSavedView, now: DateTime<Utc>) -> Result<SavedView, StoreError> {
        let name = new.name.clone();
        let row = saved_view::ActiveModel {
            id: Set(SavedViewId::new()),
            name: Set(new.name),
            owner_user_id: Set(new.owner_user_id),
            filter: Set(new.filter),
            created_at: Set(now),
            updated_at: Set(now),
        };
        saved_view::Entity::insert(row)
            .exec_with_returning(&self.db)
            .await
            .map_err(|e| self.insert_error(e, || format!("saved view {name}")))
    }

    /// Renames a saved view or replaces its filter; `None` when there is
    /// no such view.
    pub async fn update_saved_view(
        &self,
        id: SavedViewId,
        name: Option<String>,
        filter: Option<serde_json::Value>,
        now: DateTime<Utc>,
    ) -> Result<Option<SavedView>, StoreError> {
        let Some(view) = self.saved_view(id).await? else { return Ok(None) };
        let mut row: saved_view::ActiveModel = view.into();
        if let Some(name) = name.clone() {
            row.name = Set(name);
        }
        if let Some(filter) = filter {
            row.filter = Set(filter);
        }
        row.updated_at = Set(now);
        sea_orm::ActiveModelTrait::update(row, &self.db)
            .await
            .map(Some)
            .map_err(|e| self.insert_error(e, || format!("saved view {}", name.unwrap_or_default())))
    }

    /// Deletes a saved view; false when there was none.
    pub async fn delete_saved_view(&self, id: SavedViewId) -> Result<bool, StoreError> {
        let done = saved_view::Entity::delete_by_id(id).exec(&self.db).await.map_err(|e| self.query_error(e))?;
        Ok(done.rows_affected > 0)
    }

    pub async fn saved_view(&self, id: SavedViewId) -> Result<Option<SavedView>, StoreError> {
        saved_view::Entity::find_by_id(id).one(&self.db).await.map_err(|e| self.query_error(e))
    }

    pub async fn saved_views(&self) -> Result<Vec<SavedView>, StoreError> {
        saved_view::Entity::find()
            .order_by_asc(saved_view::Column::Name)
            .all(&self.db)
            .await
            .map_err(|e| self.query_error(e))
    }
}

/// A new message row, in the state it is first recorded in.
pub(super) fn message_row(new: NewMessage, now: DateTime<Utc>) -> message::ActiveModel {
    message::ActiveModel {
        id: Set(MessageId::new()),
        thread_id: Set(new.thread_id),
        direction: Set(new.direction),
        wamid: Set(new.wamid),
        message_type: Set(new.message_type),
        body: Set(new.body),
        payload: Set(new.payload),
        status: Set(new.status),
        error_code: Set(None),
        error_title: Set(None),
        error_details: Set(None),
        template_name: Set(new.template_name),
        template_language: Set(new.template_language),
        template_params: Set(new.template_params),
        enrollment_id: Set(new.enrollment_id),
        step_execution_id: Set(new.step_execution_id),
        occurred_at: Set(new.occurred_at),
        sent_at: Set(None),
        delivered_at: Set(None),
        read_at: Set(None),
        failed_at: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
    }
}

/// A new open thread, owned as the number's assignment rules said.
pub(super) fn new_thread_row(
    contact: ContactId,
    number: PhoneNumberId,
    customer_wa_id: String,
    (owner_user_id, owner_team_id): (Option<UserId>, Option<TeamId>),
    opened_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> thread::ActiveModel {
    thread::ActiveModel {
        id: Set(ThreadId::new()),
        contact_id: Set(contact),
        phone_number_id: Set(number),
        customer_wa_id: Set(customer_wa_id),
        status: Set(ThreadStatus::Open),
        owner_user_id: Set(owner_user_id),
        owner_team_id: Set(owner_team_id),
        window_closes_at: Set(None),
        last_inbound_at: Set(None),
        last_outbound_at: Set(None),
        first_response_at: Set(None),
        opened_at: Set(opened_at),
        closed_at: Set(None),
        updated_at: Set(now),
    }
}
