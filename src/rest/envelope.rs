//! The success and error envelopes, in JSON or XML, with the headers every REST answer carries.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::methods::Output;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Xml,
}

impl Format {
    /// As the journal names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Xml => "xml",
        }
    }
}

/// The `time` block of every success. Instants are unix seconds as floats.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    pub start: f64,
    pub finish: f64,
    pub processing: f64,
    pub operating: f64,
    pub operating_reset_at: i64,
}

/// PHP's `date('c')`: ISO-8601 with a numeric offset, never `Z`. Every answer carries two of these and they
/// change once a second, so each thread keeps the last one it wrote.
pub fn php_date_c(unix: f64) -> String {
    thread_local! {
        static LAST: std::cell::RefCell<(i64, String)> = const { std::cell::RefCell::new((i64::MIN, String::new())) };
    }
    let second = unix.floor() as i64;
    LAST.with_borrow_mut(|(cached_second, text)| {
        if *cached_second != second {
            let dt: DateTime<Utc> = Utc.timestamp_opt(second, 0).single().unwrap_or_default();
            *text = dt.format("%Y-%m-%dT%H:%M:%S+00:00").to_string();
            *cached_second = second;
        }
        text.clone()
    })
}

/// The `time` block as it goes on the wire.
#[derive(Serialize)]
struct TimeBlock {
    start: f64,
    finish: f64,
    duration: f64,
    processing: f64,
    date_start: String,
    date_finish: String,
    operating: f64,
    operating_reset_at: i64,
}

impl Timing {
    fn block(&self) -> TimeBlock {
        TimeBlock {
            start: self.start,
            finish: self.finish,
            duration: self.finish - self.start,
            processing: self.processing,
            date_start: php_date_c(self.start),
            date_finish: php_date_c(self.finish),
            operating: self.operating,
            operating_reset_at: self.operating_reset_at,
        }
    }

    pub fn to_json(&self) -> Value {
        serde_json::to_value(self.block()).unwrap_or_default()
    }
}

/// A success as it goes on the wire: `result`, then `next`/`total` when the method pages, then `time`.
#[derive(Serialize)]
struct Success<'a> {
    result: &'a Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    total: Option<i64>,
    time: TimeBlock,
}

fn success<'a>(output: &'a Output, timing: &Timing) -> Success<'a> {
    Success { result: &output.result, next: output.next, total: output.total, time: timing.block() }
}

/// The body of a success as a JSON value (for XML answers and tests).
pub fn success_body(output: &Output, timing: &Timing) -> Value {
    serde_json::to_value(success(output, timing)).unwrap_or_default()
}

/// A success answer. JSON is written straight from the typed envelope, without an intermediate tree.
pub fn render_success(output: &Output, timing: &Timing, format: Format) -> Response {
    match format {
        Format::Json => {
            let text = serde_json::to_string(&success(output, timing)).unwrap_or_default();
            with_headers(StatusCode::OK, text, "application/json; charset=utf-8")
        }
        Format::Xml => render(StatusCode::OK, &success_body(output, timing), format),
    }
}

pub fn render(status: StatusCode, body: &Value, format: Format) -> Response {
    match format {
        Format::Json => {
            with_headers(status, serde_json::to_string(body).unwrap_or_default(), "application/json; charset=utf-8")
        }
        Format::Xml => with_headers(status, to_xml(body), "text/xml; charset=utf-8"),
    }
}

fn with_headers(status: StatusCode, text: String, content_type: &'static str) -> Response {
    let mut response = (status, text).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("origin, content-type, accept"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

pub fn render_error(err: &ApiError, format: Format) -> Response {
    render(err.status(), &err.body(), format)
}

/// The shape PHP's `json_encode` gives an array: an empty map is `[]`, a map with keys 0..n-1 in order is a
/// list. Applied to maps we build keyed by client-chosen names (batch results).
pub fn php_array(map: Map<String, Value>) -> Value {
    if map.is_empty() {
        return Value::Array(Vec::new());
    }
    let is_list = map.keys().enumerate().all(|(i, k)| k.parse::<usize>() == Ok(i) && *k == i.to_string());
    if is_list { Value::Array(map.into_iter().map(|(_, v)| v).collect()) } else { Value::Object(map) }
}

/// The vendor's XML answer: a `<response>` document, keys as elements, list items as `<item>`.
pub fn to_xml(body: &Value) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?><response>");
    if let Value::Object(map) = body {
        for (k, v) in map {
            write_element(&mut out, k, v);
        }
    }
    out.push_str("</response>");
    out
}

fn write_element(out: &mut String, name: &str, value: &Value) {
    let valid_name = !name.is_empty()
        && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    let tag = if valid_name { name } else { "item" };
    out.push('<');
    out.push_str(tag);
    out.push('>');
    match value {
        Value::Object(map) => map.iter().for_each(|(k, v)| write_element(out, k, v)),
        Value::Array(items) => items.iter().for_each(|v| write_element(out, "item", v)),
        Value::String(s) => escape_into(out, s),
        Value::Null => {}
        other => out.push_str(&other.to_string()),
    }
    out.push_str("</");
    out.push_str(tag);
    out.push('>');
}

fn escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dates_use_a_numeric_offset() {
        assert_eq!(php_date_c(1_795_953_600.7), "2026-11-29T12:00:00+00:00");
    }

    #[test]
    fn php_arrays_become_lists_only_without_gaps() {
        let m = |pairs: &[(&str, i64)]| pairs.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<Map<_, _>>();
        assert_eq!(php_array(Map::new()), json!([]));
        assert_eq!(php_array(m(&[("0", 1), ("1", 2)])), json!([1, 2]));
        assert_eq!(php_array(m(&[("1", 1)])), json!({"1": 1}));
        assert_eq!(php_array(m(&[("a", 1)])), json!({"a": 1}));
        assert_eq!(php_array(m(&[("00", 1)])), json!({"00": 1}));
    }

    #[test]
    fn xml_lists_items() {
        let body = json!({"result": [1, {"CHAT_ID": "5 & <6>"}]});
        assert_eq!(
            to_xml(&body),
            "<?xml version=\"1.0\" encoding=\"utf-8\"?><response><result><item>1</item>\
             <item><CHAT_ID>5 &amp; &lt;6&gt;</CHAT_ID></item></result></response>"
        );
    }
}
