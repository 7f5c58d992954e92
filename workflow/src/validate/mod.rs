//! Every check of a parsed workflow, collecting all problems in one run.

mod expressions;
mod sends;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::LazyLock;

use regex::Regex;

use super::catalog::Catalog;
use super::condition::Condition;
use super::duration::parse_duration;
use super::located::{Located, Pos};
use super::model::*;
use super::{Diagnostic, closest, list};

static ID: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[a-z0-9][a-z0-9_-]*$").expect("valid pattern"));
static HHMM: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^([01][0-9]|2[0-3]):[0-5][0-9]$").expect("valid pattern"));

struct Checker<'a> {
    path: &'a Path,
    catalog: Option<&'a Catalog>,
    step_ids: BTreeSet<String>,
    problems: Vec<Diagnostic>,
    /// What is allowed but probably not meant: the file still loads.
    warnings: Vec<Diagnostic>,
    /// Send steps that go on when their outcome is unknown
    /// (`on_unknown_outcome: continue`, the default): their output then
    /// holds no `wamid`.
    uncertain_sends: BTreeSet<String>,
    /// Reachability is only meaningful when ids are unique and every
    /// reference resolves; otherwise it would repeat those errors.
    flow_broken: bool,
}

/// The problems of a workflow (it is not loaded while there are any) and
/// its warnings.
pub(super) fn validate(
    workflow: &Workflow,
    path: &Path,
    catalog: Option<&Catalog>,
) -> (Vec<Diagnostic>, Vec<Diagnostic>) {
    let step_ids = workflow.steps.iter().map(|s| s.id.value.clone()).collect();
    let uncertain_sends = workflow
        .steps
        .iter()
        .filter(|s| s.send_template.is_some() && s.on_unknown_outcome == UnknownOutcome::Continue)
        .map(|s| s.id.value.clone())
        .collect();
    let mut checker = Checker {
        path,
        catalog,
        step_ids,
        problems: Vec::new(),
        warnings: Vec::new(),
        uncertain_sends,
        flow_broken: false,
    };
    checker.workflow(workflow);
    checker.problems.sort_by_key(|d| (d.line, d.column));
    checker.warnings.sort_by_key(|d| (d.line, d.column));
    (checker.problems, checker.warnings)
}

