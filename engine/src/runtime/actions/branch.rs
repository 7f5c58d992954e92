//! `branch`: go to the first arm whose condition holds, else the `else`
//! arm, else the next step.

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::runtime::Engine;
use crate::runtime::context::RunContext;
use crate::runtime::outcome::{Outcome, Then, record};
use kairo_core::status::StepState;
use kairo_workflow::compiled::{Arm, CompiledStep};

impl Engine {
    pub(in crate::runtime) fn branch(
        &self,
        ctx: &RunContext,
        step: &CompiledStep,
        arms: &[Arm],
        now: DateTime<Utc>,
    ) -> Outcome {
        let context = ctx.json(now);
        let taken = arms.iter().position(|arm| arm.when.as_ref().is_none_or(|c| c.evaluate(&context)));
        match taken {
            Some(arm) => Outcome::Done {
                record: record(StepState::Succeeded, json!({ "arm": arm, "next": arms[arm].then }), None),
                then: Then::Step(arms[arm].then.clone()),
                effects: vec![],
            },
            None => self.succeeded(ctx, step, json!({ "arm": null, "next": ctx.plan.after(&step.id) }), vec![]),
        }
    }
}
