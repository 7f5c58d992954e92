//! `http`: call a URL with rendered headers and body; 2xx succeeds, 429
//! and 5xx retry, other answers fail the step. The call writes
//! `attempting` first, like a send.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::runtime::Engine;
use crate::runtime::context::RunContext;
use crate::runtime::outcome::{Outcome, failed, record};
use kairo_core::outbound::{CallError, FailureKind, HttpCall};
use kairo_core::status::StepState;
use kairo_store::StepExecution;
use kairo_workflow::compiled::{CompiledStep, HttpCallSpec};
use kairo_workflow::expr::RenderFailure;

impl Engine {
    pub(in crate::runtime) async fn http_step(
        &self,
        claim: &StepExecution,
        ctx: &RunContext,
        step: &CompiledStep,
        http: &HttpCallSpec,
        now: DateTime<Utc>,
    ) -> Outcome {
        let context = ctx.json(now);
        let render = |what: &str, text: &str| self.renderer.render(text, &context).map_err(|e| e.of(what));
        let call = (|| -> Result<HttpCall, RenderFailure> {
            let url = render("url", &http.url)?;
            let mut headers = Vec::new();
            for (name, value) in &http.headers {
                headers.push((name.clone(), render(&format!("header `{name}`"), value)?));
            }
            let body = match &http.body {
                Some(body) => Some(render_json(body, &|t| render("body", t))?),
                None => None,
            };
            let method = format!("{:?}", http.method).to_uppercase();
            Ok(HttpCall { method, url, headers, body, timeout: http.timeout })
        })();
        let call = match call {
            Ok(call) => call,
            Err(e) => return failed(Value::Null, e.to_string()),
        };
        if let Some(not_held) = self.mark_attempting(claim, None).await.refused(now) {
            return not_held;
        }
        match self.http.call(&call).await {
            Ok(answer) if (200..300).contains(&answer.status) => Outcome::Done {
                record: record(StepState::Succeeded, json!({ "status": answer.status, "body": answer.body }), None),
                then: self.then_after(ctx, &step.id),
                effects: vec![],
            },
            Ok(answer) => {
                let kind = if answer.status == 429 || answer.status >= 500 {
                    FailureKind::Temporary
                } else {
                    FailureKind::Permanent
                };
                let message = format!("{} {} answered {}", call.method, call.url, answer.status);
                self.call_failed(claim, ctx, step, CallError::new(kind, message))
            }
            Err(error) => self.call_failed(claim, ctx, step, error),
        }
    }
}

/// Renders every string inside a JSON value.
fn render_json(value: &Value, render: &dyn Fn(&str) -> Result<String, RenderFailure>) -> Result<Value, RenderFailure> {
    Ok(match value {
        Value::String(s) => Value::String(render(s)?),
        Value::Array(items) => Value::Array(items.iter().map(|v| render_json(v, render)).collect::<Result<_, _>>()?),
        Value::Object(map) => Value::Object(
            map.iter().map(|(k, v)| Ok((k.clone(), render_json(v, render)?))).collect::<Result<_, RenderFailure>>()?,
        ),
        other => other.clone(),
    })
}
