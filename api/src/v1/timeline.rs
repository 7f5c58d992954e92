//! A thread's events beside its messages: opened, assigned, closed and
//! reopened (the thread's own history), the contact's consent changes on
//! the thread's number and the workflows it was enrolled in while the
//! thread was open. `GET /v1/threads/{id}` returns them; the inbox page
//! shows them between the messages.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ApiError;
use kairo_core::ids::{EnrollmentId, TeamId, UserId};
use kairo_core::status::{ConsentSource, ConsentStatus, ThreadEventKind};
use kairo_store::{Store, Thread, User};

/// An agent, as a message or an event names them (who sent a reply, who
/// assigned a thread).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SentBy {
    pub id: UserId,
    /// Empty only when the user has been deleted since.
    pub email: Option<String>,
    pub name: Option<String>,
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TimelineKind {
    Opened,
    Assigned,
    Unassigned,
    Closed,
    Reopened,
    OptedIn,
    OptedOut,
    Enrolled,
}

/// One event of a thread's timeline.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TimelineEvent {
    pub kind: TimelineKind,
    pub at: DateTime<Utc>,
    /// The agent who did it; none for assignment rules, workflows, API
    /// tokens and the contact.
    pub by: Option<SentBy>,
    /// The owner after an assignment (or the rules' owner of a new thread).
    pub owner_user: Option<UserId>,
    pub owner_team: Option<TeamId>,
    /// Consent changes: how (`keyword`, `api`, `operator`) and the keyword.
    pub source: Option<ConsentSource>,
    pub keyword: Option<String>,
    /// Enrollments: the workflow's name and the enrollment.
    pub workflow: Option<String>,
    pub enrollment: Option<EnrollmentId>,
}

impl TimelineEvent {
    fn new(kind: TimelineKind, at: DateTime<Utc>) -> TimelineEvent {
        TimelineEvent {
            kind,
            at,
            by: None,
            owner_user: None,
            owner_team: None,
            source: None,
            keyword: None,
            workflow: None,
            enrollment: None,
        }
    }
}

/// The timeline of `thread`, oldest first.
pub(crate) async fn timeline(store: &Store, thread: &Thread, users: &[User]) -> Result<Vec<TimelineEvent>, ApiError> {
    let during = |at: DateTime<Utc>| at >= thread.opened_at && thread.closed_at.is_none_or(|closed| at <= closed);
    let mut events: Vec<TimelineEvent> =
        store.thread_events(thread.id).await?.into_iter().map(|e| own_event(e, users)).collect();
    for change in store.consent_history(thread.contact_id, thread.phone_number_id).await? {
        if !during(change.occurred_at) {
            continue;
        }
        let kind = match change.status {
            ConsentStatus::OptedIn => TimelineKind::OptedIn,
            ConsentStatus::OptedOut => TimelineKind::OptedOut,
        };
        let mut event = TimelineEvent::new(kind, change.occurred_at);
        event.source = Some(change.source);
        event.keyword = change.keyword;
        events.push(event);
    }
    let workflows = store.workflows().await?;
    for enrollment in store.enrollments_of(thread.contact_id).await? {
        if !during(enrollment.enrolled_at) {
            continue;
        }
        let mut event = TimelineEvent::new(TimelineKind::Enrolled, enrollment.enrolled_at);
        event.workflow = workflows.iter().find(|w| w.id == enrollment.workflow_id).map(|w| w.name.clone());
        event.enrollment = Some(enrollment.id);
        events.push(event);
    }
    events.sort_by_key(|e| e.at);
    Ok(events)
}

fn own_event(event: kairo_store::ThreadEvent, users: &[User]) -> TimelineEvent {
    let kind = match event.kind {
        ThreadEventKind::Opened => TimelineKind::Opened,
        ThreadEventKind::Assigned => TimelineKind::Assigned,
        ThreadEventKind::Unassigned => TimelineKind::Unassigned,
        ThreadEventKind::Closed => TimelineKind::Closed,
        ThreadEventKind::Reopened => TimelineKind::Reopened,
    };
    let mut out = TimelineEvent::new(kind, event.occurred_at);
    out.by = event.actor_user_id.map(|id| {
        let user = users.iter().find(|u| u.id == id);
        SentBy { id, email: user.map(|u| u.email.clone()), name: user.map(|u| u.name.clone()) }
    });
    out.owner_user = event.owner_user_id;
    out.owner_team = event.owner_team_id;
    out
}
