//! PHP-style request parameters: what a Bitrix24 PHP endpoint sees in `$_REQUEST`.
//!
//! Query strings and urlencoded bodies follow PHP's `parse_str` rules
//! (`php_default_treat_data` + `php_register_variable_ex` in `main/php_variables.c`),
//! so `FIELDS[PHONE][0][VALUE]=1` becomes nested objects. Form values are strings;
//! PHP arrays are objects with string keys in insertion order (integer keys as their
//! decimal text). JSON bodies keep their own types.

use std::convert::Infallible;

use bytes::Bytes;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode, utf8_percent_encode};
use serde_json::Value;

/// A parameter tree: top-level names to values, in insertion order.
pub type Tree = serde_json::Map<String, Value>;

/// Parsing limits, PHP's `max_input_nesting_level` and `max_input_vars`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most bracket segments in one name (`a[1][2]` has 2).
    pub max_depth: usize,
    /// Most parameters in one request, query and body together.
    pub max_vars: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_depth: 64, max_vars: 1000 }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ParamsError {
    #[error("Parameter nesting is deeper than {0} levels")]
    TooDeep(usize),
    #[error("More than {0} parameters")]
    TooMany(usize),
    /// The position of the error, e.g. `line 1 column 7`.
    #[error("Invalid JSON body: {0}")]
    InvalidJson(String),
    #[error("Parameters are not valid UTF-8")]
    InvalidUtf8,
    #[error("Invalid multipart body: {0}")]
    InvalidMultipart(String),
}

/// Parses a raw (percent-encoded) query string into `tree`, like PHP's `parse_str`.
/// Unlike PHP, which silently drops what is over its limits, this refuses the input.
pub fn parse_str_into(tree: &mut Tree, input: &str, limits: &Limits) -> Result<(), ParamsError> {
    parse_urlencoded(tree, input.as_bytes(), limits, &mut 0)
}

/// [`parse_str_into`] a new tree with the default limits.
pub fn parse_str(input: &str) -> Result<Tree, ParamsError> {
    let mut tree = Tree::new();
    parse_str_into(&mut tree, input, &Limits::default())?;
    Ok(tree)
}

/// The parameters of a request: its query string, then its body (JSON, multipart or
/// urlencoded, by Content-Type). `limits.max_vars` counts query and body together.
///
/// As in PHP's `$_REQUEST` (request_order "GP"), a body parameter replaces the query
/// parameter of the same top-level name as a whole, keeping the query's position.
pub async fn parse_request(
    query: Option<&str>,
    content_type: Option<&str>,
    body: &[u8],
    limits: &Limits,
) -> Result<Tree, ParamsError> {
    let mut vars = 0;
    let mut tree = Tree::new();
    if let Some(query) = query {
        parse_urlencoded(&mut tree, query.as_bytes(), limits, &mut vars)?;
    }
    let mut body_tree = Tree::new();
    let content_type = content_type.unwrap_or_default();
    let media_type = content_type.split(';').next().unwrap_or_default().trim();
    if media_type.eq_ignore_ascii_case("application/json") {
        parse_json(&mut body_tree, body, limits, &mut vars)?;
    } else if media_type.eq_ignore_ascii_case("multipart/form-data") {
        if !body.is_empty() {
            parse_multipart(&mut body_tree, content_type, body, limits, &mut vars).await?;
        }
    } else {
        // Anything else, even no Content-Type, is read as a urlencoded form.
        parse_urlencoded(&mut body_tree, body, limits, &mut vars)?;
    }
    if tree.is_empty() {
        return Ok(body_tree);
    }
    for (name, value) in body_tree {
        tree.insert(name, value); // an existing key keeps its position
    }
    Ok(tree)
}

/// The inverse of [`parse_str`]: PHP's `http_build_query` with bracketed names and
/// `rawurlencode` escaping. Nulls and empty objects/arrays produce nothing (as in PHP);
/// `true`/`false` become `1`/`0`.
pub fn build_query(tree: &Tree) -> String {
    let mut out = String::new();
    for (name, value) in tree {
        push_pairs(&mut out, &encode(name), value);
    }
    out
}

