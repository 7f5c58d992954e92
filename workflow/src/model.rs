//! The workflow file format, as Rust types. `docs/workflows.md` documents
//! every field; `kairo schema` prints the JSON Schema derived from these types.
//!
//! Steps are plain structs with one optional field per action rather than a
//! tagged enum: the YAML parser then reports positions inside a step exactly,
//! and `validate` checks that each step names exactly one action.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::located::Located;

/// A workflow file.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Workflow {
    /// Stable identifier: lower-case letters, digits, `-` and `_`. Renaming it
    /// makes a different workflow.
    pub id: Located<String>,
    /// Human-readable name shown in reports.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// What enrolls contacts. At least one.
    pub triggers: Located<Vec<Trigger>>,
    /// Who may enroll, and how often.
    #[serde(default)]
    pub enrollment: Enrollment,
    /// Conditions that end an enrollment early, as `exited`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exit_when: Vec<ExitCondition>,
    /// Reaching the goal ends the enrollment as `goal_met`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goal: Option<Goal>,
    /// Sends only go out between these local times of the recipient.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet_hours: Option<QuietHours>,
    /// The steps, run in order unless a step says where to go next.
    pub steps: Located<Vec<Step>>,
}

/// One trigger; write exactly one of its keys.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Trigger {
    /// An inbound WhatsApp message on a business number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound_message: Option<InboundMessageTrigger>,
    /// A contact opted in (sent YES, START, SUBSCRIBE, …) on a number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opt_in: Option<NumberTrigger>,
    /// A contact opted out (sent STOP, …) on a number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opt_out: Option<NumberTrigger>,
    /// An outbound message changed status (sent, delivered, read, failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_status: Option<MessageStatusTrigger>,
    /// A cron schedule in a time zone, enrolling the contacts it selects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ScheduleTrigger>,
    /// Enrollment through the HTTP API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<ApiTrigger>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InboundMessageTrigger {
    /// The business number: display form (`+1 555-010-0100`), digits, or Graph id.
    pub number: Located<String>,
    /// Match when the whole message (trimmed, case- and width-insensitive) is one of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keywords: Vec<String>,
    /// Match on the message text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<TextMatch>,
}

/// How message text is matched (case- and NFKC-insensitive). Write one key.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TextMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contains: Option<String>,
    /// A regular expression (Rust `regex` syntax).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<Located<String>>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NumberTrigger {
    /// The business number.
    pub number: Located<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageStatusTrigger {
    pub number: Located<String>,
    /// Which statuses fire it.
    pub statuses: Vec<DeliveryStatusName>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatusName {
    Sent,
    Delivered,
    Read,
    Failed,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleTrigger {
    /// Cron expression, 5 fields (`minute hour day-of-month month day-of-week`) or 6 with seconds.
    pub cron: Located<String>,
    /// IANA time zone the cron expression is read in, e.g. `Europe/Paris`.
    pub timezone: Located<String>,
    /// Which contacts each tick enrolls.
    pub contacts: Audience,
}

/// A selection of contacts.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Audience {
    /// Only contacts opted in on this business number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opted_in_on: Option<Located<String>>,
    /// A condition over `contact.*`.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "where")]
    pub filter: Option<Located<String>>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiTrigger {
    /// Trigger data fields the caller must send.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Enrollment {
    /// Whether a contact may go through the workflow again.
    #[serde(default)]
    pub reenroll: Reenroll,
    /// Allow several enrollments of one contact at the same time (default: one).
    #[serde(default)]
    pub concurrent: bool,
    /// Contacts matching this condition are never enrolled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suppress: Option<Located<String>>,
}

/// `never` (default), `always`, or `{ after: 30d }`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Reenroll {
    #[default]
    Never,
    Always,
    /// Again once this long has passed since the last enrollment.
    After(Located<String>),
}

/// One exit condition; write one key.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExitCondition {
    /// Exit when the contact opts out on any number (`true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opted_out: Option<bool>,
    /// Exit when this condition over `contact.*` holds.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "when")]
    pub condition: Option<Located<String>>,
    /// Exit when the contact sends a message on this number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replied_on: Option<Located<String>>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Goal {
    /// The goal is met when this condition holds.
    #[serde(rename = "when")]
    pub condition: Located<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QuietHours {
    /// Earliest local time a send may go out, `HH:MM`.
    pub from: Located<String>,
    /// Latest local time, `HH:MM`.
    pub to: Located<String>,
    /// Contact property holding the recipient's IANA time zone; when absent or
    /// empty the zone is inferred from the phone number's country code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone_property: Option<String>,
}

/// One step: an `id`, exactly one action key, and optional flow and policy.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Unique within the workflow; other steps and expressions refer to it.
    pub id: Located<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_template: Option<SendTemplate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ensure_thread: Option<EnsureThread>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assign_owner: Option<Owner>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<Wait>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_for_reply: Option<WaitForReply>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<Located<Vec<BranchArm>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<Located<Vec<SplitArm>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_property: Option<BTreeMap<String, Located<String>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpRequest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<ExitStep>,
    /// The step to run after this one (default: the next in the list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<Located<String>>,
    /// Retries for temporary failures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// What to do when a call may or may not have reached the other side.
    #[serde(default)]
    pub on_unknown_outcome: UnknownOutcome,
}

