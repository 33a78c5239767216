//! Redis replies (RESP) to Upstash REST response values.
//!
//! Upstash's docs, "Response": the `result` "can be either; a `null` value,
//! an integer, a string, an array value"; a failure is "a single `error` field
//! with a string value explaining the failure".
//!
//! | Redis reply            | JSON                                             |
//! |------------------------|--------------------------------------------------|
//! | nil (bulk or array)    | `null`                                           |
//! | integer                | number                                           |
//! | bulk string            | string (invalid UTF-8 → U+FFFD, as Upstash says) |
//! | simple string (`+OK`)  | string                                           |
//! | array                  | array, nested as deep as Redis nests it          |
//! | error, top level       | `{"error": "<Redis's text>"}` (never base64)     |
//! | error inside an array  | its text, as a plain string (never base64)       |
//!
//! RESP3-only types (if a `?protocol=resp3` URL is used) are flattened the way
//! RESP2 would send them: maps become `[k, v, ...]`, sets arrays, booleans
//! `1`/`0`, doubles numbers.
//!
//! With `Upstash-Encoding: base64`, "all strings in the response will be
//! base64 encoded, except for the "OK" response": every string at any depth
//! is encoded, except a top-level `+OK` status reply; integers and nulls stay.

use base64::Engine as _;
use redis::{ServerError, Value};
use serde_json::Value as Json;

/// How strings in a result are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Encoding {
    /// UTF-8 text; invalid sequences become U+FFFD.
    Text,
    /// Standard base64 (with padding) of the raw bytes.
    Base64,
}

/// Redis's error text exactly as the server sent it, e.g.
/// `ERR wrong number of arguments for 'get' command` or
/// `NOSCRIPT No matching script. Please use EVAL.`
pub(crate) fn error_text(err: &ServerError) -> String {
    match err.details() {
        Some(details) => format!("{} {}", err.code(), details),
        None => err.code().to_string(),
    }
}

/// The JSON body for one command's reply: `{"result": ...}` or `{"error": ...}`.
pub(crate) fn envelope(value: Value, encoding: Encoding) -> Json {
    match value {
        Value::ServerError(err) => error_object(error_text(&err)),
        other => {
            let mut map = serde_json::Map::with_capacity(1);
            map.insert("result".into(), to_json(other, encoding, true));
            Json::Object(map)
        }
    }
}

/// `{"error": text}`.
pub(crate) fn error_object(text: impl Into<String>) -> Json {
    let mut map = serde_json::Map::with_capacity(1);
    map.insert("error".into(), Json::String(text.into()));
    Json::Object(map)
}

fn string(bytes: &[u8], encoding: Encoding) -> Json {
    Json::String(match encoding {
        Encoding::Text => String::from_utf8_lossy(bytes).into_owned(),
        Encoding::Base64 => base64::engine::general_purpose::STANDARD.encode(bytes),
    })
}

/// Converts a reply to JSON; `top` is true for a command's whole result.
pub(crate) fn to_json(value: Value, encoding: Encoding, top: bool) -> Json {
    match value {
        Value::Nil => Json::Null,
        Value::Int(i) => Json::from(i),
        Value::BulkString(bytes) => string(&bytes, encoding),
        Value::Okay if top => Json::String("OK".into()),
        Value::Okay => string(b"OK", encoding),
        Value::SimpleString(s) if top && s == "OK" => Json::String(s),
        Value::SimpleString(s) => string(s.as_bytes(), encoding),
        Value::Array(items) | Value::Set(items) => Json::Array(
            items
                .into_iter()
                .map(|v| to_json(v, encoding, false))
                .collect(),
        ),
        Value::Map(pairs) => Json::Array(
            pairs
                .into_iter()
                .flat_map(|(k, v)| [to_json(k, encoding, false), to_json(v, encoding, false)])
                .collect(),
        ),
        Value::Attribute { data, .. } => to_json(*data, encoding, top),
        Value::Double(d) => serde_json::Number::from_f64(d)
            .map(Json::Number)
            .unwrap_or_else(|| string(d.to_string().as_bytes(), encoding)),
        Value::Boolean(b) => Json::from(i64::from(b)),
        Value::VerbatimString { text, .. } => string(text.as_bytes(), encoding),
        Value::BigNumber(digits) => string(&digits, encoding),
        Value::Push { data, .. } => Json::Array(
            data.into_iter()
                .map(|v| to_json(v, encoding, false))
                .collect(),
        ),
        Value::ServerError(err) => Json::String(error_text(&err)),
        // `Value` is non-exhaustive; nothing else exists in redis 1.x.
        #[allow(unreachable_patterns)]
        other => Json::String(format!("{other:?}")),
    }
}

