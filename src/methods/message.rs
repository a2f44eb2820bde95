//! `imopenlines.crm.message.add`: post a message into a CRM record's chat on behalf of a user.

use serde_json::{Value, json};

use super::args::{as_text, is_empty, strict_int};
use super::crm_chat::{crm_entity, ensure_chat_in_record, readable_record};
use super::{CallContext, MethodResult, Params};
use crate::domain::rules::can_read_record;
use crate::error::{ApiError, Code, Variant};
use crate::store::{Change, ChangeOutcome};

pub async fn add(ctx: &CallContext<'_>, params: &Params) -> MethodResult {
    let not_empty = |name: &str| {
        if is_empty(params.get(name)) { Err(ApiError::argument_null_or_empty(name)) } else { Ok(()) }
    };
    // An integer USER_ID of 0 or below counts as missing (the shared rule of methods.md); a CHAT_ID must be
    // a positive integer, anything else is of the wrong type [crmchat].
    let user_id = |name: &str| -> Result<i64, ApiError> {
        not_empty(name)?;
        match strict_int(params.get(name)) {
            Some(id) if id > 0 => Ok(id),
            Some(_) => Err(ApiError::argument_null_or_empty(name)),
            None => Err(ApiError::argument_invalid_type(name)),
        }
    };
    let chat_id = |name: &str| -> Result<i64, ApiError> {
        not_empty(name)?;
        match strict_int(params.get(name)) {
            Some(id) if id > 0 => Ok(id),
            _ => Err(ApiError::argument_invalid_type(name)),
        }
    };
    not_empty("CRM_ENTITY_TYPE")?;
    not_empty("CRM_ENTITY")?;
    let entity_id = crm_entity(params)?;
    let user_id = user_id("USER_ID")?;
    let chat_id = chat_id("CHAT_ID")?;
    not_empty("MESSAGE")?;
    let text = match params.get("MESSAGE") {
        Some(Value::Array(_) | Value::Object(_)) => return Err(ApiError::argument_invalid_type("MESSAGE")),
        value => as_text(value).unwrap_or_default(),
    };

    let Some(record) = readable_record(ctx, params, entity_id).await? else {
        return Err(Variant::DeniedThisAction.into());
    };
    let author = ctx.store.user(user_id).await?;
    if !author.as_ref().is_some_and(|user| can_read_record(user, &record)) {
        return Err(Variant::DeniedUserEntity.into());
    }
    let links = ctx.store.record_sessions(record.entity_type, record.id).await?;
    ensure_chat_in_record(&links, chat_id)?;
    let message_not_added = || ApiError::from(Code::MessageAddError);
    if !author.is_some_and(|user| user.active) {
        return Err(message_not_added());
    }
    // The event names the chat's line and connector.
    let Some(chat) = ctx.store.chat(chat_id).await? else {
        return Err(message_not_added());
    };
    let change = Change::AddMessage {
        chat_id,
        author: user_id,
        text,
        record: (record.entity_type, record.id),
        line_id: chat.line_id,
        connector_id: chat.connector_id,
        at_ms: ctx.now_ms,
        cause: ctx.cause(),
    };
    match ctx.store.apply(change).await? {
        ChangeOutcome::MessageAdded { id } => Ok(json!(id).into()),
        _ => Err(message_not_added()),
    }
}
