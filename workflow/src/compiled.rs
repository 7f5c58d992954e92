//! A valid workflow compiled for running: each step's one action as an
//! [`Action`], with its conditions, durations, times of day and zones
//! already parsed, and the workflow-wide rules (goal, exits, suppression,
//! re-enrollment, quiet hours, schedule audiences) likewise. The runtime
//! matches on the action and never parses the file's text again.
//!
//! Invariant: a file that passed validation always compiles; an error here
//! means a stored version was damaged, and names the step and the text.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, NaiveTime, Utc};
use chrono_tz::Tz;
use serde_json::Value;

use super::condition::Condition;
use super::duration::parse_duration;
use super::model::{
    ActionRef, EnsureThread, EventName, HttpMethod, Owner, QuietHours, Reenroll, SendTemplate, Step, UnknownOutcome,
    Wait, Workflow,
};

/// Attempts in all of a step whose policy names none, and its first delay.
const DEFAULT_ATTEMPTS: u32 = 3;
const DEFAULT_BACKOFF: Duration = Duration::from_secs(30);
/// An `http` step's timeout when it names none.
const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a stored version does not compile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{place}: {message}")]
pub struct CompileError {
    /// `step `id``, or the workflow-level key.
    pub place: String,
    pub message: String,
}

impl CompileError {
    /// A problem found in a text, before its place is known.
    fn new(message: impl Into<String>) -> Self {
        CompileError { place: String::new(), message: message.into() }
    }

    fn at(self, place: &str) -> Self {
        CompileError { place: place.to_string(), ..self }
    }
}

/// A workflow's steps and rules, ready to run.
#[derive(Debug)]
pub struct Compiled {
    steps: Vec<CompiledStep>,
    index: HashMap<String, usize>,
    /// The goal's condition.
    pub goal: Option<Condition>,
    pub exits: Vec<Exit>,
    /// Contacts matching this are never enrolled.
    pub suppress: Option<Condition>,
    pub reenroll: Reenrollment,
    pub quiet_hours: Option<Quiet>,
    /// Each trigger's schedule audience filter, by the trigger's position.
    audience_filters: Vec<Option<Condition>>,
}

/// One step, ready to run.
#[derive(Debug)]
pub struct CompiledStep {
    pub id: String,
    pub action: Action,
    /// Where the step goes after it finishes, when not the next in the list.
    pub next: Option<String>,
    pub retry: Retry,
    pub on_unknown_outcome: UnknownOutcome,
}

/// What a step does.
#[derive(Debug)]
pub enum Action {
    SendTemplate(SendTemplate),
    EnsureThread(EnsureThread),
    AssignOwner(Owner),
    Wait(WaitFor),
    WaitForReply(ReplyWait),
    /// Arms in order; the first whose condition holds (or the `else`) wins.
    Branch(Vec<Arm>),
    Split(Vec<Share>),
    /// Property name → expression.
    SetProperty(BTreeMap<String, String>),
    Http(HttpCallSpec),
    Exit {
        reason: Option<String>,
    },
}

/// What a `wait` waits for.
#[derive(Debug)]
pub enum WaitFor {
    Duration(Duration),
    Until(DateTime<Utc>),
    /// The next time this local time of day comes in `zone`.
    TimeOfDay {
        zone: Tz,
        at: NaiveTime,
    },
    /// An event for the contact; without a timeout the wait is open-ended.
    Event {
        event: EventName,
        timeout: Option<Duration>,
        on_timeout: Option<String>,
    },
}

/// A `wait_for_reply`.
#[derive(Debug)]
pub struct ReplyWait {
    pub number: String,
    pub timeout: Duration,
    pub on_reply: Option<String>,
    pub on_timeout: String,
}

/// A branch arm: `None` for the `else` arm.
#[derive(Debug)]
pub struct Arm {
    pub when: Option<Condition>,
    pub then: String,
}

/// A split arm: this share of contacts, in percent, goes to `then`.
#[derive(Debug)]
pub struct Share {
    pub percent: u32,
    pub then: String,
}

/// An `http` step's request, before its expressions are rendered.
#[derive(Debug)]
pub struct HttpCallSpec {
    pub method: HttpMethod,
    pub url: String,
    pub headers: BTreeMap<String, String>,
    pub body: Option<Value>,
    pub timeout: Duration,
}

