//! The pages' stylesheet and script, compiled into the binary. Their URLs
//! carry a hash of their content, so a browser may keep them for a year and
//! still gets the new ones after an upgrade.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

const FILES: &[(&str, &str, &str)] = &[
    ("app.css", "text/css; charset=utf-8", include_str!("../../assets/app.css")),
    ("inbox.js", "text/javascript; charset=utf-8", include_str!("../../assets/inbox.js")),
];

static VERSIONS: LazyLock<Vec<(&'static str, String)>> = LazyLock::new(|| {
    FILES
        .iter()
        .map(|(name, _, body)| {
            let digest = Sha256::digest(body.as_bytes());
            (*name, digest.iter().take(6).map(|b| format!("{b:02x}")).collect())
        })
        .collect()
});

/// The URL of an asset, with its content's hash.
pub fn url(name: &str) -> String {
    let version = VERSIONS.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str()).unwrap_or("0");
    format!("/assets/{name}?v={version}")
}

/// `GET /assets/{name}`.
pub async fn serve(Path(name): Path<String>) -> Response {
    let Some((_, content_type, body)) = FILES.iter().find(|(n, _, _)| *n == name) else {
        return (StatusCode::NOT_FOUND, "no such asset").into_response();
    };
    let mut response = (*body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000, immutable"));
    response
}
