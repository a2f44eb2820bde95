//! Global methods that describe the server and the caller: `scope`, `methods`, `method.get`, `server.time`,
//! `profile`, `app.info`.

use serde_json::{Value, json};

use super::envelope::php_date_c;
use super::registry::{METHODS, all_scopes, find};
use crate::methods::args::is_empty;
use crate::methods::{CallContext, MethodResult, Params};

/// PHP truthiness of a flag such as `full=true`.
fn flag(params: &Params, name: &str) -> bool {
    !is_empty(params.get(name))
}

pub async fn scope(ctx: &CallContext<'_>, params: &Params) -> MethodResult {
    if flag(params, "full") {
        return Ok(json!(all_scopes()).into());
    }
    Ok(json!(ctx.scopes).into())
}

pub async fn methods(ctx: &CallContext<'_>, params: &Params) -> MethodResult {
    let names: Vec<&str> = if flag(params, "full") {
        METHODS.iter().map(|m| m.name).collect()
    } else if let Some(Value::String(scope)) = params.get("scope") {
        METHODS.iter().filter(|m| m.scope == Some(scope.as_str())).map(|m| m.name).collect()
    } else {
        METHODS.iter().filter(|m| m.scope.is_none_or(|s| ctx.scopes.iter().any(|g| g == s))).map(|m| m.name).collect()
    };
    Ok(json!(names).into())
}

pub async fn method_get(ctx: &CallContext<'_>, params: &Params) -> MethodResult {
    let name = match params.get("name") {
        Some(Value::String(s)) => s.to_ascii_lowercase(),
        _ => String::new(),
    };
    let method = find(&name);
    let available = method.is_some_and(|m| m.scope.is_none_or(|s| ctx.scopes.iter().any(|g| g == s)));
    Ok(json!({"isExisting": method.is_some(), "isAvailable": available}).into())
}

/// The portal clock's time when the call began.
pub async fn server_time(ctx: &CallContext<'_>, _params: &Params) -> MethodResult {
    Ok(json!(php_date_c(ctx.now_ms as f64 / 1000.0)).into())
}

pub async fn profile(ctx: &CallContext<'_>, _params: &Params) -> MethodResult {
    let user = &ctx.caller;
    Ok(json!({
        "ID": user.id.to_string(),
        "ADMIN": user.admin,
        "NAME": user.name,
        "LAST_NAME": user.last_name,
        "PERSONAL_GENDER": "",
        "TIME_ZONE": "",
        "TIME_ZONE_OFFSET": 0,
    })
    .into())
}

pub async fn app_info(ctx: &CallContext<'_>, _params: &Params) -> MethodResult {
    let license = format!("{}_selfhosted", ctx.portal.language);
    match &ctx.client_id {
        None => Ok(json!({"SCOPE": ctx.scopes, "LICENSE": license}).into()),
        Some(client_id) => Ok(json!({
            "ID": client_id,
            "CODE": client_id,
            "VERSION": 1,
            "STATUS": "L",
            "INSTALLED": true,
            "PAYMENT_EXPIRED": "N",
            "DAYS": null,
            "LANGUAGE_ID": ctx.portal.language,
            "LICENSE": license,
        })
        .into()),
    }
}