/// A step's retries of temporary failures.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// The delay before the second attempt; it doubles each time.
    pub backoff: Duration,
}

/// One `exit_when` entry.
#[derive(Debug)]
pub enum Exit {
    OptedOut,
    /// The condition, with its text for the reason.
    When(String, Condition),
    /// A message from the contact on this number.
    RepliedOn(String),
}

/// Whether a contact may go through the workflow again.
#[derive(Debug, Clone, Copy)]
pub enum Reenrollment {
    Never,
    Always,
    After(Duration),
}

/// Quiet hours with their times parsed.
#[derive(Debug)]
pub struct Quiet {
    pub from: NaiveTime,
    pub to: NaiveTime,
    pub timezone_property: Option<String>,
}

impl Action {
    /// The action's key, as written in the file.
    pub fn name(&self) -> &'static str {
        let index = match self {
            Action::SendTemplate(_) => 0,
            Action::EnsureThread(_) => 1,
            Action::AssignOwner(_) => 2,
            Action::Wait(_) => 3,
            Action::WaitForReply(_) => 4,
            Action::Branch(_) => 5,
            Action::Split(_) => 6,
            Action::SetProperty(_) => 7,
            Action::Http(_) => 8,
            Action::Exit { .. } => 9,
        };
        ActionRef::NAMES[index]
    }
}

impl Compiled {
    /// Compiles a parsed workflow.
    pub fn new(model: &Workflow) -> Result<Compiled, CompileError> {
        let steps = model.steps.iter().map(compile_step).collect::<Result<Vec<_>, _>>()?;
        let index = steps.iter().enumerate().map(|(i, s)| (s.id.clone(), i)).collect();
        let goal = model.goal.as_ref().map(|g| condition(&g.condition)).transpose().map_err(at("goal"))?;
        let mut exits = Vec::new();
        for exit in &model.exit_when {
            if exit.opted_out == Some(true) {
                exits.push(Exit::OptedOut);
            }
            if let Some(text) = &exit.condition {
                exits.push(Exit::When(text.value.clone(), condition(text).map_err(at("exit_when"))?));
            }
            if let Some(number) = &exit.replied_on {
                exits.push(Exit::RepliedOn(number.value.clone()));
            }
        }
        let rules = &model.enrollment;
        let suppress = rules.suppress.as_ref().map(|s| condition(s)).transpose().map_err(at("enrollment.suppress"))?;
        let reenroll = match &rules.reenroll {
            Reenroll::Never => Reenrollment::Never,
            Reenroll::Always => Reenrollment::Always,
            Reenroll::After(period) => Reenrollment::After(duration(period).map_err(at("enrollment.reenroll"))?),
        };
        let quiet_hours = model.quiet_hours.as_ref().map(quiet).transpose().map_err(at("quiet_hours"))?;
        let mut audience_filters = Vec::new();
        for trigger in model.triggers.iter() {
            let filter = trigger.schedule.as_ref().and_then(|s| s.contacts.filter.as_ref());
            audience_filters.push(filter.map(|f| condition(f)).transpose().map_err(at("schedule.contacts.filter"))?);
        }
        Ok(Compiled { steps, index, goal, exits, suppress, reenroll, quiet_hours, audience_filters })
    }

    pub fn step(&self, id: &str) -> Option<&CompiledStep> {
        self.index.get(id).map(|&i| &self.steps[i])
    }

    pub fn steps(&self) -> &[CompiledStep] {
        &self.steps
    }

    /// The first step an enrollment runs.
    pub fn first_step(&self) -> &str {
        &self.steps[0].id
    }

    /// The step after `id`: its `next:`, else the following one in the
    /// list; `None` at the end of the workflow.
    pub fn after(&self, id: &str) -> Option<&str> {
        let &i = self.index.get(id)?;
        match &self.steps[i].next {
            Some(next) => Some(next.as_str()),
            None => self.steps.get(i + 1).map(|s| s.id.as_str()),
        }
    }

    /// Whether the workflow has a goal or an exit condition, checked when
    /// a contact changes.
    pub fn has_conditions(&self) -> bool {
        self.goal.is_some() || self.exits.iter().any(|e| matches!(e, Exit::When(..)))
    }

    /// The audience filter of the schedule trigger at `index`.
    pub fn audience_filter(&self, index: usize) -> Option<&Condition> {
        self.audience_filters.get(index).and_then(Option::as_ref)
    }
}

