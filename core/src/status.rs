//! The lowercase names that status columns hold, as enums.
//!
//! The store maps rows to these in one place (sea-orm's active enums), so no
//! other code compares status strings.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// Whether a contact may be sent templates from one business number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, EnumIter, DeriveActiveEnum, Serialize, Deserialize, utoipa::ToSchema)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
#[serde(rename_all = "snake_case")]
pub enum ConsentStatus {
    #[sea_orm(string_value = "opted_in")]
    OptedIn,
    #[sea_orm(string_value = "opted_out")]
    OptedOut,
}

/// Where a consent change came from, for the audit trail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, EnumIter, DeriveActiveEnum, Serialize, Deserialize, utoipa::ToSchema)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
#[serde(rename_all = "snake_case")]
pub enum ConsentSource {
    /// An inbound message whose whole text was an opt-in or opt-out keyword.
    #[sea_orm(string_value = "keyword")]
    Keyword,
    /// The HTTP API or an import.
    #[sea_orm(string_value = "api")]
    Api,
    /// An operator, by hand.
    #[sea_orm(string_value = "operator")]
    Operator,
}

/// What a person may do in the web pages: an agent answers threads; an
/// admin also manages people, teams and numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, EnumIter, DeriveActiveEnum, Serialize, Deserialize, utoipa::ToSchema)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
#[serde(rename_all = "snake_case")]
pub enum UserRole {
    #[sea_orm(string_value = "agent")]
    Agent,
    #[sea_orm(string_value = "admin")]
    Admin,
}

impl UserRole {
    pub fn as_str(self) -> &'static str {
        match self {
            UserRole::Agent => "agent",
            UserRole::Admin => "admin",
        }
    }

    /// `agent` or `admin`, as typed on a command line or in a request.
    pub fn parse(text: &str) -> Option<UserRole> {
        match text.trim().to_ascii_lowercase().as_str() {
            "agent" => Some(UserRole::Agent),
            "admin" => Some(UserRole::Admin),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, EnumIter, DeriveActiveEnum, Serialize, Deserialize, utoipa::ToSchema)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
#[serde(rename_all = "snake_case")]
pub enum ThreadStatus {
    #[sea_orm(string_value = "open")]
    Open,
    #[sea_orm(string_value = "closed")]
    Closed,
}

/// What happened to a thread, as its timeline shows it. Written by the
/// store's threads module in the transaction of the change itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, EnumIter, DeriveActiveEnum, Serialize, Deserialize, utoipa::ToSchema)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
#[serde(rename_all = "snake_case")]
pub enum ThreadEventKind {
    /// A contact's first message (or a workflow's send) opened it, owned as
    /// the number's assignment rules said.
    #[sea_orm(string_value = "opened")]
    Opened,
    /// An agent, a workflow or the API gave it an owner.
    #[sea_orm(string_value = "assigned")]
    Assigned,
    /// Its owner was taken away.
    #[sea_orm(string_value = "unassigned")]
    Unassigned,
    #[sea_orm(string_value = "closed")]
    Closed,
    #[sea_orm(string_value = "reopened")]
    Reopened,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, EnumIter, DeriveActiveEnum, Serialize, Deserialize, utoipa::ToSchema)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    #[sea_orm(string_value = "inbound")]
    Inbound,
    #[sea_orm(string_value = "outbound")]
    Outbound,
}

/// A message's delivery status. Outbound messages move forward only:
/// sending, sent, delivered, read (or failed); inbound ones are `received`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, EnumIter, DeriveActiveEnum, Serialize, Deserialize, utoipa::ToSchema)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    #[sea_orm(string_value = "received")]
    Received,
    /// Recorded before the request leaves; still `sending` after a crash means
    /// the outcome is unknown.
    #[sea_orm(string_value = "sending")]
    Sending,
    #[sea_orm(string_value = "sent")]
    Sent,
    #[sea_orm(string_value = "delivered")]
    Delivered,
    #[sea_orm(string_value = "read")]
    Read,
    #[sea_orm(string_value = "failed")]
    Failed,
}

