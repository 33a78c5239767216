//! A client of the Upstash Redis REST API.
//!
//! One command is `POST /` with the command as a JSON array of strings; a
//! pipeline is `POST /pipeline` with an array of such arrays. Both carry
//! `Authorization: Bearer <token>`. A command answers `{"result": ...}` or
//! `{"error": "..."}` (HTTP 400 for a Redis error, 401 for a bad token); a
//! pipeline answers an array of those. With `Upstash-Encoding: base64` every
//! string in a result is base64 (except the status reply `OK`), so values that
//! are not UTF-8 survive the JSON.
//!
//! The HTTP exchange itself is a [`Transport`]: `worker::Fetch` in the Worker
//! ([`crate::fetch::FetchTransport`]), a canned one in tests. Everything else
//! here — request shaping, reply parsing, the `EVALSHA`→`EVAL` fallback — is
//! plain Rust that the host tests drive.

use crate::config::{Encoding, Secret};
use base64::Engine as _;
use serde_json::Value;
use std::future::Future;
use synckairos_core::script::Script;

/// Everything a call to Upstash can fail with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UpstashError {
    /// The request did not get an HTTP answer (DNS, connect, TLS, reset).
    #[error("upstash unreachable: {0}")]
    Transport(String),
    /// No answer within the configured timeout; the request was aborted.
    #[error("upstash did not answer within {0} ms")]
    Timeout(u64),
    /// An HTTP status other than success or a Redis error (401 bad token, 5xx, …).
    #[error("upstash answered HTTP {status}: {message}")]
    Http {
        /// The HTTP status.
        status: u16,
        /// The `error` text of the body, or the start of the body.
        message: String,
    },
    /// Redis refused the command (`ERR …`, `WRONGTYPE …`, a script error, …).
    #[error("redis error: {0}")]
    Redis(String),
    /// `EVALSHA` of a script the server does not have cached.
    #[error("redis: {0}")]
    NoScript(String),
    /// A body that is not the documented shape.
    #[error("unexpected upstash reply: {0}")]
    Malformed(String),
}

impl UpstashError {
    /// A short, stable description that is safe to show a client (no
    /// internal text): `/ready` reports it.
    pub fn public_reason(&self) -> String {
        match self {
            UpstashError::Transport(_) => "redis unreachable".into(),
            UpstashError::Timeout(_) => "redis timeout".into(),
            UpstashError::Http { status, .. } => format!("redis endpoint answered HTTP {status}"),
            UpstashError::Redis(_) | UpstashError::NoScript(_) => "redis error".into(),
            UpstashError::Malformed(_) => "unexpected reply from redis endpoint".into(),
        }
    }

    /// The error of a `{"error": msg}` reply: `NOSCRIPT` gets its own variant.
    fn from_redis(msg: String) -> UpstashError {
        if msg.starts_with("NOSCRIPT") {
            UpstashError::NoScript(msg)
        } else {
            UpstashError::Redis(msg)
        }
    }
}

/// One HTTP request to Upstash, ready for a [`Transport`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpRequest {
    /// The full URL.
    pub url: String,
    /// Header name/value pairs (the bearer token among them).
    pub headers: Vec<(&'static str, String)>,
    /// The JSON body.
    pub body: String,
}

/// The HTTP answer a [`Transport`] got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpReply {
    /// The HTTP status.
    pub status: u16,
    /// The body as text.
    pub body: String,
}

/// Sends one POST and returns its answer; owns the timeout. Errors are
/// [`UpstashError::Transport`] or [`UpstashError::Timeout`].
pub trait Transport {
    /// POSTs `req`.
    fn post(&self, req: HttpRequest) -> impl Future<Output = Result<HttpReply, UpstashError>>;
}

/// The Upstash REST client.
#[derive(Debug)]
pub struct Upstash<T> {
    url: String,
    token: Secret,
    encoding: Encoding,
    transport: T,
}

