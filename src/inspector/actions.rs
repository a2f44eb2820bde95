//! What the inspector's buttons do. Removing or adding a member calls the vendor method itself, through the
//! protocol layer's [`rest::invoke`] as the chosen webhook's user with that webhook's scopes (its scope check,
//! operating-time accounting, the method, the store), and shows the vendor's answer, errors included. A reset
//! is the control API's own.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::session::Flash;
use super::{BASE, Login};
use crate::clock::Start;
use crate::error::{ApiError, Code};
use crate::methods::Params;
use crate::rest;
use crate::rest::envelope::success_body;
use crate::server_state::AppState;
use crate::store::WebhookCredential;

#[derive(Deserialize)]
pub struct MemberForm {
    #[serde(rename = "as")]
    acting: String,
    record: String,
    user_id: String,
    page: Option<String>,
}

pub async fn remove_member(
    State(app): State<Arc<AppState>>,
    Extension(login): Extension<Login>,
    Path(chat_id): Path<i64>,
    Form(form): Form<MemberForm>,
) -> Response {
    member_action(&app, &login, chat_id, form, "imopenlines.crm.chat.user.delete").await
}

pub async fn add_member(
    State(app): State<Arc<AppState>>,
    Extension(login): Extension<Login>,
    Path(chat_id): Path<i64>,
    Form(form): Form<MemberForm>,
) -> Response {
    member_action(&app, &login, chat_id, form, "imopenlines.crm.chat.user.add").await
}

async fn member_action(app: &AppState, login: &Login, chat_id: i64, form: MemberForm, method: &str) -> Response {
    let (entity_type, entity) = form.record.split_once(':').unwrap_or(("", ""));
    // Values go to the method as a client would send them (strings from a form); the method validates them.
    let mut params = Params::new();
    params.insert("CRM_ENTITY_TYPE".into(), json!(entity_type));
    params.insert("CRM_ENTITY".into(), json!(entity));
    params.insert("CHAT_ID".into(), json!(chat_id));
    params.insert("USER_ID".into(), json!(form.user_id.trim()));
    let webhook_id = form.acting.parse::<i64>().unwrap_or(0);
    let (status, answer) = call_as_webhook(app, webhook_id, method, &params).await;
    let ok = status == StatusCode::OK;
    let detail = format!(
        "sent: {}\n\nanswer: HTTP {}\n{}",
        serde_json::to_string(&Value::Object(params)).unwrap_or_default(),
        status.as_u16(),
        serde_json::to_string_pretty(&answer).unwrap_or_default()
    );
    let title = match answer.get("error").and_then(Value::as_str) {
        Some(code) => format!("{method} as webhook {webhook_id}: {code}"),
        None => format!("{method} as webhook {webhook_id}: ok"),
    };
    login.set_flash(Flash { title, ok, detail });
    let page = form.page.as_deref().and_then(|p| p.parse::<usize>().ok()).unwrap_or(1);
    Redirect::to(&format!("{BASE}/chats/{chat_id}?as={webhook_id}&page={page}")).into_response()
}

/// Call `method` as webhook `webhook_id` would: the vendor's status and JSON answer.
pub(crate) async fn call_as_webhook(
    app: &AppState,
    webhook_id: i64,
    method: &str,
    params: &Params,
) -> (StatusCode, Value) {
    match call(app, webhook_id, method, params).await {
        Ok(body) => (StatusCode::OK, body),
        Err(err) => (err.status(), err.body()),
    }
}

async fn call(app: &AppState, webhook_id: i64, method: &str, params: &Params) -> Result<Value, ApiError> {
    let start = Start::now(&app.clock);
    let def = rest::registry::find(method).ok_or(ApiError::from(Code::MethodNotFound))?;
    // Like a REST call: never against half of a state being replaced.
    let _calls = app.state_gate.read().await;
    let hook = app.store.list_webhooks().await?.into_iter().find(|w| w.id == webhook_id);
    let Some(hook) = hook else {
        return Err(Code::InvalidCredentials.into());
    };
    // The checks authentication makes for a webhook's user.
    let credential = WebhookCredential { id: hook.id, user_id: hook.user_id, scopes: hook.scopes };
    let caller = rest::auth::webhook_caller(&app.store, credential).await?;
    let portal = app.store.portal().await?;
    let (output, timing) = rest::invoke(app, &caller, &portal, def, params, start).await?;
    Ok(success_body(&output, &timing))
}

/// The control API's reset: the start-up state, with the journal, limits, faults, clock and events cleared.
pub async fn reset(State(app): State<Arc<AppState>>, Extension(login): Extension<Login>) -> Response {
    let started = std::time::Instant::now();
    let startup = app.control.startup.clone();
    let flash = match crate::control::state::replace_with(&app, &startup, true).await {
        Ok(()) => Flash {
            title: "Reset: the portal is back to its start-up state".into(),
            ok: true,
            detail: format!("took {} ms", started.elapsed().as_millis()),
        },
        Err(err) => Flash { title: "Reset failed".into(), ok: false, detail: err.message },
    };
    login.set_flash(flash);
    Redirect::to(&format!("{BASE}/")).into_response()
}
