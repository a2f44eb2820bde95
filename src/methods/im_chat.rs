//! `im.chat.user.list` [crmchat]: an approximation of the messenger method, so that membership can be
//! observed over REST.

use serde_json::json;

use super::args::{is_empty, strict_int};
use super::{CallContext, MethodResult, Params};
use crate::domain::rules::can_read_record;
use crate::error::{ApiError, Code};

pub async fn user_list(ctx: &CallContext<'_>, params: &Params) -> MethodResult {
    let value = params.get("CHAT_ID").or_else(|| params.get("chat_id"));
    if is_empty(value) {
        return Err(Code::ChatIdEmpty.into());
    }
    let chat_not_found = || ApiError::from(Code::ChatNotFound);
    let Some(chat_id) = strict_int(value).filter(|id| *id > 0) else {
        return Err(chat_not_found());
    };
    if ctx.store.chat(chat_id).await?.is_none() {
        return Err(chat_not_found());
    }
    let members = ctx.store.chat_members(chat_id).await?;
    let allowed = ctx.caller.admin
        || members.contains(&ctx.caller.id)
        || ctx.store.chat_records(chat_id).await?.iter().any(|record| can_read_record(ctx.caller, record));
    if !allowed {
        return Err(Code::AccessDenied.into());
    }
    Ok(json!(members).into())
}
