//! Who is calling: an inbound webhook (user id and code in the path) or an OAuth access token.

use axum::http::HeaderMap;
use serde_json::Value;

use super::error::ApiError;
use crate::domain::User;
use crate::fixtures::validate::sha256_hex;
use crate::methods::Params;
use crate::store::DynStore;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthKind {
    Webhook,
    OAuth,
}

#[derive(Debug, Clone)]
pub struct Caller {
    pub user: User,
    pub scopes: Vec<String>,
    pub kind: AuthKind,
    /// The webhook id or application client id: what operating-time accounting is keyed by.
    pub credential_id: String,
    /// The OAuth application's client id; `None` for a webhook.
    pub client_id: Option<String>,
}

impl Caller {
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }

    pub fn insufficient_scope(&self) -> ApiError {
        ApiError::insufficient_scope(match self.kind {
            AuthKind::Webhook => "webhook token",
            AuthKind::OAuth => "access token",
        })
    }
}

/// Credentials as found in a request, before they are checked.
pub enum Credentials {
    Webhook { user_id: String, code: String },
    Token(String),
    None,
}

/// Parameters the server consumes itself; methods never see them. The SDKs' telemetry is dropped too.
const RESERVED: &[&str] = &[
    "auth",
    "access_token",
    "auth_connector",
    "aplogin",
    "ap",
    "start",
    "state",
    "bx24_request_id",
    "bx24_sdk_ver",
    "bx24_sdk_type",
];

/// Find the credentials of a request: a webhook path wins; otherwise an OAuth token from the
/// `Authorization: Bearer` header, then `auth`, then `access_token`. Reserved keys are removed from `params`.
pub fn extract(webhook: Option<(&str, &str)>, headers: &HeaderMap, params: &mut Params) -> Credentials {
    let param_token = |params: &Params, key: &str| match params.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    };
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty());
    let token = bearer.or_else(|| param_token(params, "auth")).or_else(|| param_token(params, "access_token"));
    strip_reserved(params);
    match (webhook, token) {
        (Some((user_id, code)), _) => Credentials::Webhook { user_id: user_id.into(), code: code.into() },
        (None, Some(token)) => Credentials::Token(token),
        (None, None) => Credentials::None,
    }
}

pub fn strip_reserved(params: &mut Params) {
    for key in RESERVED {
        params.shift_remove(*key);
    }
}

/// Check credentials against the store. Secrets are compared by their SHA-256 only; the clear value is
/// never stored or logged.
pub async fn authenticate(store: &DynStore, credentials: Credentials) -> Result<Caller, ApiError> {
    match credentials {
        Credentials::None => Err(ApiError::no_auth_found()),
        Credentials::Webhook { user_id, code } => {
            let Ok(user_id) = user_id.parse::<i64>() else {
                return Err(ApiError::invalid_credentials());
            };
            let Some(hook) = store.webhook(user_id, &sha256_hex(&code)).await? else {
                return Err(ApiError::invalid_credentials());
            };
            match store.user(hook.user_id).await? {
                Some(user) if user.active => Ok(Caller {
                    user,
                    scopes: hook.scopes,
                    kind: AuthKind::Webhook,
                    credential_id: format!("webhook:{}", hook.id),
                    client_id: None,
                }),
                _ => Err(ApiError::invalid_credentials()),
            }
        }
        // No access token has been issued by this server (the OAuth flow arrives with its own issue), so
        // every token is unknown to it.
        Credentials::Token(_) => Err(ApiError::invalid_token()),
    }
}
