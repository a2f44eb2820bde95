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
use crate::events::{HandlerUrlError, check_handler, lifecycle};
use crate::server_state::AppState;

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
    if let Some(handler) = &request.handler {
        // The checks of `event.bind`: a handler the vendor would refuse is refused here too.
        check_handler(handler).map_err(|e| {
            let why = match e {
                HandlerUrlError::WrongUrl => "its host needs a dot after the first character (localhost does not do)",
                HandlerUrlError::UnsupportedProtocol => "only http and https are supported",
            };
            ControlError::bad_request("invalid_argument", format!("handler {handler:?} is refused: {why}"))
        })?;
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
    lifecycle::installed(&app.store, &client_id, request.user_id, request.handler.as_deref(), app.clock.unix_ms())
        .await?;
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

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Uninstall {
    /// `CLEAN` of `ONAPPUNINSTALL`: the application is to remove its data too.
    #[serde(default)]
    clean: bool,
}

/// `ONAPPUNINSTALL` is queued for the application's handlers, then its bindings go and its tokens stop
/// working; the application stays registered, so it can be installed again.
async fn uninstall(
    State(app): State<Arc<AppState>>,
    Path(client_id): Path<String>,
    body: Bytes,
) -> Result<Response, ControlError> {
    let request: Uninstall = if body.iter().all(u8::is_ascii_whitespace) {
        Uninstall::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ControlError::bad_request("invalid_argument", format!("expected {{\"clean\": true or false}}: {e}"))
        })?
    };
    if app.store.app(&client_id).await?.is_none() {
        return Err(app_not_found(&client_id));
    }
    let _calls = app.state_gate.read().await;
    let unbound = lifecycle::uninstalling(&app.store, &client_id, request.clean, app.clock.unix_ms()).await?;
    let revoked = app.store.revoke_app_tokens(&client_id).await?;
    Ok(Json(json!({"ok": true, "unbound": unbound, "revoked_tokens": revoked})).into_response())
}
