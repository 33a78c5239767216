//! The HTTP side: routing, authentication, bodies, and running commands on
//! pooled Redis connections.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use redis::aio::ConnectionLike;
use redis::aio::ConnectionManager;
use redis::Value;
use serde_json::Value as Json;

use crate::command::{self, Args};
use crate::reply::{self, Encoding};

/// `error` text of a 401, from Upstash's troubleshooting page "WRONGPASS
/// invalid or missing auth token".
pub(crate) const UNAUTHORIZED: &str = "WRONGPASS invalid or missing auth token";
/// `error` text for a body over the limit, from Upstash's troubleshooting page
/// "ERR max request size exceeded".
pub(crate) const TOO_LARGE: &str = "ERR max request size exceeded";

/// The Redis connections, handed out round-robin. Each is multiplexed: the
/// requests given the same one are pipelined on it.
pub(crate) struct Connections {
    all: Vec<ConnectionManager>,
    next: AtomicUsize,
}

impl Connections {
    /// `all` must not be empty (the config requires at least one).
    pub(crate) fn new(all: Vec<ConnectionManager>) -> Connections {
        assert!(!all.is_empty(), "at least one Redis connection");
        Connections {
            all,
            next: AtomicUsize::new(0),
        }
    }

    fn get(&self) -> ConnectionManager {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.all.len();
        self.all[i].clone()
    }
}

/// What every request handler shares.
pub(crate) struct AppState {
    pub(crate) connections: Connections,
    pub(crate) token: Vec<u8>,
    pub(crate) max_request_bytes: usize,
}

/// The whole HTTP surface. Every path goes through one handler, because on
/// Upstash every path that is not an endpoint is a command (`/set/foo/bar`).
pub(crate) fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .fallback(handle)
        .layer(middleware::from_fn(log_request))
        .with_state(state)
}

/// One JSON log line per request: method, path (no query: it may hold the
/// token), status and duration.
async fn log_request(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let path: String = req.uri().path().chars().take(200).collect();
    let response = next.run(req).await;
    tracing::info!(
        method = %method,
        path = %path,
        status = response.status().as_u16(),
        elapsed_us = started.elapsed().as_micros() as u64,
        "request"
    );
    response
}

/// The representation asked for with `Upstash-Response-Format`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Resp2,
}

/// A response that is not a Redis reply: status plus `{"error": text}`.
struct Failure {
    status: StatusCode,
    text: String,
}

impl Failure {
    fn bad_request(text: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            text: text.into(),
        }
    }

    fn internal(text: impl Into<String>) -> Self {
        let text = text.into();
        tracing::warn!(error = %text, "redis failure");
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            text,
        }
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        json_response(self.status, &reply::error_object(self.text))
    }
}

fn json_response(status: StatusCode, body: &Json) -> Response {
    let bytes = serde_json::to_vec(body).expect("a serde_json::Value always serializes");
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        bytes,
    )
        .into_response()
}

async fn handle(State(state): State<Arc<AppState>>, req: Request) -> Response {
    match handle_inner(&state, req).await {
        Ok(response) => response,
        Err(failure) => failure.into_response(),
    }
}

