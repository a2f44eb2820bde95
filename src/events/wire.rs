//! A delivery's body as the vendor sends it: PHP's `http_build_query` of the fields (brackets
//! percent-encoded, every scalar a string, booleans `1`/`0`, nulls left out).

use serde_json::Value;

/// PHP's `urlencode`: letters, digits and `-_.` stay, a space becomes `+`, every other byte `%XX`.
fn urlencode(out: &mut String, text: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in text.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => out.push(b as char),
            b' ' => out.push('+'),
            _ => {
                out.push('%');
                out.push(HEX[(b >> 4) as usize] as char);
                out.push(HEX[(b & 15) as usize] as char);
            }
        }
    }
}

/// Appends `key=value` pairs for `value` under the already encoded `key`, nesting with `%5B…%5D`.
fn push(out: &mut String, key: &str, value: &Value) {
    let scalar = |out: &mut String, text: &str| {
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(key);
        out.push('=');
        urlencode(out, text);
    };
    match value {
        Value::Null => {}
        Value::Bool(b) => scalar(out, if *b { "1" } else { "0" }),
        Value::Number(n) => scalar(out, &n.to_string()),
        Value::String(s) => scalar(out, s),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                push(out, &format!("{key}%5B{i}%5D"), item);
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                let mut nested = format!("{key}%5B");
                urlencode(&mut nested, k);
                nested.push_str("%5D");
                push(out, &nested, item);
            }
        }
    }
}

/// The form body of `fields`, in their order.
pub fn form_body(fields: &[(&str, Value)]) -> String {
    let mut out = String::with_capacity(512);
    for (name, value) in fields {
        let mut key = String::new();
        urlencode(&mut key, name);
        push(&mut out, &key, value);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nested_values_are_encoded_like_http_build_query() {
        let body = form_body(&[
            ("event", json!("ONCRMCHATUSERDELETE")),
            ("data", json!({"CHAT_ID": 8773, "DATA": [{"text": "a b&c=d*é"}], "none": null, "yes": true})),
            ("ts", json!("1796279202")),
        ]);
        assert_eq!(
            body,
            "event=ONCRMCHATUSERDELETE&data%5BCHAT_ID%5D=8773&data%5BDATA%5D%5B0%5D%5Btext%5D=a+b%26c%3Dd%2A%C3%A9\
             &data%5Byes%5D=1&ts=1796279202"
        );
    }
}
