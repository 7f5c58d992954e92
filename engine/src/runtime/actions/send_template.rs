//! `send_template`: a template message (or, inside the 24-hour window, the
//! step's free-form text) to the contact, through the send pipeline, after
//! the consent, recipient, quiet-hour, catalogue and number checks.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use crate::runtime::Engine;
use crate::runtime::context::RunContext;
use crate::runtime::outcome::{Outcome, failed, record};
use crate::runtime::output::SendAttempt;
use crate::runtime::output::Waiting;
use crate::runtime::plan::resolve_number;
use crate::runtime::quiet::quiet_hours_wait;
use crate::runtime::send::{callback_data, held_outcome};
use kairo_core::outbound::{OutboundTemplate, OutboundText};
use kairo_core::status::StepState;
use kairo_store::{PhoneNumber, StepExecution};
use kairo_workflow::compiled::CompiledStep;
use kairo_workflow::expr::RenderFailure;
use kairo_workflow::model::{HeaderParam, Params, SendTemplate};

impl Engine {
    pub(in crate::runtime) async fn send_template(
        &self,
        claim: &StepExecution,
        ctx: &RunContext,
        step: &CompiledStep,
        send: &SendTemplate,
        now: DateTime<Utc>,
    ) -> Outcome {
        let Some(number) = resolve_number(&self.numbers(), &send.number).cloned() else {
            return failed(Value::Null, format!("business number `{}` is not connected", *send.number));
        };
        if !ctx.opted_in(number.id) {
            let output = json!({ "reason": "not_opted_in", "number": number.display_number });
            return self.skipped(ctx, step, output);
        }
        let Some(recipient) = recipient(ctx) else {
            return self.skipped(ctx, step, json!({ "reason": "no_phone_number" }));
        };
        if let Some(quiet) = &ctx.plan.compiled.quiet_hours
            && let Some(due_at) = quiet_hours_wait(quiet, ctx, now)
        {
            return Outcome::Defer { due_at, output: Some(Waiting::QuietHours { until: due_at }.output()) };
        }
        let window_open = self.window_open(ctx, number.id, now).await;
        let sending = Sending {
            claim,
            ctx,
            step,
            by_user_id: matches!(recipient, Recipient::UserId(_)),
            to: recipient.address(),
            number,
            context: ctx.json(now),
            now,
        };
        match send.when_window_open.as_ref().filter(|_| window_open) {
            Some(text) => self.send_window_text(sending, &text.text).await,
            None => self.send_approved_template(sending, send, window_open).await,
        }
    }

    /// A send step that does not send, and goes on.
    fn skipped(&self, ctx: &RunContext, step: &CompiledStep, output: Value) -> Outcome {
        Outcome::Done {
            record: record(StepState::Skipped, output, None),
            then: self.then_after(ctx, &step.id),
            effects: vec![],
        }
    }

    /// Inside the service window: the step's free-form text instead.
    async fn send_window_text(&self, s: Sending<'_>, text: &str) -> Outcome {
        let text = match self.renderer.render(text, &s.context) {
            Ok(text) => text,
            Err(e) => return failed(Value::Null, format!("when_window_open text: {e}")),
        };
        let message = OutboundText {
            idempotency_key: s.key(),
            number_id: s.number.graph_id.clone(),
            to: s.to.clone(),
            text: text.clone(),
            reply_to: None,
            callback_data: callback_data(s.claim),
        };
        let attempt = SendAttempt {
            number: s.number.id,
            message_type: "text".into(),
            content: Some(kairo_core::content::MessageContent::Text { body: text.clone() }),
            body: Some(text),
            template: None,
            callback_data: message.callback_data.clone(),
            marked: None,
        };
        if let Err(held) = self.may_send(&s.number, None, true, &message.to, s.now).await {
            return held_outcome(&s.number, held, s.now);
        }
        if let Err(instead) = self.ready_to_send(s.claim, &s.number, &attempt, s.now).await {
            return instead;
        }
        let sent = self.outbound.send_text(&message).await;
        self.sent(s.claim, s.ctx, s.step, &s.number, sent, attempt).await
    }

