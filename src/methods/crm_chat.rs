//! `imopenlines.crm.chat.*`: the chats of CRM records and their members.

use serde_json::json;

use super::args::{self, RequestedRecord, empty_user};
use super::{CallContext, MethodResult, Params};
use crate::domain::rules::{can_read_record, chat_belongs_to_record, last_chat, line_allows, record_chats};
use crate::domain::{ChatId, CrmRecord, SessionLink, UserId};
use crate::error::{ApiError, Code, Variant};
use crate::store::{Change, ChangeOutcome};

/// The parameters of `user.delete`, rows 1–3b of its table.
struct UserDelete {
    user_id: UserId,
    record: RequestedRecord,
    chat: Option<ChatId>,
}

fn parse_user_delete(params: &Params) -> Result<UserDelete, ApiError> {
    // 1, 1b: a USER_ID of 0 or below counts as missing, as on the reference; garbage is refused [crmchat].
    let user_id = args::user_id(params, "USER_ID", empty_user)?;
    // 2
    if !args::has_crm_data(params) {
        return Err(Code::CrmChatEmptyCrmData.into());
    }
    // 3, 3b
    let record = args::crm_record(params)?;
    let chat = args::optional_chat_id(params)?;
    Ok(UserDelete { user_id, record, chat })
}

/// `imopenlines.crm.chat.user.delete`: remove a user or bot from the chat of a CRM record.
pub async fn user_delete(ctx: &CallContext<'_>, params: &Params) -> MethodResult {
    let UserDelete { user_id, record, chat } = parse_user_delete(params)?;
    // 4–8: with no chat bound to the record the reference answers 0 and never looks at USER_ID.
    let Some((record, chat_id)) = record_chat(ctx, record, chat).await? else {
        return Ok(json!(0).into());
    };
    // 9: the reference OR-s the line permission with the CRM read check of row 5, so only the portal's
    // `strict_line_permissions` setting makes this row reachable.
    if !may_join_line(ctx, chat_id, &record).await? {
        return Err(Code::ChatDeleteUserPermissionDenied.into());
    }
    // 10
    match ctx.store.user(user_id.0).await? {
        Some(user) if user.active => {}
        _ => return Err(Code::CrmChatUserNotActive.into()),
    }
    // 11, 12: the membership check and the removal are one atomic step, so parallel removals of the same
    // member give exactly one success.
    let change =
        Change::RemoveMember { chat_id, user_id, record: record.reference(), at_ms: ctx.now_ms, cause: ctx.cause() };
    match ctx.store.apply(change).await? {
        ChangeOutcome::MemberRemoved { .. } => Ok(json!(chat_id.0).into()),
        // The documentation names WRONG_REQUEST here; the real server answers with the messenger's error.
        ChangeOutcome::NotAMember => Err(Code::UserNotFound.into()),
        _ => Err(Code::WrongRequest.into()),
    }
}

/// Rows 4–8 shared by `user.delete` and `user.add`: the messenger is installed, the caller reads the record,
/// the chat is `CHAT_ID` or else the record's last chat, and it is in the record's active list. `None` when
/// no chat is bound to the record (the reference then answers 0).
async fn record_chat(
    ctx: &CallContext<'_>,
    requested: RequestedRecord,
    requested_chat: Option<ChatId>,
) -> Result<Option<(CrmRecord, ChatId)>, ApiError> {
    require_im(ctx)?;
    let Some(record) = readable_record(ctx, requested).await? else {
        return Err(Variant::DeniedJoinChat.into());
    };
    let links = ctx.store.record_sessions(record.entity_type, record.id).await?;
    let Some(chat_id) = requested_chat.or_else(|| last_chat(&links)) else {
        return Ok(None);
    };
    ensure_chat_in_record(&links, chat_id)?;
    Ok(Some((record, chat_id)))
}

/// The parameters of `user.add`: rows 1–3b, and row 10's `USER_ID`, whose error the table gives only after
/// rows 4–9 (held until then).
struct UserAdd {
    record: RequestedRecord,
    chat: Option<ChatId>,
    user_id: Result<UserId, ApiError>,
}

fn parse_user_add(params: &Params) -> Result<UserAdd, ApiError> {
    // 1–3b
    let record = args::required_crm_record(params)?;
    let chat = args::optional_chat_id(params)?;
    // 10, 10b: the reference builds this argument error from the text "Empty USER_ID".
    let user_id = args::user_id(params, "USER_ID", || ApiError::argument_null_or_empty("Empty USER_ID"));
    Ok(UserAdd { record, chat, user_id })
}

