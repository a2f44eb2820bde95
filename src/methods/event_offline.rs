//! `event.offline.get`, `.clear`, `.error` and `.list`: the queue of offline events an application polls instead
//! of exposing a handler URL. Like the vendor's, they read their parameter names case-insensitively, need an
//! OAuth application (over a webhook: `WRONG_AUTH_TYPE`) and an administrator (`ACCESS_DENIED`). A queue is
//! the application's and the call's `auth_connector`'s.

use std::collections::HashMap;

use rand::Rng;
use rand::distributions::Alphanumeric;
use serde_json::{Value, json};

use super::args::{as_text, intval};
use super::{CallContext, MethodResult, Output, Params};
use crate::error::{ApiError, Code};
use crate::store::offline::{self as queue, Condition, Field, Op, Owner, Query, Selection};

/// Rows per `event.offline.get` batch by default, and per `event.offline.list` page.
const PAGE: i64 = 50;
/// The vendor's process ids are random strings of this length.
const PROCESS_ID_LEN: usize = 32;
/// What `event.offline.get` filters and orders by; `.list` adds the queue's own columns.
const GET_FIELDS: &[Field] = &[Field::Id, Field::TimestampX, Field::EventName, Field::MessageId];
const LIST_FIELDS: &[Field] =
    &[Field::Id, Field::TimestampX, Field::EventName, Field::MessageId, Field::ProcessId, Field::Error];

/// The parameters by lower-cased name (PHP's `array_change_key_case`: of two spellings, the later wins).
fn lower_keys(params: &Params) -> HashMap<String, &Value> {
    params.iter().map(|(k, v)| (k.to_lowercase(), v)).collect()
}

/// The checks every offline method starts with, in the vendor's order; the caller's queue.
fn owner(ctx: &CallContext<'_>) -> Result<Owner, ApiError> {
    let client_id = ctx.client_id.ok_or_else(|| ApiError::from(Code::WrongAuthType))?;
    if !ctx.caller.admin {
        return Err(Code::AccessDenied.into());
    }
    Ok(Owner { client_id: client_id.to_string(), connector_id: ctx.auth_connector.to_string() })
}

/// A parameter that PHP sees as an array: a JSON object, or a list (keys `0`, `1` …).
fn entries(value: &Value) -> Option<Vec<(String, &Value)>> {
    match value {
        Value::Object(map) => Some(map.iter().map(|(k, v)| (k.clone(), v)).collect()),
        Value::Array(list) => Some(list.iter().enumerate().map(|(i, v)| (i.to_string(), v)).collect()),
        _ => None,
    }
}

fn refused(text: String) -> ApiError {
    ApiError::argument_rest(text)
}

/// The vendor's `sanitizeFilter`: keys upper-cased, an operation prefix of non-letters, a known field. Array
/// values are refused by `event.offline.get` (`arrays`: false) and mean "one of" for `@` in `.list`.
pub fn parse_filter(value: Option<&Value>, fields: &[Field], arrays: bool) -> Result<Vec<Condition>, ApiError> {
    let Some(value) = value else { return Ok(Vec::new()) };
    let Some(entries) = entries(value) else { return Err(refused("The filter is not an array.".into())) };
    let mut conditions = Vec::new();
    for (key, value) in entries {
        let key = key.to_uppercase();
        let split = key.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(key.len());
        let (op, name) = key.split_at(split);
        let op = match op {
            "" | "=" => Op::Eq,
            ">" => Op::Gt,
            "<" => Op::Lt,
            ">=" => Op::Ge,
            "<=" => Op::Le,
            "%" => Op::Contains,
            "@" => Op::In,
            _ => return Err(refused(format!("Filter operation not allowed: {op}"))),
        };
        let field = Field::parse(name)
            .filter(|f| fields.contains(f))
            .ok_or_else(|| refused(format!("Filter field not allowed: {name}")))?;
        let items: Vec<&Value> = match value {
            Value::Array(list) if arrays => list.iter().collect(),
            Value::Object(map) if arrays => map.values().collect(),
            Value::Array(_) | Value::Object(_) => return Err(ApiError::argument_invalid_type(&key)),
            scalar => vec![scalar],
        };
        let values = items
            .into_iter()
            .map(|v| typed(field, v).ok_or_else(|| ApiError::argument_invalid_type(&key)))
            .collect::<Result<Vec<_>, _>>()?;
        conditions.push(Condition { field, op, values });
    }
    Ok(conditions)
}

/// A filter value as its field's column holds it (`TIMESTAMP_X` as an ISO 8601 date, in milliseconds).
fn typed(field: Field, value: &Value) -> Option<queue::Value> {
    let text = as_text(Some(value))?;
    if field.is_text() {
        return Some(queue::Value::Text(text));
    }
    if field == Field::TimestampX {
        return chrono::DateTime::parse_from_rfc3339(text.trim()).ok().map(|d| queue::Value::Int(d.timestamp_millis()));
    }
    Some(queue::Value::Int(intval(Some(value))))
}