async fn handle_inner(state: &AppState, req: Request) -> Result<Response, Failure> {
    let (parts, body) = req.into_parts();

    // "405 Method Not Allowed: When an unsupported HTTP method is used. Only
    // HEAD, GET, POST and PUT methods are allowed."
    if !matches!(
        parts.method,
        Method::HEAD | Method::GET | Method::POST | Method::PUT
    ) {
        let mut response = Failure {
            status: StatusCode::METHOD_NOT_ALLOWED,
            text: "ERR method not allowed: only HEAD, GET, POST and PUT are".into(),
        }
        .into_response();
        response.headers_mut().insert(
            header::ALLOW,
            HeaderValue::from_static("HEAD, GET, POST, PUT"),
        );
        return Ok(response);
    }

    let path = parts.uri.path();
    let query = parts.uri.query();

    // Liveness for scripts and orchestration; needs no token.
    if path == "/health" {
        return Ok(json_response(
            StatusCode::OK,
            &serde_json::json!({"status": "ok"}),
        ));
    }

    // "You need to add a header to your API requests as `Authorization:
    // Bearer $TOKEN` or set the token as a url parameter `_token=$TOKEN`."
    if !authorized(&parts.headers, query, &state.token) {
        return Err(Failure {
            status: StatusCode::UNAUTHORIZED,
            text: UNAUTHORIZED.into(),
        });
    }

    let encoding = match header_str(&parts.headers, "upstash-encoding") {
        Some(v) if v.eq_ignore_ascii_case("base64") => Encoding::Base64,
        _ => Encoding::Text,
    };
    let format = match header_str(&parts.headers, "upstash-response-format") {
        None => Format::Json,
        Some(v) if v.eq_ignore_ascii_case("json") => Format::Json,
        Some(v) if v.eq_ignore_ascii_case("resp2") => Format::Resp2,
        Some(v) => {
            return Err(Failure::bad_request(format!(
                "ERR invalid Upstash-Response-Format '{v}': use json or resp2"
            )))
        }
    };
    if format == Format::Resp2 && encoding == Encoding::Base64 {
        return Err(Failure::bad_request(
            "ERR Upstash-Encoding: base64 cannot be combined with Upstash-Response-Format: resp2",
        ));
    }

    let body = read_body(body, &parts.headers, state.max_request_bytes).await?;

    match path {
        "/" => {
            let args = command::from_json(&parse_json(&body)?).map_err(Failure::bad_request)?;
            single(state, args, encoding, format).await
        }
        "/pipeline" => {
            let batch =
                command::batch_from_json(&parse_json(&body)?).map_err(Failure::bad_request)?;
            pipeline(state, batch, encoding, format).await
        }
        // "This option [resp2] is not applicable to /multi-exec transactions
        // endpoint, as it only returns response in JSON format."
        "/multi-exec" => {
            let batch =
                command::batch_from_json(&parse_json(&body)?).map_err(Failure::bad_request)?;
            multi_exec(state, batch, encoding).await
        }
        _ if path == "/monitor" || path == "/subscribe" || path.starts_with("/subscribe/") => {
            Err(Failure {
                status: StatusCode::NOT_FOUND,
                text: format!(
                    "ERR upstash-local does not implement Upstash's Server-Sent Events endpoint {}",
                    if path == "/monitor" {
                        "/monitor"
                    } else {
                        "/subscribe"
                    }
                ),
            })
        }
        _ => {
            // "To post a JSON or a binary value, you can use an HTTP POST
            // request and set value as the request body" (appended last).
            let body = (matches!(parts.method, Method::POST | Method::PUT) && !body.is_empty())
                .then_some(&body[..]);
            let args = command::from_path(path, query, body);
            single(state, args, encoding, format).await
        }
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

fn authorized(headers: &HeaderMap, query: Option<&str>, token: &[u8]) -> bool {
    let from_header = headers
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes())
        .and_then(|v| {
            let (scheme, rest) = v.split_at_checked(7)?;
            scheme
                .eq_ignore_ascii_case(b"Bearer ")
                .then(|| rest.trim_ascii())
        });
    if from_header.is_some_and(|given| constant_time_eq(given, token)) {
        return true;
    }
    command::query_pairs(query)
        .iter()
        .any(|(name, value)| name == b"_token" && constant_time_eq(value, token))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn read_body(body: Body, headers: &HeaderMap, limit: usize) -> Result<Bytes, Failure> {
    let declared = header_str(headers, "content-length").and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(Failure::bad_request(TOO_LARGE));
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.downcast_ref::<LengthLimitError>().is_some() => {
            Err(Failure::bad_request(TOO_LARGE))
        }
        Err(err) => Err(Failure::bad_request(format!(
            "ERR failed to read the request body: {err}"
        ))),
    }
}

fn parse_json(body: &[u8]) -> Result<Json, Failure> {
    if body.is_empty() {
        return Err(Failure::bad_request(
            "ERR empty request body: send the command as a JSON array, e.g. [\"GET\",\"key\"]",
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        Failure::bad_request(format!("ERR failed to parse the request body as JSON: {e}"))
    })
}

/// Runs `commands` as one packed pipeline (one write, one round trip) on one
/// of the connections, returning one reply per command. Error replies come
/// back as `Value::ServerError`, not as `Err`.
async fn run_packed(state: &AppState, commands: &[Args]) -> Result<Vec<Value>, Failure> {
    let mut conn = state.connections.get();
    let mut pipe = redis::Pipeline::with_capacity(commands.len());
    for args in commands {
        let mut cmd = redis::Cmd::new();
        for arg in args {
            cmd.arg(arg.as_slice());
        }
        pipe.add_command(cmd);
    }
    let values = conn
        .req_packed_commands(&pipe, 0, commands.len())
        .await
        .map_err(|e| Failure::internal(format!("ERR upstash-local: Redis request failed: {e}")))?;
    if values.len() != commands.len() {
        return Err(Failure::internal(format!(
            "ERR upstash-local: expected {} replies from Redis, got {}",
            commands.len(),
            values.len()
        )));
    }
    Ok(values)
}

/// `POST /` or the path form: `200 {"result": ...}`, or `400 {"error": ...}`
/// ("400 Bad Request: When there's a syntax error, an invalid/unsupported
/// command is sent or command execution fails").
async fn single(
    state: &AppState,
    args: Args,
    encoding: Encoding,
    format: Format,
) -> Result<Response, Failure> {
    command::check_supported(&args).map_err(Failure::bad_request)?;
    let value = run_packed(state, std::slice::from_ref(&args))
        .await?
        .pop()
        .expect("run_packed returns one reply per command");
    let status = if matches!(value, Value::ServerError(_)) {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    Ok(match format {
        Format::Json => json_response(status, &reply::envelope(value, encoding)),
        Format::Resp2 => {
            let mut out = Vec::new();
            reply::write_resp2(&value, &mut out);
            resp2_response(status, out)
        }
    })
}

fn resp2_response(status: StatusCode, body: Vec<u8>) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        )],
        body,
    )
        .into_response()
}