impl<T: Transport> Upstash<T> {
    /// A client of the database at `url` (`https://<db>.upstash.io`).
    pub fn new(url: &str, token: Secret, encoding: Encoding, transport: T) -> Upstash<T> {
        Upstash {
            url: url.trim_end_matches('/').to_string(),
            token,
            encoding,
            transport,
        }
    }

    /// The request for `path` (`/` or `/pipeline`) with `body`.
    pub fn request(&self, path: &str, body: String) -> HttpRequest {
        let mut headers = vec![
            ("authorization", format!("Bearer {}", self.token.expose())),
            ("content-type", "application/json".to_string()),
        ];
        if self.encoding == Encoding::Base64 {
            headers.push(("upstash-encoding", "base64".to_string()));
        }
        HttpRequest {
            url: format!("{}{path}", self.url),
            headers,
            body,
        }
    }

    /// Runs one command, e.g. `["GET", "k"]`.
    pub async fn command<S: AsRef<str>>(&self, args: &[S]) -> Result<Value, UpstashError> {
        let body = command_json(args);
        let reply = self.transport.post(self.request("/", body)).await?;
        parse_reply(reply.status, &reply.body, self.encoding)
    }

    /// Runs several commands in one request (not atomic: use a script for
    /// that). The outer error is the request's; each command has its own.
    pub async fn pipeline<S: AsRef<str>>(
        &self,
        commands: &[Vec<S>],
    ) -> Result<Vec<Result<Value, UpstashError>>, UpstashError> {
        let body = format!(
            "[{}]",
            commands
                .iter()
                .map(|c| command_json(c))
                .collect::<Vec<_>>()
                .join(",")
        );
        let reply = self.transport.post(self.request("/pipeline", body)).await?;
        parse_pipeline(reply.status, &reply.body, self.encoding)
    }

    /// `EVALSHA sha numkeys keys… args…`.
    pub async fn evalsha<S: AsRef<str>>(
        &self,
        sha: &str,
        keys: &[S],
        args: &[S],
    ) -> Result<Value, UpstashError> {
        let numkeys = keys.len().to_string();
        self.command(&script_command("EVALSHA", sha, &numkeys, keys, args))
            .await
    }

    /// `EVAL source numkeys keys… args…` (also caches the script).
    pub async fn eval<S: AsRef<str>>(
        &self,
        source: &str,
        keys: &[S],
        args: &[S],
    ) -> Result<Value, UpstashError> {
        let numkeys = keys.len().to_string();
        self.command(&script_command("EVAL", source, &numkeys, keys, args))
            .await
    }

    /// Runs `script` with `EVALSHA`, and with `EVAL` when the server answers
    /// `NOSCRIPT` (first call after a restart or `SCRIPT FLUSH`).
    pub async fn run_script<S: AsRef<str>>(
        &self,
        script: &Script,
        keys: &[S],
        args: &[S],
    ) -> Result<Value, UpstashError> {
        match self.evalsha(script.sha1(), keys, args).await {
            Err(UpstashError::NoScript(_)) => self.eval(script.source, keys, args).await,
            other => other,
        }
    }

    /// `PING`; `Ok` when Redis answers `PONG`.
    pub async fn ping(&self) -> Result<(), UpstashError> {
        match self.command(&["PING"]).await? {
            Value::String(s) if s == "PONG" => Ok(()),
            other => Err(UpstashError::Malformed(format!("PING answered {other}"))),
        }
    }

    /// Redis `TIME` as epoch milliseconds.
    pub async fn time_ms(&self) -> Result<i64, UpstashError> {
        parse_time(&self.command(&["TIME"]).await?)
    }
}

fn command_json<S: AsRef<str>>(args: &[S]) -> String {
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    serde_json::to_string(&args).expect("a list of strings serializes")
}

/// `<verb> <script> <numkeys> keys… args…`.
fn script_command<'a, S: AsRef<str>>(
    verb: &'a str,
    script: &'a str,
    numkeys: &'a str,
    keys: &'a [S],
    args: &'a [S],
) -> Vec<&'a str> {
    let mut cmd = Vec::with_capacity(3 + keys.len() + args.len());
    cmd.extend([verb, script, numkeys]);
    cmd.extend(keys.iter().map(AsRef::as_ref));
    cmd.extend(args.iter().map(AsRef::as_ref));
    cmd
}

