//! `set_property`: render expressions into contact properties, written
//! with the step's commit.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::runtime::Engine;
use crate::runtime::context::RunContext;
use crate::runtime::outcome::{Effect, Outcome, failed};
use kairo_workflow::compiled::CompiledStep;

impl Engine {
    pub(in crate::runtime) fn set_property(
        &self,
        ctx: &RunContext,
        step: &CompiledStep,
        properties: &BTreeMap<String, String>,
        now: DateTime<Utc>,
    ) -> Outcome {
        let context = ctx.json(now);
        let mut patch = Map::new();
        for (name, expression) in properties {
            match self.renderer.render(expression, &context) {
                Ok(value) => patch.insert(name.clone(), Value::String(value)),
                Err(e) => return failed(Value::Null, format!("set_property `{name}`: {e}")),
            };
        }
        self.succeeded(ctx, step, Value::Object(patch.clone()), vec![Effect::SetProperties(patch)])
    }
}
