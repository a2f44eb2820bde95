//! `POST /_crmchat/apps/{client_id}/install` and `/uninstall`: an application installed for a user without
//! the OAuth dance, with what the vendor hands an application when it is installed.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;
use serde_json::json;

use super::{ControlError, Json};
use crate::app::AppState;
use crate::store::BindingFilter;

pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/apps/{client_id}/install", post(install))
        .route("/apps/{client_id}/uninstall", post(uninstall))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Install {
    user_id: i64,
    #[serde(default)]
    handler: Option<String>,
}

fn app_not_found(client_id: &str) -> ControlError {
    ControlError::new(StatusCode::NOT_FOUND, "app_not_found", format!("no application with client_id {client_id:?}"))
}

async fn install(
    State(app): State<Arc<AppState>>,
    Path(client_id): Path<String>,
    body: Bytes,
) -> Result<Response, ControlError> {
    let request: Install = serde_json::from_slice(&body).map_err(|e| {
        ControlError::bad_request(
            "invalid_argument",
            format!("expected {{\"user_id\": N, \"handler\": URL or null}}: {e}"),
        )
    })?;
    if request.handler.is_some() {
        // Binding ONAPPINSTALL is only half of it: the event must also be delivered, and this build has no
        // delivery of events yet.
        return Err(ControlError::bad_request(
            "events_unavailable",
            "a handler needs event delivery (ONAPPINSTALL), which this build of crmchat does not have yet; \
             install with \"handler\": null",
        ));
    }
    let Some(record) = app.store.app(&client_id).await? else {
        return Err(app_not_found(&client_id));
    };
    match app.store.user(request.user_id).await? {
        Some(user) if user.active => {}
        Some(_) => {
            return Err(ControlError::bad_request(
                "invalid_argument",
                format!("user {} is not active", request.user_id),
            ));
        }
        None => {
            let message = format!("user {} does not exist", request.user_id);
            return Err(ControlError::new(StatusCode::NOT_FOUND, "user_not_found", message));
        }
    }
    let _calls = app.state_gate.read().await;
    let tokens = crate::rest::oauth::issue_without_grant(&app, &record, request.user_id)
        .await
        .map_err(|e| ControlError::new(e.status(), "internal_error", format!("issuing the tokens: {:?}", e.code())))?;
    Ok(Json(json!({
        "access_token": tokens["access_token"],
        "refresh_token": tokens["refresh_token"],
        "expires_in": tokens["expires_in"],
        "member_id": tokens["member_id"],
        "application_token": record.application_token,
        "client_endpoint": tokens["client_endpoint"],
        "server_endpoint": tokens["server_endpoint"],
    }))
    .into_response())
}

/// The application's tokens stop working and its event bindings go; the application stays registered, so it
/// can be installed again.
async fn uninstall(State(app): State<Arc<AppState>>, Path(client_id): Path<String>) -> Result<Response, ControlError> {
    if app.store.app(&client_id).await?.is_none() {
        return Err(app_not_found(&client_id));
    }
    let _calls = app.state_gate.read().await;
    let mut unbound = 0;
    let mut seen = std::collections::HashSet::new();
    for binding in app.store.bindings(&client_id).await? {
        if seen.insert((binding.event.clone(), binding.handler.clone())) {
            let filter = BindingFilter {
                client_id: client_id.clone(),
                event: binding.event,
                handler: binding.handler,
                user_id: None,
                connector_id: None,
            };
            unbound += app.store.remove_bindings(&filter).await?;
        }
    }
    let revoked = app.store.revoke_app_tokens(&client_id).await?;
    Ok(Json(json!({"ok": true, "unbound": unbound, "revoked_tokens": revoked})).into_response())
}
