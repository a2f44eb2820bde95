//! Reading method parameters the way the reference's PHP does: what counts as empty, what is numeric.
//! Form values arrive as strings and JSON values typed; both are judged here, in one place. The fields the
//! methods share are parsed here too, into the domain's types, each with the error the spec tables give.

use serde_json::Value;

use super::Params;
use crate::domain::{ChatId, CrmEntityType, RecordRef, UserId};
use crate::error::{ApiError, Code};

/// `CRM_ENTITY_TYPE` and `CRM_ENTITY` as parsed. The id is checked here; a type that is not one of the four
/// is not an error of its own but a record nobody may read, which the methods judge in their own row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestedRecord {
    pub entity_type: Option<CrmEntityType>,
    pub id: i64,
}

impl RequestedRecord {
    /// The record, when its type is one of the four.
    pub fn reference(self) -> Option<RecordRef> {
        Some(RecordRef { entity_type: self.entity_type?, id: self.id })
    }
}

/// Are both CRM parameters given (the `CRM_CHAT_EMPTY_CRM_DATA` rows)?
pub fn has_crm_data(params: &Params) -> bool {
    !is_empty(params.get("CRM_ENTITY_TYPE")) && !is_empty(params.get("CRM_ENTITY"))
}

/// `CRM_ENTITY_TYPE` and `CRM_ENTITY`, given (check that first): the id numeric in PHP's sense with an integer
/// part above zero.
pub fn crm_record(params: &Params) -> Result<RequestedRecord, ApiError> {
    let id = match php_numeric_int(params.get("CRM_ENTITY")) {
        Some(id) if id > 0 => id,
        _ => return Err(ApiError::argument_invalid_type("CRM_ENTITY")),
    };
    let type_text = as_text(params.get("CRM_ENTITY_TYPE")).unwrap_or_default();
    Ok(RequestedRecord { entity_type: CrmEntityType::parse(&type_text), id })
}

/// The CRM parameters null-checked one by one (`ArgumentNullException` naming the first missing), then
/// typed: rows 1–3 of `user.add`, `chat.get` and `message.add`.
pub fn required_crm_record(params: &Params) -> Result<RequestedRecord, ApiError> {
    for name in ["CRM_ENTITY_TYPE", "CRM_ENTITY"] {
        if is_empty(params.get(name)) {
            return Err(ApiError::argument_null_or_empty(name));
        }
    }
    crm_record(params)
}

/// `CHAT_ID` of the membership methods: empty means "the record's last chat"; otherwise a positive integer
/// [crmchat: the reference casts garbage to 0 and reports success].
pub fn optional_chat_id(params: &Params) -> Result<Option<ChatId>, ApiError> {
    let value = params.get("CHAT_ID");
    if is_empty(value) {
        return Ok(None);
    }
    match strict_int(value) {
        Some(id) if id > 0 => Ok(Some(ChatId(id))),
        _ => Err(ApiError::argument_invalid_type("CHAT_ID")),
    }
}

/// A user id parameter: empty, or an integer of 0 or below, is `empty()` (as on the reference); anything else
/// that is not an integer is of the wrong type [crmchat].
pub fn user_id(params: &Params, name: &str, empty: impl Fn() -> ApiError) -> Result<UserId, ApiError> {
    let value = params.get(name);
    if is_empty(value) {
        return Err(empty());
    }
    match strict_int(value) {
        Some(id) if id > 0 => Ok(UserId(id)),
        Some(_) => Err(empty()),
        None => Err(ApiError::argument_invalid_type(name)),
    }
}

/// A required positive integer id parameter: empty is `ArgumentNullException`, anything else that is not a
/// positive integer is of the wrong type.
pub fn required_id(params: &Params, name: &str) -> Result<i64, ApiError> {
    let value = params.get(name);
    if is_empty(value) {
        return Err(ApiError::argument_null_or_empty(name));
    }
    match strict_int(value) {
        Some(id) if id > 0 => Ok(id),
        _ => Err(ApiError::argument_invalid_type(name)),
    }
}

/// A required text parameter: empty is `ArgumentNullException`, an array or object is of the wrong type.
pub fn required_text(params: &Params, name: &str) -> Result<String, ApiError> {
    match params.get(name) {
        value if is_empty(value) => Err(ApiError::argument_null_or_empty(name)),
        Some(Value::Array(_) | Value::Object(_)) => Err(ApiError::argument_invalid_type(name)),
        value => Ok(as_text(value).unwrap_or_default()),
    }
}

/// The `CRM_CHAT_EMPTY_USER` error of `user.delete`'s `USER_ID`.
pub fn empty_user() -> ApiError {
    Code::CrmChatEmptyUser.into()
}

/// PHP's `empty()`: absent, null, "", "0", 0, 0.0, false, or an empty array.
pub fn is_empty(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => !b,
        Some(Value::Number(n)) => n.as_f64() == Some(0.0),
        Some(Value::String(s)) => s.is_empty() || s == "0",
        Some(Value::Array(a)) => a.is_empty(),
        Some(Value::Object(o)) => o.is_empty(),
    }
}

