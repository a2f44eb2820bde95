//! `imopenlines.crm.message.add`: post a message into a CRM record's chat on behalf of a user.

use serde_json::json;

use super::args::{self, RequestedRecord};
use super::crm_chat::{ensure_chat_in_record, readable_record};
use super::{CallContext, MethodResult, Params};
use crate::domain::rules::can_read_record;
use crate::domain::{ChatId, UserId};
use crate::error::{ApiError, Code, Variant};
use crate::store::{Change, ChangeOutcome};

/// The parameters, each checked in the table's order before anything is read.
struct MessageAdd {
    record: RequestedRecord,
    user_id: UserId,
    chat_id: ChatId,
    text: String,
}

fn parse(params: &Params) -> Result<MessageAdd, ApiError> {
    let record = args::required_crm_record(params)?;
    // An integer USER_ID of 0 or below counts as missing (the shared rule of methods.md); a CHAT_ID must be
    // a positive integer, anything else is of the wrong type [crmchat].
    let user_id = args::user_id(params, "USER_ID", || ApiError::argument_null_or_empty("USER_ID"))?;
    let chat_id = ChatId(args::required_id(params, "CHAT_ID")?);
    let text = args::required_text(params, "MESSAGE")?;
    Ok(MessageAdd { record, user_id, chat_id, text })
}

pub async fn add(ctx: &CallContext<'_>, params: &Params) -> MethodResult {
    let MessageAdd { record, user_id, chat_id, text } = parse(params)?;
    let Some(record) = readable_record(ctx, record).await? else {
        return Err(Variant::DeniedThisAction.into());
    };
    let author = ctx.store.user(user_id.0).await?;
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
    let Some(chat) = ctx.store.chat(chat_id.0).await? else {
        return Err(message_not_added());
    };
    let change = Change::AddMessage {
        chat_id,
        author: user_id,
        text,
        record: record.reference(),
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
