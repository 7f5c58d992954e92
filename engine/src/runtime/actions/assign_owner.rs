//! `assign_owner`: give the contact's thread on the enrollment's number
//! to a user, a team or the next member of a team in turn.

use serde_json::{Value, json};

use crate::runtime::Engine;
use crate::runtime::context::RunContext;
use crate::runtime::outcome::{Effect, Outcome, failed};
use crate::runtime::plan::resolve_number;
use kairo_store::{OwnerChoice, PhoneNumber};
use kairo_workflow::compiled::{Action, CompiledStep};
use kairo_workflow::model::Owner;

impl Engine {
    pub(in crate::runtime) async fn assign_owner(
        &self,
        ctx: &RunContext,
        step: &CompiledStep,
        owner: &Owner,
    ) -> Outcome {
        let Some(choice) = owner_choice(owner) else {
            return failed(Value::Null, "assign_owner names no user, team or round_robin".into());
        };
        if let Some(problem) = self.owner_problem(&choice).await {
            return failed(Value::Null, format!("assign_owner: {problem}"));
        }
        let Some(number) = self.conversation_number(ctx, owner) else {
            return failed(
                Value::Null,
                "assign_owner: the enrollment has no conversation to assign: it did not start from a message \
                 and no step before it ran on a number; add an ensure_thread step before it, or name the `number`"
                    .into(),
            );
        };
        let output = json!({ "number": number.display_number });
        self.succeeded(ctx, step, output, vec![Effect::AssignOwner { owner: choice, number: number.id }])
    }

    /// Why `owner` cannot own a thread (no such user or team), if so.
    pub(super) async fn owner_problem(&self, owner: &OwnerChoice) -> Option<String> {
        match self.store.owner_problem(owner).await {
            Ok(problem) => problem,
            Err(err) => {
                tracing::warn!(%err, "cannot look up the owner; assigning as written");
                None
            }
        }
    }

    /// The business number of the enrollment's own conversation: the one
    /// the step names, else the one of the latest step that ran on a number
    /// (`ensure_thread`, `wait_for_reply`, `send_template`, latest in the
    /// file first), else the one its trigger came in on.
    fn conversation_number(&self, ctx: &RunContext, owner: &Owner) -> Option<PhoneNumber> {
        let numbers = self.numbers();
        if let Some(number) = &owner.number {
            return resolve_number(&numbers, number).cloned();
        }
        for step in ctx.plan.compiled.steps().iter().rev() {
            if !ctx.outputs.contains_key(&step.id) {
                continue;
            }
            let written = match &step.action {
                Action::EnsureThread(ensure) => Some(ensure.number.as_str()),
                Action::WaitForReply(reply) => Some(reply.number.as_str()),
                Action::SendTemplate(send) => Some(send.number.as_str()),
                _ => None,
            };
            if let Some(number) = written.and_then(|w| resolve_number(&numbers, w)) {
                return Some(number.clone());
            }
        }
        let trigger = &ctx.enrollment.trigger_data;
        ["number_id", "number"]
            .iter()
            .filter_map(|key| trigger.get(*key).and_then(Value::as_str))
            .find_map(|written| resolve_number(&numbers, written).cloned())
    }
}

pub(super) fn owner_choice(owner: &Owner) -> Option<OwnerChoice> {
    let name = |field: &Option<kairo_workflow::located::Located<String>>| field.as_ref().map(|v| v.value.clone());
    name(&owner.user)
        .map(OwnerChoice::User)
        .or_else(|| name(&owner.team).map(OwnerChoice::Team))
        .or_else(|| name(&owner.round_robin).map(OwnerChoice::RoundRobin))
}