/// Appends the RESP2 encoding of `value` (for `Upstash-Response-Format: resp2`).
pub(crate) fn write_resp2(value: &Value, out: &mut Vec<u8>) {
    fn bulk(bytes: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(format!("${}\r\n", bytes.len()).as_bytes());
        out.extend_from_slice(bytes);
        out.extend_from_slice(b"\r\n");
    }
    fn array<'a>(len: usize, items: impl Iterator<Item = &'a Value>, out: &mut Vec<u8>) {
        out.extend_from_slice(format!("*{len}\r\n").as_bytes());
        for item in items {
            write_resp2(item, out);
        }
    }
    match value {
        Value::Nil => out.extend_from_slice(b"$-1\r\n"),
        Value::Int(i) => out.extend_from_slice(format!(":{i}\r\n").as_bytes()),
        Value::BulkString(bytes) => bulk(bytes, out),
        Value::Okay => out.extend_from_slice(b"+OK\r\n"),
        Value::SimpleString(s) => out.extend_from_slice(format!("+{s}\r\n").as_bytes()),
        Value::Array(items) | Value::Set(items) => array(items.len(), items.iter(), out),
        Value::Map(pairs) => array(pairs.len() * 2, pairs.iter().flat_map(|(k, v)| [k, v]), out),
        Value::Attribute { data, .. } => write_resp2(data, out),
        Value::Double(d) => bulk(d.to_string().as_bytes(), out),
        Value::Boolean(b) => out.extend_from_slice(if *b { b":1\r\n" } else { b":0\r\n" }),
        Value::VerbatimString { text, .. } => bulk(text.as_bytes(), out),
        Value::BigNumber(digits) => bulk(digits, out),
        Value::Push { data, .. } => array(data.len(), data.iter(), out),
        Value::ServerError(err) => {
            out.push(b'-');
            out.extend_from_slice(error_text(err).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        #[allow(unreachable_patterns)]
        other => bulk(format!("{other:?}").as_bytes(), out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn bulk(s: &[u8]) -> Value {
        Value::BulkString(s.to_vec())
    }

    #[test]
    fn text_mapping() {
        let v = Value::Array(vec![
            bulk(b"a"),
            Value::Nil,
            Value::Int(3),
            Value::Array(vec![bulk(b"x\xffy"), Value::Okay]),
        ]);
        assert_eq!(
            envelope(v, Encoding::Text),
            json!({"result": ["a", null, 3, ["x\u{fffd}y", "OK"]]})
        );
        assert_eq!(
            envelope(Value::Okay, Encoding::Text),
            json!({"result": "OK"})
        );
    }

    #[test]
    fn base64_mapping_keeps_top_level_ok() {
        assert_eq!(
            envelope(Value::Okay, Encoding::Base64),
            json!({"result": "OK"})
        );
        assert_eq!(
            envelope(bulk(b"bar"), Encoding::Base64),
            json!({"result": "YmFy"})
        );
        assert_eq!(
            envelope(Value::SimpleString("PONG".into()), Encoding::Base64),
            json!({"result": "UE9ORw=="})
        );
        let v = Value::Array(vec![bulk(b"\xff"), Value::Int(1), Value::Nil, Value::Okay]);
        assert_eq!(
            envelope(v, Encoding::Base64),
            json!({"result": ["/w==", 1, null, "T0s="]})
        );
    }

    #[test]
    fn resp2_encoding() {
        let v = Value::Array(vec![bulk(b"bar"), Value::Nil, Value::Int(-2), Value::Okay]);
        let mut out = Vec::new();
        write_resp2(&v, &mut out);
        assert_eq!(out, b"*4\r\n$3\r\nbar\r\n$-1\r\n:-2\r\n+OK\r\n");
    }
}
