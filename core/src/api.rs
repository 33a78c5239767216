//! The REST contract's wire layer (docs/API.md §1, §3), shared by every HTTP
//! transport: routing, request bodies, error bodies, response shapes and the
//! role rules. No I/O: a transport feeds it method, path, headers and body,
//! runs the one engine call, and writes what this module renders.

use crate::command::{Command, Request};
use crate::devices::DeviceOp;
use crate::error::{DomainError, Issue, IssueCode};
use crate::time::Timestamp;
use crate::types::{Participant, Status, SyncState};
use crate::validate::{parse_uuid, validate_create};
use serde::Serialize;
use serde_json::Value;

/// Largest accepted request body (a create body with 1000 participants and
/// 16 KiB of metadata fits with room to spare).
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// `server_version` reported by `GET /v1/time`.
pub const SERVER_VERSION: &str = "2.0.0";

/// `drift_tolerance_ms` reported by `GET /v1/time`.
pub const DRIFT_TOLERANCE_MS: u64 = 50;

/// A command on one session, as named in its path (`…/start`, `…/switch`, …):
/// the same verbs the domain's transition errors name.
pub use crate::error::Action as SessionAction;

/// Every route of the API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// `GET /health`
    Health,
    /// `GET /ready`
    Ready,
    /// `GET /v1/time`
    Time,
    /// `GET /v1/openapi.json`
    OpenApi,
    /// `OPTIONS <anything>`: CORS preflight.
    Preflight,
    /// `POST /v1/sessions`
    Create,
    /// `GET /v1/sessions/:id`
    Get(String),
    /// `DELETE /v1/sessions/:id`
    Delete(String),
    /// `POST /v1/sessions/:id/<action>`
    Action(String, SessionAction),
    /// `POST /v1/sessions/:id/devices`: registers a push device.
    RegisterDevice(String),
    /// `DELETE /v1/sessions/:id/devices/:token` (the token percent-decoded).
    RemoveDevice(String, String),
}

impl Route {
    /// A bounded label for metrics and logs (never the raw path).
    pub fn pattern(&self) -> &'static str {
        match self {
            Route::Health => "/health",
            Route::Ready => "/ready",
            Route::Time => "/v1/time",
            Route::OpenApi => "/v1/openapi.json",
            Route::Preflight => "OPTIONS",
            Route::Create => "/v1/sessions",
            Route::Get(_) | Route::Delete(_) => "/v1/sessions/:id",
            Route::Action(_, a) => match a {
                SessionAction::Start => "/v1/sessions/:id/start",
                SessionAction::Switch => "/v1/sessions/:id/switch",
                SessionAction::Pause => "/v1/sessions/:id/pause",
                SessionAction::Resume => "/v1/sessions/:id/resume",
                SessionAction::Complete => "/v1/sessions/:id/complete",
                SessionAction::Cancel => "/v1/sessions/:id/cancel",
            },
            Route::RegisterDevice(_) => "/v1/sessions/:id/devices",
            Route::RemoveDevice(..) => "/v1/sessions/:id/devices/:token",
        }
    }

    /// The session the route is about, if any.
    pub fn session_id(&self) -> Option<&str> {
        match self {
            Route::Get(id)
            | Route::Delete(id)
            | Route::Action(id, _)
            | Route::RegisterDevice(id)
            | Route::RemoveDevice(id, _) => Some(id),
            _ => None,
        }
    }
}