/// Where an enrollment stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, EnumIter, DeriveActiveEnum, Serialize, Deserialize, utoipa::ToSchema)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
#[serde(rename_all = "snake_case")]
pub enum EnrollmentStatus {
    /// A step is due or running.
    #[sea_orm(string_value = "active")]
    Active,
    /// Parked on a durable timer or an event.
    #[sea_orm(string_value = "waiting")]
    Waiting,
    #[sea_orm(string_value = "completed")]
    Completed,
    #[sea_orm(string_value = "goal_met")]
    GoalMet,
    /// Left through an exit condition or an exit step.
    #[sea_orm(string_value = "exited")]
    Exited,
    #[sea_orm(string_value = "failed")]
    Failed,
    #[sea_orm(string_value = "cancelled")]
    Cancelled,
}

/// Where one attempt of one step stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, EnumIter, DeriveActiveEnum, Serialize, Deserialize, utoipa::ToSchema)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    #[sea_orm(string_value = "pending")]
    Pending,
    /// Held by one worker under a lease; nothing external has happened yet.
    #[sea_orm(string_value = "claimed")]
    Claimed,
    /// An external call (a send, an HTTP request) may have left.
    #[sea_orm(string_value = "attempting")]
    Attempting,
    /// A wait step parked on its timer (and maybe an event); the timer or the
    /// event moves it to `succeeded`.
    #[sea_orm(string_value = "waiting")]
    Waiting,
    #[sea_orm(string_value = "succeeded")]
    Succeeded,
    #[sea_orm(string_value = "skipped")]
    Skipped,
    #[sea_orm(string_value = "failed")]
    Failed,
    /// Found `attempting` after a crash: never guessed, never repeated by default.
    #[sea_orm(string_value = "uncertain")]
    Uncertain,
    /// The enrollment ended (cancelled, exited, goal met) before this ran.
    #[sea_orm(string_value = "cancelled")]
    Cancelled,
}

impl EnrollmentStatus {
    /// The statuses of an enrollment that still runs: a step is due, running
    /// or parked. Every other status is final.
    pub const RUNNING: [EnrollmentStatus; 2] = [EnrollmentStatus::Active, EnrollmentStatus::Waiting];

    pub fn is_running(self) -> bool {
        EnrollmentStatus::RUNNING.contains(&self)
    }

    /// Whether an enrollment may move from this status to `next`: a running
    /// one anywhere (its steps move it between active and waiting, and end
    /// it); a failed one back to active (an operator's retry); a finished
    /// one nowhere else.
    pub fn may_become(self, next: EnrollmentStatus) -> bool {
        self.is_running() || (self == EnrollmentStatus::Failed && next == EnrollmentStatus::Active)
    }
}

impl StepState {
    /// Held by a worker under its lease: the states its result finishes
    /// (a step that is neither was taken over, or cancelled, meanwhile).
    pub const HELD: [StepState; 2] = [StepState::Claimed, StepState::Attempting];
    /// Not run yet, or parked: what ending an enrollment cancels.
    pub const OPEN: [StepState; 3] = [StepState::Pending, StepState::Waiting, StepState::Claimed];

