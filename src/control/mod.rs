//! The control API under `/_crmchat/`: what a test suite uses to drive and observe crmchat (reset between
//! tests, seed and snapshot the portal, …). Off unless a control token is set; then every request must carry
//! `Authorization: Bearer TOKEN`. JSON in and out; errors are `{"error": code, "message": text}` with a 4xx
//! status. Nothing here speaks the vendor's protocol: it is crmchat's own API, beside the REST one.
//!
//! Each part of the API is a sub-module with a `routes()` of its own, merged in [`routes`]; what a reset must
//! clear besides the portal's state is listed in [`clear_runtime`].

pub mod apps;
pub mod clock;
pub mod events;
pub mod faults;
pub mod metrics;
pub mod requests;
pub mod snapshots;
pub mod state;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, OriginalUri, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::server_state::AppState;

/// The largest state document accepted (a portal of a million memberships is some 10 MB of JSON).
const MAX_BODY_BYTES: usize = 256 * 1024 * 1024;

/// The `/_crmchat` router, token check included.
pub fn router(app: Arc<AppState>) -> Router<Arc<AppState>> {
    let guard = middleware::from_fn_with_state(app, authorize);
    let api = routes()
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(guard.clone());
    // A nested router's `/` is `/_crmchat` only; the address crmchat prints ends with a slash.
    Router::new().nest("/_crmchat", api).route("/_crmchat/", get(index).layer(guard))
}

/// Every route of the control API, relative to `/_crmchat`. The other parts (the request journal, faults, the
/// clock, events) merge theirs here.
fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(index))
        .merge(state::routes())
        .merge(snapshots::routes())
        .merge(apps::routes())
        .merge(requests::routes())
        .merge(faults::routes())
        .merge(clock::routes())
        .merge(events::routes())
}

/// Clears what the server keeps besides the portal's state, for a reset: the rate-limit buckets and operating
/// time of the portals `domains` (in Redis too, when the limits live there); the request journal, fault rules,
/// the clock offset and events are cleared by their parts.
pub(crate) async fn clear_runtime(app: &AppState, domains: &[&str]) {
    for domain in domains {
        app.requests.clear(domain).await;
        app.operating.clear(domain).await;
    }
    app.journal.clear();
    app.faults.clear();
    app.clock.reset();
}

/// 404 when the control API is off; 401 `{"error":"unauthorized"}` unless the request carries the token.
async fn authorize(State(app): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let Some(token) = &app.control.token else {
        return ControlError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "the control API is off: start crmchat with --control-token (or --demo)",
        )
        .into_response();
    };
    if !bearer(&request).is_some_and(|candidate| token.matches(candidate)) {
        return (StatusCode::UNAUTHORIZED, Json(json!({"error": "unauthorized"}))).into_response();
    }
    next.run(request).await
}

/// The token of an `Authorization: Bearer TOKEN` header.
pub(crate) fn bearer(request: &Request) -> Option<&str> {
    let value = request.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

async fn index() -> Response {
    Json(json!({
        "service": "crmchat control API",
        "version": env!("CARGO_PKG_VERSION"),
        "endpoints": [
            "/_crmchat/state",
            "/_crmchat/reset",
            "/_crmchat/snapshots",
            "/_crmchat/apps/{client_id}/install",
            "/_crmchat/requests",
            "/_crmchat/faults",
            "/_crmchat/errors",
            "/_crmchat/clock",
            "/_crmchat/events",
        ],
    }))
    .into_response()
}

async fn not_found(OriginalUri(uri): OriginalUri) -> ControlError {
    ControlError::new(StatusCode::NOT_FOUND, "not_found", format!("no control endpoint {}", uri.path()))
}

async fn method_not_allowed(method: axum::http::Method, OriginalUri(uri): OriginalUri) -> ControlError {
    let message = format!("{} does not take {method}", uri.path());
    ControlError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", message)
}

/// `GET /readyz`: 200 once the database answers (the listeners open only after start-up loading finished, so
/// answering at all means that part is done); 503 otherwise. Open, like `/healthz`.
pub async fn readyz(State(app): State<Arc<AppState>>) -> Response {
    // A probe must get its answer before its own timeout, whatever the database is doing: a database that
    // hangs is as unready as one that refuses.
    let error = match tokio::time::timeout(READINESS_WAIT, app.store.revision()).await {
        Ok(Ok(_)) => return Json(json!({"status": "ready"})).into_response(),
        Ok(Err(err)) => err.to_string(),
        Err(_) => format!("no answer within {} ms", READINESS_WAIT.as_millis()),
    };
    if let Some(held_back) = READINESS_LOG.allow() {
        tracing::warn!(error = %error, similar_lines_held_back = held_back, "readiness check: the database does not answer");
    }
    let body = json!({"status": "unavailable", "reason": "the database does not answer"});
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

const READINESS_WAIT: std::time::Duration = std::time::Duration::from_secs(1);
static READINESS_LOG: crate::log_throttle::LogThrottle =
    crate::log_throttle::LogThrottle::new(std::time::Duration::from_secs(10));

/// A JSON answer with `Content-Type: application/json`.
pub(crate) struct Json(pub serde_json::Value);

impl IntoResponse for Json {
    fn into_response(self) -> Response {
        json_text(StatusCode::OK, self.0.to_string())
    }
}

pub(crate) fn json_text(status: StatusCode, text: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], text).into_response()
}

/// A refused control call: `{"error": code, "message": text}` (and `problems` for an invalid state).
#[derive(Debug)]
pub struct ControlError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub problems: Option<Vec<String>>,
}

impl ControlError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), problems: None }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 400 `invalid_state` with one "path: problem" per entry.
    pub fn invalid_state(problems: Vec<String>) -> Self {
        let message = match problems.len() {
            1 => "the state document has 1 problem".to_string(),
            n => format!("the state document has {n} problems"),
        };
        Self { problems: Some(problems), ..Self::bad_request("invalid_state", message) }
    }
}

impl From<crate::store::StoreError> for ControlError {
    fn from(err: crate::store::StoreError) -> Self {
        tracing::error!(error = %err, "control API: the store failed");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", err.to_string())
    }
}

impl IntoResponse for ControlError {
    fn into_response(self) -> Response {
        let mut body = json!({"error": self.code, "message": self.message});
        if let Some(problems) = self.problems {
            body["problems"] = json!(problems);
        }
        (self.status, Json(body)).into_response()
    }
}
