//! Running one claimed step: the goal and the exit conditions first, then
//! the step's action, each in its module under [`super::actions`], which
//! decides an [`Outcome`] for the commit to write. Only sends and HTTP
//! requests leave the process; they write `attempting` first.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::Engine;
use super::actions::exit::exit;
use super::actions::wait::wait_step;
use super::context::RunContext;
use super::outcome::{Effect, Outcome, Then, failed, record};
use kairo_core::status::{EnrollmentStatus, StepState};
use kairo_store::{NewTimerRow, StepExecution};
use kairo_workflow::compiled::{Action, CompiledStep, Exit};

impl Engine {
    /// Runs one claimed step of one enrollment: the goal and the exit
    /// conditions first, then the step's action.
    pub(super) async fn run_step(&self, claim: &StepExecution, ctx: &RunContext) -> Outcome {
        let now = self.now();
        let Some(step) = ctx.plan.step(&claim.step_id) else {
            let error = format!("step `{}` is not in version {} of the workflow", claim.step_id, ctx.plan.version);
            return failed(Value::Null, error);
        };
        if let Some(then) = self.exit_check(ctx, now) {
            let reason = match &then {
                Then::Finish { reason, .. } => reason.clone(),
                Then::Step(_) => None,
            };
            return Outcome::Done {
                record: record(StepState::Cancelled, json!({ "reason": reason }), None),
                then,
                effects: vec![],
            };
        }
        match &step.action {
            Action::SendTemplate(send) => self.send_template(claim, ctx, step, send, now).await,
            Action::Http(http) => self.http_step(claim, ctx, step, http, now).await,
            Action::EnsureThread(ensure) => self.ensure_thread(ctx, step, ensure).await,
            Action::AssignOwner(owner) => self.assign_owner(ctx, step, owner).await,
            Action::Wait(wait) => wait_step(wait, now),
            Action::WaitForReply(reply) => self.wait_for_reply(reply, now),
            Action::Branch(arms) => self.branch(ctx, step, arms, now),
            Action::Split(shares) => self.split(ctx, step, shares),
            Action::SetProperty(properties) => self.set_property(ctx, step, properties, now),
            Action::Exit { reason } => exit(reason),
        }
    }

    /// A step that succeeded and goes on to the step after it.
    pub(super) fn succeeded(
        &self,
        ctx: &RunContext,
        step: &CompiledStep,
        output: Value,
        effects: Vec<Effect>,
    ) -> Outcome {
        Outcome::Done {
            record: record(StepState::Succeeded, output, None),
            then: self.then_after(ctx, &step.id),
            effects,
        }
    }

    /// The goal and the exit conditions, checked before every step.
    pub(super) fn exit_check(&self, ctx: &RunContext, now: DateTime<Utc>) -> Option<Then> {
        let compiled = &ctx.plan.compiled;
        if compiled.goal.is_none() && compiled.exits.is_empty() {
            return None;
        }
        let context = ctx.json(now);
        if compiled.goal.as_ref().is_some_and(|goal| goal.evaluate(&context)) {
            return Some(Then::Finish {
                status: EnrollmentStatus::GoalMet,
                reason: Some("goal met".into()),
                error: None,
            });
        }
        for exit in &compiled.exits {
            let reason = match exit {
                Exit::OptedOut if ctx.opted_out_anywhere() => "opted out".to_string(),
                Exit::When(text, condition) if condition.evaluate(&context) => {
                    format!("exit condition `{text}` held")
                }
                _ => continue,
            };
            return Some(Then::Finish { status: EnrollmentStatus::Exited, reason: Some(reason), error: None });
        }
        None
    }

    /// The step after `id`, or the end of the workflow.
    pub(super) fn then_after(&self, ctx: &RunContext, id: &str) -> Then {
        match ctx.plan.after(id) {
            Some(next) => Then::Step(next.to_string()),
            None => Then::Finish { status: EnrollmentStatus::Completed, reason: None, error: None },
        }
    }

    /// An enrollment's first step when it is a `wait`, run at enrollment as
    /// a worker would run it: the step written `waiting` with its output,
    /// and the timer it parks on. `None` when a worker must run the step
    /// (it is not a wait, the goal or an exit condition holds, the wait
    /// cannot be worked out): it then stays pending, due now.
    pub(super) fn park_at_start(
        &self,
        ctx: &RunContext,
        step: &mut StepExecution,
        now: DateTime<Utc>,
    ) -> Option<NewTimerRow> {
        let Action::Wait(wait) = &ctx.plan.step(&step.step_id)?.action else { return None };
        if self.exit_check(ctx, now).is_some() {
            return None;
        }
        let Outcome::Park { output, timer_kind, wake_at } = wait_step(wait, now) else { return None };
        step.state = StepState::Waiting;
        step.output = Some(output);
        step.started_at = Some(now);
        step.finished_at = Some(now);
        Some(NewTimerRow {
            enrollment_id: step.enrollment_id,
            step_execution_id: step.id,
            kind: timer_kind,
            wake_at,
            created_at: now,
        })
    }
}