/// Matches a request line. A session id that is not a UUID is a 400
/// `VALIDATION_ERROR`; a known path with another method is a 405
/// `METHOD_NOT_ALLOWED` (with `Allow`); anything else is a 404 `NOT_FOUND`.
pub fn route(method: &str, path: &str) -> Result<Route, ApiError> {
    let path = path.split('?').next().unwrap_or("");
    let path = path
        .strip_suffix('/')
        .filter(|p| !p.is_empty())
        .unwrap_or(path);
    if method.eq_ignore_ascii_case("OPTIONS") {
        return Ok(Route::Preflight);
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let session = |raw: &str| {
        parse_uuid(raw).ok_or_else(|| {
            ApiError::Domain(DomainError::Validation(vec![Issue {
                field: "session_id".into(),
                message: "Session ID must be a valid UUID".into(),
                code: IssueCode::InvalidFormat,
            }]))
        })
    };
    let method = method.to_ascii_uppercase();
    match (method.as_str(), segments.as_slice()) {
        ("GET", ["health"]) => Ok(Route::Health),
        ("GET", ["ready"]) => Ok(Route::Ready),
        ("GET", ["v1", "time"]) => Ok(Route::Time),
        ("GET", ["v1", "openapi.json"]) => Ok(Route::OpenApi),
        ("POST", ["v1", "sessions"]) => Ok(Route::Create),
        ("GET", ["v1", "sessions", id]) => Ok(Route::Get(session(id)?)),
        ("DELETE", ["v1", "sessions", id]) => Ok(Route::Delete(session(id)?)),
        ("POST", ["v1", "sessions", id, "devices"]) => Ok(Route::RegisterDevice(session(id)?)),
        ("DELETE", ["v1", "sessions", id, "devices", token]) => {
            let id = session(id)?;
            let token = crate::devices::path_token(token)
                .map_err(|i| ApiError::Domain(DomainError::Validation(vec![i])))?;
            Ok(Route::RemoveDevice(id, token))
        }
        ("POST", ["v1", "sessions", id, action]) => match SessionAction::parse(action) {
            Some(a) => Ok(Route::Action(session(id)?, a)),
            None => Err(ApiError::NotFound),
        },
        (_, ["health"] | ["ready"] | ["v1", "time"] | ["v1", "openapi.json"]) => {
            Err(ApiError::MethodNotAllowed("GET"))
        }
        (_, ["v1", "sessions"]) => Err(ApiError::MethodNotAllowed("POST")),
        (_, ["v1", "sessions", _]) => Err(ApiError::MethodNotAllowed("GET, DELETE")),
        (_, ["v1", "sessions", _, "devices"]) => Err(ApiError::MethodNotAllowed("POST")),
        (_, ["v1", "sessions", _, "devices", _]) => Err(ApiError::MethodNotAllowed("DELETE")),
        (_, ["v1", "sessions", _, action]) if SessionAction::parse(action).is_some() => {
            Err(ApiError::MethodNotAllowed("POST"))
        }
        _ => Err(ApiError::NotFound),
    }
}

/// A request path as logs may show it: the push token of a device path
/// (`…/devices/<token>`) and any query string left out, so no log holds a
/// token.
pub fn loggable_path(path: &str) -> String {
    let path = path.split('?').next().unwrap_or("");
    let segments: Vec<&str> = path.split('/').collect();
    match segments.as_slice() {
        ["", "v1", "sessions", id, "devices", _, ..] => {
            format!("/v1/sessions/{id}/devices/<token>")
        }
        _ => path.to_string(),
    }
}

/// Everything a request can fail with, at the HTTP boundary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiError {
    /// A refusal of the domain (validation, state, version, rate, turn).
    Domain(DomainError),
    /// The body is not JSON (400 `INVALID_JSON`).
    InvalidJson,
    /// The body is over [`MAX_BODY_BYTES`] (413 `PAYLOAD_TOO_LARGE`).
    PayloadTooLarge,
    /// The body could not be read to its end (400 `INVALID_BODY`).
    UnreadableBody,
    /// No such route (404 `NOT_FOUND`).
    NotFound,
    /// A known path with another method (405 `METHOD_NOT_ALLOWED`); the
    /// methods it takes, for `Allow`.
    MethodNotAllowed(&'static str),
    /// Missing or invalid credentials (401 `UNAUTHORIZED`).
    Unauthorized(&'static str),
    /// Valid credentials without the right (403 `FORBIDDEN`).
    Forbidden(&'static str),
    /// Auth is required but no key is configured (500 `AUTH_NOT_CONFIGURED`).
    AuthNotConfigured,
    /// Redis could not be reached (503 `SERVICE_UNAVAILABLE`).
    Unavailable,
    /// A bug or an unexpected reply (500 `INTERNAL_ERROR`, generic body; the
    /// transport logs the cause).
    Internal,
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> ApiError {
        ApiError::Domain(e)
    }
}

/// `details` of a 409 `CONFLICT`.
#[derive(Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct ConflictDetails {
    /// What the caller expected.
    pub expected_version: u64,
    /// What is stored.
    pub actual_version: u64,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorObject<'a>,
}

#[derive(Serialize)]
struct ErrorObject<'a> {
    code: &'a str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<Box<serde_json::value::RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after_seconds: Option<u64>,
}

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            ApiError::Domain(e) => e.http_status(),
            ApiError::InvalidJson | ApiError::UnreadableBody => 400,
            ApiError::PayloadTooLarge => 413,
            ApiError::NotFound => 404,
            ApiError::MethodNotAllowed(_) => 405,
            ApiError::Unauthorized(_) => 401,
            ApiError::Forbidden(_) => 403,
            ApiError::AuthNotConfigured | ApiError::Internal => 500,
            ApiError::Unavailable => 503,
        }
    }

    /// The stable `error.code`.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Domain(e) => e.code(),
            ApiError::InvalidJson => "INVALID_JSON",
            ApiError::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ApiError::UnreadableBody => "INVALID_BODY",
            ApiError::NotFound => "NOT_FOUND",
            ApiError::MethodNotAllowed(_) => "METHOD_NOT_ALLOWED",
            ApiError::Unauthorized(_) => "UNAUTHORIZED",
            ApiError::Forbidden(_) => "FORBIDDEN",
            ApiError::AuthNotConfigured => "AUTH_NOT_CONFIGURED",
            ApiError::Unavailable => "SERVICE_UNAVAILABLE",
            ApiError::Internal => "INTERNAL_ERROR",
        }
    }

    /// `Allow`, for a 405.
    pub fn allow(&self) -> Option<&'static str> {
        match self {
            ApiError::MethodNotAllowed(allow) => Some(allow),
            _ => None,
        }
    }

    /// One value of every kind of error the HTTP API answers with: what the
    /// OpenAPI document derives each operation's statuses and codes from
    /// (with [`Route::can_fail_with`]).
    pub fn every_kind() -> Vec<ApiError> {
        let mut all: Vec<ApiError> = DomainError::every_kind()
            .into_iter()
            .map(ApiError::Domain)
            .collect();
        all.extend([
            ApiError::InvalidJson,
            ApiError::PayloadTooLarge,
            ApiError::UnreadableBody,
            ApiError::NotFound,
            ApiError::MethodNotAllowed("GET"),
            ApiError::Unauthorized("Authentication required"),
            ApiError::Forbidden("Insufficient permissions"),
            ApiError::AuthNotConfigured,
            ApiError::Unavailable,
            ApiError::Internal,
        ]);
        all
    }

    /// `Retry-After` seconds, for a 429.
    pub fn retry_after_seconds(&self) -> Option<u64> {
        match self {
            ApiError::Domain(DomainError::RateLimited {
                retry_after_seconds,
            }) => Some(*retry_after_seconds),
            _ => None,
        }
    }

    /// The JSON body `{"error": {code, message, details?}}`.
    pub fn body(&self) -> String {
        let (message, details) = match self {
            ApiError::Domain(DomainError::Validation(issues)) => (
                "Request validation failed".to_string(),
                serde_json::value::to_raw_value(issues).ok(),
            ),
            ApiError::Domain(
                e @ DomainError::VersionConflict {
                    expected_version,
                    actual_version,
                },
            ) => (
                e.to_string(),
                serde_json::value::to_raw_value(&ConflictDetails {
                    expected_version: *expected_version,
                    actual_version: *actual_version,
                })
                .ok(),
            ),
            ApiError::Domain(e) => (e.to_string(), None),
            ApiError::InvalidJson => ("Invalid JSON in request body".into(), None),
            ApiError::PayloadTooLarge => {
                (format!("Request body exceeds {MAX_BODY_BYTES} bytes"), None)
            }
            ApiError::UnreadableBody => ("Request body could not be read".into(), None),
            ApiError::NotFound => ("Route not found".into(), None),
            ApiError::MethodNotAllowed(allow) => {
                (format!("Method not allowed here (allowed: {allow})"), None)
            }
            ApiError::Unauthorized(m) | ApiError::Forbidden(m) => (m.to_string(), None),
            ApiError::AuthNotConfigured => (
                "Authentication is required but no verification key is configured".into(),
                None,
            ),
            ApiError::Unavailable => ("Service temporarily unavailable".into(), None),
            ApiError::Internal => ("Internal server error".into(), None),
        };
        serde_json::to_string(&ErrorBody {
            error: ErrorObject {
                code: self.code(),
                message,
                details,
                retry_after_seconds: self.retry_after_seconds(),
            },
        })
        .expect("error bodies serialize")
    }
}