    /// The template itself, when the catalogue and the number allow it.
    async fn send_approved_template(&self, s: Sending<'_>, send: &SendTemplate, window_open: bool) -> Outcome {
        let (category, template) = match self.template_category(&s, send).await {
            Ok(found) => found,
            Err(instead) => return instead,
        };
        if let Err(held) = self.may_send(&s.number, Some(&category), window_open, &s.to, s.now).await {
            return held_outcome(&s.number, held, s.now);
        }
        let rendered = match self.render_template_params(send, &s.context) {
            Ok(r) => r,
            Err(e) => return failed(Value::Null, e.to_string()),
        };
        let message = OutboundTemplate {
            idempotency_key: s.key(),
            number_id: s.number.graph_id.clone(),
            to: s.to.clone(),
            template: send.template.value.clone(),
            language: send.language.value.clone(),
            header: rendered.0,
            body: rendered.1,
            buttons: rendered.2,
            callback_data: callback_data(s.claim),
        };
        let params = json!({ "header": message.header, "body": message.body, "buttons": message.buttons });
        // What the customer reads, kept with the message: the catalogue's
        // text may change after the send.
        let seen =
            template.map(|t| crate::runtime::template_as_seen(&t, message.header.as_ref(), message.body.as_ref()));
        let attempt = SendAttempt {
            number: s.number.id,
            message_type: "template".into(),
            body: seen.as_ref().and_then(|c| c.summary()),
            content: seen,
            template: Some((message.template.clone(), message.language.clone(), params)),
            callback_data: message.callback_data.clone(),
            marked: None,
        };
        if let Err(instead) = self.ready_to_send(s.claim, &s.number, &attempt, s.now).await {
            return instead;
        }
        let sent = self.outbound.send_template(&message).await;
        self.sent(s.claim, s.ctx, s.step, &s.number, sent, attempt).await
    }

    /// The template's category from the catalogue (and the template, when
    /// the catalogue has it), or what the step does instead: a template
    /// that is not approved fails it, and so does an authentication
    /// template to a contact known only by its user id.
    async fn template_category(
        &self,
        s: &Sending<'_>,
        send: &SendTemplate,
    ) -> Result<(String, Option<Arc<kairo_store::Template>>), Outcome> {
        let found = match self.catalog_template(&s.number, &send.template.value, &send.language.value).await {
            Ok(Some(template)) if template.status != "APPROVED" => {
                let status = &template.status;
                return Err(failed(
                    Value::Null,
                    format!(
                        "template `{}` ({}) is {status} in the catalogue: only APPROVED templates can be sent; fix it in WhatsApp Manager, run `kairo sync`, then retry the enrollment",
                        *send.template, *send.language
                    ),
                ));
            }
            Ok(found) => found,
            Err(err) => {
                tracing::warn!(%err, step = %s.claim.id, "cannot read the template's status; the send waits");
                return Err(Outcome::defer(s.now + chrono::Duration::seconds(5)));
            }
        };
        // A template the catalogue does not know yet counts as marketing:
        // a paused number holds it back rather than guess. Outside the
        // service window a template reaches a recipient and counts against
        // the portfolio's messaging limit; a used-up limit makes the send
        // wait for the moving window, never fail.
        let category = found.as_ref().map_or_else(|| "MARKETING".to_string(), |t| t.category.clone());
        if s.by_user_id && category.eq_ignore_ascii_case("AUTHENTICATION") {
            return Err(failed(
                Value::Null,
                format!(
                    "template `{}` is an authentication template, which WhatsApp sends only to a phone number (error 131062), and this contact is known only by its WhatsApp user id",
                    *send.template
                ),
            ));
        }
        Ok((category, found))
    }

