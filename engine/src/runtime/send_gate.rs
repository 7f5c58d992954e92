//! What every send checks before it leaves and notes after WhatsApp
//! answers, for workflow steps and inbox replies alike: the number's pause,
//! the portfolio's messaging limit, and what an error answer says about the
//! number (bad credentials pause it; a throughput answer slows it down).
//!
//! A step that is held waits (its step deferred, the reason on its output);
//! a reply that is held is refused with the same reason, since an agent is
//! waiting for the answer.

use chrono::{DateTime, Utc};

use super::Engine;
use kairo_core::outbound::{CallError, FailureKind, ThrottleScope};
use kairo_store::{PauseScope, PhoneNumber, Reach};

/// Why a send may not leave now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Held {
    /// The number is paused for this kind of send until an operator resumes it.
    Paused { reason: String },
    /// The portfolio's messaging limit is used up until then.
    MessagingLimit { until: DateTime<Utc> },
    /// The limit could not be read: look again shortly.
    Unreadable,
}

impl Engine {
    /// Whether a send of `category` (a template's; None for free-form text)
    /// from `number` to `to` may leave now. `window_open`: the contact's
    /// service window is open, so the send does not count against the
    /// messaging limit. A send that may leave is counted against the limit.
    pub(super) async fn may_send(
        &self,
        number: &PhoneNumber,
        category: Option<&str>,
        window_open: bool,
        to: &str,
        now: DateTime<Utc>,
    ) -> Result<(), Held> {
        if let Some(scope) = PauseScope::of(number)
            && scope.stops(category)
        {
            return Err(Held::Paused { reason: number.pause_reason.clone().unwrap_or_default() });
        }
        if window_open || !self.outbound.paced() {
            return Ok(());
        }
        match self.store.reach_recipient(number, to, now).await {
            Ok(Reach::Allowed) => Ok(()),
            Ok(Reach::WaitUntil(until)) => {
                tracing::info!(number = %number.display_number, %until, "messaging limit used up; the send waits");
                Err(Held::MessagingLimit { until })
            }
            Err(err) => {
                tracing::warn!(%err, "cannot check the messaging limit; the send waits");
                Err(Held::Unreadable)
            }
        }
    }

    /// What an error answer to a send says about its number: bad
    /// credentials pause every send of it; a throughput answer halves its
    /// pace for a minute, in every worker.
    pub(super) async fn note_send_error(&self, number: &PhoneNumber, error: &CallError) {
        match (error.kind, error.throttle) {
            (FailureKind::Auth, _) => {
                let reason = credentials_reason(error);
                match self.store.pause_number(number.id, PauseScope::All, &reason, self.now()).await {
                    Ok(true) => tracing::error!(
                        number = %number.display_number,
                        error = %error.message,
                        "every send from this number is paused until an operator fixes the access token or account and runs `kairo numbers resume {}`",
                        number.display_number
                    ),
                    Ok(false) => {}
                    Err(err) => tracing::warn!(%err, "cannot record the number's pause"),
                }
            }
            (FailureKind::Throttled, Some(ThrottleScope::Number)) => {
                let until = self.now() + chrono::Duration::seconds(60);
                match self.store.slow_down_sends(number.id, 50, until).await {
                    Ok(()) => tracing::warn!(
                        number = %number.display_number,
                        "WhatsApp says the number sends too fast; halving its pace for a minute"
                    ),
                    Err(err) => tracing::warn!(%err, "cannot record the slowdown"),
                }
            }
            _ => {}
        }
    }
}

/// The pause reason a credentials error records.
pub(super) fn credentials_reason(error: &CallError) -> String {
    format!("credentials: {}", error.message)
}