/// Parses a JSON body. An empty body is `{}` (actions need none); over the
/// limit is 413; not JSON is `INVALID_JSON`.
pub fn json_body(body: &[u8]) -> Result<Value, ApiError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(ApiError::PayloadTooLarge);
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Default::default()));
    }
    serde_json::from_slice(body).map_err(|_| ApiError::InvalidJson)
}

fn invalid(field: &str, message: &str, code: IssueCode) -> ApiError {
    ApiError::Domain(DomainError::Validation(vec![Issue {
        field: field.into(),
        message: message.into(),
        code,
    }]))
}

impl Route {
    /// Whether a request on this route can be answered with (an error of
    /// the kind of) `e`: the one declaration the OpenAPI document lists each
    /// operation's error statuses from. Exhaustive on both enums, so a new
    /// error cannot compile without saying where it is answered.
    pub fn can_fail_with(&self, e: &ApiError) -> bool {
        let session = self.session_id().is_some() || matches!(self, Route::Create);
        let device = matches!(self, Route::RegisterDevice(_) | Route::RemoveDevice(..));
        let command = matches!(self, Route::Create | Route::Delete(_) | Route::Action(..));
        let action = matches!(self, Route::Action(..));
        let switch = matches!(self, Route::Action(_, SessionAction::Switch));
        match e {
            ApiError::Domain(d) => match d {
                // Every /v1 route counts toward the general per-client limit;
                // a switch also toward its session's.
                DomainError::RateLimited { .. } => {
                    session || matches!(self, Route::Time | Route::OpenApi)
                }
                // The id in the path, the create body, If-Match,
                // Idempotency-Key, expected_version.
                DomainError::Validation(_) => session,
                DomainError::SessionNotFound { .. } => {
                    matches!(self, Route::Get(_)) || action || device
                }
                DomainError::SessionExists { .. } | DomainError::SessionDeleted { .. } => {
                    matches!(self, Route::Create)
                }
                DomainError::InvalidTransition { .. } | DomainError::VersionConflict { .. } => {
                    action
                }
                DomainError::ParticipantNotFound { .. } => {
                    switch || matches!(self, Route::RegisterDevice(_))
                }
                DomainError::NotYourTurn { .. } => switch,
                DomainError::IdempotencyKeyReused => command,
            },
            ApiError::InvalidJson
            | ApiError::PayloadTooLarge
            | ApiError::UnreadableBody
            | ApiError::Unauthorized(_)
            | ApiError::Forbidden(_)
            | ApiError::AuthNotConfigured => session,
            // A store that is down or misconfigured, or answers nonsense.
            ApiError::Unavailable | ApiError::Internal => session || matches!(self, Route::Time),
            // Not an answer of a route: of a path or method no route has.
            ApiError::NotFound | ApiError::MethodNotAllowed(_) => false,
        }
    }
}

