//! Turning requests into Redis commands, and refusing the commands that the
//! Upstash REST API does not run.
//!
//! Every error message here is the `error` text of a `400` response.

use serde_json::Value as Json;

/// One Redis command: the name followed by its arguments, as raw bytes.
pub(crate) type Args = Vec<Vec<u8>>;

/// Parses one command given as a JSON array, e.g. `["SET", "foo", "bar", "EX", 100]`.
///
/// Upstash's docs: "send the whole command in the request body as a single
/// JSON array. Array's first element must be the command name and command
/// parameters should be appended next to each other". Their examples use
/// strings and numbers; a number is sent to Redis as its decimal text.
/// Anything else (objects, nested arrays, booleans, `null`) is refused rather
/// than guessed at.
pub(crate) fn from_json(value: &Json) -> Result<Args, String> {
    let Json::Array(items) = value else {
        return Err(format!(
            "ERR a command must be a JSON array like [\"SET\",\"key\",\"value\"], got {}",
            kind(value)
        ));
    };
    if items.is_empty() {
        return Err("ERR empty command: the JSON array must start with a command name".into());
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            Json::String(s) => Ok(s.as_bytes().to_vec()),
            Json::Number(n) => Ok(n.to_string().into_bytes()),
            other => Err(format!(
                "ERR command element {i} must be a string or a number, got {}",
                kind(other)
            )),
        })
        .collect()
}

/// Parses a `/pipeline` or `/multi-exec` body: a two-dimensional JSON array.
pub(crate) fn batch_from_json(value: &Json) -> Result<Vec<Args>, String> {
    let Json::Array(rows) = value else {
        return Err(format!(
            "ERR the body must be a two-dimensional JSON array like [[\"SET\",\"k\",\"v\"],[\"GET\",\"k\"]], got {}",
            kind(value)
        ));
    };
    if rows.is_empty() {
        return Err("ERR empty batch: send at least one command".into());
    }
    rows.iter()
        .enumerate()
        .map(|(i, row)| from_json(row).map_err(|e| format!("{e} (in command {i})")))
        .collect()
}

fn kind(value: &Json) -> &'static str {
    match value {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

/// Builds a command from the path form `/COMMAND/arg1/../argN`.
///
/// Upstash's docs: "Give the command name and parameters in the same order as
/// Redis protocol by separating them with a `/`". Segments are
/// percent-decoded to raw bytes. A trailing slash adds no empty argument.
///
/// `body`, if given, is "appended as the last parameter of the Redis command",
/// followed by the query parameters (`?EX=100` → `EX 100`; a parameter without
/// a value adds only its name); `_token` is never an argument.
pub(crate) fn from_path(path: &str, query: Option<&str>, body: Option<&[u8]>) -> Args {
    let trimmed = path.strip_prefix('/').unwrap_or(path);
    let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
    let mut args: Args = trimmed
        .split('/')
        .map(|segment| percent_encoding::percent_decode_str(segment).collect())
        .collect();
    if let Some(body) = body {
        args.push(body.to_vec());
        for (name, value) in query_pairs(query) {
            if name == b"_token" {
                continue;
            }
            args.push(name);
            if !value.is_empty() {
                args.push(value);
            }
        }
    }
    args
}

/// The query string's `name=value` pairs, decoded.
pub(crate) fn query_pairs(query: Option<&str>) -> Vec<(Vec<u8>, Vec<u8>)> {
    let Some(query) = query else {
        return Vec::new();
    };
    // Decode per RFC 3986 rather than as a form (`+` stays `+`), so values
    // such as `+inf` arrive as written.
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (
                percent_encoding::percent_decode_str(name).collect(),
                percent_encoding::percent_decode_str(value).collect(),
            )
        })
        .collect()
}