fn push_pairs(out: &mut String, name: &str, value: &Value) {
    let text = match value {
        Value::Null => return,
        Value::Bool(b) => if *b { "1" } else { "0" }.to_owned(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Object(map) => {
            for (key, value) in map {
                push_pairs(out, &format!("{name}%5B{}%5D", encode(key)), value);
            }
            return;
        }
        Value::Array(list) => {
            for (index, value) in list.iter().enumerate() {
                push_pairs(out, &format!("{name}%5B{index}%5D"), value);
            }
            return;
        }
    };
    if !out.is_empty() {
        out.push('&');
    }
    out.push_str(name);
    out.push('=');
    out.push_str(&encode(&text));
}

/// PHP's `rawurlencode` keeps only `A-Z a-z 0-9 - _ . ~`.
const RAWURLENCODE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

fn encode(text: &str) -> String {
    utf8_percent_encode(text, RAWURLENCODE).to_string()
}

/// Counts one more parameter against `limits.max_vars`.
fn count_var(vars: &mut usize, limits: &Limits) -> Result<(), ParamsError> {
    *vars += 1;
    if *vars > limits.max_vars {
        return Err(ParamsError::TooMany(limits.max_vars));
    }
    Ok(())
}

fn parse_urlencoded(tree: &mut Tree, input: &[u8], limits: &Limits, vars: &mut usize) -> Result<(), ParamsError> {
    // PHP splits with strtok, which skips empty pieces (`a=1&&b=2&`).
    for pair in input.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        count_var(vars, limits)?;
        let (name, value) = match pair.iter().position(|&b| b == b'=') {
            Some(eq) => (&pair[..eq], &pair[eq + 1..]),
            None => (pair, &[][..]),
        };
        let value = Value::String(url_decode(value)?);
        register(tree, &url_decode(name)?, value, limits)?;
    }
    Ok(())
}

/// PHP's `urldecode`: `+` is a space, `%XX` a byte, and a stray `%` stays as is.
fn url_decode(raw: &[u8]) -> Result<String, ParamsError> {
    let spaced: Vec<u8> = raw.iter().map(|&b| if b == b'+' { b' ' } else { b }).collect();
    String::from_utf8(percent_decode(&spaced).collect()).map_err(|_| ParamsError::InvalidUtf8)
}

/// Stores `value` under a PHP variable name such as `FIELDS[PHONE][0][VALUE]`
/// (`php_register_variable_ex`).
fn register(tree: &mut Tree, name: &str, value: Value, limits: &Limits) -> Result<(), ParamsError> {
    // PHP handles names as C strings, so a decoded NUL ends the name; leading spaces go.
    let name = name.split('\0').next().unwrap_or_default();
    let name = name.trim_start_matches(' ');
    let (base, mut rest) = name.split_at(name.find('[').unwrap_or(name.len()));
    // Parameters were once turned into global variables (register_globals), and ' ' and
    // '.' cannot be in a PHP variable name, so PHP still mangles them to '_' in the part
    // before the first '['. Brackets inside segments are left alone.
    let mut base = base.replace([' ', '.'], "_");
    if base.is_empty() {
        return Ok(()); // `=x`, `[a]=x`: no name, PHP drops the pair
    }
    let mut path = Vec::new(); // one per segment; None is `[]`, append
    while let Some(after) = rest.strip_prefix('[') {
        if path.len() == limits.max_depth {
            // PHP drops the whole variable with a warning; we refuse the request.
            return Err(ParamsError::TooDeep(limits.max_depth));
        }
        let Some(end) = after.find(']') else {
            // A '[' without a ']' is not an index. If it is the first one, PHP (8.x)
            // turns it into '_' and mangles the tail like the base (`a[b.c` is `a_b_c`);
            // later, the tail is dropped (`a[b][c` is `a[b]`).
            if path.is_empty() {
                base.push('_');
                base.extend(after.chars().map(|c| match c {
                    ' ' | '.' | '[' => '_',
                    c => c,
                }));
            }
            break;
        };
        // A segment ends at the first ']', so it may hold '[' (`a[b[c]` is key `b[c`).
        // PHP skips one whitespace char before looking for ']', so `[ ]` appends too.
        let segment = &after[..end];
        let append = segment.is_empty() || matches!(segment, " " | "\t" | "\n" | "\x0b" | "\x0c" | "\r");
        path.push((!append).then(|| segment.to_owned()));
        // After a ']', anything but another '[' ends the name: `a[b]xyz[c]` is `a[b]`.
        rest = &after[end + 1..];
    }

    let mut node = tree;
    let mut key = Some(base);
    for segment in path {
        let Some(slot) = slot(node, key) else {
            return Ok(());
        };
        if !slot.is_object() {
            // `a=1&a[b]=2`: PHP replaces the scalar with an array, in place.
            *slot = Value::Object(Tree::new());
        }
        let Value::Object(child) = slot else { unreachable!("just made an object") };
        node = child;
        key = segment;
    }
    if let Some(slot) = slot(node, key) {
        *slot = value; // the last value wins, at the key's first position
    }
    Ok(())
}