/// One action a step names, borrowed from the file: the one list of
/// Kairo's actions. Validation reads a step's actions through it, and
/// [`super::compiled`] turns the single one of a valid step into its
/// compiled [`super::compiled::Action`].
#[derive(Debug, Clone, Copy)]
pub enum ActionRef<'a> {
    SendTemplate(&'a SendTemplate),
    EnsureThread(&'a EnsureThread),
    AssignOwner(&'a Owner),
    Wait(&'a Wait),
    WaitForReply(&'a WaitForReply),
    Branch(&'a Located<Vec<BranchArm>>),
    Split(&'a Located<Vec<SplitArm>>),
    SetProperty(&'a BTreeMap<String, Located<String>>),
    Http(&'a HttpRequest),
    Exit(&'a ExitStep),
}

impl ActionRef<'_> {
    /// Every action's key, in the order the reference lists them.
    pub const NAMES: [&'static str; 10] = [
        "send_template",
        "ensure_thread",
        "assign_owner",
        "wait",
        "wait_for_reply",
        "branch",
        "split",
        "set_property",
        "http",
        "exit",
    ];

    /// The action's key, as written in the file.
    pub fn name(&self) -> &'static str {
        let index = match self {
            ActionRef::SendTemplate(_) => 0,
            ActionRef::EnsureThread(_) => 1,
            ActionRef::AssignOwner(_) => 2,
            ActionRef::Wait(_) => 3,
            ActionRef::WaitForReply(_) => 4,
            ActionRef::Branch(_) => 5,
            ActionRef::Split(_) => 6,
            ActionRef::SetProperty(_) => 7,
            ActionRef::Http(_) => 8,
            ActionRef::Exit(_) => 9,
        };
        Self::NAMES[index]
    }
}

impl Step {
    /// The actions this step writes, in the reference's order: exactly one
    /// in a valid file.
    pub fn actions(&self) -> Vec<ActionRef<'_>> {
        let mut out = Vec::new();
        out.extend(self.send_template.as_ref().map(ActionRef::SendTemplate));
        out.extend(self.ensure_thread.as_ref().map(ActionRef::EnsureThread));
        out.extend(self.assign_owner.as_ref().map(ActionRef::AssignOwner));
        out.extend(self.wait.as_ref().map(ActionRef::Wait));
        out.extend(self.wait_for_reply.as_ref().map(ActionRef::WaitForReply));
        out.extend(self.branch.as_ref().map(ActionRef::Branch));
        out.extend(self.split.as_ref().map(ActionRef::Split));
        out.extend(self.set_property.as_ref().map(ActionRef::SetProperty));
        out.extend(self.http.as_ref().map(ActionRef::Http));
        out.extend(self.exit.as_ref().map(ActionRef::Exit));
        out
    }

    /// The step's action, when it names exactly one.
    pub fn action(&self) -> Option<ActionRef<'_>> {
        match self.actions().as_slice() {
            [one] => Some(*one),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SendTemplate {
    /// The sending business number.
    pub number: Located<String>,
    /// The approved template's name.
    pub template: Located<String>,
    /// The template language, e.g. `en_US`.
    pub language: Located<String>,
    /// Header parameter: text for a `{{1}}` text header, or a media link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<Located<HeaderParam>>,
    /// Body parameters: a list for positional templates, a map for named ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Located<Params>>,
    /// Parameters of buttons that need one (URL suffixes, coupon codes, payloads).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub buttons: Vec<Located<ButtonParam>>,
    /// Inside the 24-hour window, send this free-form text instead of the template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when_window_open: Option<WindowText>,
}

/// Positional (`[a, b]`) or named (`{first_name: a}`) parameters.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(
    untagged,
    expecting = "`body` is a list of texts for positional parameters (`body: [\"{{contact.name}}\"]`) or a map of names to texts for named ones (`body: {first_name: \"{{contact.name}}\"}`)"
)]
pub enum Params {
    Positional(Vec<String>),
    Named(BTreeMap<String, String>),
}

/// A header parameter: text, or a media link.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(
    untagged,
    expecting = "`header` is a text (`header: \"{{contact.name}}\"`) or a media link (`header: {image: \"https://…\"}`, or `video`, `document`)"
)]
pub enum HeaderParam {
    Text(String),
    Media(MediaParam),
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MediaParam {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ButtonParam {
    /// Zero-based position of the button in the template.
    pub index: usize,
    /// URL suffix for a URL button with `{{1}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Payload returned when a quick-reply button is tapped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    /// Code of a copy-code button.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coupon_code: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WindowText {
    pub text: Located<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnsureThread {
    pub number: Located<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
}

/// A thread owner; write one key.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Owner {
    /// An agent, by e-mail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<Located<String>>,
    /// A team (the thread's team; no one person).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<Located<String>>,
    /// The next member of this team, in turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round_robin: Option<Located<String>>,
    /// `assign_owner` only: the business number whose thread with the
    /// contact is assigned. Default: the number of the enrollment's own
    /// conversation (its `ensure_thread` step, else the number its trigger
    /// came in on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<Located<String>>,
}

/// A durable wait; write one of `for`, `until`, `until_time` or `event`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Wait {
    /// A duration: `30m`, `2h`, `3d`, `1w`, `1d12h`.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "for")]
    pub duration: Option<Located<String>>,
    /// An RFC 3339 date-time, e.g. `2026-12-24T09:00:00+01:00`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<Located<String>>,
    /// The next time this local time of day (`HH:MM`) comes, in `timezone`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_time: Option<Located<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<Located<String>>,
    /// Wait until this event arrives for the contact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<Located<EventName>>,
    /// With `event`: give up after this long…
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Located<String>>,
    /// …and go to this step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_timeout: Option<Located<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventName {
    InboundMessage,
    OptIn,
    OptOut,
    Delivered,
    Read,
    Failed,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitForReply {
    pub number: Located<String>,
    /// How long to wait for the reply.
    pub timeout: Located<String>,
    /// Step to go to when the contact replies (default: the next step).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_reply: Option<Located<String>>,
    /// Step to go to when no reply came in time.
    pub on_timeout: Located<String>,
}

/// `if:`/`then:` arms, then optionally one `else:` arm.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BranchArm {
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "if")]
    pub condition: Option<Located<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub then: Option<Located<String>>,
    /// The step to take when no `if` matched.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "else")]
    pub otherwise: Option<Located<String>>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SplitArm {
    /// Share of contacts, in percent; the arms add up to 100.
    pub percent: Located<u32>,
    pub then: Located<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpRequest {
    #[serde(default)]
    pub method: HttpMethod,
    /// The URL; may contain expressions.
    pub url: Located<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, Located<String>>,
    /// A JSON body; string values may contain expressions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<serde_json::Value>,
    /// Give up after this long (default `10s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Located<String>>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    Get,
    #[default]
    Post,
    Put,
    Patch,
    Delete,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExitStep {
    /// Why, for reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (default 3).
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Delay before the second attempt; doubles each time (default `30s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Located<String>>,
}

fn default_attempts() -> u32 {
    3
}

/// After a crash or timeout that leaves an external call's outcome unknown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum UnknownOutcome {
    /// Do not repeat; mark the step uncertain and go on (default).
    #[default]
    Continue,
    /// Do not repeat; mark the step uncertain and fail the enrollment.
    Fail,
    /// Repeat the call (may duplicate it).
    Repeat,
}