/// Parses the answer to one command.
pub fn parse_reply(status: u16, body: &str, encoding: Encoding) -> Result<Value, UpstashError> {
    let json: Value = match serde_json::from_str(body) {
        Ok(json) => json,
        Err(_) => return Err(not_json(status, body)),
    };
    result_of(status, json, encoding)
}

/// Parses the answer to a pipeline: one result per command.
pub fn parse_pipeline(
    status: u16,
    body: &str,
    encoding: Encoding,
) -> Result<Vec<Result<Value, UpstashError>>, UpstashError> {
    let json: Value = match serde_json::from_str(body) {
        Ok(json) => json,
        Err(_) => return Err(not_json(status, body)),
    };
    match json {
        Value::Array(items) if is_success(status) => Ok(items
            .into_iter()
            .map(|item| result_of(status, item, encoding))
            .collect()),
        // The whole request was refused (bad token, malformed pipeline, …).
        other => match result_of(status, other, encoding) {
            Err(e) => Err(e),
            Ok(v) => Err(UpstashError::Malformed(format!("pipeline answered {v}"))),
        },
    }
}

/// Redis `TIME` (`["<seconds>", "<microseconds>"]`) as epoch milliseconds.
pub fn parse_time(value: &Value) -> Result<i64, UpstashError> {
    let bad = || UpstashError::Malformed(format!("TIME answered {value}"));
    let part = |v: &Value| -> Option<i64> {
        match v {
            Value::String(s) => s.parse().ok(),
            Value::Number(n) => n.as_i64(),
            _ => None,
        }
    };
    match value.as_array().map(Vec::as_slice) {
        Some([secs, micros]) => {
            let (secs, micros) = (part(secs).ok_or_else(bad)?, part(micros).ok_or_else(bad)?);
            Ok(secs * 1000 + micros / 1000)
        }
        _ => Err(bad()),
    }
}

fn is_success(status: u16) -> bool {
    (200..300).contains(&status)
}

/// `{"result": v}` → `v`; `{"error": e}` → the error of `e` and `status`.
fn result_of(status: u16, json: Value, encoding: Encoding) -> Result<Value, UpstashError> {
    let Value::Object(mut obj) = json else {
        return Err(if is_success(status) {
            UpstashError::Malformed(format!("expected an object, got {json}"))
        } else {
            UpstashError::Http {
                status,
                message: truncate(&json.to_string()),
            }
        });
    };
    if let Some(Value::String(msg)) = obj.remove("error") {
        // Upstash reports a Redis error with 400 (inside a pipeline: 200).
        return Err(if is_success(status) || status == 400 {
            UpstashError::from_redis(msg)
        } else {
            UpstashError::Http {
                status,
                message: truncate(&msg),
            }
        });
    }
    match obj.remove("result") {
        Some(result) if is_success(status) => match encoding {
            Encoding::Json => Ok(result),
            Encoding::Base64 => decode_base64(result),
        },
        _ if !is_success(status) => Err(UpstashError::Http {
            status,
            message: truncate(&Value::Object(obj).to_string()),
        }),
        _ => Err(UpstashError::Malformed("neither result nor error".into())),
    }
}

/// Decodes every string of a base64-encoded result; `OK` is sent as is.
fn decode_base64(value: Value) -> Result<Value, UpstashError> {
    match value {
        Value::String(s) if s == "OK" => Ok(Value::String(s)),
        Value::String(s) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(&s)
                .map_err(|e| UpstashError::Malformed(format!("bad base64 {s:?}: {e}")))?;
            String::from_utf8(bytes)
                .map(Value::String)
                .map_err(|_| UpstashError::Malformed("a value is not UTF-8".into()))
        }
        Value::Array(items) => items
            .into_iter()
            .map(decode_base64)
            .collect::<Result<_, _>>()
            .map(Value::Array),
        other => Ok(other),
    }
}