/// `POST /pipeline`: `200 [{"result": ...}, {"error": ...}, ...]`, one entry
/// per command in order. Not atomic, as on Upstash. A command this endpoint
/// refuses to run (e.g. BLPOP) gets its own error entry; the rest still run.
async fn pipeline(
    state: &AppState,
    batch: Vec<Args>,
    encoding: Encoding,
    format: Format,
) -> Result<Response, Failure> {
    let checks: Vec<Result<(), String>> = batch.iter().map(command::check_supported).collect();
    let runnable: Vec<Args> = batch
        .into_iter()
        .zip(&checks)
        .filter(|(_, check)| check.is_ok())
        .map(|(args, _)| args)
        .collect();
    let mut values = if runnable.is_empty() {
        Vec::new()
    } else {
        run_packed(state, &runnable).await?
    }
    .into_iter();
    let mut replies = Vec::with_capacity(checks.len());
    for check in checks {
        replies.push(match check {
            Ok(()) => Ok(values.next().expect("one reply per runnable command")),
            Err(text) => Err(text),
        });
    }
    Ok(match format {
        Format::Json => json_response(
            StatusCode::OK,
            &Json::Array(
                replies
                    .into_iter()
                    .map(|reply| match reply {
                        Ok(value) => reply::envelope(value, encoding),
                        Err(text) => reply::error_object(text),
                    })
                    .collect(),
            ),
        ),
        Format::Resp2 => {
            let mut out = Vec::new();
            for reply in &replies {
                match reply {
                    Ok(value) => reply::write_resp2(value, &mut out),
                    Err(text) => {
                        out.push(b'-');
                        out.extend_from_slice(text.as_bytes());
                        out.extend_from_slice(b"\r\n");
                    }
                }
            }
            resp2_response(StatusCode::OK, out)
        }
    })
}

/// `POST /multi-exec`: MULTI, the commands and EXEC, written to one
/// connection as one contiguous packed block, so nothing else on that
/// connection (and, Redis being single-threaded per transaction, no other
/// client) can run in between.
///
/// On success: `200 [{"result": ...}, {"error": ...}, ...]`: a command that
/// fails at run time does not stop the others ("Upstash Redis will not stop
/// the processing of commands"). If the transaction is discarded as a whole
/// (a command Redis rejects while queueing, e.g. a wrong number of arguments,
/// or one this endpoint refuses): `400 {"error": "ERR ..."}` with the first
/// rejection's text, and nothing was applied.
async fn multi_exec(
    state: &AppState,
    batch: Vec<Args>,
    encoding: Encoding,
) -> Result<Response, Failure> {
    for (i, args) in batch.iter().enumerate() {
        command::check_supported(args)
            .map_err(|text| Failure::bad_request(format!("{text} (in command {i})")))?;
    }
    let n = batch.len();
    let mut block = Vec::with_capacity(n + 2);
    block.push(vec![b"MULTI".to_vec()]);
    block.extend(batch);
    block.push(vec![b"EXEC".to_vec()]);
    let mut values = run_packed(state, &block).await?;
    let exec = values.pop().expect("n + 2 replies");
    if let Value::ServerError(err) = &values[0] {
        return Err(Failure::bad_request(reply::error_text(err)));
    }
    let queue_error = values[1..].iter().find_map(|v| match v {
        Value::ServerError(err) => Some(reply::error_text(err)),
        _ => None,
    });
    match exec {
        Value::Array(results) if results.len() == n => Ok(json_response(
            StatusCode::OK,
            &Json::Array(
                results
                    .into_iter()
                    .map(|v| reply::envelope(v, encoding))
                    .collect(),
            ),
        )),
        Value::ServerError(err) => Err(Failure::bad_request(
            queue_error.unwrap_or_else(|| reply::error_text(&err)),
        )),
        Value::Nil => Err(Failure::bad_request("ERR transaction aborted")),
        other => Err(Failure::internal(format!(
            "ERR upstash-local: unexpected EXEC reply {other:?}"
        ))),
    }
}