/// `If-Match` as the server reads it: a session version, bare, quoted or
/// weak (`3`, `"3"`, `W/"3"`), of at most this many digits (so always a
/// `u64`); an empty header is none. The OpenAPI document's pattern for it is
/// [`if_match_pattern`], and [`parse_if_match`] accepts exactly that.
pub const IF_MATCH_MAX_DIGITS: usize = 19;

/// The regular expression of an `If-Match` value (empty = none).
pub fn if_match_pattern() -> String {
    let n = format!("[0-9]{{1,{IF_MATCH_MAX_DIGITS}}}");
    format!(r#"^({n}|"{n}"|W/"{n}")?$"#)
}

/// The version an `If-Match` value names; `None` for anything that does
/// not match [`if_match_pattern`] (the empty header is handled before).
pub fn parse_if_match(h: &str) -> Option<u64> {
    let inner = h
        .strip_prefix("W/\"")
        .or_else(|| h.strip_prefix('"'))
        .map_or(Some(h), |rest| rest.strip_suffix('"'))?;
    let digits = (1..=IF_MATCH_MAX_DIGITS).contains(&inner.len())
        && inner.bytes().all(|b| b.is_ascii_digit());
    digits.then(|| inner.parse().ok()).flatten()
}

/// The expected version of a mutation: `If-Match` ([`parse_if_match`]) or
/// the body's `expected_version`; both given and different is a 400.
pub fn expected_version(if_match: Option<&str>, body: &Value) -> Result<Option<u64>, ApiError> {
    let header = match if_match.map(str::trim) {
        None | Some("") => None,
        Some(h) => Some(parse_if_match(h).ok_or_else(|| {
            invalid(
                "If-Match",
                "If-Match must be a session version (a non-negative integer)",
                IssueCode::InvalidFormat,
            )
        })?),
    };
    let in_body = match body.get("expected_version") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().ok_or_else(|| {
            invalid(
                "expected_version",
                "Expected version must be a non-negative integer",
                IssueCode::InvalidType,
            )
        })?),
    };
    match (header, in_body) {
        (Some(h), Some(b)) if h != b => Err(invalid(
            "expected_version",
            "If-Match and expected_version disagree",
            IssueCode::InvalidValue,
        )),
        (h, b) => Ok(h.or(b)),
    }
}

