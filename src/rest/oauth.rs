//! The OAuth token endpoint `/oauth/token/` [crmchat: served locally; the vendor runs it on its own auth
//! server]: `authorization_code` and `refresh_token` grants with rotating refresh tokens.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};

use super::envelope::{Format, render};
use super::params;
use crate::error::{ApiError, Code, Variant};
use crate::secrets::{new_secret, sha256_hex};
use crate::server_state::AppState;
use crate::store::{AppRecord, TokenRecord};

/// Refresh tokens live 180 days.
pub const REFRESH_TOKEN_TTL_MS: i64 = 180 * 24 * 3600 * 1000;

pub async fn token(State(app): State<Arc<AppState>>, request: Request) -> Response {
    let result = grant(&app, request).await;
    let status = if result.is_ok() { "ok" } else { "refused" };
    // Never the parameters: they carry the client secret, the code and the refresh token.
    tracing::info!(outcome = status, "oauth token request");
    match result {
        Ok(body) => render(StatusCode::OK, &body, Format::Json),
        Err(err) => render(err.status(), &err.body(), Format::Json),
    }
}

async fn grant(app: &AppState, request: Request) -> Result<Value, ApiError> {
    let (parts, body) = request.into_parts();
    let (bytes, _body_share) =
        super::read_body(body, app.settings.max_body_bytes, app.settings.read_timeout, &app.body_budget).await?;
    // Tokens refer to users and applications that a replace of the state removes: see `AppState::state_gate`.
    let _calls = app.state_gate.read().await;
    let content_type = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let params = params::parse_request(parts.uri.query(), content_type, &bytes, &app.settings.param_limits)
        .await
        .map_err(ApiError::oauth_unreadable_params)?;
    // As for REST calls: the request is in, and a stalled database must not leave the client unanswered.
    tokio::time::timeout(app.settings.request_timeout, issue(app, &params)).await.unwrap_or_else(|_| {
        tracing::warn!("oauth token request timed out waiting for the server: answered 500");
        Err(Code::InternalServerError.into())
    })
}

async fn issue(app: &AppState, params: &crate::methods::Params) -> Result<Value, ApiError> {
    let text = |name: &str| match params.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        _ => Err(ApiError::oauth_missing_parameter(name)),
    };
    let grant_type = text("grant_type")?;
    let client_id = text("client_id")?;
    let client_secret = text("client_secret")?;
    let app_record = authenticate_client(app, &client_id, &client_secret).await?;
    let now_ms = app.clock.unix_ms();
    let issued = new_tokens(app, &app_record, now_ms);
    let tokens = &issued.record;
    match grant_type.as_str() {
        "authorization_code" => {
            let code = text("code")?;
            let Some(found) = app.store.take_auth_code(&sha256_hex(&code)).await? else {
                return Err(Code::OauthInvalidGrant.into());
            };
            if found.client_id != client_id || found.expires_ms <= now_ms {
                return Err(Code::OauthInvalidGrant.into());
            }
            let record = TokenRecord { user_id: found.user_id, ..tokens.clone() };
            app.store.add_tokens(&record).await?;
            token_body(app, &issued, &record).await
        }
        "refresh_token" => {
            let refresh = text("refresh_token")?;
            let old_hash = sha256_hex(&refresh);
            let Some(old) = app.store.token_by_refresh(&old_hash).await? else {
                return Err(Variant::InvalidRefreshToken.into());
            };
            if old.client_id != client_id || old.refresh_expires_ms <= now_ms {
                return Err(Variant::InvalidRefreshToken.into());
            }
            // A refreshed delivery token keeps its place in the loop guard.
            let record = TokenRecord { user_id: old.user_id, event_depth: old.event_depth, ..tokens.clone() };
            // Rotation is one atomic step: of two concurrent refreshes with the same token, one fails.
            if app.store.rotate_tokens(&old_hash, &record, now_ms).await?.is_none() {
                return Err(Variant::InvalidRefreshToken.into());
            }
            token_body(app, &issued, &record).await
        }
        _ => Err(Variant::UnsupportedGrantType.into()),
    }
}

async fn authenticate_client(app: &AppState, client_id: &str, secret: &str) -> Result<AppRecord, ApiError> {
    let invalid_client = || ApiError::from(Code::OauthInvalidClient);
    let Some(record) = app.store.app(client_id).await? else {
        return Err(invalid_client());
    };
    if !crate::secrets::hash_matches(secret, &record.secret_sha256) {
        return Err(invalid_client());
    }
    Ok(record)
}

/// A token pair for `user_id` issued to `client` without a grant (the control API's app install), stored and
/// answered as the token endpoint answers a grant.
pub(crate) async fn issue_without_grant(app: &AppState, client: &AppRecord, user_id: i64) -> Result<Value, ApiError> {
    let issued = new_tokens(app, client, app.clock.unix_ms());
    let record = TokenRecord { user_id, ..issued.record.clone() };
    app.store.add_tokens(&record).await?;
    token_body(app, &issued, &record).await
}

struct Issued {
    access_token: String,
    refresh_token: String,
    record: TokenRecord,
}

fn new_tokens(app: &AppState, client: &AppRecord, now_ms: i64) -> Issued {
    let (access_token, refresh_token) = (new_secret(), new_secret());
    let record = TokenRecord {
        access_sha256: sha256_hex(&access_token),
        refresh_sha256: sha256_hex(&refresh_token),
        client_id: client.client_id.clone(),
        user_id: 0,
        scopes: client.scopes.clone(),
        access_expires_ms: now_ms + app.settings.access_token_ttl_secs as i64 * 1000,
        refresh_expires_ms: now_ms + REFRESH_TOKEN_TTL_MS,
        event_depth: 0,
    };
    Issued { access_token, refresh_token, record }
}

/// The answer of a grant. Its endpoints name the portal's domain over HTTPS, as the vendor's name the portal;
/// `--public-url` replaces that with the address clients reach this server at, so that an SDK which follows
/// `client_endpoint` after a refresh (b24pysdk does) keeps reaching it.
async fn token_body(app: &AppState, issued: &Issued, record: &TokenRecord) -> Result<Value, ApiError> {
    let portal = app.store.portal().await?;
    let base = app.settings.public_url.clone().unwrap_or_else(|| format!("https://{}", portal.domain));
    Ok(json!({
        "access_token": issued.access_token,
        "expires": record.access_expires_ms / 1000,
        "expires_in": app.settings.access_token_ttl_secs,
        "scope": record.scopes.join(","),
        "domain": portal.domain,
        "server_endpoint": format!("{base}/oauth/rest/"),
        "status": "L",
        "client_endpoint": format!("{base}/rest/"),
        "member_id": member_id(&portal.domain),
        "user_id": record.user_id,
        "refresh_token": issued.refresh_token,
    }))
}

/// The portal's stable member id: 32 hex characters derived from its domain.
pub fn member_id(domain: &str) -> String {
    sha256_hex(domain)[..32].to_string()
}
