//! `imopenlines.crm.chat.*`: the chats of CRM records and their members.

use serde_json::json;

use super::args::{is_empty, php_numeric_int, strict_int};
use super::{CallContext, MethodResult, Params};
use crate::domain::rules::{can_read_record, chat_belongs_to_record, last_chat, line_allows, record_chats};
use crate::domain::{CrmEntityType, CrmRecord, SessionLink};
use crate::error::{ApiError, Code, Variant};
use crate::store::{Change, ChangeOutcome};

/// `imopenlines.crm.chat.user.delete`: remove a user or bot from the chat of a CRM record.
pub async fn user_delete(ctx: &CallContext<'_>, params: &Params) -> MethodResult {
    // 1, 1b: a USER_ID of 0 or below counts as missing, as on the reference; garbage is refused [crmchat].
    let user_id = match strict_int(params.get("USER_ID")) {
        _ if is_empty(params.get("USER_ID")) => return Err(empty_user()),
        Some(id) if id <= 0 => return Err(empty_user()),
        Some(id) => id,
        None => return Err(ApiError::argument_invalid_type("USER_ID")),
    };
    // 2
    if is_empty(params.get("CRM_ENTITY_TYPE")) || is_empty(params.get("CRM_ENTITY")) {
        return Err(Code::CrmChatEmptyCrmData.into());
    }
    // 3, 3b
    let entity_id = crm_entity(params)?;
    let requested_chat = chat_id_param(params)?;
    // 4–8: with no chat bound to the record the reference answers 0 and never looks at USER_ID.
    let Some((record, chat_id)) = record_chat(ctx, params, entity_id, requested_chat).await? else {
        return Ok(json!(0).into());
    };
    // 9: the reference OR-s the line permission with the CRM read check of row 5, so only the portal's
    // `strict_line_permissions` setting makes this row reachable.
    if !may_join_line(ctx, chat_id, &record).await? {
        return Err(Code::ChatDeleteUserPermissionDenied.into());
    }
    // 10
    match ctx.store.user(user_id).await? {
        Some(user) if user.active => {}
        _ => return Err(Code::CrmChatUserNotActive.into()),
    }
    // 11, 12: the membership check and the removal are one atomic step, so parallel removals of the same
    // member give exactly one success.
    let record = (record.entity_type, record.id);
    let change = Change::RemoveMember { chat_id, user_id, record, at_ms: ctx.now_ms, cause: ctx.cause() };
    match ctx.store.apply(change).await? {
        ChangeOutcome::MemberRemoved { .. } => Ok(json!(chat_id).into()),
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
    params: &Params,
    entity_id: i64,
    requested_chat: Option<i64>,
) -> Result<Option<(CrmRecord, i64)>, ApiError> {
    require_im(ctx)?;
    let Some(record) = readable_record(ctx, params, entity_id).await? else {
        return Err(Variant::DeniedJoinChat.into());
    };
    let links = ctx.store.record_sessions(record.entity_type, record.id).await?;
    let Some(chat_id) = requested_chat.or_else(|| last_chat(&links)) else {
        return Ok(None);
    };
    ensure_chat_in_record(&links, chat_id)?;
    Ok(Some((record, chat_id)))
}

/// `imopenlines.crm.chat.user.add`: add a user or bot to the chat of a CRM record.
pub async fn user_add(ctx: &CallContext<'_>, params: &Params) -> MethodResult {
    // 1–3b
    let entity_id = required_crm_entity(params)?;
    let requested_chat = chat_id_param(params)?;
    // 4–8
    let Some((record, chat_id)) = record_chat(ctx, params, entity_id, requested_chat).await? else {
        return Ok(json!(0).into());
    };
    // 9
    if !may_join_line(ctx, chat_id, &record).await? {
        return Err(Variant::DeniedJoinChat.into());
    }
    // 10, 10b: the reference builds this argument error from the text "Empty USER_ID".
    let user_id = match strict_int(params.get("USER_ID")) {
        _ if is_empty(params.get("USER_ID")) => return Err(ApiError::argument_null_or_empty("Empty USER_ID")),
        Some(id) if id <= 0 => return Err(ApiError::argument_null_or_empty("Empty USER_ID")),
        Some(id) => id,
        None => return Err(ApiError::argument_invalid_type("USER_ID")),
    };
    // 11
    let target = match ctx.store.user(user_id).await? {
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
    let record = (record.entity_type, record.id);
    let change = Change::AddMember { chat_id, user_id, record, at_ms: ctx.now_ms, cause: ctx.cause() };
    match ctx.store.apply(change).await? {
        ChangeOutcome::MemberAdded { .. } | ChangeOutcome::AlreadyAMember => Ok(json!(chat_id).into()),
        _ => Err(Code::WrongRequest.into()),
    }
}

/// `imopenlines.crm.chat.getLastId`: the chat of the record's most recently modified session.
pub async fn get_last_id(ctx: &CallContext<'_>, params: &Params) -> MethodResult {
    if is_empty(params.get("CRM_ENTITY_TYPE")) || is_empty(params.get("CRM_ENTITY")) {
        return Err(Code::CrmChatEmptyCrmData.into());
    }
    let entity_id = crm_entity(params)?;
    // The reference folds every other failure (no messenger, unknown type, no access, no chat) into one answer.
    let not_found = || ApiError::from(Variant::CrmEntityNotFound);
    if require_im(ctx).is_err() {
        return Err(not_found());
    }
    let Some(record) = readable_record(ctx, params, entity_id).await? else {
        return Err(not_found());
    };
    let links = ctx.store.record_sessions(record.entity_type, record.id).await?;
    match last_chat(&links) {
        Some(chat_id) => Ok(json!(chat_id).into()),
        None => Err(not_found()),
    }
}

/// `imopenlines.crm.chat.get`: the record's chats, active ones only unless `ACTIVE_ONLY` is exactly `N`.
pub async fn get(ctx: &CallContext<'_>, params: &Params) -> MethodResult {
    let entity_id = required_crm_entity(params)?;
    let Some(record) = readable_record(ctx, params, entity_id).await? else {
        return Err(Variant::DeniedThisAction.into());
    };
    let active_only = !matches!(params.get("ACTIVE_ONLY"), Some(serde_json::Value::String(s)) if s == "N");
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

/// Rows 1–3 shared by `user.add`, `chat.get` and `message.add`: each CRM parameter null-checked, then typed.
pub(crate) fn required_crm_entity(params: &Params) -> Result<i64, ApiError> {
    if is_empty(params.get("CRM_ENTITY_TYPE")) {
        return Err(ApiError::argument_null_or_empty("CRM_ENTITY_TYPE"));
    }
    if is_empty(params.get("CRM_ENTITY")) {
        return Err(ApiError::argument_null_or_empty("CRM_ENTITY"));
    }
    crm_entity(params)
}

async fn chat_line(ctx: &CallContext<'_>, chat_id: i64) -> Result<Option<crate::domain::Line>, ApiError> {
    let Some(chat) = ctx.store.chat(chat_id).await? else {
        return Ok(None);
    };
    Ok(ctx.store.line(chat.line_id).await?)
}

fn empty_user() -> ApiError {
    Code::CrmChatEmptyUser.into()
}

/// `CRM_ENTITY`: numeric in PHP's sense with an integer part above zero.
pub(crate) fn crm_entity(params: &Params) -> Result<i64, ApiError> {
    match php_numeric_int(params.get("CRM_ENTITY")) {
        Some(id) if id > 0 => Ok(id),
        _ => Err(ApiError::argument_invalid_type("CRM_ENTITY")),
    }
}

/// `CHAT_ID`: empty means "the record's last chat"; otherwise a positive integer [crmchat: the reference
/// casts garbage to 0 and reports success].
pub(crate) fn chat_id_param(params: &Params) -> Result<Option<i64>, ApiError> {
    let value = params.get("CHAT_ID");
    if is_empty(value) {
        return Ok(None);
    }
    match strict_int(value) {
        Some(id) if id > 0 => Ok(Some(id)),
        _ => Err(ApiError::argument_invalid_type("CHAT_ID")),
    }
}

pub(crate) fn require_im(ctx: &CallContext<'_>) -> Result<(), ApiError> {
    if ctx.portal.has_module("im") { Ok(()) } else { Err(Code::ImNotInstalled.into()) }
}

/// The record named by `CRM_ENTITY_TYPE`/`CRM_ENTITY` when the caller may read it. An unknown type is not
/// an error of its own: nobody can read such a record. A record id that does not exist is judged by the
/// caller's level for the type, as the reference's permission check does (it then has no chats).
pub(crate) async fn readable_record(
    ctx: &CallContext<'_>,
    params: &Params,
    entity_id: i64,
) -> Result<Option<CrmRecord>, ApiError> {
    let type_text = super::args::as_text(params.get("CRM_ENTITY_TYPE")).unwrap_or_default();
    let Some(entity_type) = CrmEntityType::parse(&type_text) else {
        return Ok(None);
    };
    let record = ctx.store.crm_record(entity_type, entity_id).await?.unwrap_or(CrmRecord {
        entity_type,
        id: entity_id,
        responsible: 0,
        observers: Vec::new(),
    });
    Ok(can_read_record(ctx.caller, &record).then_some(record))
}

pub(crate) fn ensure_chat_in_record(links: &[SessionLink], chat_id: i64) -> Result<(), ApiError> {
    if chat_belongs_to_record(links, chat_id) { Ok(()) } else { Err(Code::ChatNotInCrm.into()) }
}

/// May the caller manage members of the chat? Line `join` permission, or (unless the portal is strict)
/// read access to the record.
pub(crate) async fn may_join_line(ctx: &CallContext<'_>, chat_id: i64, record: &CrmRecord) -> Result<bool, ApiError> {
    if !ctx.portal.strict_line_permissions && can_read_record(ctx.caller, record) {
        return Ok(true);
    }
    Ok(chat_line(ctx, chat_id).await?.is_some_and(|line| line_allows(ctx.caller, ctx.caller.line_join, &line)))
}