/// The value under `key` in `map` (a new null if absent). A `None` key appends at PHP's
/// next free index; `None` comes back when there is none (past `i64::MAX`), and PHP
/// then drops the value.
fn slot(map: &mut Tree, key: Option<String>) -> Option<&mut Value> {
    let key = match key {
        Some(key) => key,
        None => next_index(map)?.to_string(),
    };
    Some(map.entry(key).or_insert(Value::Null))
}

/// PHP appends at one past the largest non-negative integer key, or at 0.
fn next_index(map: &Tree) -> Option<i64> {
    let largest = map.keys().filter_map(|k| int_key(k)).filter(|&i| i >= 0).max();
    largest.map_or(Some(0), |i| i.checked_add(1))
}

/// PHP makes canonical decimal strings integer keys: `0`, `12`, `-3`, but not `012`,
/// `+1`, `-0`, `1.0`, ` 1` or anything out of i64 range.
fn int_key(key: &str) -> Option<i64> {
    // Checked on the text, without allocating: `a[]=` appends look at every key of the array.
    let digits = key.strip_prefix('-').unwrap_or(key);
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'))
        && key != "-0";
    if canonical { key.parse::<i64>().ok() } else { None }
}

fn parse_json(tree: &mut Tree, body: &[u8], limits: &Limits, vars: &mut usize) -> Result<(), ParamsError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    // A JSON body may nest as deep as a form could: `a[b]` is `{"a":{"b":..}}`, so one
    // level for the top-level object plus `max_depth`. Checked before serde_json runs,
    // which would otherwise stop at its own limit of 128 levels with a less clear error.
    if json_nesting(body) > limits.max_depth.saturating_add(1) {
        return Err(ParamsError::TooDeep(limits.max_depth));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ParamsError::InvalidJson(format!("line {} column {}", e.line(), e.column())))?;
    // Only an object has named parameters; a top-level list or scalar gives none.
    let Value::Object(map) = value else {
        return Ok(());
    };
    for value in map.values() {
        count_leaves(value, limits, vars)?;
    }
    if tree.is_empty() {
        *tree = map;
    } else {
        tree.extend(map);
    }
    Ok(())
}

/// Counts each value without children (scalars, empty objects and arrays) as a parameter.
fn count_leaves(value: &Value, limits: &Limits, vars: &mut usize) -> Result<(), ParamsError> {
    match value {
        Value::Object(map) if !map.is_empty() => map.values().try_for_each(|v| count_leaves(v, limits, vars)),
        Value::Array(list) if !list.is_empty() => list.iter().try_for_each(|v| count_leaves(v, limits, vars)),
        _ => count_var(vars, limits),
    }
}

