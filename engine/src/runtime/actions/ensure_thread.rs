//! `ensure_thread`: make sure the contact has an open inbox thread on the
//! number, with its owner, written with the step's commit.

use serde_json::{Value, json};

use super::assign_owner::owner_choice;
use crate::runtime::Engine;
use crate::runtime::context::RunContext;
use crate::runtime::outcome::{Effect, Outcome, failed};
use crate::runtime::plan::resolve_number;
use kairo_workflow::compiled::CompiledStep;
use kairo_workflow::model::EnsureThread;

impl Engine {
    pub(in crate::runtime) async fn ensure_thread(
        &self,
        ctx: &RunContext,
        step: &CompiledStep,
        ensure: &EnsureThread,
    ) -> Outcome {
        let Some(number) = resolve_number(&self.numbers(), &ensure.number).cloned() else {
            return failed(Value::Null, format!("business number `{}` is not connected", *ensure.number));
        };
        let owner = ensure.owner.as_ref().and_then(owner_choice);
        if let Some(owner) = &owner
            && let Some(problem) = self.owner_problem(owner).await
        {
            return failed(Value::Null, format!("ensure_thread: {problem}"));
        }
        let output = json!({ "number": number.display_number });
        self.succeeded(ctx, step, output, vec![Effect::EnsureThread { number: number.id, owner }])
    }
}
