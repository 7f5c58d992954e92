//! The HTTP surface of `kairo serve`: health, readiness, metrics, the
//! WhatsApp webhook endpoint, the `/v1` API with its OpenAPI document, and
//! the web pages (sign-in and the inbox).
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

use kairo_store::Store;

pub mod auth;
pub mod error;
pub mod metrics;
mod settings;
pub mod v1;
pub mod web;
pub mod webhook;

pub use self::settings::ApiSettings;

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
    /// The web pages (sign-in, the inbox); `None` serves no page.
    pub web: Option<web::WebState>,
}

/// The whole HTTP application, ready to serve.
pub fn router(state: AppState) -> Router {
    let mut router = Router::new();
    if let Some(api) = state.api.clone() {
        router = router.nest("/v1", v1::router(api));
    }
    if let Some(web) = state.web.clone() {
        router = router.merge(web::router(web));
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
        .layer(axum::middleware::from_fn(method_not_allowed_as_json))
        // Requests are logged by method and path only: a query string can
        // carry a secret (the webhook handshake's `hub.verify_token`).
        .layer(tower_http::trace::TraceLayer::new_for_http().make_span_with(
            |request: &axum::http::Request<axum::body::Body>| {
                tracing::debug_span!("request", method = %request.method(), path = %request.uri().path())
            },
        ))
        .with_state(state)
}

/// A 405 is a JSON error like every other one, with `Allow` naming the
/// methods the path takes (axum loses the header behind route layers, so
/// it is worked out here from the API's routes).
async fn method_not_allowed_as_json(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let path = request.uri().path().to_string();
    let response = next.run(request).await;
    if response.status() != StatusCode::METHOD_NOT_ALLOWED {
        return response;
    }
    let allow = allowed_methods(&path);
    let listed = allow.join(", ");
    let body = json!({ "error": {
        "code": "method_not_allowed",
        "message": format!("{path} does not take this method; it takes {}", if listed.is_empty() { "none" } else { &listed }),
        "details": { "allow": allow },
    }});
    let mut out = (StatusCode::METHOD_NOT_ALLOWED, Json(body)).into_response();
    if let Ok(value) = axum::http::HeaderValue::from_str(&listed) {
        out.headers_mut().insert(axum::http::header::ALLOW, value);
    }
    out
}

/// The methods a path takes: the OpenAPI document's for `/v1`, and those
/// of the routes outside it.
fn allowed_methods(path: &str) -> Vec<String> {
    static ROUTES: std::sync::LazyLock<Vec<(String, Vec<String>)>> = std::sync::LazyLock::new(|| {
        let document: serde_json::Value =
            serde_json::from_str(&v1::openapi::document_json()).unwrap_or(serde_json::Value::Null);
        let mut routes: Vec<(String, Vec<String>)> = document["paths"]
            .as_object()
            .map(|paths| {
                paths
                    .iter()
                    .map(|(template, item)| {
                        let methods =
                            item.as_object().map(|m| m.keys().map(|k| k.to_uppercase()).collect()).unwrap_or_default();
                        (template.clone(), methods)
                    })
                    .collect()
            })
            .unwrap_or_default();
        for (template, methods) in [
            ("/healthz", &["GET"][..]),
            ("/readyz", &["GET"]),
            ("/metrics", &["GET"]),
            ("/webhooks/whatsapp", &["GET", "POST"]),
            ("/v1/openapi.json", &["GET"]),
        ] {
            routes.push((template.to_string(), methods.iter().map(|m| m.to_string()).collect()));
        }
        routes
    });
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    ROUTES
        .iter()
        .find(|(template, _)| {
            let parts: Vec<&str> = template.split('/').collect();
            parts.len() == segments.len() && parts.iter().zip(&segments).all(|(p, s)| p.starts_with('{') || p == s)
        })
        .map(|(_, methods)| methods.clone())
        .unwrap_or_default()
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
