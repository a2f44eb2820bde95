//! A delivery's body as the vendor sends it: PHP's `http_build_query` of the fields (brackets
//! percent-encoded, every scalar a string, booleans `1`/`0`, nulls left out).

use serde_json::Value;

/// PHP's `urlencode`: letters, digits and `-_.` stay, a space becomes `+`, every other byte `%XX`.
fn urlencode(out: &mut Vec<u8>, text: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in text.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => out.push(b),
            b' ' => out.push(b'+'),
            _ => out.extend_from_slice(&[b'%', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]),
        }
    }
}

/// Appends `key=value` pairs for `value` under the already encoded `key`, nesting with `%5B…%5D`. `key` is a
/// buffer the nested keys are built in and cut back from, so nesting allocates nothing.
fn push(out: &mut Vec<u8>, key: &mut Vec<u8>, value: &Value) {
    let scalar = |out: &mut Vec<u8>, key: &[u8], text: &str| {
        if !out.is_empty() {
            out.push(b'&');
        }
        out.extend_from_slice(key);
        out.push(b'=');
        urlencode(out, text);
    };
    match value {
        Value::Null => {}
        Value::Bool(b) => scalar(out, key, if *b { "1" } else { "0" }),
        Value::Number(n) => match n.as_i64() {
            // Integers are written in decimal, as `to_string` would, without its allocation.
            Some(i) => scalar(out, key, itoa::Buffer::new().format(i)),
            None => scalar(out, key, &n.to_string()),
        },
        Value::String(s) => scalar(out, key, s),
        Value::Array(items) => {
            let len = key.len();
            for (i, item) in items.iter().enumerate() {
                key.extend_from_slice(b"%5B");
                key.extend_from_slice(itoa::Buffer::new().format(i).as_bytes());
                key.extend_from_slice(b"%5D");
                push(out, key, item);
                key.truncate(len);
            }
        }
        Value::Object(map) => {
            let len = key.len();
            for (k, item) in map {
                key.extend_from_slice(b"%5B");
                urlencode(key, k);
                key.extend_from_slice(b"%5D");
                push(out, key, item);
                key.truncate(len);
            }
        }
    }
}

/// The form body of `fields`, in their order.
pub fn form_body(fields: &[(&str, Value)]) -> String {
    let mut out = Vec::with_capacity(1024);
    let mut key = Vec::with_capacity(64);
    for (name, value) in fields {
        key.clear();
        urlencode(&mut key, name);
        push(&mut out, &mut key, value);
    }
    // Only ASCII was written: every other byte is percent-encoded.
    String::from_utf8(out).expect("an urlencoded body is ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_are_written_as_php_writes_them() {
        assert_eq!(
            form_body(&[("n", json!(-12)), ("f", json!(1.5)), ("l", json!([10, 11]))]),
            "n=-12&f=1.5&l%5B0%5D=10&l%5B1%5D=11"
        );
    }

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