/// The command of a route (`Create` validates the whole body, `Switch` reads
/// `next_participant_id`). `Get`, `Time` and the like have none.
pub fn command(route: &Route, body: &Value) -> Result<Option<Command>, ApiError> {
    Ok(Some(match route {
        Route::Create => Command::Create(Box::new(
            validate_create(body).map_err(DomainError::Validation)?,
        )),
        Route::Delete(_) => Command::Delete,
        Route::Action(_, a) => match a {
            SessionAction::Start => Command::Start,
            SessionAction::Pause => Command::Pause,
            SessionAction::Resume => Command::Resume,
            SessionAction::Complete => Command::Complete,
            SessionAction::Cancel => Command::Cancel,
            SessionAction::Switch => {
                if !body.is_object() {
                    return Err(invalid(
                        "",
                        "Invalid input: expected object",
                        IssueCode::InvalidType,
                    ));
                }
                let next = match body.get("next_participant_id") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(s)) => Some(parse_uuid(s).ok_or_else(|| {
                        invalid(
                            "next_participant_id",
                            "Participant ID must be a valid UUID",
                            IssueCode::InvalidFormat,
                        )
                    })?),
                    Some(_) => {
                        return Err(invalid(
                            "next_participant_id",
                            "Invalid input: expected string",
                            IssueCode::InvalidType,
                        ))
                    }
                };
                switch_lag(body)?;
                Command::Switch {
                    next_participant_id: next,
                }
            }
        },
        _ => return Ok(None),
    }))
}

/// The `lag_ms` a switch body claims: the client's own estimate of this
/// move's network delay, credited from the mover's quota when the session
/// compensates lag (docs/API.md §4.1).
pub fn switch_lag(body: &Value) -> Result<Option<i64>, ApiError> {
    use crate::validate::LAG;
    let n = match body.get(LAG.field) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n,
        Some(_) => {
            return Err(invalid(
                LAG.field,
                "Invalid input: expected number",
                IssueCode::InvalidType,
            ))
        }
    };
    // An integral float is an integer (as everywhere in validation).
    let exact = n.as_i64().or_else(|| {
        n.as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_992.0)
            .map(|f| f as i64)
    });
    match exact {
        Some(v) if v < LAG.min => Err(invalid(LAG.field, LAG.too_small, IssueCode::TooSmall)),
        Some(v) if v > LAG.max => Err(invalid(LAG.field, LAG.too_big, IssueCode::TooBig)),
        Some(v) => Ok(Some(v)),
        None if n.as_f64().is_some_and(|f| f.fract() == 0.0) => {
            let f = n.as_f64().unwrap_or_default();
            if f < LAG.min as f64 {
                Err(invalid(LAG.field, LAG.too_small, IssueCode::TooSmall))
            } else {
                Err(invalid(LAG.field, LAG.too_big, IssueCode::TooBig))
            }
        }
        None => Err(invalid(
            LAG.field,
            "Invalid input: expected int, received number",
            IssueCode::InvalidType,
        )),
    }
}

/// The role of a caller (JWT claim `role`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Everything.
    Admin,
    /// Everything in its `sid` session (every session without `sid`), and create.
    Host,
    /// Read its session; switch only while it is the active participant.
    Participant,
    /// Read only.
    Viewer,
}

impl Role {
    /// Parses a claim value.
    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "admin" => Role::Admin,
            "host" => Role::Host,
            "participant" => Role::Participant,
            "viewer" => Role::Viewer,
            _ => return None,
        })
    }
}

/// A verified caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// JWT `sub` (a participant's `participant_id`).
    pub sub: String,
    /// JWT `role`.
    pub role: Role,
    /// JWT `sid`: the only session the token is for.
    pub sid: Option<String>,
    /// JWT `exp` (epoch s): a WebSocket that outlives it is closed with 4001
    /// unless the client sends a fresh token (`AUTH`).
    pub exp: Option<u64>,
}

/// What a caller may do on a route; `created` is the `session_id` of a create
/// body. `Ok(true)` means allowed only while the caller is the active
/// participant: the engine checks that inside the script
/// ([`Request::only_if_active`]), so it costs no extra read.
pub fn authorize(caller: &Caller, route: &Route, created: Option<&str>) -> Result<bool, ApiError> {
    if let (Some(sid), Some(target)) = (caller.sid.as_deref(), route.session_id().or(created)) {
        if !sid.eq_ignore_ascii_case(target) {
            return Err(ApiError::Forbidden("Token is not valid for this session"));
        }
    }
    let read = matches!(route, Route::Get(_));
    let device = matches!(route, Route::RegisterDevice(_) | Route::RemoveDevice(..));
    match caller.role {
        Role::Admin | Role::Host => Ok(false),
        // Its own devices only: see `authorize_device`.
        Role::Participant if device => Ok(false),
        Role::Participant if matches!(route, Route::Action(_, SessionAction::Switch)) => Ok(true),
        Role::Participant | Role::Viewer if read => Ok(false),
        Role::Participant | Role::Viewer => {
            Err(ApiError::Forbidden("Insufficient role for this operation"))
        }
    }
}