/// Refuses commands the Upstash REST API does not run, or that would break a
/// shared connection, with a message saying why.
///
/// From Upstash's "REST - Redis API Compatibility" table: blocking list and
/// sorted-set commands are not supported; of Pub/Sub only PUBLISH and PUBSUB;
/// of Connection only PING and ECHO; WATCH/UNWATCH/DISCARD are not supported
/// (and MULTI/EXEC are "TCP-only": use `/multi-exec`); streams except the
/// blocking XREAD/XREADGROUP; no Cluster commands. MONITOR and SUBSCRIBE are
/// Server-Sent-Events endpoints there, which this tool does not implement.
/// SHUTDOWN and the replication handshake commands are refused too: they
/// would stop the shared local Redis or change the state of a shared connection.
pub(crate) fn check_supported(args: &Args) -> Result<(), String> {
    let Some(name) = args.first() else {
        return Err("ERR empty command".into());
    };
    let upper = String::from_utf8_lossy(name).to_ascii_uppercase();
    let reason = match upper.as_str() {
        "BLPOP" | "BRPOP" | "BRPOPLPUSH" | "BLMOVE" | "BLMPOP" | "BZPOPMIN" | "BZPOPMAX"
        | "BZMPOP" | "WAIT" | "WAITAOF" => Some("blocking commands are not supported"),
        "XREAD" | "XREADGROUP" if has_block_option(args) => {
            Some("the blocking form (BLOCK) is not supported")
        }
        "SUBSCRIBE" | "PSUBSCRIBE" | "SSUBSCRIBE" | "UNSUBSCRIBE" | "PUNSUBSCRIBE"
        | "SUNSUBSCRIBE" | "SPUBLISH" => {
            Some("of the Pub/Sub commands only PUBLISH and PUBSUB are supported")
        }
        "AUTH" | "CLIENT" | "HELLO" | "QUIT" | "RESET" | "SELECT" => {
            Some("of the connection commands only PING and ECHO are supported")
        }
        "MULTI" | "EXEC" => Some("transactions are sent to the /multi-exec endpoint"),
        "WATCH" | "UNWATCH" | "DISCARD" => Some("WATCH, UNWATCH and DISCARD are not supported"),
        "MONITOR" => Some("MONITOR is not supported"),
        "CLUSTER" | "READONLY" | "READWRITE" | "ASKING" => {
            Some("cluster commands are not supported")
        }
        "SHUTDOWN" | "SYNC" | "PSYNC" | "REPLCONF" | "FAILOVER" | "SLAVEOF" | "REPLICAOF" => Some(
            "server administration commands that stop or re-purpose the server are not supported",
        ),
        _ => None,
    };
    match reason {
        Some(reason) => Err(format!(
            "ERR command '{}' is not supported over the REST API: {reason} (upstash-local)",
            upper.to_ascii_lowercase()
        )),
        None => Ok(()),
    }
}

/// True if an XREAD/XREADGROUP has a `BLOCK` option before `STREAMS`.
fn has_block_option(args: &Args) -> bool {
    args.iter()
        .skip(1)
        .take_while(|a| !a.eq_ignore_ascii_case(b"STREAMS"))
        .any(|a| a.eq_ignore_ascii_case(b"BLOCK"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn strs(args: &Args) -> Vec<String> {
        args.iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect()
    }

    #[test]
    fn json_strings_and_numbers() {
        let args = from_json(&json!(["SET", "foo", "bar", "EX", 100, 1.5, -3])).unwrap();
        assert_eq!(strs(&args), ["SET", "foo", "bar", "EX", "100", "1.5", "-3"]);
    }

    #[test]
    fn json_rejects_other_types() {
        for bad in [
            json!(["SET", {"a": 1}]),
            json!(["SET", true]),
            json!(["SET", null]),
        ] {
            assert!(from_json(&bad).unwrap_err().starts_with("ERR "));
        }
        assert!(from_json(&json!([])).is_err());
        assert!(from_json(&json!({"cmd": "GET"})).is_err());
        assert!(batch_from_json(&json!([])).is_err());
        assert!(batch_from_json(&json!([["GET", "a"], "GET"])).is_err());
    }

    #[test]
    fn path_form() {
        let args = from_path("/set/a%2Fb/c%20d/", None, None);
        assert_eq!(strs(&args), ["set", "a/b", "c d"]);
        let args = from_path("/set/foo", Some("EX=100&_token=x&NX"), Some(b"v\xff"));
        assert_eq!(args[2], b"v\xff");
        assert_eq!(strs(&args)[3..], ["EX", "100", "NX"]);
        // Without a body, query parameters are not arguments.
        assert_eq!(strs(&from_path("/get/k", Some("EX=1"), None)), ["get", "k"]);
    }

    #[test]
    fn unsupported_commands() {
        let cmd = |v: &[&str]| v.iter().map(|s| s.as_bytes().to_vec()).collect::<Args>();
        assert!(check_supported(&cmd(&["blpop", "k", "0"])).is_err());
        assert!(check_supported(&cmd(&["SUBSCRIBE", "c"])).is_err());
        assert!(check_supported(&cmd(&["select", "1"])).is_err());
        assert!(check_supported(&cmd(&["XREAD", "BLOCK", "0", "STREAMS", "s", "$"])).is_err());
        assert!(check_supported(&cmd(&["XREAD", "STREAMS", "block", "0"])).is_ok());
        assert!(check_supported(&cmd(&["EVALSHA", "abc", "0"])).is_ok());
        assert!(check_supported(&cmd(&["PUBLISH", "c", "m"])).is_ok());
    }
}
