//! `/_crmchat/faults`: fault rules (see `crate::rest::faults`), and `/_crmchat/errors`: the error catalogue
//! their `error` names.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use serde_json::json;

use super::{ControlError, Json};
use crate::rest::faults::{self, RuleSpec};
use crate::server_state::AppState;

pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/faults", get(list).post(add).delete(clear))
        .route("/faults/{id}", delete(remove))
        .route("/errors", get(errors))
}

async fn add(State(app): State<Arc<AppState>>, body: Bytes) -> Result<Json, ControlError> {
    let spec: RuleSpec = serde_json::from_slice(&body)
        .map_err(|e| ControlError::bad_request("invalid_fault", format!("not a fault rule: {e}")))?;
    let id = app.faults.add(spec).map_err(|refused| ControlError::bad_request(refused.code, refused.message))?;
    Ok(Json(json!({"id": id})))
}

async fn list(State(app): State<Arc<AppState>>) -> Json {
    Json(app.faults.list())
}

async fn remove(State(app): State<Arc<AppState>>, Path(id): Path<String>) -> Result<Json, ControlError> {
    let not_found = || ControlError::new(StatusCode::NOT_FOUND, "not_found", format!("no fault rule {id}"));
    let number: u64 = id.parse().map_err(|_| not_found())?;
    if app.faults.remove(number) { Ok(Json(json!({"ok": true}))) } else { Err(not_found()) }
}

async fn clear(State(app): State<Arc<AppState>>) -> Json {
    app.faults.clear();
    Json(json!({"ok": true}))
}

async fn errors() -> Json {
    Json(faults::catalogue())
}