/// Places a workflow-level key's error.
fn at(place: &'static str) -> impl Fn(CompileError) -> CompileError {
    move |error| error.at(place)
}

fn compile_step(step: &Step) -> Result<CompiledStep, CompileError> {
    let place = format!("step `{}`", *step.id);
    let fail = |error: CompileError| error.at(&place);
    let Some(action) = step.action() else {
        return Err(CompileError::new("names no action, or several").at(&place));
    };
    let action = match action {
        ActionRef::SendTemplate(send) => Action::SendTemplate(send.clone()),
        ActionRef::EnsureThread(ensure) => Action::EnsureThread(ensure.clone()),
        ActionRef::AssignOwner(owner) => Action::AssignOwner(owner.clone()),
        ActionRef::Wait(wait) => Action::Wait(wait_for(wait).map_err(fail)?),
        ActionRef::WaitForReply(reply) => Action::WaitForReply(ReplyWait {
            number: reply.number.value.clone(),
            timeout: duration(&reply.timeout).map_err(fail)?,
            on_reply: reply.on_reply.as_ref().map(|s| s.value.clone()),
            on_timeout: reply.on_timeout.value.clone(),
        }),
        ActionRef::Branch(arms) => {
            let mut out = Vec::new();
            for arm in arms.iter() {
                if let (Some(text), Some(then)) = (&arm.condition, &arm.then) {
                    out.push(Arm { when: Some(condition(text).map_err(fail)?), then: then.value.clone() });
                } else if let Some(otherwise) = &arm.otherwise {
                    out.push(Arm { when: None, then: otherwise.value.clone() });
                }
            }
            Action::Branch(out)
        }
        ActionRef::Split(arms) => {
            Action::Split(arms.iter().map(|a| Share { percent: *a.percent, then: a.then.value.clone() }).collect())
        }
        ActionRef::SetProperty(properties) => {
            Action::SetProperty(properties.iter().map(|(k, v)| (k.clone(), v.value.clone())).collect())
        }
        ActionRef::Http(http) => Action::Http(HttpCallSpec {
            method: http.method,
            url: http.url.value.clone(),
            headers: http.headers.iter().map(|(k, v)| (k.clone(), v.value.clone())).collect(),
            body: http.body.clone(),
            timeout: match &http.timeout {
                Some(t) => duration(t).map_err(fail)?,
                None => DEFAULT_HTTP_TIMEOUT,
            },
        }),
        ActionRef::Exit(exit) => Action::Exit { reason: exit.reason.clone() },
    };
    let retry = match &step.retry {
        None => Retry { max_attempts: DEFAULT_ATTEMPTS, backoff: DEFAULT_BACKOFF },
        Some(policy) => Retry {
            max_attempts: policy.max_attempts,
            backoff: match &policy.backoff {
                Some(b) => duration(b).map_err(fail)?,
                None => DEFAULT_BACKOFF,
            },
        },
    };
    Ok(CompiledStep {
        id: step.id.value.clone(),
        action,
        next: step.next.as_ref().map(|n| n.value.clone()),
        retry,
        on_unknown_outcome: step.on_unknown_outcome,
    })
}

fn wait_for(wait: &Wait) -> Result<WaitFor, CompileError> {
    if let Some(duration) = &wait.duration {
        return Ok(WaitFor::Duration(self::duration(duration)?));
    }
    if let Some(until) = &wait.until {
        return DateTime::parse_from_rfc3339(until)
            .map(|t| WaitFor::Until(t.to_utc()))
            .map_err(|e| CompileError::new(format!("wait until `{}`: {e}", until.value)));
    }
    if let Some(time) = &wait.until_time {
        let zone: Tz = match &wait.timezone {
            Some(zone) => zone.parse().map_err(|_| CompileError::new(format!("unknown time zone `{}`", zone.value)))?,
            None => chrono_tz::UTC,
        };
        return Ok(WaitFor::TimeOfDay { zone, at: time_of_day(time)? });
    }
    if let Some(event) = &wait.event {
        return Ok(WaitFor::Event {
            event: **event,
            timeout: wait.timeout.as_ref().map(|t| duration(t)).transpose()?,
            on_timeout: wait.on_timeout.as_ref().map(|s| s.value.clone()),
        });
    }
    Err(CompileError::new("`wait` needs `for`, `until`, `until_time` or `event`"))
}

