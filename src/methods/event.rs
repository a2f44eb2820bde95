//! `event.bind`, `event.unbind`, `event.get` and `events`: the handlers an application binds. Like the
//! vendor's, these methods read their parameter names case-insensitively, and only an OAuth application may
//! call them (over a webhook: `WRONG_AUTH_TYPE`). Checks run in the vendor's order.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::args::{as_text, intval, is_empty};
use super::{CallContext, MethodResult, Params};
use crate::error::{ApiError, Code, Variant};
use crate::events::{self, EVENTS, HandlerUrlError};
use crate::store::{BindingFilter, Change, EventBinding};

/// The parameters by upper-cased name (PHP's `array_change_key_case`: of two spellings, the later wins).
fn upper_keys(params: &Params) -> HashMap<String, &Value> {
    params.iter().map(|(k, v)| (k.to_uppercase(), v)).collect()
}

fn text(q: &HashMap<String, &Value>, key: &str) -> String {
    as_text(q.get(key).copied()).unwrap_or_default()
}

fn application<'a>(ctx: &CallContext<'a>) -> Result<&'a str, ApiError> {
    ctx.client_id.ok_or_else(|| ApiError::from(Code::WrongAuthType))
}

/// `event_type`: empty means online.
fn is_offline(event_type: &str) -> Result<bool, ApiError> {
    match event_type {
        "" | "online" => Ok(false),
        "offline" => Ok(true),
        _ => Err(ApiError::argument_refused("EVENT_TYPE", "Value must be one of {online|offline}")),
    }
}

/// The checks `event.bind` and `event.unbind` make alike, in the vendor's order: `EVENT` given, `EVENT_TYPE`
/// known; an offline binding only by an admin (else `denied`) and without a handler (one given is dropped), an
/// online one with a handler. Whether the binding is offline.
fn binding_kind(
    event: &str,
    event_type: &str,
    handler: &mut String,
    admin: bool,
    denied: Variant,
) -> Result<bool, ApiError> {
    if event.is_empty() {
        return Err(ApiError::argument_null_or_empty("EVENT"));
    }
    let offline = is_offline(event_type)?;
    if offline {
        if !admin {
            return Err(denied.into());
        }
        handler.clear();
    } else if handler.is_empty() {
        return Err(ApiError::argument_null_or_empty("HANDLER"));
    }
    Ok(offline)
}

/// `event.bind`: `event`, `handler`, `auth_type`, `event_type`, `options`.
pub async fn bind(ctx: &CallContext<'_>, params: &Params) -> MethodResult {
    let client_id = application(ctx)?;
    let q = upper_keys(params);
    let event = text(&q, "EVENT").to_uppercase();
    let event_type = text(&q, "EVENT_TYPE").to_lowercase();
    let mut handler = text(&q, "HANDLER");
    let admin = ctx.caller.admin;
    // A non-admin binds for themselves only.
    let mut user_id = intval(q.get("AUTH_TYPE").copied());
    if user_id > 0 {
        if !admin && user_id != ctx.caller.id {
            return Err(Variant::DeniedAuthTypeBinding.into());
        }
    } else if !admin {
        user_id = ctx.caller.id;
    }
    let offline = binding_kind(&event, &event_type, &mut handler, admin, Variant::DeniedOfflineBinding)?;
    if offline {
        user_id = 0;
    }
    if !handler.is_empty() {
        events::check_handler(&handler).map_err(|e| match e {
            HandlerUrlError::WrongUrl => ApiError::from(Code::WrongHandlerUrl),
            HandlerUrlError::UnsupportedProtocol => ApiError::from(Code::UnsupportedProtocol),
        })?;
    }
    let Some(def) = events::find(&event, ctx.scopes) else {
        return Err(Code::EventNotFound.into());
    };
    if offline && def.online_only {
        return Err(Variant::OfflineNotAllowed.into());
    }
    // The only option any of our events allows.
    let min_timeout = match q.get("OPTIONS") {
        Some(Value::Object(options)) if def.name == "ONOFFLINEEVENT" => {
            options.get("minTimeout").map(|v| intval(Some(v)))
        }
        _ => None,
    };
    let binding = EventBinding {
        id: 0,
        client_id: client_id.to_string(),
        event,
        handler,
        user_id,
        connector_id: ctx.auth_connector.to_string(),
        min_timeout,
    };
    match ctx.store.add_binding(&binding, ctx.now_ms).await? {
        Some(_) => Ok(json!(true).into()),
        None => Err(Code::Core.into()),
    }
}