/// The vendor's `sanitizeOrder`: `{FIELD: ASC|DESC}` or a list of fields (ascending).
pub fn parse_order(value: Option<&Value>, default: Field, fields: &[Field]) -> Result<Vec<(Field, bool)>, ApiError> {
    let Some(value) = value else { return Ok(vec![(default, false)]) };
    let Some(entries) = entries(value) else { return Err(refused("The order is not an array.".into())) };
    let listed = matches!(value, Value::Array(_));
    let mut order = Vec::new();
    for (key, direction) in entries {
        let (name, direction) = if listed {
            (as_text(Some(direction)).unwrap_or_default(), "ASC".to_string())
        } else {
            (key.to_uppercase(), as_text(Some(direction)).unwrap_or_default().to_uppercase())
        };
        let field = Field::parse(&name)
            .filter(|f| fields.contains(f))
            .ok_or_else(|| refused(format!("Order field not allowed: {name}")))?;
        let descending = match direction.as_str() {
            "ASC" => false,
            "DESC" => true,
            _ => return Err(refused("Order direction should be one of {ASC|DESC}".into())),
        };
        order.push((field, descending));
    }
    Ok(order)
}

fn new_process_id() -> String {
    rand::thread_rng().sample_iter(&Alphanumeric).take(PROCESS_ID_LEN).map(char::from).collect()
}

/// `TIMESTAMP_X` as the vendor's REST writes dates.
fn iso_time(ms: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S+00:00")
        .to_string()
}

/// One row as the vendor answers it; `.list` adds `PROCESS_ID` and `ERROR`. The vendor's values of its integer
/// columns arrive as strings.
fn event_json(e: &queue::OfflineEvent, with_state: bool) -> Value {
    let data: Value = serde_json::from_str(&e.payload).unwrap_or(Value::Null);
    let mut row = json!({
        "ID": e.id.to_string(),
        "TIMESTAMP_X": iso_time(e.created_ms),
        "EVENT_NAME": e.event,
        "EVENT_DATA": data,
        "EVENT_ADDITIONAL": {"user_id": e.user_id},
        "MESSAGE_ID": e.message_id,
    });
    if with_state {
        row["PROCESS_ID"] = json!(e.process_id);
        row["ERROR"] = json!(e.error.to_string());
    }
    row
}

fn process_id_param(q: &HashMap<String, &Value>) -> Option<String> {
    q.get("process_id").map(|v| as_text(Some(v)).unwrap_or_default().trim().to_string())
}

/// `event.offline.get`: reserves a batch of free rows under a new process id (or re-reads the batch of the
/// `process_id` given), answers it, and deletes it unless `clear=0`.
pub async fn get(ctx: &CallContext<'_>, params: &Params) -> MethodResult {
    let owner = owner(ctx)?;
    let q = lower_keys(params);
    let clear = q.get("clear").map_or(1, |v| intval(Some(v))) != 0;
    let given = process_id_param(&q);
    let limit = q.get("limit").map_or(PAGE, |v| intval(Some(v)));
    let errors = intval(q.get("error").copied()) == 1;
    if limit <= 0 {
        return Err(ApiError::argument_refused("LIMIT", "Value must be positive integer"));
    }
    let conditions = parse_filter(q.get("filter").copied(), GET_FIELDS, false)?;
    let order = parse_order(q.get("order").copied(), Field::TimestampX, GET_FIELDS)?;
    let mut query = Query { conditions, order, process_id: None, error: Some(errors as i64) };
    let answer_id = !clear || given.is_some();
    let process_id = match given {
        Some(id) => id,
        None => {
            let id = new_process_id();
            query.process_id = Some(String::new());
            ctx.store.offline_reserve(&owner, &query, &id, limit).await?;
            id
        }
    };
    query.process_id = Some(process_id.clone());
    let (events, _) = ctx.store.offline_rows(&owner, &query, 0, limit, false).await?;
    if clear && !events.is_empty() {
        ctx.store.offline_clear(&owner, &process_id, &Selection::All).await?;
    }
    let events: Vec<Value> = events.iter().map(|e| event_json(e, false)).collect();
    Ok(json!({"process_id": if answer_id { json!(process_id) } else { Value::Null }, "events": events}).into())
}

/// A list parameter (`message_id[]`, `id[]`): its values, or `None` when it is not an array.
fn list(value: &Value) -> Option<Vec<&Value>> {
    match value {
        Value::Array(list) => Some(list.iter().collect()),
        Value::Object(map) => Some(map.values().collect()),
        _ => None,
    }
}

/// MESSAGE_IDs, each 32 characters once trimmed.
fn message_ids(value: &Value) -> Option<Vec<String>> {
    list(value)?
        .into_iter()
        .map(|v| as_text(Some(v)).map(|t| t.trim().to_string()).filter(|t| t.chars().count() == 32))
        .collect()
}

