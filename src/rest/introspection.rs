//! Global methods that describe the server and the caller: `server.time`, `profile`, `app.info`. Those that
//! describe the method table (`scope`, `methods`, `method.get`) live beside it in [`super::registry`].

use serde_json::json;

use super::envelope::php_date_c;
use crate::methods::{CallContext, MethodResult, Params};

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