fn quiet(quiet: &QuietHours) -> Result<Quiet, CompileError> {
    Ok(Quiet {
        from: time_of_day(&quiet.from)?,
        to: time_of_day(&quiet.to)?,
        timezone_property: quiet.timezone_property.clone(),
    })
}

fn time_of_day(text: &str) -> Result<NaiveTime, CompileError> {
    NaiveTime::parse_from_str(text, "%H:%M").map_err(|e| CompileError::new(format!("time of day `{text}`: {e}")))
}

fn condition(text: &str) -> Result<Condition, CompileError> {
    Condition::parse(text).map_err(|e| CompileError::new(format!("condition `{text}`: {}", e.message)))
}

fn duration(text: &str) -> Result<Duration, CompileError> {
    parse_duration(text).map_err(|e| CompileError::new(e.to_string()))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn compile(source: &str) -> Compiled {
        let model = crate::parse(Path::new("t.yaml"), source).expect("parses");
        Compiled::new(&model).expect("compiles")
    }

    #[test]
    fn every_action_compiles_with_its_texts_parsed() {
        let compiled = compile(
            r#"
id: t
name: T
triggers: [{ api: {} }]
goal: { when: 'contact.plan == "pro"' }
exit_when: [{ opted_out: true }, { when: 'contact.vip == true' }]
enrollment: { reenroll: { after: 1d } }
quiet_hours: { from: "09:00", to: "20:00" }
steps:
  - id: pause
    wait: { for: 1d12h }
  - id: nightly
    wait: { until_time: "21:30", timezone: Europe/Paris }
  - id: pick
    branch:
      - if: 'contact.plan == "pro"'
        then: done
      - else: ab
  - id: ab
    split: [{ percent: 50, then: done }, { percent: 50, then: call }]
  - id: call
    http: { url: "https://example.com/x", timeout: 3s }
    retry: { max_attempts: 5, backoff: 1m }
  - id: done
    exit: { reason: finished }
"#,
        );
        let names: Vec<&str> = compiled.steps().iter().map(|s| s.action.name()).collect();
        assert_eq!(names, ["wait", "wait", "branch", "split", "http", "exit"]);
        assert!(
            matches!(compiled.step("pause").map(|s| &s.action), Some(Action::Wait(WaitFor::Duration(d))) if d.as_secs() == 129_600)
        );
        let Some(Action::Wait(WaitFor::TimeOfDay { zone, at })) = compiled.step("nightly").map(|s| &s.action) else {
            panic!("until_time compiles to a time of day");
        };
        assert_eq!((zone.name(), at.to_string().as_str()), ("Europe/Paris", "21:30:00"));
        let Some(Action::Branch(arms)) = compiled.step("pick").map(|s| &s.action) else { panic!("branch") };
        assert!(arms[0].when.as_ref().is_some_and(|c| c.evaluate(&serde_json::json!({"contact": {"plan": "pro"}}))));
        assert!(arms[1].when.is_none());
        let call = compiled.step("call").expect("call");
        assert_eq!((call.retry.max_attempts, call.retry.backoff.as_secs()), (5, 60));
        assert!(matches!(&call.action, Action::Http(h) if h.timeout.as_secs() == 3));
        assert_eq!(compiled.step("pause").map(|s| s.retry.max_attempts), Some(DEFAULT_ATTEMPTS));
        assert_eq!(compiled.after("pause"), Some("nightly"));
        assert_eq!(compiled.after("done"), None);
        assert!(matches!(compiled.reenroll, Reenrollment::After(d) if d.as_secs() == 86_400));
        assert!(compiled.quiet_hours.as_ref().is_some_and(|q| q.from.to_string() == "09:00:00"));
        assert_eq!(compiled.exits.len(), 2);
        assert!(compiled.has_conditions());
    }

    #[test]
    fn a_damaged_version_names_the_step_and_the_text() {
        let model = crate::parse(
            Path::new("t.yaml"),
            "id: t\nname: T\ntriggers: [{ api: {} }]\nsteps:\n  - id: pause\n    wait: { for: soon }\n",
        )
        .expect("parses");
        let err = Compiled::new(&model).expect_err("a bad duration does not compile");
        assert_eq!(err.place, "step `pause`");
        assert!(err.message.contains("invalid duration `soon`"), "{err}");
    }
}