    /// Whether a step may move from this state to `next`. The moves:
    /// - pending → claimed (a worker's claim) or cancelled;
    /// - claimed → attempting (an external call may leave), back to pending
    ///   (given back, deferred), or to a result;
    /// - attempting → claimed (the call did not leave), pending (deferred
    ///   after a refused call: same attempt), or a result, `uncertain`
    ///   included;
    /// - waiting → succeeded (its timer or event) or cancelled;
    /// - uncertain → succeeded (its status webhook proved the send).
    ///
    /// A result is succeeded, skipped, failed, uncertain, waiting (parked)
    /// or cancelled; succeeded, skipped, failed and cancelled are final.
    pub fn may_become(self, next: StepState) -> bool {
        use StepState::*;
        let result = matches!(next, Succeeded | Skipped | Failed | Uncertain | Waiting | Cancelled);
        match self {
            Pending => matches!(next, Claimed | Cancelled),
            Claimed => matches!(next, Attempting | Pending) || result,
            Attempting => matches!(next, Claimed | Pending) || result,
            Waiting => matches!(next, Succeeded | Cancelled),
            Uncertain => next == Succeeded,
            Succeeded | Skipped | Failed | Cancelled => false,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, EnumIter, DeriveActiveEnum, Serialize, Deserialize, utoipa::ToSchema)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
#[serde(rename_all = "snake_case")]
pub enum TimerState {
    #[sea_orm(string_value = "pending")]
    Pending,
    #[sea_orm(string_value = "fired")]
    Fired,
    #[sea_orm(string_value = "cancelled")]
    Cancelled,
}

/// What a pending timer waits for, in the words its `kind` column holds:
/// `wait` (a time only), `event:<name>` (an event for the contact, or its
/// timeout), `reply:<number id>` (a message from the contact on that number,
/// or its timeout).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TimerKind {
    Wait,
    /// The event's name (`opt_in`, `delivered`, …).
    Event(String),
    Reply(crate::ids::PhoneNumberId),
}

impl TimerKind {
    /// Reads a `kind` column; None for a kind this version does not know.
    pub fn parse(column: &str) -> Option<TimerKind> {
        if column == "wait" {
            return Some(TimerKind::Wait);
        }
        if let Some(event) = column.strip_prefix("event:") {
            return Some(TimerKind::Event(event.to_string()));
        }
        column.strip_prefix("reply:")?.parse().ok().map(TimerKind::Reply)
    }
}

impl std::fmt::Display for TimerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TimerKind::Wait => f.write_str("wait"),
            TimerKind::Event(name) => write!(f, "event:{name}"),
            TimerKind::Reply(number) => write!(f, "reply:{number}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{EnrollmentStatus, StepState, TimerKind};
    use crate::ids::PhoneNumberId;
    use sea_orm::Iterable;

    #[test]
    fn final_states_stay_final_and_the_named_sets_move_where_they_say() {
        for state in [StepState::Succeeded, StepState::Skipped, StepState::Failed, StepState::Cancelled] {
            assert!(StepState::iter().all(|next| !state.may_become(next)), "{state:?} is final");
        }
        for held in StepState::HELD {
            for result in [StepState::Succeeded, StepState::Failed, StepState::Waiting, StepState::Uncertain] {
                assert!(held.may_become(result), "{held:?} -> {result:?}");
            }
        }
        assert!(StepState::OPEN.iter().all(|s| s.may_become(StepState::Cancelled)));
        assert!(!StepState::Pending.may_become(StepState::Attempting), "a call leaves only from a claim");
        assert!(!StepState::Uncertain.may_become(StepState::Pending), "an uncertain send is never sent again");
        assert!(EnrollmentStatus::Failed.may_become(EnrollmentStatus::Active));
        assert!(!EnrollmentStatus::Completed.may_become(EnrollmentStatus::Active));
        let running: Vec<_> = EnrollmentStatus::iter().filter(|s| s.is_running()).collect();
        assert_eq!(running, EnrollmentStatus::RUNNING);
    }

    #[test]
    fn timer_kinds_read_back_what_they_write() {
        let number = PhoneNumberId::new();
        for kind in [TimerKind::Wait, TimerKind::Event("opt_in".into()), TimerKind::Reply(number)] {
            assert_eq!(TimerKind::parse(&kind.to_string()), Some(kind.clone()), "{kind}");
        }
        assert_eq!(TimerKind::Reply(number).to_string(), format!("reply:{number}"));
        assert_eq!(TimerKind::parse("later:1"), None);
    }
}