/// The devices command of a device route (`None` for any other route):
/// the registration body validated, or the path's token. Whose devices a
/// caller may touch is [`authorize_device`]'s.
pub fn device_op(route: &Route, body: &Value) -> Result<Option<DeviceOp>, ApiError> {
    Ok(Some(match route {
        Route::RegisterDevice(id) => DeviceOp::Register {
            session_id: id.clone(),
            registration: crate::devices::validate_registration(body)
                .map_err(DomainError::Validation)?,
        },
        Route::RemoveDevice(id, token) => DeviceOp::Remove {
            session_id: id.clone(),
            token: token.clone(),
            participant_id: None,
        },
        _ => return Ok(None),
    }))
}

/// A participant registers and removes only its own devices (its token's
/// `sub` is its `participant_id`); a host or admin any participant's. Sets
/// a participant's remove to its own registrations.
pub fn authorize_device(caller: &Caller, op: &mut DeviceOp) -> Result<(), ApiError> {
    if caller.role != Role::Participant {
        return Ok(());
    }
    let me = caller.sub.to_ascii_lowercase();
    match op {
        DeviceOp::Register { registration, .. } if registration.participant_id != me => Err(
            ApiError::Forbidden("A participant may register only its own devices"),
        ),
        DeviceOp::Register { .. } => Ok(()),
        DeviceOp::Remove { participant_id, .. } => {
            *participant_id = Some(me);
            Ok(())
        }
    }
}

/// Builds the engine request of a mutation for `caller` (`None` when auth is
/// disabled for local development).
pub fn request(
    route: &Route,
    command: Command,
    expected_version: Option<u64>,
    caller: Option<&Caller>,
    only_if_active: bool,
) -> Request {
    let session_id = match (&command, route.session_id()) {
        (Command::Create(spec), _) => spec.session_id.clone(),
        (_, Some(id)) => id.to_string(),
        (_, None) => String::new(),
    };
    Request {
        session_id,
        command,
        expected_version,
        actor: caller.map(|c| c.sub.clone()),
        only_if_active,
        lag_ms: None,
    }
}

/// `{"data": <value>}`.
pub fn data<T: Serialize>(value: &T) -> String {
    #[derive(Serialize)]
    struct Data<'a, T> {
        data: &'a T,
    }
    serde_json::to_string(&Data { data: value }).expect("responses serialize")
}

/// The body of `POST …/switch` (docs/API.md §3).
#[derive(Serialize, schemars::JsonSchema, Debug, PartialEq, Eq)]
pub struct SwitchResponse<'a> {
    /// The session.
    pub session_id: &'a str,
    /// Whose turn it is now.
    pub active_participant_id: Option<&'a str>,
    /// When the new turn started.
    pub cycle_started_at: Option<Timestamp>,
    /// Everyone's clocks.
    pub participants: &'a [Participant],
    /// Status after the switch (`expired` when the time had run out).
    pub status: Status,
    /// Who ran out of time, when the switch came too late.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expired_participant_id: Option<&'a str>,
    /// **[ext]** The stored version.
    pub version: u64,
    /// **[ext]** Redis time of the switch.
    pub server_time_ms: i64,
    /// **[ext]** When the new turn runs out.
    pub expires_at: Option<Timestamp>,
}

impl<'a> SwitchResponse<'a> {
    /// The switch response of a state.
    pub fn new(st: &'a SyncState, expired_participant_id: Option<&'a str>) -> SwitchResponse<'a> {
        SwitchResponse {
            session_id: &st.session_id,
            active_participant_id: st.active_participant_id.as_deref(),
            cycle_started_at: st.cycle_started_at,
            participants: &st.participants,
            status: st.status,
            expired_participant_id,
            version: st.version,
            server_time_ms: st.server_time_ms,
            expires_at: st.expires_at,
        }
    }
}

/// The body of `GET /v1/time` (not wrapped in `data`, as the contract shows it).
#[derive(Serialize, schemars::JsonSchema, Debug, PartialEq, Eq)]
pub struct TimeResponse {
    /// Redis time, epoch ms.
    pub timestamp_ms: i64,
    /// [`SERVER_VERSION`].
    pub server_version: &'static str,
    /// [`DRIFT_TOLERANCE_MS`].
    pub drift_tolerance_ms: u64,
}

