//! `GET /metrics`: Prometheus text. Behind the control token when one is set (it tells what the portal's
//! callers do), open otherwise, like `/healthz`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{ControlError, Json, bearer};
use crate::server_state::AppState;
use crate::telemetry;

/// The exposition format's content type, version 0.0.4 (what Prometheus scrapes).
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

pub async fn metrics(State(app): State<Arc<AppState>>, request: Request) -> Response {
    if let Some(token) = &app.control.token
        && !bearer(&request).is_some_and(|candidate| token.matches(candidate))
    {
        return (StatusCode::UNAUTHORIZED, Json(json!({"error": "unauthorized"}))).into_response();
    }
    let Some(handle) = telemetry::install() else {
        let message = "metrics are not recorded: another metrics recorder was installed in this process";
        return ControlError::new(StatusCode::NOT_FOUND, "not_found", message).into_response();
    };
    telemetry::set_state_gauges(app.journal.len(), app.journal.capacity(), &app.store.pool_use());
    ([(header::CONTENT_TYPE, TEXT_FORMAT)], handle.render()).into_response()
}
