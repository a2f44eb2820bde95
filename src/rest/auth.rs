//! Who is calling: an inbound webhook (user id and code in the path) or an OAuth access token.

use std::sync::Arc;

use axum::http::HeaderMap;
use serde_json::Value;

use crate::domain::User;
use crate::error::{ApiError, Code, Variant};
use crate::methods::Params;
use crate::secrets::sha256_hex;
use crate::store::{DynStore, TokenRecord, WebhookCredential};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthKind {
    Webhook,
    OAuth,
}

#[derive(Debug, Clone)]
pub struct Caller {
    pub user: Arc<User>,
    pub scopes: Arc<[String]>,
    pub kind: AuthKind,
    /// The webhook id or application client id: what operating-time accounting is keyed by.
    pub credential_id: String,
    /// The OAuth application's client id; `None` for a webhook.
    pub client_id: Option<String>,
    /// The call's `auth_connector` parameter (offline events' source key); empty when not given.
    pub auth_connector: String,
    /// The call's `start` parameter (the offset of a list method's page); 0 when not given.
    pub list_start: i64,
    /// The loop guard's depth of the token (0 but for tokens minted for event deliveries).
    pub event_depth: i64,
}

impl Caller {
    /// The webhook's id; `None` for an application.
    pub fn webhook_id(&self) -> Option<i64> {
        self.credential_id.strip_prefix("webhook:").and_then(|id| id.parse().ok())
    }

    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }

    pub fn insufficient_scope(&self) -> ApiError {
        match self.kind {
            AuthKind::Webhook => Code::InsufficientScope.into(),
            AuthKind::OAuth => Variant::ScopeOfAccessToken.into(),
        }
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
    let credentials = match webhook {
        Some((user_id, code)) => Credentials::Webhook { user_id: user_id.into(), code: code.into() },
        None => match token(headers, params) {
            Some(token) => Credentials::Token(token),
            None => Credentials::None,
        },
    };
    strip_reserved(params);
    credentials
}

/// An OAuth token: the `Authorization: Bearer` header, then `auth`, then `access_token`.
fn token(headers: &HeaderMap, params: &Params) -> Option<String> {
    let param_token = |key: &str| match params.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    };
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .or_else(|| param_token("auth"))
        .or_else(|| param_token("access_token"))
}

/// Remove the reserved keys, keeping the order of the rest. One pass over the few parameters a call has,
/// rather than a hashed lookup for each reserved name.
pub fn strip_reserved(params: &mut Params) {
    if params.keys().any(|key| RESERVED.contains(&key.as_str())) {
        params.retain(|key, _| !RESERVED.contains(&key.as_str()));
    }
}

/// The caller of a webhook whose code matched: its user, who must exist and be active.
pub async fn webhook_caller(store: &DynStore, hook: WebhookCredential) -> Result<Caller, ApiError> {
    match store.user(hook.user_id).await? {
        Some(user) if user.active => Ok(Caller {
            user,
            scopes: hook.scopes.into(),
            kind: AuthKind::Webhook,
            credential_id: format!("webhook:{}", hook.id),
            client_id: None,
            auth_connector: String::new(),
            list_start: 0,
            event_depth: 0,
        }),
        _ => Err(Code::InvalidCredentials.into()),
    }
}

/// Check credentials against the store at time `now_ms`. Secrets are looked up by their SHA-256 only; the
/// clear value is never stored or logged.
pub async fn authenticate(store: &DynStore, credentials: Credentials, now_ms: i64) -> Result<Caller, ApiError> {
    match credentials {
        Credentials::None => Err(Code::NoAuthFound.into()),
        Credentials::Webhook { user_id, code } => {
            let Ok(user_id) = user_id.parse::<i64>() else {
                return Err(Code::InvalidCredentials.into());
            };
            let Some(hook) = store.webhook(user_id, &sha256_hex(&code)).await? else {
                return Err(Code::InvalidCredentials.into());
            };
            webhook_caller(store, hook).await
        }
        Credentials::Token(token) => {
            let record = store.token_by_access(&sha256_hex(&token)).await?;
            let user = match &record {
                Some(record) => store.user(record.user_id).await?,
                None => None,
            };
            let record = check_token(record, user.as_deref(), now_ms)?;
            Ok(Caller {
                user: user.expect("checked by check_token"),
                scopes: record.scopes.clone().into(),
                kind: AuthKind::OAuth,
                credential_id: format!("app:{}", record.client_id),
                event_depth: record.event_depth,
                client_id: Some(record.client_id),
                auth_connector: String::new(),
                list_start: 0,
            })
        }
    }
}

/// The access-token rules, in the reference's order: unknown, expired (access tokens live one hour by
/// default), then the user's state.
pub fn check_token(record: Option<TokenRecord>, user: Option<&User>, now_ms: i64) -> Result<TokenRecord, ApiError> {
    let Some(record) = record else {
        return Err(Code::InvalidToken.into());
    };
    if now_ms >= record.access_expires_ms {
        return Err(Code::ExpiredToken.into());
    }
    if !user.is_some_and(|u| u.active) {
        return Err(Code::AuthorizationError.into());
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{LineLevel, ReadLevel, UserKind};

    fn token(expires: i64) -> TokenRecord {
        TokenRecord {
            access_sha256: "a".into(),
            refresh_sha256: "r".into(),
            client_id: "app".into(),
            user_id: 1,
            scopes: vec!["im".into()],
            access_expires_ms: expires,
            refresh_expires_ms: expires * 2,
            event_depth: 0,
        }
    }

    fn user(active: bool) -> User {
        User {
            id: 1,
            name: String::new(),
            last_name: String::new(),
            active,
            kind: UserKind::Employee,
            admin: false,
            crm_read: [ReadLevel::All; 4],
            line_join: LineLevel::All,
            line_history: LineLevel::All,
        }
    }

    #[test]
    fn token_rules_in_order() {
        let code = |r: Result<TokenRecord, ApiError>| r.map(|_| None).unwrap_or_else(|e| Some(e.code()));
        assert_eq!(code(check_token(None, Some(&user(true)), 0)), Some(Code::InvalidToken));
        assert_eq!(code(check_token(Some(token(1000)), Some(&user(true)), 999)), None);
        assert_eq!(code(check_token(Some(token(1000)), Some(&user(true)), 1000)), Some(Code::ExpiredToken));
        assert_eq!(code(check_token(Some(token(1000)), Some(&user(false)), 999)), Some(Code::AuthorizationError));
        assert_eq!(code(check_token(Some(token(1000)), None, 999)), Some(Code::AuthorizationError));
    }
}
