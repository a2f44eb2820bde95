//! Reading method parameters the way the reference's PHP does: what counts as empty, what is numeric.
//! Form values arrive as strings and JSON values typed; both are judged here, in one place.

use serde_json::Value;

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