fn not_json(status: u16, body: &str) -> UpstashError {
    if is_success(status) {
        UpstashError::Malformed(format!("not JSON: {}", truncate(body)))
    } else {
        UpstashError::Http {
            status,
            message: truncate(body),
        }
    }
}

fn truncate(s: &str) -> String {
    const MAX: usize = 200;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;
    use serde_json::json;
    use std::cell::RefCell;
    use std::collections::VecDeque;

    #[test]
    fn result_and_null_result() {
        assert_eq!(
            parse_reply(200, r#"{"result":"PONG"}"#, Encoding::Json),
            Ok(json!("PONG"))
        );
        assert_eq!(
            parse_reply(200, r#"{"result":null}"#, Encoding::Json),
            Ok(Value::Null)
        );
        assert_eq!(
            parse_reply(200, r#"{"result":["1","2"]}"#, Encoding::Json),
            Ok(json!(["1", "2"]))
        );
    }

    #[test]
    fn redis_errors_and_noscript() {
        assert_eq!(
            parse_reply(
                400,
                r#"{"error":"ERR unknown command 'FOO'"}"#,
                Encoding::Json
            ),
            Err(UpstashError::Redis("ERR unknown command 'FOO'".into()))
        );
        let noscript = r#"{"error":"NOSCRIPT No matching script. Please use EVAL."}"#;
        assert!(matches!(
            parse_reply(400, noscript, Encoding::Json),
            Err(UpstashError::NoScript(_))
        ));
    }

    #[test]
    fn http_errors() {
        assert_eq!(
            parse_reply(401, r#"{"error":"Unauthorized"}"#, Encoding::Json),
            Err(UpstashError::Http {
                status: 401,
                message: "Unauthorized".into()
            })
        );
        assert_eq!(
            parse_reply(502, "<html>bad gateway</html>", Encoding::Json),
            Err(UpstashError::Http {
                status: 502,
                message: "<html>bad gateway</html>".into()
            })
        );
        assert!(matches!(
            parse_reply(200, "nope", Encoding::Json),
            Err(UpstashError::Malformed(_))
        ));
        assert!(matches!(
            parse_reply(200, "{}", Encoding::Json),
            Err(UpstashError::Malformed(_))
        ));
        assert!(matches!(
            parse_reply(200, "[1]", Encoding::Json),
            Err(UpstashError::Malformed(_))
        ));
    }

    #[test]
    fn base64_strings_are_decoded_except_ok() {
        // "aGVsbG8=" = "hello", "d29ybGQ=" = "world"
        assert_eq!(
            parse_reply(200, r#"{"result":"aGVsbG8="}"#, Encoding::Base64),
            Ok(json!("hello"))
        );
        assert_eq!(
            parse_reply(200, r#"{"result":"OK"}"#, Encoding::Base64),
            Ok(json!("OK"))
        );
        assert_eq!(
            parse_reply(
                200,
                r#"{"result":["aGVsbG8=",7,null,["d29ybGQ="]]}"#,
                Encoding::Base64
            ),
            Ok(json!(["hello", 7, null, ["world"]]))
        );
        assert!(matches!(
            parse_reply(200, r#"{"result":"@@"}"#, Encoding::Base64),
            Err(UpstashError::Malformed(_))
        ));
    }

    #[test]
    fn pipeline_items_have_their_own_errors() {
        let body =
            r#"[{"result":"OK"},{"error":"WRONGTYPE Operation against a key"},{"result":3}]"#;
        assert_eq!(
            parse_pipeline(200, body, Encoding::Json),
            Ok(vec![
                Ok(json!("OK")),
                Err(UpstashError::Redis(
                    "WRONGTYPE Operation against a key".into()
                )),
                Ok(json!(3)),
            ])
        );
        assert_eq!(
            parse_pipeline(401, r#"{"error":"Unauthorized"}"#, Encoding::Json),
            Err(UpstashError::Http {
                status: 401,
                message: "Unauthorized".into()
            })
        );
    }

    #[test]
    fn time_in_milliseconds() {
        assert_eq!(
            parse_time(&json!(["1795455546", "123456"])),
            Ok(1_795_455_546_123)
        );
        assert!(parse_time(&json!(["x", "1"])).is_err());
        assert!(parse_time(&json!("1")).is_err());
    }

    /// Answers with canned replies and records what it was sent.
    struct Canned {
        replies: RefCell<VecDeque<Result<HttpReply, UpstashError>>>,
        sent: RefCell<Vec<HttpRequest>>,
    }

    impl Canned {
        fn new(replies: Vec<(u16, &str)>) -> Canned {
            Canned {
                replies: RefCell::new(
                    replies
                        .into_iter()
                        .map(|(status, body)| {
                            Ok(HttpReply {
                                status,
                                body: body.into(),
                            })
                        })
                        .collect(),
                ),
                sent: RefCell::new(Vec::new()),
            }
        }
    }

    impl Transport for &Canned {
        async fn post(&self, req: HttpRequest) -> Result<HttpReply, UpstashError> {
            self.sent.borrow_mut().push(req);
            self.replies
                .borrow_mut()
                .pop_front()
                .expect("a canned reply")
        }
    }

    fn client(t: &Canned, encoding: Encoding) -> Upstash<&Canned> {
        Upstash::new("https://db.example/", Secret::new("tok"), encoding, t)
    }

    #[test]
    fn requests_carry_token_encoding_and_command() {
        let t = Canned::new(vec![
            (200, r#"{"result":"UE9ORw=="}"#), // base64 of PONG
            (200, r#"[{"result":"OK"}]"#),
        ]);
        let c = client(&t, Encoding::Base64);
        block_on(c.ping()).unwrap();
        block_on(c.pipeline(&[vec!["SET", "k", "v"]])).unwrap();
        let sent = t.sent.borrow();
        assert_eq!(sent[0].url, "https://db.example/");
        assert_eq!(sent[0].body, r#"["PING"]"#);
        assert!(sent[0]
            .headers
            .contains(&("authorization", "Bearer tok".into())));
        assert!(sent[0]
            .headers
            .contains(&("upstash-encoding", "base64".into())));
        assert_eq!(sent[1].url, "https://db.example/pipeline");
        assert_eq!(sent[1].body, r#"[["SET","k","v"]]"#);
    }

    #[test]
    fn noscript_falls_back_to_eval() {
        let script = synckairos_core::script::all()[0];
        let t = Canned::new(vec![
            (
                400,
                r#"{"error":"NOSCRIPT No matching script. Please use EVAL."}"#,
            ),
            (200, r#"{"result":["ok"]}"#),
        ]);
        let c = client(&t, Encoding::Json);
        let got = block_on(c.run_script(script, &["k1", "k2"], &["a"])).unwrap();
        assert_eq!(got, json!(["ok"]));
        let sent = t.sent.borrow();
        let first: Vec<String> = serde_json::from_str(&sent[0].body).unwrap();
        assert_eq!(first, ["EVALSHA", script.sha1(), "2", "k1", "k2", "a"]);
        let second: Vec<String> = serde_json::from_str(&sent[1].body).unwrap();
        assert_eq!(second, ["EVAL", script.source, "2", "k1", "k2", "a"]);
    }

    #[test]
    fn other_script_errors_do_not_retry() {
        let script = synckairos_core::script::all()[0];
        let t = Canned::new(vec![(400, r#"{"error":"ERR Error running script"}"#)]);
        let c = client(&t, Encoding::Json);
        let got = block_on(c.run_script(script, &["k"], &[]));
        assert_eq!(
            got,
            Err(UpstashError::Redis("ERR Error running script".into()))
        );
        assert_eq!(t.sent.borrow().len(), 1);
    }

    #[test]
    fn public_reasons_hide_details() {
        let e = UpstashError::Transport("connect ECONNREFUSED 10.0.0.7:443".into());
        assert_eq!(e.public_reason(), "redis unreachable");
        let e = UpstashError::Http {
            status: 401,
            message: "Unauthorized".into(),
        };
        assert_eq!(e.public_reason(), "redis endpoint answered HTTP 401");
    }
}
