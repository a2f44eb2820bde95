//! `/_crmchat/state` and `/_crmchat/reset`: read, load, replace and reset the portal's state.
//!
//! A replace (`PUT /state`, a reset) takes the application's state gate for writing: it waits for the REST
//! calls in flight to finish and holds new ones back until the new state is committed and the read model
//! rebuilt, so every call runs entirely against the old state or entirely against the new one.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use super::{ControlError, Json, json_text};
use crate::server_state::AppState;
use crate::state::{self, Document, Format, PortalState};
use crate::store::LoadError;

pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/state", get(export).post(load).put(replace)).route("/reset", post(reset))
}

#[derive(Deserialize)]
struct ExportQuery {
    detail: Option<String>,
}

/// `GET /state`: exactly what `crmchat state export` writes; `?detail=structure` leaves out members and
/// messages.
async fn export(State(app): State<Arc<AppState>>, Query(query): Query<ExportQuery>) -> Result<Response, ControlError> {
    let state = match query.detail.as_deref() {
        None | Some("full") => app.store.export_state().await?,
        Some("structure") => app.store.export_structure().await?,
        Some(other) => {
            return Err(ControlError::bad_request(
                "invalid_argument",
                format!("detail={other:?}: expected \"structure\" (or no detail for everything)"),
            ));
        }
    };
    Ok(json_text(StatusCode::OK, export_text(&state)?))
}

/// The text of `crmchat state export`.
pub fn export_text(state: &PortalState) -> Result<String, ControlError> {
    serde_json::to_string_pretty(state)
        .map(|text| text + "\n")
        .map_err(|e| ControlError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", e.to_string()))
}

/// A state document from a request body: YAML when the Content-Type says so, JSON otherwise.
fn document(headers: &HeaderMap, body: &Bytes) -> Result<Document, ControlError> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let format = match media.as_str() {
        "application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml" => Format::Yaml,
        _ => Format::Json,
    };
    let text = std::str::from_utf8(body)
        .map_err(|_| ControlError::invalid_state(vec!["the document is not UTF-8 text".into()]))?;
    state::parse_document(text, format).map_err(|e| ControlError::invalid_state(e.0))
}

/// `POST /state`: upsert a document into the portal, like `crmchat state load`.
async fn load(State(app): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Result<Response, ControlError> {
    let started = Instant::now();
    let document = document(&headers, &body)?;
    // Loads do not replace rows under running calls (they upsert), but they too wait for the calls in flight:
    // a call sees the portal before or after the load.
    let _calls = app.state_gate.write().await;
    match app.store.load_state(document.state, document.has_portal, app.clock.unix_ms()).await {
        Ok(()) => Ok(done(started)),
        Err(LoadError::Invalid(errors)) => Err(ControlError::invalid_state(errors.0)),
        Err(LoadError::Store(err)) => Err(err.into()),
    }
}

/// `PUT /state`: the portal becomes exactly the document.
async fn replace(State(app): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Result<Response, ControlError> {
    let started = Instant::now();
    let document = document(&headers, &body)?;
    let state = state::validate(document.state).map_err(|e| ControlError::invalid_state(e.0))?;
    replace_with(&app, &state, false).await?;
    Ok(done(started))
}

/// `POST /reset`: back to the start-up state, with the journal, limits, faults, clock and events cleared.
async fn reset(State(app): State<Arc<AppState>>) -> Result<Response, ControlError> {
    let started = Instant::now();
    let startup = app.control.startup.clone();
    replace_with(&app, &startup, true).await?;
    Ok(done(started))
}

/// Replaces the whole state by a validated one with REST calls held back (see the module documentation). With
/// `reset`, also the notifications, the outbox and what [`super::clear_runtime`] clears.
pub(crate) async fn replace_with(app: &AppState, state: &PortalState, reset: bool) -> Result<(), ControlError> {
    let _calls = app.state_gate.write().await;
    // A reset may change the domain: the limits of both the old and the new portal are cleared.
    let before = if reset { Some(app.store.portal().await?) } else { None };
    app.store.replace_state(state, reset).await?;
    if let Some(before) = before {
        super::clear_runtime(app, &[&before.domain, &state.portal.domain]).await;
    }
    Ok(())
}

fn done(started: Instant) -> Response {
    let took_ms = started.elapsed().as_millis() as u64;
    Json(json!({"ok": true, "took_ms": took_ms})).into_response()
}