/// PHP's `intval`: leading whitespace, a sign and digits; anything else ends the number (`"12abc"` is 12,
/// `"abc"` is 0).
pub fn intval(value: Option<&Value>) -> i64 {
    match value {
        Some(Value::Number(n)) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)).unwrap_or(0),
        Some(Value::Bool(b)) => *b as i64,
        Some(Value::String(s)) => {
            let t = s.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
            let (sign, digits) = match t.as_bytes().first() {
                Some(b'-') => (-1, &t[1..]),
                Some(b'+') => (1, &t[1..]),
                _ => (1, t),
            };
            let end = digits.bytes().position(|b| !b.is_ascii_digit()).unwrap_or(digits.len());
            digits[..end].parse::<i64>().map(|n| sign * n).unwrap_or(0)
        }
        _ => 0,
    }
}

/// PHP's `is_numeric()` on a string: optional leading whitespace, sign, digits with an optional fraction,
/// optional exponent, optional trailing whitespace (PHP 8). No hex, no bare ".".
fn php_numeric_str(s: &str) -> Option<f64> {
    let t = s.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let t = t.trim_end_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let bytes = t.as_bytes();
    let mut i = 0;
    if i < bytes.len() && (bytes[i] == b'+' || bytes[i] == b'-') {
        i += 1;
    }
    let int_start = i;
    while i < bytes.len() && bytes[i].is_ascii_digit() {
        i += 1;
    }
    let mut digits = i - int_start;
    if i < bytes.len() && bytes[i] == b'.' {
        i += 1;
        let frac_start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        digits += i - frac_start;
    }
    if digits == 0 {
        return None;
    }
    if i < bytes.len() && (bytes[i] == b'e' || bytes[i] == b'E') {
        let mut j = i + 1;
        if j < bytes.len() && (bytes[j] == b'+' || bytes[j] == b'-') {
            j += 1;
        }
        let exp_start = j;
        while j < bytes.len() && bytes[j].is_ascii_digit() {
            j += 1;
        }
        if j == exp_start {
            return None;
        }
        i = j;
    }
    if i != bytes.len() {
        return None;
    }
    t.parse::<f64>().ok()
}

/// A value numeric in PHP's sense, as its integer part (`"2.88e2"` → 288). `None` when not numeric or when
/// the integer part does not fit in 64 bits.
pub fn php_numeric_int(value: Option<&Value>) -> Option<i64> {
    let f = match value? {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                return Some(i);
            }
            n.as_f64()?
        }
        Value::String(s) => {
            if let Ok(i) = s.parse::<i64>() {
                return Some(i);
            }
            php_numeric_str(s)?
        }
        _ => return None,
    };
    let truncated = f.trunc();
    if truncated.is_finite() && truncated.abs() < 9.2e18 { Some(truncated as i64) } else { None }
}

/// A value that is an integer and nothing else: a JSON integer (or a float without fraction, as JS
/// clients may send) or a string of digits with an optional minus sign.
pub fn strict_int(value: Option<&Value>) -> Option<i64> {
    match value? {
        Value::Number(n) => n.as_i64().or_else(|| {
            let f = n.as_f64()?;
            (f.fract() == 0.0 && f.abs() < 9.2e18).then_some(f as i64)
        }),
        Value::String(s) => {
            let digits = s.strip_prefix('-').unwrap_or(s);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            s.parse::<i64>().ok()
        }
        _ => None,
    }
}

/// A parameter as text (for `CRM_ENTITY_TYPE`, `MESSAGE`); numbers are rendered as PHP would cast them.
pub fn as_text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(true) => Some("1".into()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn empty_follows_php() {
        for v in [json!(null), json!(""), json!("0"), json!(0), json!(0.0), json!(false), json!([]), json!({})] {
            assert!(is_empty(Some(&v)), "{v}");
        }
        assert!(is_empty(None));
        for v in [json!("a"), json!("00"), json!(" "), json!(1), json!(true), json!([0]), json!("0.0")] {
            assert!(!is_empty(Some(&v)), "{v}");
        }
    }

    #[test]
    fn numeric_follows_php() {
        let ok = [("288", 288), (" 288", 288), ("288.0", 288), ("2.88e2", 288), ("288 ", 288), ("+5", 5), ("0.5", 0)];
        for (s, n) in ok {
            assert_eq!(php_numeric_int(Some(&json!(s))), Some(n), "{s}");
        }
        for s in ["abc", "12abc", "", ".", "0x1A", "1e", "--1", "1 2"] {
            assert_eq!(php_numeric_int(Some(&json!(s))), None, "{s}");
        }
        assert_eq!(php_numeric_int(Some(&json!(288))), Some(288));
        assert_eq!(php_numeric_int(Some(&json!(2.5))), Some(2));
        assert_eq!(php_numeric_int(Some(&json!(true))), None);
        assert_eq!(php_numeric_int(Some(&json!([1]))), None);
        assert_eq!(php_numeric_int(Some(&json!("1e30"))), None);
    }

    #[test]
    fn strict_int_refuses_garbage() {
        assert_eq!(strict_int(Some(&json!("12"))), Some(12));
        assert_eq!(strict_int(Some(&json!("-3"))), Some(-3));
        assert_eq!(strict_int(Some(&json!(12))), Some(12));
        assert_eq!(strict_int(Some(&json!(12.0))), Some(12));
        for v in [
            json!("12abc"),
            json!("1.5"),
            json!("abc"),
            json!([12]),
            json!(1.5),
            json!(true),
            json!(" 12"),
            json!("+12"),
        ] {
            assert_eq!(strict_int(Some(&v)), None, "{v}");
        }
        assert_eq!(strict_int(Some(&json!("99999999999999999999"))), None);
    }
}