/// `imopenlines.crm.chat.user.add`: add a user or bot to the chat of a CRM record.
pub async fn user_add(ctx: &CallContext<'_>, params: &Params) -> MethodResult {
    let UserAdd { record, chat, user_id } = parse_user_add(params)?;
    // 4–8
    let Some((record, chat_id)) = record_chat(ctx, record, chat).await? else {
        return Ok(json!(0).into());
    };
    // 9
    if !may_join_line(ctx, chat_id, &record).await? {
        return Err(Variant::DeniedJoinChat.into());
    }
    // 10, 10b
    let user_id = user_id?;
    // 11
    let target = match ctx.store.user(user_id.0).await? {
        Some(user) if user.active => user,
        _ => return Err(Code::CrmChatUserNotActive.into()),
    };
    // 12
    if !can_read_record(&target, &record) {
        return Err(Variant::DeniedTargetEntity.into());
    }
    // 13 [crmchat]: judged by the target's own `history` permission (the reference applies the caller's).
    let line = chat_line(ctx, chat_id).await?;
    if !line.as_ref().is_some_and(|line| line_allows(&target, target.line_history, line)) {
        return Err(Variant::DeniedTargetHistory.into());
    }
    // 14, 15
    let change =
        Change::AddMember { chat_id, user_id, record: record.reference(), at_ms: ctx.now_ms, cause: ctx.cause() };
    match ctx.store.apply(change).await? {
        ChangeOutcome::MemberAdded { .. } | ChangeOutcome::AlreadyAMember => Ok(json!(chat_id.0).into()),
        _ => Err(Code::WrongRequest.into()),
    }
}

/// `imopenlines.crm.chat.getLastId`: the chat of the record's most recently modified session.
pub async fn get_last_id(ctx: &CallContext<'_>, params: &Params) -> MethodResult {
    if !args::has_crm_data(params) {
        return Err(Code::CrmChatEmptyCrmData.into());
    }
    let requested = args::crm_record(params)?;
    // The reference folds every other failure (no messenger, unknown type, no access, no chat) into one answer.
    let not_found = || ApiError::from(Variant::CrmEntityNotFound);
    if require_im(ctx).is_err() {
        return Err(not_found());
    }
    let Some(record) = readable_record(ctx, requested).await? else {
        return Err(not_found());
    };
    let links = ctx.store.record_sessions(record.entity_type, record.id).await?;
    match last_chat(&links) {
        Some(chat_id) => Ok(json!(chat_id.0).into()),
        None => Err(not_found()),
    }
}

/// `imopenlines.crm.chat.get`: the record's chats, active ones only unless `ACTIVE_ONLY` is exactly `N`.
pub async fn get(ctx: &CallContext<'_>, params: &Params) -> MethodResult {
    let requested = args::required_crm_record(params)?;
    let active_only = !matches!(params.get("ACTIVE_ONLY"), Some(serde_json::Value::String(s)) if s == "N");
    let Some(record) = readable_record(ctx, requested).await? else {
        return Err(Variant::DeniedThisAction.into());
    };
    let links = ctx.store.record_sessions(record.entity_type, record.id).await?;
    let chats: Vec<serde_json::Value> = record_chats(&links, active_only)
        .into_iter()
        .map(|c| {
            // The reference returns CHAT_ID as a string.
            json!({"CHAT_ID": c.chat_id.to_string(), "CONNECTOR_ID": c.connector_id, "CONNECTOR_TITLE": c.connector_title})
        })
        .collect();
    Ok(json!(chats).into())
}

async fn chat_line(ctx: &CallContext<'_>, ChatId(chat_id): ChatId) -> Result<Option<crate::domain::Line>, ApiError> {
    let Some(chat) = ctx.store.chat(chat_id).await? else {
        return Ok(None);
    };
    Ok(ctx.store.line(chat.line_id).await?)
}

pub(crate) fn require_im(ctx: &CallContext<'_>) -> Result<(), ApiError> {
    if ctx.portal.has_module("im") { Ok(()) } else { Err(Code::ImNotInstalled.into()) }
}

/// The record named by `CRM_ENTITY_TYPE`/`CRM_ENTITY` when the caller may read it. An unknown type is not
/// an error of its own: nobody can read such a record. A record id that does not exist is judged by the
/// caller's level for the type, as the reference's permission check does (it then has no chats).
pub(crate) async fn readable_record(
    ctx: &CallContext<'_>,
    requested: RequestedRecord,
) -> Result<Option<CrmRecord>, ApiError> {
    let Some(reference) = requested.reference() else {
        return Ok(None);
    };
    let stored = ctx.store.crm_record(reference.entity_type, reference.id).await?;
    let record = stored.unwrap_or_else(|| CrmRecord::unknown(reference));
    Ok(can_read_record(ctx.caller, &record).then_some(record))
}

pub(crate) fn ensure_chat_in_record(links: &[SessionLink], chat_id: ChatId) -> Result<(), ApiError> {
    if chat_belongs_to_record(links, chat_id) { Ok(()) } else { Err(Code::ChatNotInCrm.into()) }
}

/// May the caller manage members of the chat? Line `join` permission, or (unless the portal is strict)
/// read access to the record.
pub(crate) async fn may_join_line(
    ctx: &CallContext<'_>,
    chat_id: ChatId,
    record: &CrmRecord,
) -> Result<bool, ApiError> {
    if !ctx.portal.strict_line_permissions && can_read_record(ctx.caller, record) {
        return Ok(true);
    }
    Ok(chat_line(ctx, chat_id).await?.is_some_and(|line| line_allows(ctx.caller, ctx.caller.line_join, &line)))
}