/// `event.offline.clear`: deletes the batch's rows, all of them or those named by `message_id[]` (looked at
/// first, as in the vendor's code) or `id[]`.
pub async fn clear(ctx: &CallContext<'_>, params: &Params) -> MethodResult {
    let owner = owner(ctx)?;
    let q = lower_keys(params);
    let Some(process_id) = process_id_param(&q) else {
        return Err(ApiError::argument_null_or_empty("PROCESS_ID"));
    };
    let only = if let Some(value) = q.get("message_id") {
        let ids = message_ids(value);
        // Sic: the vendor names the argument `messsage_id` when one of the values is not a MESSAGE_ID.
        let name = if list(value).is_some() { "messsage_id" } else { "message_id" };
        Selection::MessageIds(
            ids.ok_or_else(|| ApiError::argument_refused(name, "Value must be array of MESSAGE_ID values"))?,
        )
    } else if let Some(value) = q.get("id") {
        let refused = || ApiError::argument_refused("id", "Value must be array of integers");
        let ids = list(value).ok_or_else(refused)?;
        let ids: Vec<i64> = ids.into_iter().map(|v| intval(Some(v))).collect();
        if ids.iter().any(|&id| id <= 0) {
            return Err(refused());
        }
        Selection::Ids(ids)
    } else {
        Selection::All
    };
    ctx.store.offline_clear(&owner, &process_id, &only).await?;
    Ok(json!(true).into())
}

/// `event.offline.error`: the batch's rows with these MESSAGE_IDs are marked `ERROR=1` and freed, to be read
/// again with `event.offline.get` and `error=1`.
pub async fn error(ctx: &CallContext<'_>, params: &Params) -> MethodResult {
    let owner = owner(ctx)?;
    let q = lower_keys(params);
    let Some(process_id) = process_id_param(&q) else {
        return Err(ApiError::argument_null_or_empty("PROCESS_ID"));
    };
    let ids = q
        .get("message_id")
        .and_then(|v| list(v))
        .ok_or_else(|| ApiError::argument_refused("message_id", "Value must be array of MESSAGE_ID values"))?;
    let ids: Vec<String> = ids.into_iter().filter_map(|v| as_text(Some(v))).collect();
    ctx.store.offline_error(&owner, &process_id, &ids).await?;
    Ok(json!(true).into())
}

/// `event.offline.list`: the queue as it is, reserved and marked rows included, 50 a page from `start`.
pub async fn list_events(ctx: &CallContext<'_>, params: &Params) -> MethodResult {
    let owner = owner(ctx)?;
    let q = lower_keys(params);
    let conditions = parse_filter(q.get("filter").copied(), LIST_FIELDS, true)?;
    let order = parse_order(q.get("order").copied(), Field::Id, LIST_FIELDS)?;
    let start = ctx.list_start.max(0);
    let query = Query { conditions, order, process_id: None, error: None };
    let (events, total) = ctx.store.offline_rows(&owner, &query, start, PAGE, true).await?;
    let next = (start + PAGE < total).then_some(start + PAGE);
    let result: Vec<Value> = events.iter().map(|e| event_json(e, true)).collect();
    Ok(Output { result: json!(result), total: Some(total), next })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_read_like_the_vendor() {
        let f = json!({"id": 3, ">=ID": "4", "@EVENT_NAME": ["A", "B"]});
        let parsed = parse_filter(Some(&f), LIST_FIELDS, true).unwrap();
        assert_eq!(parsed.len(), 3);
        let err = parse_filter(Some(&json!({"!ID": 1})), GET_FIELDS, false).unwrap_err();
        assert_eq!(err.description(), "Filter operation not allowed: !");
        let err = parse_filter(Some(&json!({"PROCESS_ID": "x"})), GET_FIELDS, false).unwrap_err();
        assert_eq!(err.description(), "Filter field not allowed: PROCESS_ID");
        let err = parse_filter(Some(&json!("x")), GET_FIELDS, false).unwrap_err();
        assert_eq!(err.description(), "The filter is not an array.");
        let err = parse_filter(Some(&json!({"ID": [1]})), GET_FIELDS, false).unwrap_err();
        assert_eq!(err.description(), "The value of an argument 'ID' has an invalid type");
    }

    #[test]
    fn orders_read_like_the_vendor() {
        assert_eq!(parse_order(Some(&json!({"id": "desc"})), Field::Id, GET_FIELDS).unwrap(), vec![(Field::Id, true)]);
        assert_eq!(parse_order(None, Field::TimestampX, GET_FIELDS).unwrap(), vec![(Field::TimestampX, false)]);
        let err = parse_order(Some(&json!({"ID": "UP"})), Field::Id, GET_FIELDS).unwrap_err();
        assert_eq!(err.description(), "Order direction should be one of {ASC|DESC}");
        let err = parse_order(Some(&json!({"ERROR": "ASC"})), Field::Id, GET_FIELDS).unwrap_err();
        assert_eq!(err.description(), "Order field not allowed: ERROR");
    }

    #[test]
    fn process_ids_have_the_vendors_length() {
        let id = new_process_id();
        assert_eq!(id.len(), 32);
        assert!(id.bytes().all(|b| b.is_ascii_alphanumeric()));
    }
}
