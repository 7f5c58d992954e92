//! An inbox agent's reply in a thread: free-form text inside the contact's
//! 24-hour window, or a template at any time to an opted-in contact.
//!
//! Invariant: the message is recorded as `sending` before the request
//! leaves, so a reply is in the thread whatever the channel answers; a reply
//! whose answer never came stays `sending` (outcome unknown) and is settled
//! by its status webhook, never sent again by Kairo.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::Engine;
use super::pacing::Pace;
use super::send_gate::Held;
use kairo_core::content::MessageContent;
use kairo_core::ids::{MessageId, ThreadId, UserId, Wamid};
use kairo_core::outbound::{CallError, FailureKind, OutboundTemplate, OutboundText};
use kairo_core::status::{ConsentStatus, DeliveryStatus, Direction};
use kairo_store::{Message, NewMessage, StoreError, Thread};

/// What an agent sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplyContent {
    /// Free-form text: only while the contact's window is open.
    Text { text: String },
    /// An approved template of the thread's number, parameters rendered.
    Template {
        name: String,
        language: String,
        header: Option<serde_json::Value>,
        body: Option<serde_json::Value>,
        buttons: Vec<serde_json::Value>,
    },
}

/// Why a reply was not sent.
#[derive(Debug, thiserror::Error)]
pub enum ReplyError {
    #[error("no thread {0}")]
    UnknownThread(ThreadId),
    #[error("thread {thread} is on a number Kairo no longer knows")]
    UnknownNumber { thread: ThreadId },
    /// The 24-hour customer service window is closed (or never opened).
    #[error("{}", window_closed_message(*closed_at))]
    WindowClosed { closed_at: Option<DateTime<Utc>> },
    #[error("sends from {number} are paused ({reason}): fix the cause, then run `kairo numbers resume {number}`")]
    NumberPaused { number: String, reason: String },
    #[error("the business portfolio's messaging limit is used up until {}: templates to new recipients wait until then", until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))]
    MessagingLimit { until: DateTime<Utc> },
    #[error("thread {thread} is closed and the contact has another open thread on the number: reply there")]
    AnotherThreadOpen { thread: ThreadId },
    #[error("the contact has not opted in on this number: templates go only to opted-in contacts")]
    NotOptedIn,
    #[error("template `{name}` ({language}) is {status} on this number: only APPROVED templates can be sent")]
    TemplateNotApproved { name: String, language: String, status: String },
    #[error(
        "no template `{name}` ({language}) in this number's catalogue: check the name and language, or run `kairo sync`"
    )]
    UnknownTemplate { name: String, language: String },
    /// One of Meta's `sample_` templates, which Kairo never sends.
    #[error("template `{name}` is one of Meta's sample templates, which Kairo never sends: pick one of your own")]
    SampleTemplate { name: String },
    /// The parameters do not fit the template.
    #[error("the parameters do not fit template `{name}`: {}", problems.join("; "))]
    TemplateParameters { name: String, problems: Vec<String> },
    /// The channel refused the reply; the message is recorded as failed.
    #[error("WhatsApp refused the reply: {0}")]
    Refused(CallError),
    /// The answer never came: the reply may have been sent; it stays
    /// `sending` until a status webhook settles it.
    #[error("the reply's outcome is unknown ({0}); it is not sent again: its status webhook will settle it")]
    OutcomeUnknown(CallError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a stored template needs at send time (its header, body and button
/// parameters), read from its components as the workflow catalogue reads
/// them: the one reading the reply check and the inbox's composer share.
pub fn template_needs(template: &kairo_store::Template) -> kairo_workflow::catalog::TemplateNeeds {
    catalog_template(template).needs()
}

/// A stored template as the customer sees it with these parameters: what
/// the inbox keeps of a template it sends, and the composer's preview.
pub fn template_as_seen(
    template: &kairo_store::Template,
    header: Option<&serde_json::Value>,
    body: Option<&serde_json::Value>,
) -> MessageContent {
    catalog_template(template).as_seen(header, body)
}

fn catalog_template(template: &kairo_store::Template) -> kairo_workflow::catalog::CatalogTemplate {
    kairo_workflow::catalog::CatalogTemplate {
        name: template.name.clone(),
        language: template.language.clone(),
        status: template.status.clone(),
        category: template.category.clone(),
        parameter_format: template.parameter_format.clone(),
        components: template.components.as_array().cloned().unwrap_or_default(),
    }
}

fn window_closed_message(closed_at: Option<DateTime<Utc>>) -> String {
    match closed_at {
        Some(at) => format!(
            "the 24-hour customer service window closed at {}: send an approved template instead",
            at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ),
        None => "the contact has never written on this number, so no customer service window is open: send an \
                 approved template instead"
            .to_string(),
    }
}

impl Engine {
    /// Sends `content` in `thread` and records it there, as sent by the
    /// agent `sent_by` (none for a reply through an API token).
    pub async fn reply(
        &self,
        thread: ThreadId,
        content: ReplyContent,
        sent_by: Option<UserId>,
    ) -> Result<Message, ReplyError> {
        let row = self.store.thread(thread).await?.ok_or(ReplyError::UnknownThread(thread))?;
        let number = self
            .numbers()
            .iter()
            .find(|n| n.id == row.phone_number_id)
            .cloned()
            .ok_or(ReplyError::UnknownNumber { thread })?;
        let now = self.now();
        let (category, seen) = self.check_reply(&row, number.account_id, &content, now).await?;
        let to = row.customer_wa_id.clone();
        // The checks a workflow's send makes: the number's pause and the
        // messaging limit (a template outside the window reaches someone).
        let window_open = row.window_closes_at.is_some_and(|closes| closes > now);
        match self.may_send(&number, category.as_deref(), window_open, &to, now).await {
            Ok(()) => {}
            Err(Held::Paused { reason }) => {
                return Err(ReplyError::NumberPaused { number: number.display_number.clone(), reason });
            }
            Err(Held::MessagingLimit { until }) => return Err(ReplyError::MessagingLimit { until }),
            Err(Held::Unreadable) => return Err(ReplyError::Store(self.store.missing("the messaging limit"))),
        }
        // A reply on a closed thread reopens it, as an agent answering a
        // resolved conversation does in any inbox; refused while the contact
        // has another open thread on the number (one open thread each).
        if row.status == kairo_core::status::ThreadStatus::Closed {
            match self.store.reopen_thread(row.id, sent_by, now).await {
                Ok(_) => tracing::info!(thread = %row.id, "a reply reopened the thread"),
                Err(StoreError::Duplicate { .. }) => return Err(ReplyError::AnotherThreadOpen { thread }),
                Err(err) => return Err(err.into()),
            }
        }
        let message = self.store.record_message(reply_row(&row, &content, seen, sent_by, now), now).await?;
        self.wait_for_slot(&number).await?;
        let callback_data = format!("kairo:reply:{}", message.id);
        let sent = match &content {
            ReplyContent::Text { text } => {
                let text = OutboundText {
                    idempotency_key: message.id.to_string(),
                    number_id: number.graph_id.clone(),
                    to,
                    text: text.clone(),
                    reply_to: None,
                    callback_data,
                };
                self.outbound.send_text(&text).await
            }
            ReplyContent::Template { name, language, header, body, buttons } => {
                let template = OutboundTemplate {
                    idempotency_key: message.id.to_string(),
                    number_id: number.graph_id.clone(),
                    to,
                    template: name.clone(),
                    language: language.clone(),
                    header: header.clone(),
                    body: body.clone(),
                    buttons: buttons.clone(),
                    callback_data,
                };
                self.outbound.send_template(&template).await
            }
        };
        if let Err(error) = &sent {
            self.note_send_error(&number, error).await;
        }
        self.settle_reply(message.id, sent).await
    }

    async fn check_reply(
        &self,
        thread: &Thread,
        account: kairo_core::ids::AccountId,
        content: &ReplyContent,
        now: DateTime<Utc>,
    ) -> Result<(Option<String>, MessageContent), ReplyError> {
        match content {
            ReplyContent::Text { text } => match thread.window_closes_at {
                Some(closes) if closes > now => Ok((None, MessageContent::Text { body: text.clone() })),
                closed_at => Err(ReplyError::WindowClosed { closed_at }),
            },
            ReplyContent::Template { name, language, header, body, buttons } => {
                if name.starts_with("sample_") {
                    return Err(ReplyError::SampleTemplate { name: name.clone() });
                }
                let consent = self.store.consent(thread.contact_id, thread.phone_number_id).await?;
                if consent.map(|c| c.status) != Some(ConsentStatus::OptedIn) {
                    return Err(ReplyError::NotOptedIn);
                }
                let template = match self.store.template(account, name, language).await? {
                    Some(template) if template.status == "APPROVED" => template,
                    Some(other) => {
                        return Err(ReplyError::TemplateNotApproved {
                            name: name.clone(),
                            language: language.clone(),
                            status: other.status,
                        });
                    }
                    None => {
                        return Err(ReplyError::UnknownTemplate { name: name.clone(), language: language.clone() });
                    }
                };
                let needs = template_needs(&template);
                let problems = needs.problems(header.as_ref(), body.as_ref(), buttons);
                if !problems.is_empty() {
                    return Err(ReplyError::TemplateParameters { name: name.clone(), problems });
                }
                let seen = template_as_seen(&template, header.as_ref(), body.as_ref());
                Ok((Some(template.category), seen))
            }
        }
    }

    /// Keeps the number's pace: waits for a slot shared with the workers.
    async fn wait_for_slot(&self, number: &kairo_store::PhoneNumber) -> Result<(), ReplyError> {
        if !self.outbound.paced() {
            return Ok(());
        }
        loop {
            match self.pacer.slot(&self.store, self.clock.as_ref(), number).await? {
                // A slot missed by more than the lateness allowed is given
                // up for a new one.
                Pace::At(at) => {
                    if self.sleep_until(Some(at)).await {
                        return Ok(());
                    }
                }
                Pace::Wait(until) => {
                    self.sleep_until(Some(until)).await;
                }
            }
        }
    }

    async fn settle_reply(
        &self,
        message: MessageId,
        sent: Result<kairo_core::outbound::SendReceipt, CallError>,
    ) -> Result<Message, ReplyError> {
        let now = self.now();
        match sent {
            Ok(receipt) => {
                let wamid = Wamid(receipt.wamid);
                let recorded = self.store.mark_reply_sent(message, &wamid, now).await?;
                recorded.ok_or_else(|| ReplyError::Store(self.store.missing("reply just recorded")))
            }
            Err(err) if err.kind == FailureKind::Unknown => Err(ReplyError::OutcomeUnknown(err)),
            Err(err) => {
                let code = err.code.and_then(|c| i32::try_from(c).ok());
                self.store.mark_reply_failed(message, code, &err.message, now).await?;
                Err(ReplyError::Refused(err))
            }
        }
    }
}

/// The reply as first recorded: `sending`, no wamid yet; a template with
/// its text as the customer sees it (its body is what a search finds).
fn reply_row(
    thread: &Thread,
    content: &ReplyContent,
    seen: MessageContent,
    sent_by: Option<UserId>,
    now: DateTime<Utc>,
) -> NewMessage {
    let (message_type, body, template_name, template_language, template_params) = match content {
        ReplyContent::Text { text } => ("text", Some(text.clone()), None, None, None),
        ReplyContent::Template { name, language, header, body, buttons } => (
            "template",
            seen.summary(),
            Some(name.clone()),
            Some(language.clone()),
            Some(serde_json::json!({ "header": header, "body": body, "buttons": buttons })),
        ),
    };
    NewMessage {
        thread_id: thread.id,
        direction: Direction::Outbound,
        wamid: None,
        message_type: message_type.to_string(),
        body,
        payload: serde_json::json!({ "source": "inbox_reply" }),
        status: DeliveryStatus::Sending,
        template_name,
        template_language,
        template_params,
        enrollment_id: None,
        step_execution_id: None,
        occurred_at: now,
        sent_by,
        content: Some(seen),
    }
}