/// `event.unbind`: the same keys as `event.bind`; answers how many bindings it removed.
pub async fn unbind(ctx: &CallContext<'_>, params: &Params) -> MethodResult {
    let client_id = application(ctx)?;
    let q = upper_keys(params);
    let event = text(&q, "EVENT").to_uppercase();
    let event_type = text(&q, "EVENT_TYPE").to_lowercase();
    let mut handler = text(&q, "HANDLER");
    let admin = ctx.caller.admin;
    let offline = binding_kind(&event, &event_type, &mut handler, admin, Variant::DeniedOfflineUnbinding)?;
    let mut filter =
        BindingFilter { client_id: client_id.to_string(), event, handler, user_id: None, connector_id: None };
    if offline {
        filter.connector_id = Some(ctx.auth_connector.to_string());
    } else {
        match q.get("AUTH_TYPE").copied() {
            None | Some(Value::Null) if !admin => filter.user_id = Some(ctx.caller.id),
            None | Some(Value::Null) => {}
            Some(given) => {
                // The vendor compares the raw value with the caller's id strictly, so for a non-admin only a
                // JSON integer equal to their own id passes; a form value, always a string, never does.
                if !admin && given.as_i64() != Some(ctx.caller.id) {
                    return Err(Variant::DeniedAuthTypeUnbinding.into());
                }
                filter.user_id = Some(intval(Some(given)));
            }
        }
    }
    let count = ctx.store.remove_bindings(&filter).await?;
    Ok(json!({ "count": count }).into())
}

/// `event.get`: the application's bindings by id; a non-admin sees only their own.
pub async fn get(ctx: &CallContext<'_>, _params: &Params) -> MethodResult {
    let client_id = application(ctx)?;
    let bindings = ctx.store.bindings(client_id).await?;
    let listed: Vec<Value> = bindings
        .iter()
        .filter(|b| ctx.caller.admin || b.user_id == ctx.caller.id)
        .map(|b| {
            if b.handler.is_empty() {
                json!({"event": b.event, "connector_id": b.connector_id, "offline": 1})
            } else {
                json!({"event": b.event, "handler": b.handler, "auth_type": b.user_id.to_string(), "offline": 0})
            }
        })
        .collect();
    Ok(json!(listed).into())
}

/// `events`: the event names of the application's scopes and the global ones; `SCOPE` names one scope
/// (`_global` for the global events), `FULL` lists every event.
pub async fn list(ctx: &CallContext<'_>, params: &Params) -> MethodResult {
    application(ctx)?;
    let q = upper_keys(params);
    let listed = |scope: Option<&str>, scopes: &[&str]| scopes.contains(&scope.unwrap_or(GLOBAL_SCOPE));
    let names: Vec<&str> = if let Some(scope) = q.get("SCOPE").filter(|v| !v.is_null()) {
        let scope = as_text(Some(scope)).unwrap_or_default();
        let scope = if scope.is_empty() { GLOBAL_SCOPE } else { scope.as_str() };
        EVENTS.iter().filter(|e| listed(e.scope, &[scope])).map(|e| e.name).collect()
    } else if !is_empty(q.get("FULL").copied()) {
        EVENTS.iter().map(|e| e.name).collect()
    } else {
        let mut scopes: Vec<&str> = ctx.scopes.iter().map(String::as_str).collect();
        scopes.push(GLOBAL_SCOPE);
        EVENTS.iter().filter(|e| listed(e.scope, &scopes)).map(|e| e.name).collect()
    };
    Ok(json!(names).into())
}

/// `event.test`: fires `ONAPPTEST` to the application's `ONAPPTEST` handlers, with the call's parameters as
/// `data[QUERY]`.
pub async fn test(ctx: &CallContext<'_>, params: &Params) -> MethodResult {
    let client_id = application(ctx)?;
    let change = Change::Emit {
        event: "ONAPPTEST",
        payload: json!({ "QUERY": params }).to_string(),
        client_id: client_id.to_string(),
        at_ms: ctx.now_ms,
        cause: ctx.cause(),
    };
    ctx.store.apply(change).await?;
    Ok(json!(1).into())
}

/// The vendor's name for the scope of global methods and events.
const GLOBAL_SCOPE: &str = "_global";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intval_reads_like_php() {
        for (value, expected) in [
            (json!("12"), 12),
            (json!("12abc"), 12),
            (json!(" -3"), -3),
            // Only PHP's own whitespace is skipped (its `strtol` in the C locale): not a no-break space.
            (json!("\t7"), 7),
            (json!("\u{a0}5"), 0),
            (json!("abc"), 0),
            (json!(""), 0),
            (json!(7), 7),
            (json!(2.9), 2),
        ] {
            assert_eq!(intval(Some(&value)), expected, "{value}");
        }
        assert_eq!(intval(None), 0);
    }
}