impl TimeResponse {
    /// The response for Redis time `now_ms`.
    pub fn new(now_ms: i64) -> TimeResponse {
        TimeResponse {
            timestamp_ms: now_ms,
            server_version: SERVER_VERSION,
            drift_tolerance_ms: DRIFT_TOLERANCE_MS,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SID: &str = "0b7d7a2e-8c4f-4d3b-9a51-6c2e1f0d9b11";

    #[test]
    fn routes() {
        assert_eq!(route("GET", "/health"), Ok(Route::Health));
        assert_eq!(route("GET", "/v1/time/"), Ok(Route::Time));
        assert_eq!(route("POST", "/v1/sessions"), Ok(Route::Create));
        assert_eq!(
            route("get", &format!("/v1/sessions/{}", SID.to_uppercase())),
            Ok(Route::Get(SID.into()))
        );
        assert_eq!(
            route("DELETE", &format!("/v1/sessions/{SID}?x=1")),
            Ok(Route::Delete(SID.into()))
        );
        assert_eq!(
            route("POST", &format!("/v1/sessions/{SID}/switch")),
            Ok(Route::Action(SID.into(), SessionAction::Switch))
        );
        assert_eq!(route("OPTIONS", "/anything"), Ok(Route::Preflight));
        for (m, p) in [
            ("GET", "/"),
            ("POST", &format!("/v1/sessions/{SID}/explode")),
            ("GET", "/v1/sessions/a/b/c/d"),
        ] {
            assert_eq!(route(m, p), Err(ApiError::NotFound), "{m} {p}");
        }
        for (m, p, allow) in [
            ("PUT", "/v1/sessions", "POST"),
            ("PATCH", "/v1/time", "GET"),
            ("POST", "/v1/time", "GET"),
            ("POST", &format!("/v1/sessions/{SID}"), "GET, DELETE"),
            ("DELETE", &format!("/v1/sessions/{SID}/start"), "POST"),
        ] {
            assert_eq!(
                route(m, p),
                Err(ApiError::MethodNotAllowed(allow)),
                "{m} {p}"
            );
        }
        let e = route("GET", "/v1/sessions/not-a-uuid").unwrap_err();
        assert_eq!((e.status(), e.code()), (400, "VALIDATION_ERROR"));
        assert!(e.body().contains(r#""field":"session_id""#));
        assert_eq!(
            Route::Action(SID.into(), SessionAction::Pause).pattern(),
            "/v1/sessions/:id/pause"
        );
    }

    #[test]
    fn logs_never_hold_a_push_token() {
        assert_eq!(
            loggable_path(&format!("/v1/sessions/{SID}/devices/fcm%3Asecret?x=1")),
            format!("/v1/sessions/{SID}/devices/<token>")
        );
        assert_eq!(
            loggable_path(&format!("/v1/sessions/{SID}/switch")),
            format!("/v1/sessions/{SID}/switch")
        );
    }

    #[test]
    fn error_bodies() {
        assert_eq!(
            ApiError::NotFound.body(),
            r#"{"error":{"code":"NOT_FOUND","message":"Route not found"}}"#
        );
        let rl = ApiError::Domain(DomainError::RateLimited {
            retry_after_seconds: 1,
        });
        assert_eq!(rl.status(), 429);
        assert_eq!(rl.retry_after_seconds(), Some(1));
        assert!(rl.body().contains(r#""code":"RATE_LIMIT_EXCEEDED""#));
        assert!(rl.body().ends_with(r#","retry_after_seconds":1}}"#));
        let conflict = ApiError::Domain(DomainError::VersionConflict {
            expected_version: 2,
            actual_version: 5,
        });
        assert!(conflict
            .body()
            .contains(r#""details":{"expected_version":2,"actual_version":5}"#));
        let internal = ApiError::Internal.body();
        assert_eq!(
            internal,
            r#"{"error":{"code":"INTERNAL_ERROR","message":"Internal server error"}}"#
        );
        assert_eq!(
            (
                ApiError::AuthNotConfigured.status(),
                ApiError::PayloadTooLarge.status()
            ),
            (500, 413)
        );
        let v = ApiError::Domain(DomainError::Validation(vec![Issue {
            field: "a".into(),
            message: "m".into(),
            code: IssueCode::TooBig,
        }]));
        assert_eq!(
            v.body(),
            r#"{"error":{"code":"VALIDATION_ERROR","message":"Request validation failed","details":[{"field":"a","message":"m","code":"too_big"}]}}"#
        );
    }

    #[test]
    fn bodies_and_versions() {
        assert_eq!(json_body(b""), Ok(json!({})));
        assert_eq!(json_body(b"{\"a\":1}"), Ok(json!({"a": 1})));
        assert_eq!(json_body(b"{nope"), Err(ApiError::InvalidJson));
        assert_eq!(
            json_body(&vec![b' '; MAX_BODY_BYTES + 1]),
            Err(ApiError::PayloadTooLarge)
        );
        assert_eq!(expected_version(Some("W/\"3\""), &json!({})), Ok(Some(3)));
        assert_eq!(
            expected_version(Some("4"), &json!({"expected_version": 4})),
            Ok(Some(4))
        );
        assert_eq!(
            expected_version(None, &json!({"expected_version": 7})),
            Ok(Some(7))
        );
        assert!(expected_version(Some("x"), &json!({})).is_err());
        assert!(expected_version(Some("4"), &json!({"expected_version": 5})).is_err());
        assert!(expected_version(None, &json!({"expected_version": "5"})).is_err());
    }

    #[test]
    fn switch_bodies() {
        let r = Route::Action(SID.into(), SessionAction::Switch);
        assert_eq!(
            command(&r, &json!({})),
            Ok(Some(Command::Switch {
                next_participant_id: None
            }))
        );
        assert_eq!(
            command(&r, &json!({"next_participant_id": SID.to_uppercase()})),
            Ok(Some(Command::Switch {
                next_participant_id: Some(SID.into())
            }))
        );
        assert_eq!(switch_lag(&json!({"lag_ms": 120})), Ok(Some(120)));
        assert_eq!(switch_lag(&json!({"lag_ms": null})), Ok(None));
        assert_eq!(switch_lag(&json!({"lag_ms": 60_000.0})), Ok(Some(60_000)));
        for bad in [
            json!({"next_participant_id": "x"}),
            json!({"next_participant_id": 3}),
            json!([1]),
            json!({"lag_ms": -1}),
            json!({"lag_ms": 60_001}),
            json!({"lag_ms": 1.5}),
            json!({"lag_ms": "5"}),
            json!({"lag_ms": 1e30}),
        ] {
            assert_eq!(
                command(&r, &bad).unwrap_err().code(),
                "VALIDATION_ERROR",
                "{bad}"
            );
        }
        assert_eq!(command(&Route::Time, &json!({})), Ok(None));
        assert!(matches!(
            command(&Route::Create, &json!({})),
            Err(ApiError::Domain(DomainError::Validation(_)))
        ));
    }

    #[test]
    fn roles() {
        let who = |role, sid: Option<&str>| Caller {
            sub: "u".into(),
            role,
            sid: sid.map(str::to_string),
            exp: None,
        };
        let get = Route::Get(SID.into());
        let switch = Route::Action(SID.into(), SessionAction::Switch);
        let pause = Route::Action(SID.into(), SessionAction::Pause);
        let other = "00000000-0000-4000-8000-000000000000";
        assert_eq!(authorize(&who(Role::Admin, None), &pause, None), Ok(false));
        assert_eq!(
            authorize(&who(Role::Host, Some(SID)), &pause, None),
            Ok(false)
        );
        assert_eq!(
            authorize(&who(Role::Host, Some(SID)), &Route::Create, Some(SID)),
            Ok(false)
        );
        assert_eq!(
            authorize(&who(Role::Host, Some(SID)), &Route::Create, Some(other))
                .unwrap_err()
                .status(),
            403
        );
        assert_eq!(
            authorize(&who(Role::Host, Some(other)), &get, None)
                .unwrap_err()
                .status(),
            403
        );
        assert_eq!(
            authorize(&who(Role::Participant, Some(SID)), &switch, None),
            Ok(true)
        );
        assert_eq!(
            authorize(&who(Role::Participant, Some(SID)), &get, None),
            Ok(false)
        );
        assert_eq!(
            authorize(&who(Role::Participant, Some(SID)), &pause, None)
                .unwrap_err()
                .code(),
            "FORBIDDEN"
        );
        assert_eq!(authorize(&who(Role::Viewer, None), &get, None), Ok(false));
        assert_eq!(
            authorize(&who(Role::Viewer, None), &switch, None)
                .unwrap_err()
                .status(),
            403
        );
        assert_eq!(
            authorize(&who(Role::Viewer, None), &Route::Create, None)
                .unwrap_err()
                .status(),
            403
        );
        assert_eq!(Role::parse("host"), Some(Role::Host));
        assert_eq!(Role::parse("root"), None);
    }

    #[test]
    fn response_shapes() {
        assert_eq!(
            serde_json::to_string(&TimeResponse::new(5)).unwrap(),
            r#"{"timestamp_ms":5,"server_version":"2.0.0","drift_tolerance_ms":50}"#
        );
        assert_eq!(data(&json!({"a": 1})), r#"{"data":{"a":1}}"#);
    }
}