impl Checker<'_> {
    fn report(&mut self, pos: Pos, message: impl Into<String>) {
        self.problems.push(Diagnostic::new(self.path, pos, message));
    }

    fn workflow(&mut self, workflow: &Workflow) {
        if !ID.is_match(&workflow.id) {
            self.report(
                workflow.id.pos,
                format!("invalid workflow id `{}`: use lower-case letters, digits, `-` and `_`", *workflow.id),
            );
        }
        if workflow.triggers.is_empty() {
            self.report(workflow.triggers.pos, "a workflow needs at least one trigger");
        }
        for trigger in workflow.triggers.iter() {
            self.trigger(trigger, workflow.triggers.pos);
        }
        if let Reenroll::After(period) = &workflow.enrollment.reenroll {
            self.duration(period);
        }
        if let Some(suppress) = &workflow.enrollment.suppress {
            self.condition(suppress);
        }
        for exit in &workflow.exit_when {
            let set = [exit.opted_out.is_some(), exit.condition.is_some(), exit.replied_on.is_some()];
            if set.iter().filter(|s| **s).count() != 1 {
                let pos = exit.condition.as_ref().or(exit.replied_on.as_ref()).map_or(workflow.steps.pos, |c| c.pos);
                self.report(pos, "each `exit_when` entry takes exactly one of `opted_out`, `when`, `replied_on`");
            }
            if let Some(condition) = &exit.condition {
                self.condition(condition);
            }
            if let Some(number) = &exit.replied_on {
                self.number(number);
            }
        }
        if let Some(goal) = &workflow.goal {
            self.condition(&goal.condition);
        }
        if let Some(quiet) = &workflow.quiet_hours {
            for time in [&quiet.from, &quiet.to] {
                self.time_of_day(time);
            }
        }
        self.steps(&workflow.steps);
    }

    fn trigger(&mut self, trigger: &Trigger, list_pos: Pos) {
        let set = [
            trigger.inbound_message.is_some(),
            trigger.opt_in.is_some(),
            trigger.opt_out.is_some(),
            trigger.message_status.is_some(),
            trigger.schedule.is_some(),
            trigger.api.is_some(),
        ];
        if set.iter().filter(|s| **s).count() != 1 {
            self.report(
                list_pos,
                "each trigger takes exactly one of `inbound_message`, `opt_in`, `opt_out`, `message_status`, `schedule`, `api`",
            );
        }
        if let Some(inbound) = &trigger.inbound_message {
            self.number(&inbound.number);
            if inbound.keywords.iter().any(|k| k.trim().is_empty()) {
                self.report(inbound.number.pos, "a keyword is empty");
            }
            if let Some(text) = &inbound.text {
                let set = [text.exact.is_some(), text.contains.is_some(), text.regex.is_some()];
                if set.iter().filter(|s| **s).count() != 1 {
                    self.report(inbound.number.pos, "`text` takes exactly one of `exact`, `contains`, `regex`");
                }
                if let Some(pattern) = &text.regex
                    && let Err(err) = Regex::new(pattern)
                {
                    let reason = err.to_string().lines().last().unwrap_or_default().trim().to_string();
                    self.report(pattern.pos, format!("invalid regular expression `{}`: {reason}", pattern.value));
                }
            }
        }
        for number in [&trigger.opt_in, &trigger.opt_out].into_iter().flatten() {
            self.number(&number.number);
        }
        if let Some(status) = &trigger.message_status {
            self.number(&status.number);
        }
        if let Some(schedule) = &trigger.schedule {
            if let Err(err) = schedule.cron.parse::<croner::Cron>() {
                self.report(schedule.cron.pos, format!("invalid cron expression `{}`: {err}", *schedule.cron));
            }
            self.timezone(&schedule.timezone);
            if let Some(number) = &schedule.contacts.opted_in_on {
                self.number(number);
            }
            if let Some(filter) = &schedule.contacts.filter {
                self.condition(filter);
            }
        }
    }

    fn steps(&mut self, steps: &Located<Vec<Step>>) {
        if steps.is_empty() {
            self.report(steps.pos, "a workflow needs at least one step");
            return;
        }
        let mut seen: HashMap<&str, Pos> = HashMap::new();
        for step in steps.iter() {
            if !ID.is_match(&step.id) {
                self.report(
                    step.id.pos,
                    format!("invalid step id `{}`: use lower-case letters, digits, `-` and `_`", *step.id),
                );
            }
            if let Some(first) = seen.insert(&step.id, step.id.pos) {
                self.flow_broken = true;
                self.report(
                    step.id.pos,
                    format!("duplicate step id `{}` (first used at line {})", *step.id, first.line),
                );
            }
        }
        for (index, step) in steps.iter().enumerate() {
            self.step(step, &steps[..index]);
        }
        if !self.flow_broken {
            self.reachability(steps);
        }
    }

    fn step(&mut self, step: &Step, earlier: &[Step]) {
        let present: Vec<&str> = step.actions().iter().map(ActionRef::name).collect();
        match present.len() {
            1 => {}
            0 => self.report(
                step.id.pos,
                format!("step `{}` has no action: add one of {}", *step.id, list(ActionRef::NAMES.iter().copied())),
            ),
            _ => self.report(
                step.id.pos,
                format!(
                    "step `{}` has several actions ({}): split it into one step per action",
                    *step.id,
                    list(present.iter().copied())
                ),
            ),
        }
        let earlier: BTreeSet<&str> = earlier.iter().map(|s| s.id.value.as_str()).collect();
        if let Some(send) = &step.send_template {
            self.send_template(send, &earlier);
        }
        if let Some(thread) = &step.ensure_thread {
            self.number(&thread.number);
            if let Some(owner) = &thread.owner {
                self.owner(owner, step.id.pos);
                if let Some(number) = &owner.number {
                    self.report(number.pos, "`number` goes on `ensure_thread` itself, not on its owner");
                }
            }
        }
        if let Some(owner) = &step.assign_owner {
            self.owner(owner, step.id.pos);
            if let Some(number) = &owner.number {
                self.number(number);
            }
        }
        if let Some(wait) = &step.wait {
            self.wait(wait, step.id.pos);
        }
        if let Some(reply) = &step.wait_for_reply {
            self.number(&reply.number);
            self.duration(&reply.timeout);
            self.step_ref(&reply.on_timeout);
            if let Some(on_reply) = &reply.on_reply {
                self.step_ref(on_reply);
            }
        }
        if let Some(arms) = &step.branch {
            self.branch(arms);
        }
        if let Some(arms) = &step.split {
            self.split(arms);
        }
        if let Some(properties) = &step.set_property {
            for value in properties.values() {
                self.expression(value, &earlier);
            }
        }
        if let Some(http) = &step.http {
            self.http(http, &earlier);
        }
        if let Some(next) = &step.next {
            self.step_ref(next);
        }
        if let Some(retry) = &step.retry {
            if retry.max_attempts == 0 {
                self.report(step.id.pos, "`retry.max_attempts` counts the first attempt: it is at least 1");
            }
            if let Some(backoff) = &retry.backoff {
                self.duration(backoff);
            }
        }
    }

    fn split(&mut self, arms: &Located<Vec<SplitArm>>) {
        let total: u32 = arms.iter().map(|a| *a.percent).sum();
        if total != 100 {
            self.report(arms.pos, format!("split percentages add up to {total}, not 100"));
        }
        for arm in arms.iter() {
            self.step_ref(&arm.then);
        }
    }

    fn http(&mut self, http: &HttpRequest, earlier: &BTreeSet<&str>) {
        self.expression(&http.url, earlier);
        let url = http.url.split("{{").next().unwrap_or_default();
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            self.report(http.url.pos, format!("URL `{}` must start with https:// or http://", *http.url));
        }
        for value in http.headers.values() {
            self.expression(value, earlier);
        }
        if let Some(timeout) = &http.timeout {
            self.duration(timeout);
        }
        if let Some(body) = &http.body {
            let mut strings = Vec::new();
            json_strings(body, &mut strings);
            for text in strings {
                self.expression(&Located::new(text, http.url.pos), earlier);
            }
        }
    }

    fn owner(&mut self, owner: &Owner, pos: Pos) {
        let set = [owner.user.is_some(), owner.team.is_some(), owner.round_robin.is_some()];
        if set.iter().filter(|s| **s).count() != 1 {
            self.report(pos, "an owner takes exactly one of `user`, `team`, `round_robin`");
        }
        let Some(people) = self.catalog.and_then(|c| c.people.as_ref()) else { return };
        if let Some(user) = &owner.user
            && !people.users.iter().any(|u| u.eq_ignore_ascii_case(user))
        {
            let message = format!(
                "no user with e-mail `{}`: create it (POST /v1/users), or name one of: {}",
                user.value,
                list_or_none(&people.users)
            );
            self.report(user.pos, message);
        }
        for team in [&owner.team, &owner.round_robin].into_iter().flatten() {
            if !people.teams.iter().any(|t| t == &team.value) {
                let message = format!(
                    "no team named `{}`: create it (POST /v1/teams), or name one of: {}",
                    team.value,
                    list_or_none(&people.teams)
                );
                self.report(team.pos, message);
            }
        }
    }

    fn wait(&mut self, wait: &Wait, pos: Pos) {
        let kinds = [wait.duration.is_some(), wait.until.is_some(), wait.until_time.is_some(), wait.event.is_some()];
        if kinds.iter().filter(|k| **k).count() != 1 {
            self.report(pos, "`wait` takes exactly one of `for`, `until`, `until_time`, `event`");
        }
        if let Some(duration) = &wait.duration {
            self.duration(duration);
        }
        if let Some(until) = &wait.until
            && chrono::DateTime::parse_from_rfc3339(until).is_err()
        {
            self.report(
                until.pos,
                format!("invalid date-time `{}`: write RFC 3339, e.g. 2026-12-24T09:00:00+01:00", **until),
            );
        }
        if let Some(time) = &wait.until_time {
            self.time_of_day(time);
            match &wait.timezone {
                Some(zone) => self.timezone(zone),
                None => self.report(time.pos, "`until_time` needs a `timezone`"),
            }
        }
        if let Some(event) = &wait.event {
            match (&wait.timeout, &wait.on_timeout) {
                (Some(timeout), Some(on_timeout)) => {
                    self.duration(timeout);
                    self.step_ref(on_timeout);
                }
                _ => self.report(event.pos, "waiting for an event needs a `timeout` and an `on_timeout` step"),
            }
        }
    }

    fn branch(&mut self, arms: &Located<Vec<BranchArm>>) {
        if arms.is_empty() {
            self.report(arms.pos, "`branch` needs at least one `if`");
        }
        for (i, arm) in arms.iter().enumerate() {
            match (&arm.condition, &arm.then, &arm.otherwise) {
                (Some(condition), Some(then), None) => {
                    self.condition(condition);
                    self.step_ref(then);
                }
                (None, None, Some(otherwise)) => {
                    if i + 1 != arms.len() {
                        self.report(otherwise.pos, "`else` must be the last arm of a branch");
                    }
                    self.step_ref(otherwise);
                }
                _ => {
                    let pos = arm
                        .condition
                        .as_ref()
                        .or(arm.then.as_ref())
                        .or(arm.otherwise.as_ref())
                        .map_or(arms.pos, |p| p.pos);
                    self.report(pos, "a branch arm is either `if:` with `then:`, or a last `else:`");
                }
            }
        }
    }

    fn step_ref(&mut self, target: &Located<String>) {
        if !self.step_ids.contains(&target.value) {
            self.flow_broken = true;
            let hint = closest(target, self.step_ids.iter().map(String::as_str))
                .map(|b| format!(": did you mean `{b}`?"))
                .unwrap_or_default();
            self.report(target.pos, format!("no step has the id `{}`{hint}", **target));
        }
    }

    fn duration(&mut self, text: &Located<String>) {
        if let Err(problem) = parse_duration(text) {
            self.report(text.pos, problem.to_string());
        }
    }

    fn time_of_day(&mut self, text: &Located<String>) {
        if !HHMM.is_match(text) {
            self.report(
                text.pos,
                format!("invalid time of day `{}`: write HH:MM, 24-hour, e.g. 09:00 or 20:30", **text),
            );
        }
    }

    fn timezone(&mut self, zone: &Located<String>) {
        if zone.parse::<chrono_tz::Tz>().is_err() {
            let names = chrono_tz::TZ_VARIANTS.iter().map(|z| z.name());
            let hint = closest(zone, names).map(|b| format!(": did you mean `{b}`?")).unwrap_or_default();
            self.report(
                zone.pos,
                format!("unknown time zone `{}`{hint} (use an IANA name such as Europe/Paris)", **zone),
            );
        }
    }

    fn condition(&mut self, text: &Located<String>) {
        match Condition::parse(text) {
            Ok(condition) => {
                for path in condition.paths() {
                    if path[0] == "steps" {
                        self.steps_path(path, text.pos);
                    }
                }
            }
            Err(err) => {
                let pos = Pos { line: text.pos.line, column: text.pos.column + err.offset };
                self.report(pos, format!("invalid condition: {}", err.message));
            }
        }
    }

    fn steps_path(&mut self, path: &[String], pos: Pos) {
        match path.get(1) {
            Some(id) if self.step_ids.contains(id) => {}
            Some(id) => self.report(pos, format!("`steps.{id}` refers to no step")),
            None => self.report(pos, "`steps` needs a step id: steps.<id>.output"),
        }
    }

    /// Which steps the flow can reach from the first one.
    fn reachability(&mut self, steps: &[Step]) {
        let index: HashMap<&str, usize> = steps.iter().enumerate().map(|(i, s)| (s.id.value.as_str(), i)).collect();
        let mut reached = vec![false; steps.len()];
        let mut todo = vec![0usize];
        while let Some(i) = todo.pop() {
            if std::mem::replace(&mut reached[i], true) {
                continue;
            }
            for target in successors(steps, i) {
                if let Some(&j) = index.get(target) {
                    todo.push(j);
                }
            }
        }
        for (step, reached) in steps.iter().zip(reached) {
            if !reached {
                self.report(step.id.pos, format!("step `{}` can never run: no step leads to it", *step.id));
            }
        }
    }
}

