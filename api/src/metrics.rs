//! Prometheus metrics at `/metrics`.
//!
//! Counters and histograms are recorded where things happen, through the
//! `metrics` facade (a no-op until a recorder is installed, as in tests of
//! the library); gauges of stored state (enrollments by status) are read
//! from the database when the page is scraped.
//!
//! Names:
//! - `kairo_enrollments{status}`: enrollments per status (gauge).
//! - `kairo_steps_total{state}`: step executions finished, by state.
//! - `kairo_sends_total{outcome, code}`: sends by outcome (`accepted`,
//!   `temporary`, `throttled`, `permanent`, `auth`, `unknown`) and WhatsApp
//!   error code.
//! - `kairo_pacing_waits_total`: sends put back because their number had no
//!   free slot within a second.
//! - `kairo_webhook_events_total`, `kairo_webhook_ingest_seconds`: events
//!   durably journaled, and the time from request to commit.
//! - `kairo_http_requests_total{route, status}`,
//!   `kairo_http_request_seconds{route}`: the API and webhook.
//! - `kairo_webhook_backlog`, `kairo_webhook_apply_lag_seconds`: journaled
//!   deliveries not applied to the inbox yet, and the age of the oldest
//!   (read at scrape).
//!
//! Every family is there from the first scrape, at zero, with its help
//! text, so that dashboards and alerts can be set up before traffic comes.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use kairo_core::clock::{Clock, SystemClock};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::AppState;

/// The installed recorder's handle.
#[derive(Debug, Clone)]
pub struct Metrics {
    handle: PrometheusHandle,
}

/// Why the metrics recorder was not installed.
#[derive(Debug, thiserror::Error)]
#[error("cannot install the metrics recorder: {0}")]
pub struct MetricsError(#[from] metrics_exporter_prometheus::BuildError);

impl Metrics {
    /// Installs the process-wide recorder (once per process).
    pub fn install() -> Result<Metrics, MetricsError> {
        let seconds = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
        let handle = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &seconds)?
            .install_recorder()?;
        describe_families();
        Ok(Metrics { handle })
    }
}

/// Every family with its help text, and at zero.
fn describe_families() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!("kairo_enrollments", "Enrollments per status");
    describe_counter!("kairo_steps_total", "Step executions finished, by state");
    describe_counter!(
        "kairo_sends_total",
        "WhatsApp sends by outcome (accepted, temporary, throttled, permanent, auth, unknown) and error code"
    );
    describe_counter!(
        "kairo_pacing_waits_total",
        "Sends put back because their number had no free slot within a second"
    );
    describe_counter!("kairo_webhook_events_total", "Webhook events durably journaled");
    describe_histogram!(
        "kairo_webhook_ingest_seconds",
        Unit::Seconds,
        "Time from a webhook request to its journal commit"
    );
    describe_gauge!("kairo_webhook_backlog", "Journaled webhook deliveries not applied to the inbox yet");
    describe_gauge!(
        "kairo_webhook_apply_lag_seconds",
        Unit::Seconds,
        "Age of the oldest webhook delivery not applied yet"
    );
    describe_counter!("kairo_http_requests_total", "HTTP requests by route and status");
    describe_histogram!("kairo_http_request_seconds", Unit::Seconds, "HTTP request time by route");
    for state in ["succeeded", "failed", "skipped", "uncertain", "cancelled", "waiting"] {
        metrics::counter!("kairo_steps_total", "state" => state).increment(0);
    }
    for outcome in ["accepted", "temporary", "throttled", "permanent", "auth", "unknown"] {
        metrics::counter!("kairo_sends_total", "outcome" => outcome, "code" => "").increment(0);
    }
    metrics::counter!("kairo_pacing_waits_total").increment(0);
    metrics::counter!("kairo_webhook_events_total").increment(0);
    // Histograms are shown once registered, with no observation.
    let _ = metrics::histogram!("kairo_webhook_ingest_seconds");
    metrics::gauge!("kairo_webhook_backlog").set(0.0);
    metrics::gauge!("kairo_webhook_apply_lag_seconds").set(0.0);
}

/// Every enrollment status, so that each has a gauge (zero included).
const STATUSES: [kairo_core::status::EnrollmentStatus; 7] = {
    use kairo_core::status::EnrollmentStatus::*;
    [Active, Waiting, Completed, GoalMet, Exited, Failed, Cancelled]
};

/// `GET /metrics`: the Prometheus text format.
pub async fn render(State(state): State<AppState>) -> Response {
    let Some(metrics) = &state.metrics else {
        return (StatusCode::NOT_FOUND, "metrics are not enabled in this process\n").into_response();
    };
    match state.store.enrollment_counts(None).await {
        Ok(counts) => {
            for status in STATUSES {
                let n = counts.iter().find(|(s, _)| *s == status).map_or(0, |(_, n)| *n);
                let label = serde_json::to_value(status).ok().and_then(|v| v.as_str().map(str::to_string));
                metrics::gauge!("kairo_enrollments", "status" => label.unwrap_or_default()).set(n as f64);
            }
        }
        Err(err) => tracing::warn!(%err, "metrics: cannot count enrollments"),
    }
    match state.store.journal_backlog().await {
        Ok((backlog, oldest)) => {
            metrics::gauge!("kairo_webhook_backlog").set(backlog as f64);
            // The process's clock (the engine's, else the system's): the
            // clock module is the only reader of the time.
            let now = state.api.as_ref().map_or_else(|| SystemClock.now(), |api| api.engine.now());
            let lag = oldest.map_or(0.0, |at| (now - at).num_milliseconds().max(0) as f64 / 1000.0);
            metrics::gauge!("kairo_webhook_apply_lag_seconds").set(lag);
        }
        Err(err) => tracing::warn!(%err, "metrics: cannot read the webhook journal's backlog"),
    }
    metrics.handle.run_upkeep();
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], metrics.handle.render()).into_response()
}

/// Counts every request by route and status, and times it.
pub async fn track(request: Request, next: Next) -> Response {
    let route =
        request.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("kairo_http_requests_total", "route" => route.clone(), "status" => status).increment(1);
    metrics::histogram!("kairo_http_request_seconds", "route" => route).record(started.elapsed().as_secs_f64());
    response
}
