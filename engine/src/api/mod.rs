//! The HTTP surface of `kairo serve`: health, readiness and the WhatsApp
//! webhook; the `/v1` API joins this router as it is built.
//!
//! Invariant: handlers never send internals to clients; an error becomes a
//! JSON body with a code and a message.

use axum::extract::DefaultBodyLimit;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::store::Store;

pub mod auth;
pub mod error;
pub mod metrics;
pub mod v1;
pub mod webhook;

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    pub store: Store,
    /// `None` when no WhatsApp app is configured: the webhook answers 503.
    pub webhook: Option<webhook::WebhookState>,
    /// The `/v1` API; `None` serves health and the webhook only.
    pub api: Option<v1::ApiState>,
    /// Prometheus metrics at `/metrics`, when a recorder is installed.
    pub metrics: Option<metrics::Metrics>,
}

/// The whole HTTP application, ready to serve.
pub fn router(state: AppState) -> Router {
    let mut router = Router::new();
    if let Some(api) = state.api.clone() {
        router = router.nest("/v1", v1::router(api));
    }
    router
        .route("/metrics", get(metrics::render))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route(
            "/webhooks/whatsapp",
            get(webhook::handshake).post(webhook::deliver).layer(DefaultBodyLimit::max(webhook::MAX_BODY_BYTES)),
        )
        .route_layer(axum::middleware::from_fn(metrics::track))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// The process is up and serving HTTP.
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// The database answers and every migration has run: 200, else 503 with
/// what is missing.
async fn readyz(State(state): State<AppState>) -> Response {
    let readiness = state.store.readiness().await;
    let body = json!({
        "status": if readiness.is_ready() { "ready" } else { "not_ready" },
        "database": if readiness.database_reachable { "reachable" } else { "unreachable" },
        "pending_migrations": readiness.pending_migrations,
    });
    let status = if readiness.is_ready() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}