/// The ids of the steps that may follow step `i`.
fn successors(steps: &[Step], i: usize) -> Vec<&str> {
    let step = &steps[i];
    let fallthrough =
        step.next.as_ref().map(|n| n.value.as_str()).or_else(|| steps.get(i + 1).map(|s| s.id.value.as_str()));
    let mut out = Vec::new();
    if step.exit.is_some() {
        return out;
    }
    if let Some(arms) = &step.branch {
        out.extend(arms.iter().filter_map(|a| a.then.as_ref().or(a.otherwise.as_ref())).map(|t| t.value.as_str()));
        if !arms.iter().any(|a| a.otherwise.is_some()) {
            out.extend(fallthrough);
        }
        return out;
    }
    if let Some(arms) = &step.split {
        out.extend(arms.iter().map(|a| a.then.value.as_str()));
        return out;
    }
    if let Some(reply) = &step.wait_for_reply {
        out.push(reply.on_timeout.value.as_str());
        match &reply.on_reply {
            Some(on_reply) => out.push(on_reply.value.as_str()),
            None => out.extend(fallthrough),
        }
        return out;
    }
    if let Some(on_timeout) = step.wait.as_ref().and_then(|w| w.on_timeout.as_ref()) {
        out.push(on_timeout.value.as_str());
    }
    out.extend(fallthrough);
    out
}

fn json_strings(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(items) => items.iter().for_each(|v| json_strings(v, out)),
        serde_json::Value::Object(map) => map.values().for_each(|v| json_strings(v, out)),
        _ => {}
    }
}

/// Names for an error message, or "(none yet)": control characters shown escaped (a name never
/// breaks a log line), at most ten of them.
fn list_or_none(names: &[String]) -> String {
    const SHOWN: usize = 10;
    if names.is_empty() {
        return "(none yet)".to_string();
    }
    let clean = |name: &String| -> String {
        name.chars()
            .flat_map(|c| if c.is_control() { c.escape_default().collect::<Vec<_>>() } else { vec![c] })
            .collect()
    };
    let mut out: Vec<String> = names.iter().take(SHOWN).map(clean).collect();
    if names.len() > SHOWN {
        out.push(format!("and {} more", names.len() - SHOWN));
    }
    out.join(", ")
}