/// The deepest object/array nesting in a JSON text (brackets in strings don't count).
fn json_nesting(body: &[u8]) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for &b in body {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else {
            match b {
                b'"' => in_string = true,
                b'[' | b'{' => {
                    depth += 1;
                    deepest = deepest.max(depth);
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
    }
    deepest
}

/// Each named part is a parameter, its name read like a form's (no percent-decoding, as
/// in PHP). Unlike PHP, which puts file parts into `$_FILES`, a file's content is the
/// value; it must be UTF-8 text.
async fn parse_multipart(
    tree: &mut Tree,
    content_type: &str,
    body: &[u8],
    limits: &Limits,
    vars: &mut usize,
) -> Result<(), ParamsError> {
    let invalid = |e: multer::Error| ParamsError::InvalidMultipart(e.to_string());
    let boundary = multer::parse_boundary(content_type).map_err(invalid)?;
    let data = Bytes::copy_from_slice(body);
    let stream = futures::stream::once(async move { Ok::<_, Infallible>(data) });
    let mut multipart = multer::Multipart::new(stream, boundary);
    while let Some(field) = multipart.next_field().await.map_err(invalid)? {
        let name = field.name().map(str::to_owned);
        let content = field.bytes().await.map_err(invalid)?;
        let Some(name) = name else {
            continue; // a part without a name has nowhere to go
        };
        count_var(vars, limits)?;
        let value = String::from_utf8(content.into()).map_err(|_| ParamsError::InvalidUtf8)?;
        register(tree, &name, Value::String(value), limits)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// Compares as JSON text, so key order counts too.
    fn check(input: &str, expected: Value) {
        let tree = parse_str(input).unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(Value::Object(tree).to_string(), expected.to_string(), "{input}");
    }

    async fn request(query: Option<&str>, content_type: Option<&str>, body: &str) -> Result<Value, ParamsError> {
        parse_request(query, content_type, body.as_bytes(), &Limits::default()).await.map(Value::Object)
    }

    fn limits(max_depth: usize, max_vars: usize) -> Limits {
        Limits { max_depth, max_vars }
    }

    #[test]
    fn plain_pairs() {
        check("a=1&b=2", json!({"a": "1", "b": "2"}));
        check("a&b=", json!({"a": "", "b": ""}));
        check("a=x=y", json!({"a": "x=y"}));
        check("", json!({}));
    }

    #[test]
    fn empty_pieces_and_trailing_ampersand() {
        check("a=1&&b=2&", json!({"a": "1", "b": "2"}));
        check("&&&", json!({}));
    }

    #[test]
    fn empty_names_are_skipped() {
        check("=x&b=1", json!({"b": "1"}));
        check("[a]=x&b=1", json!({"b": "1"}));
        check("  [a]=x", json!({}));
        check("[a=x", json!({}));
    }

    #[test]
    fn leading_spaces_stripped() {
        check("++a=1", json!({"a": "1"}));
        check("%20b[c]=1", json!({"b": {"c": "1"}}));
    }

    #[test]
    fn plus_and_percent_decoding() {
        check("a=b+c", json!({"a": "b c"}));
        check("a=b%2Bc", json!({"a": "b+c"}));
        check("a=%D0%BF%D1%80%D0%B8", json!({"a": "при"}));
        check("a=100%&b=%zz", json!({"a": "100%", "b": "%zz"}));
        check("a=%00", json!({"a": "\0"}));
    }

    #[test]
    fn nul_ends_a_name() {
        check("a%00b=1", json!({"a": "1"}));
    }

    #[test]
    fn dots_and_spaces_in_base_name() {
        check("a.b=1", json!({"a_b": "1"}));
        check("a b=1", json!({"a_b": "1"}));
        check("a+b.c=1", json!({"a_b_c": "1"}));
        check("a.b[c.d e]=1", json!({"a_b": {"c.d e": "1"}}));
    }

    #[test]
    fn encoded_brackets() {
        check("a%5Bb%5D=1", json!({"a": {"b": "1"}}));
        check("a%5b%5d=1", json!({"a": {"0": "1"}}));
    }

    #[test]
    fn append_segments() {
        check("select[]=ID&select[]=NAME", json!({"select": {"0": "ID", "1": "NAME"}}));
        check("a[][]=1&a[][]=2", json!({"a": {"0": {"0": "1"}, "1": {"0": "2"}}}));
        check("a[ ]=1&a[\t]=2", json!({"a": {"0": "1", "1": "2"}}));
        check("a[ b]=1&a[  ]=2", json!({"a": {" b": "1", "  ": "2"}}));
    }

    #[test]
    fn nested_segments() {
        check("FIELDS[PHONE][0][VALUE]=1", json!({"FIELDS": {"PHONE": {"0": {"VALUE": "1"}}}}));
        check(
            "FIELDS[TITLE]=t&FIELDS[PHONE][0][VALUE]=1&FIELDS[PHONE][0][VALUE_TYPE]=WORK",
            json!({"FIELDS": {"TITLE": "t", "PHONE": {"0": {"VALUE": "1", "VALUE_TYPE": "WORK"}}}}),
        );
    }

    #[test]
    fn next_index_after_integer_keys() {
        check("a[5]=x&a[]=y", json!({"a": {"5": "x", "6": "y"}}));
        check("a[x]=1&a[]=2", json!({"a": {"x": "1", "0": "2"}}));
        check("a[-3]=1&a[]=2", json!({"a": {"-3": "1", "0": "2"}}));
        check("a[7]=1&a[2]=1&a[]=2", json!({"a": {"7": "1", "2": "1", "8": "2"}}));
        // Not canonical integers, so string keys that don't move the next index.
        check(
            "a[012]=1&a[%2B1]=1&a[-0]=1&a[1.0]=1&a[]=2",
            json!({"a": {"012": "1", "+1": "1", "-0": "1", "1.0": "1", "0": "2"}}),
        );
        check("a[99999999999999999999]=1&a[]=2", json!({"a": {"99999999999999999999": "1", "0": "2"}}));
        // PHP can't append past i64::MAX and drops the value.
        check(
            "a[9223372036854775806]=1&a[]=2&a[]=3",
            json!({"a": {"9223372036854775806": "1", "9223372036854775807": "2"}}),
        );
    }

    #[test]
    fn scalar_becomes_array_and_back() {
        check("a=1&a[b]=2", json!({"a": {"b": "2"}}));
        check("a[b]=2&a=1", json!({"a": "1"}));
        check("a[b]=1&a[b][c]=2", json!({"a": {"b": {"c": "2"}}}));
    }

    #[test]
    fn overwrite_keeps_position() {
        check("a=1&b=2&a=3", json!({"a": "3", "b": "2"}));
        check("x[a]=1&x[b]=2&x[a]=3", json!({"x": {"a": "3", "b": "2"}}));
        check("a=1&b=2&a[c]=3", json!({"a": {"c": "3"}, "b": "2"}));
    }

    #[test]
    fn unmatched_bracket() {
        check("a[b=1", json!({"a_b": "1"}));
        check("a[b.c d[e=1", json!({"a_b_c_d_e": "1"}));
        check("a[=1", json!({"a_": "1"}));
        // After a good segment the unmatched tail is dropped.
        check("a[b][c=1", json!({"a": {"b": "1"}}));
    }

    #[test]
    fn bracket_inside_segment() {
        check("a[b[c]=1", json!({"a": {"b[c": "1"}}));
        check("a[b[c]][d]=1", json!({"a": {"b[c": "1"}}));
    }

    #[test]
    fn text_after_segment_is_ignored() {
        check("a[b]xyz[c]=1", json!({"a": {"b": "1"}}));
        check("a[b]]=1", json!({"a": {"b": "1"}}));
    }

    #[test]
    fn depth_limit() {
        let name = |n: usize| format!("a{}", "[x]".repeat(n));
        let tree = parse_str(&format!("{}=1", name(64))).unwrap();
        let mut node = &tree["a"];
        for _ in 0..64 {
            node = &node["x"];
        }
        assert_eq!(node, "1");
        assert_eq!(parse_str(&format!("{}=1", name(65))), Err(ParamsError::TooDeep(64)));
        assert_eq!(parse_str(&format!("a{}=1", "[]".repeat(65))), Err(ParamsError::TooDeep(64)));
        let mut tree = Tree::new();
        assert_eq!(parse_str_into(&mut tree, "a[b][c]=1", &limits(1, 10)), Err(ParamsError::TooDeep(1)));
    }

    #[test]
    fn vars_limit() {
        let query = |n: usize| (0..n).map(|i| format!("k{i}=v")).collect::<Vec<_>>().join("&");
        assert_eq!(parse_str(&query(1000)).unwrap().len(), 1000);
        assert_eq!(parse_str(&format!("{}&&&", query(1000))).unwrap().len(), 1000);
        assert_eq!(parse_str(&query(1001)), Err(ParamsError::TooMany(1000)));
        // Pairs count, whether or not they add keys.
        assert_eq!(parse_str(&"a[]=1&".repeat(1001)), Err(ParamsError::TooMany(1000)));
    }

    #[test]
    fn invalid_utf8() {
        assert_eq!(parse_str("a=%FF"), Err(ParamsError::InvalidUtf8));
        assert_eq!(parse_str("%FF=1"), Err(ParamsError::InvalidUtf8));
        assert_eq!(parse_str("a[%C3]=1"), Err(ParamsError::InvalidUtf8));
    }

    #[test]
    fn parse_str_into_adds_to_tree() {
        let mut tree = parse_str("a=1&b[]=x").unwrap();
        parse_str_into(&mut tree, "b[]=y&c=2", &Limits::default()).unwrap();
        assert_eq!(Value::Object(tree), json!({"a": "1", "b": {"0": "x", "1": "y"}, "c": "2"}));
    }

    #[test]
    fn build_query_format() {
        let tree = json!({
            "a": "x y&z", "b": ["p", "q"], "c": {"d e": {"f": "1"}},
            "n": 1.5, "t": true, "f": false, "z": null, "empty": {}
        });
        assert_eq!(
            build_query(tree.as_object().unwrap()),
            "a=x%20y%26z&b%5B0%5D=p&b%5B1%5D=q&c%5Bd%20e%5D%5Bf%5D=1&n=1.5&t=1&f=0"
        );
        assert_eq!(build_query(&Tree::new()), "");
    }

    #[test]
    fn build_query_round_trip() {
        let input = "FIELDS[TITLE]=Deal+%231&FIELDS[PHONE][0][VALUE]=%2B7+999&select[]=ID&select[]=*";
        let tree = parse_str(input).unwrap();
        assert_eq!(parse_str(&build_query(&tree)).unwrap(), tree);
    }

    #[tokio::test]
    async fn request_without_body() {
        assert_eq!(request(Some("a=1"), None, "").await, Ok(json!({"a": "1"})));
        assert_eq!(request(None, None, "").await, Ok(json!({})));
    }

    #[tokio::test]
    async fn urlencoded_body_replaces_query_in_place() {
        let got =
            request(Some("a=1&b[x]=1&c=3"), Some("application/x-www-form-urlencoded"), "b[y]=2&d=4").await.unwrap();
        assert_eq!(got.to_string(), json!({"a": "1", "b": {"y": "2"}, "c": "3", "d": "4"}).to_string());
    }

    #[tokio::test]
    async fn other_content_types_are_urlencoded() {
        assert_eq!(request(None, Some("text/plain"), "a[b]=1").await, Ok(json!({"a": {"b": "1"}})));
        assert_eq!(request(None, None, "a=1").await, Ok(json!({"a": "1"})));
    }

    #[tokio::test]
    async fn json_keeps_types() {
        let body = r#"{"id": 5, "f": 1.5, "ok": true, "no": null, "list": [1, "x"], "o": {"k": [{}]}}"#;
        let got = request(None, Some("application/json"), body).await.unwrap();
        assert_eq!(got.to_string(), serde_json::from_str::<Value>(body).unwrap().to_string());
        assert!(got["id"].is_u64() && got["list"].is_array());
    }

    #[tokio::test]
    async fn json_replaces_query_in_place() {
        let got = request(Some("a=1&b=2&c=3"), Some("Application/JSON; charset=utf-8"), r#"{"d": 4, "b": [1]}"#)
            .await
            .unwrap();
        assert_eq!(got.to_string(), r#"{"a":"1","b":[1],"c":"3","d":4}"#);
    }

    #[tokio::test]
    async fn json_without_object() {
        let json = Some("application/json");
        assert_eq!(request(Some("a=1"), json, " \n").await, Ok(json!({"a": "1"})));
        assert_eq!(request(Some("a=1"), json, "[1, 2]").await, Ok(json!({"a": "1"})));
        assert_eq!(request(Some("a=1"), json, "\"x\"").await, Ok(json!({"a": "1"})));
    }

    #[tokio::test]
    async fn invalid_json() {
        let json = Some("application/json");
        let err = request(None, json, "{\"a\": tru}").await.unwrap_err();
        assert_eq!(err, ParamsError::InvalidJson("line 1 column 10".into()));
        assert_eq!(err.to_string(), "Invalid JSON body: line 1 column 10");
        assert_eq!(request(None, json, "{\"a\":\n").await, Err(ParamsError::InvalidJson("line 2 column 0".into())));
        assert!(matches!(request(None, json, "a=1").await, Err(ParamsError::InvalidJson(_))));
    }

    #[tokio::test]
    async fn deep_json() {
        let json = Some("application/json");
        let nested = |n: usize| format!("{{\"a\":{}1{}}}", "[".repeat(n), "]".repeat(n));
        assert!(request(None, json, &nested(64)).await.is_ok());
        assert_eq!(request(None, json, &nested(65)).await, Err(ParamsError::TooDeep(64)));
        assert_eq!(request(None, json, &"[".repeat(10_000)).await, Err(ParamsError::TooDeep(64)));
        assert_eq!(request(None, json, &nested(10_000)).await, Err(ParamsError::TooDeep(64)));
        // Brackets in strings are not nesting.
        let in_string = format!("{{\"a\":\"{}\"}}", "[".repeat(100));
        assert!(request(None, json, &in_string).await.is_ok());
        // With a raised limit, serde_json's own recursion limit answers, without a crash.
        let deep = parse_request(None, json, "[".repeat(10_000).as_bytes(), &limits(100_000, 1000)).await;
        assert!(matches!(deep, Err(ParamsError::InvalidJson(_))));
    }

    #[tokio::test]
    async fn json_vars_count_with_query() {
        let json = Some("application/json");
        let lim = limits(64, 4);
        let body = r#"{"a": [1, 2], "b": {"c": {}}}"#; // 3 leaves
        assert!(parse_request(Some("q=1"), json, body.as_bytes(), &lim).await.is_ok());
        assert_eq!(parse_request(Some("q=1&r=2"), json, body.as_bytes(), &lim).await, Err(ParamsError::TooMany(4)));
    }

    #[tokio::test]
    async fn urlencoded_vars_count_with_query() {
        let query = (0..600).map(|i| format!("q{i}=1")).collect::<Vec<_>>().join("&");
        let body = (0..400).map(|i| format!("b{i}=1")).collect::<Vec<_>>().join("&");
        assert_eq!(request(Some(&query), None, &body).await.unwrap().as_object().unwrap().len(), 1000);
        let body = format!("{body}&extra=1");
        assert_eq!(request(Some(&query), None, &body).await, Err(ParamsError::TooMany(1000)));
    }

    fn multipart(parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
        let mut body = Vec::new();
        for (name, file_name, content) in parts {
            body.extend_from_slice(b"--XyZ\r\nContent-Disposition: form-data; name=\"");
            body.extend_from_slice(name.as_bytes());
            body.extend_from_slice(b"\"");
            if let Some(file_name) = file_name {
                body.extend_from_slice(format!("; filename=\"{file_name}\"\r\nContent-Type: text/plain").as_bytes());
            }
            body.extend_from_slice(b"\r\n\r\n");
            body.extend_from_slice(content);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b"--XyZ--\r\n");
        body
    }

    const MULTIPART: Option<&str> = Some("multipart/form-data; boundary=XyZ");

    #[tokio::test]
    async fn multipart_fields() {
        let body = multipart(&[
            ("FIELDS[TITLE]", None, b"Deal & co"),
            ("select[]", None, b"ID"),
            ("select[]", None, b"NAME"),
            ("a.b", None, b"1"),
            ("file", Some("a.txt"), "текст".as_bytes()),
            ("x", None, b"query loses"),
        ]);
        let got = parse_request(Some("x=1&y=2"), MULTIPART, &body, &Limits::default()).await.unwrap();
        let expected = json!({
            "x": "query loses", "y": "2",
            "FIELDS": {"TITLE": "Deal & co"}, "select": {"0": "ID", "1": "NAME"}, "a_b": "1", "file": "текст"
        });
        assert_eq!(Value::Object(got).to_string(), expected.to_string());
    }

    #[tokio::test]
    async fn multipart_errors() {
        let lim = Limits::default();
        let binary = multipart(&[("file", Some("a.bin"), b"\xff\xfe")]);
        assert_eq!(parse_request(None, MULTIPART, &binary, &lim).await, Err(ParamsError::InvalidUtf8));
        let ok = multipart(&[("a", None, b"1")]);
        let no_boundary = parse_request(None, Some("multipart/form-data"), &ok, &lim).await;
        assert!(matches!(no_boundary, Err(ParamsError::InvalidMultipart(_))), "{no_boundary:?}");
        let truncated = parse_request(None, MULTIPART, &ok[..ok.len() - 12], &lim).await;
        assert!(matches!(truncated, Err(ParamsError::InvalidMultipart(_))), "{truncated:?}");
        let deep = multipart(&[(&format!("a{}", "[]".repeat(65)), None, b"1")]);
        assert_eq!(parse_request(None, MULTIPART, &deep, &lim).await, Err(ParamsError::TooDeep(64)));
        let many = multipart(&[("a", None, b"1"), ("b", None, b"2")]);
        assert_eq!(parse_request(Some("q=1"), MULTIPART, &many, &limits(64, 2)).await, Err(ParamsError::TooMany(2)));
        assert_eq!(parse_request(Some("q=1"), MULTIPART, b"", &lim).await.unwrap().len(), 1);
    }

    #[test]
    fn parse_request_future_is_send() {
        fn assert_send<T: Send>(_: T) {}
        assert_send(parse_request(None, None, b"", &Limits::default()));
    }

    /// A string-valued tree like a form produces: non-empty objects, up to 4 levels.
    fn form_tree() -> impl Strategy<Value = Tree> {
        let key = "[A-Za-z0-9_]{1,5}";
        let value = any::<String>().prop_map(Value::String).prop_recursive(3, 40, 4, move |inner| {
            prop::collection::vec((key, inner), 1..4).prop_map(|kv| Value::Object(kv.into_iter().collect()))
        });
        let top_key = key.prop_filter("not numeric", |k: &String| !k.bytes().all(|b| b.is_ascii_digit()));
        prop::collection::vec((top_key, value), 0..5).prop_map(|kv| kv.into_iter().collect())
    }

    proptest! {
        #[test]
        fn parse_str_never_panics(input in any::<String>()) {
            let _ = parse_str(&input);
        }

        #[test]
        fn parse_str_never_panics_on_php_syntax(input in r"[ab .+=&\[\]%0-9FD5BC]{0,60}") {
            let _ = parse_str(&input);
        }

        #[test]
        fn build_query_round_trips(tree in form_tree()) {
            // As JSON text, so key order counts too.
            let parsed = parse_str(&build_query(&tree)).unwrap();
            prop_assert_eq!(Value::Object(parsed).to_string(), Value::Object(tree).to_string());
        }

        #[test]
        fn no_more_names_than_pairs(input in r"[ab.=&\[\]x ]{0,40}") {
            if let Ok(tree) = parse_str(&input) {
                let pairs = input.split('&').filter(|p| !p.is_empty()).count();
                prop_assert!(tree.len() <= pairs);
            }
        }
    }
}