    /// Header, body and button parameters, rendered.
    #[allow(clippy::type_complexity)] // the three parts of one template message
    fn render_template_params(
        &self,
        send: &SendTemplate,
        context: &Value,
    ) -> Result<(Option<Value>, Option<Value>, Vec<Value>), RenderFailure> {
        let render =
            |what: &str, text: &str| self.renderer.render(text, context).map_err(|e| e.of(format!("rendering {what}")));
        let header = match send.header.as_deref() {
            None => None,
            Some(HeaderParam::Text(text)) => Some(json!({ "text": render("the header", text)? })),
            Some(HeaderParam::Media(media)) => {
                let mut out = Map::new();
                for (kind, link) in [("image", &media.image), ("video", &media.video), ("document", &media.document)] {
                    if let Some(link) = link {
                        out.insert(kind.into(), json!({ "link": render("the header link", link)? }));
                    }
                }
                Some(Value::Object(out))
            }
        };
        let body = match send.body.as_deref() {
            None => None,
            Some(Params::Positional(list)) => {
                let mut out = Vec::new();
                for (i, text) in list.iter().enumerate() {
                    out.push(Value::String(render(&format!("body parameter {}", i + 1), text)?));
                }
                Some(Value::Array(out))
            }
            Some(Params::Named(map)) => {
                let mut out = Map::new();
                for (name, text) in map {
                    out.insert(name.clone(), Value::String(render(&format!("body parameter `{name}`"), text)?));
                }
                Some(Value::Object(out))
            }
        };
        let mut buttons = Vec::new();
        for button in &send.buttons {
            let mut out = Map::new();
            out.insert("index".into(), json!(button.index));
            for (kind, value) in
                [("text", &button.text), ("payload", &button.payload), ("coupon_code", &button.coupon_code)]
            {
                if let Some(value) = value {
                    out.insert(kind.into(), Value::String(render(&format!("button {}", button.index), value)?));
                }
            }
            buttons.push(Value::Object(out));
        }
        Ok((header, body, buttons))
    }
}

/// Where a send to the contact goes: the WhatsApp id its inbound messages
/// came from, else the digits of its phone, then of its mobile phone, else
/// its business-scoped user id (sent as `recipient`).
fn recipient(ctx: &RunContext) -> Option<Recipient> {
    let digits = |s: &String| kairo_core::phone::PhoneDigits::of(s).into_string();
    let number = ctx
        .contact
        .wa_id
        .clone()
        .filter(|w| !w.is_empty())
        .or_else(|| ctx.contact.phone.as_ref().map(digits).filter(|d| !d.is_empty()))
        .or_else(|| ctx.contact.mobile_phone.as_ref().map(digits))
        .filter(|d| !d.is_empty());
    match number {
        Some(number) => Some(Recipient::Number(number)),
        None => ctx.contact.user_id.clone().filter(|u| !u.is_empty()).map(Recipient::UserId),
    }
}

/// One send under way: the step, its number and recipient, and the
/// context its texts render against.
struct Sending<'a> {
    claim: &'a StepExecution,
    ctx: &'a RunContext,
    step: &'a CompiledStep,
    number: PhoneNumber,
    /// The recipient's address.
    to: String,
    /// The recipient is known only by its business-scoped user id.
    by_user_id: bool,
    context: Value,
    now: DateTime<Utc>,
}

impl Sending<'_> {
    /// The send's idempotency key: one per step execution.
    fn key(&self) -> String {
        format!("{}:{}", self.claim.enrollment_id, self.claim.id)
    }
}

/// A contact's WhatsApp address.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Recipient {
    /// The digits of its number.
    Number(String),
    /// Its business-scoped user id: it hides its number behind a username.
    UserId(String),
}

impl Recipient {
    fn address(self) -> String {
        match self {
            Recipient::Number(n) | Recipient::UserId(n) => n,
        }
    }
}
