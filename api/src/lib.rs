//! # synckairos-api
//!
//! The one HTTP core of SyncKairos (docs/DESIGN.md §8). A transport hands it
//! a request ([`Incoming`]: method, path, the headers that matter, body,
//! caller's address, its own clock for token expiry) and writes back what it
//! answers ([`Handled`]: status, headers, body, and a cause for the log).
//! Everything between (routing, the body limit, auth, validation, roles,
//! If-Match, Idempotency-Key, the one store call, response shapes,
//! RateLimit and replay headers, CORS, `/ready`, `/v1/time`) happens here,
//! over a [`SessionStore`]: the edge worker's is Upstash's REST API, the
//! native server's is the engine on a Redis connection.
#![deny(missing_docs)]

pub mod config;
pub mod response;

pub use config::{AllowedOrigins, ApiConfig, ConfigError, IpLimit};
pub use response::{ApiResponse, Probe};

use std::future::Future;
use synckairos_core::api::{
    self as wire, ApiError, Route, SessionAction, SwitchResponse, TimeResponse,
};
use synckairos_core::devices::{DeviceOp, DeviceReply, DeviceResponse};
use synckairos_core::keys::{valid_idempotency_key, IDEMPOTENCY_KEY_MAX_LEN};
use synckairos_core::model::Reply;
use synckairos_core::script::{CallOptions, ScriptReply};
use synckairos_core::{Command, DomainError, Issue, IssueCode, Request, SyncState};

/// Why a store call failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreError {
    /// Redis is out of reach or too slow (503; `/ready` shows `reason`).
    Unavailable {
        /// A short text that is safe to show a client (`redis timeout`).
        reason: String,
        /// The whole cause, for the log only.
        cause: String,
    },
    /// Anything else: a bug or an unexpected reply (500, generic body).
    Internal(String),
}

impl StoreError {
    fn public_reason(&self) -> &str {
        match self {
            StoreError::Unavailable { reason, .. } => reason,
            StoreError::Internal(_) => "unexpected reply from redis",
        }
    }

    fn cause(&self) -> &str {
        match self {
            StoreError::Unavailable { cause, .. } | StoreError::Internal(cause) => cause,
        }
    }
}

/// Where sessions live: four calls, each one round trip to Redis.
pub trait SessionStore {
    /// Runs one command as one script call (`EVALSHA`, `EVAL` on `NOSCRIPT`).
    fn execute(
        &self,
        request: &Request,
        options: &CallOptions,
    ) -> impl Future<Output = Result<ScriptReply, StoreError>>;
    /// The stored state of a session (one `GET`).
    fn get(&self, session_id: &str) -> impl Future<Output = Result<Option<SyncState>, StoreError>>;
    /// Whether Redis answers (`/ready`).
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>>;
    /// Redis `TIME` in epoch ms (`/v1/time`).
    fn time_ms(&self) -> impl Future<Output = Result<i64, StoreError>>;
    /// Registers or removes a push device: one call of the devices script
    /// ([`synckairos_core::devices::call`]), its reply parsed with
    /// [`synckairos_core::devices::parse_reply`].
    fn devices(
        &self,
        op: &DeviceOp,
    ) -> impl Future<Output = Result<Result<DeviceReply, DomainError>, StoreError>>;
}

/// The general per-client limit: counts one request for `key` and says
/// whether it is within the limit. An `Err` (the limiter failed) lets the
/// request through, logged: a broken limiter must not take the API down.
pub trait IpLimiter {
    /// Counts a request of `key`.
    fn allow(&self, key: &str) -> impl Future<Output = Result<bool, String>>;
}

/// No general limit.
pub struct Unlimited;

impl IpLimiter for Unlimited {
    async fn allow(&self, _key: &str) -> Result<bool, String> {
        Ok(true)
    }
}

/// A request body as the transport could read it.
#[derive(Clone, Copy, Debug)]
pub enum Body<'a> {
    /// Read whole, at most [`wire::MAX_BODY_BYTES`] (a longer one is refused
    /// here with 413).
    Bytes(&'a [u8]),
    /// The transport stopped reading past the limit (413).
    TooLarge,
    /// Reading failed midway (400 `INVALID_BODY`): never treated as empty,
    /// so a switch cannot silently lose its `next_participant_id`.
    Unreadable,
}

impl Default for Body<'_> {
    fn default() -> Self {
        Body::Bytes(&[])
    }
}

/// An HTTP request as the core sees it.
#[derive(Clone, Debug, Default)]
pub struct Incoming<'a> {
    /// `GET`, `POST`, …
    pub method: &'a str,
    /// The path (a query string is ignored).
    pub path: &'a str,
    /// `Authorization`.
    pub authorization: Option<&'a str>,
    /// `If-Match`.
    pub if_match: Option<&'a str>,
    /// `Idempotency-Key`.
    pub idempotency_key: Option<&'a str>,
    /// `Origin` (CORS).
    pub origin: Option<&'a str>,
    /// The client's address, the key of the general rate limit.
    pub client_ip: Option<&'a str>,
    /// The body.
    pub body: Body<'a>,
    /// The transport's clock (epoch ms), for token expiry only: session time
    /// is always Redis time.
    pub now_ms: i64,
    /// The request arrived over loopback (see
    /// `synckairos_auth::AuthConfig::authenticate`): only then does
    /// `AUTH_MODE=disabled` let it through unauthenticated.
    pub local: bool,
}

/// A response and, when something went wrong inside, the full cause for the
/// log (never for the client).
#[derive(Debug, PartialEq, Eq)]
pub struct Handled {
    /// What the client gets.
    pub response: ApiResponse,
    /// What the log gets.
    pub error: Option<String>,
}

impl Handled {
    fn ok(response: ApiResponse) -> Handled {
        Handled {
            response,
            error: None,
        }
    }

    fn refused(e: ApiError) -> Handled {
        Handled::ok(ApiResponse::error(&e))
    }

    fn failed(e: ApiError, cause: String) -> Handled {
        Handled {
            response: ApiResponse::error(&e),
            error: Some(cause),
        }
    }

    fn store_failed(e: &StoreError) -> Handled {
        let public = match e {
            StoreError::Unavailable { .. } => ApiError::Unavailable,
            StoreError::Internal(_) => ApiError::Internal,
        };
        Handled::failed(public, e.cause().to_string())
    }
}

/// The REST API over one store.
pub struct Api<S> {
    backend: Result<Backend<S>, String>,
}

struct Backend<S> {
    config: ApiConfig,
    store: S,
}

impl<S: SessionStore> Api<S> {
    /// The API over `store`.
    pub fn new(config: ApiConfig, store: S) -> Api<S> {
        Api {
            backend: Ok(Backend { config, store }),
        }
    }

    /// An API that cannot reach a store because it is misconfigured: it
    /// answers `/health`, reports `not_ready`, and 503 to everything else.
    pub fn misconfigured(reason: impl std::fmt::Display) -> Api<S> {
        Api {
            backend: Err(reason.to_string()),
        }
    }

    /// The configuration, when there is one.
    pub fn config(&self) -> Option<&ApiConfig> {
        self.backend.as_ref().ok().map(|b| &b.config)
    }

    /// The store, when there is one.
    pub fn store(&self) -> Option<&S> {
        self.backend.as_ref().ok().map(|b| &b.store)
    }

    /// Answers a request; `limiter` counts every `/v1` request but preflights.
    pub async fn handle(&self, req: &Incoming<'_>, limiter: &impl IpLimiter) -> Handled {
        let route = wire::route(req.method, req.path);
        let preflight = matches!(route, Ok(Route::Preflight));
        let mut handled = match self.limited(&route, req, limiter).await {
            Ok(Some(refused)) => refused,
            Ok(None) => self.dispatch(route, req).await,
            // Fail open, loudly: the log line is the alarm.
            Err(cause) => {
                let mut h = self.dispatch(route, req).await;
                h.error
                    .get_or_insert(format!("rate limiter failed, request let through: {cause}"));
                h
            }
        };
        let allowed = match &self.backend {
            Ok(b) => &b.config.cors,
            Err(_) => &AllowedOrigins::Any,
        };
        cors(&mut handled.response, allowed, req.origin, preflight);
        handled
    }

    /// The general limit's refusal when this request is over it, `None`
    /// when it may go on, or why the limiter could not tell.
    async fn limited(
        &self,
        route: &Result<Route, ApiError>,
        req: &Incoming<'_>,
        limiter: &impl IpLimiter,
    ) -> Result<Option<Handled>, String> {
        let Ok(backend) = &self.backend else {
            return Ok(None);
        };
        let counted = match route {
            Ok(Route::Health | Route::Ready | Route::Preflight) => false,
            _ => backend.config.ip_limit.limit > 0 && req.path.starts_with("/v1/"),
        };
        if !counted {
            return Ok(None);
        }
        let key = req.client_ip.unwrap_or("unknown");
        if limiter.allow(key).await? {
            return Ok(None);
        }
        let l = backend.config.ip_limit;
        let mut response = ApiResponse::error(&ApiError::Domain(DomainError::RateLimited {
            retry_after_seconds: l.period_s,
        }));
        response.headers.extend([
            ("ratelimit-policy", format!("{};w={}", l.limit, l.period_s)),
            ("ratelimit-limit", l.limit.to_string()),
            ("ratelimit-remaining", "0".to_string()),
            ("ratelimit-reset", l.period_s.to_string()),
        ]);
        Ok(Some(Handled::ok(response)))
    }

    async fn dispatch(&self, route: Result<Route, ApiError>, req: &Incoming<'_>) -> Handled {
        match route {
            Err(e) => Handled::refused(e),
            Ok(Route::Health) => Handled::ok(ApiResponse::json(
                200,
                &Probe {
                    status: "ok",
                    error: None,
                },
            )),
            Ok(Route::Ready) => self.ready().await,
            Ok(Route::Time) => self.time().await,
            Ok(Route::OpenApi) => Handled::ok(ApiResponse::json(
                200,
                &synckairos_core::openapi::document(),
            )),
            Ok(Route::Preflight) => Handled::ok(ApiResponse::empty(204)),
            Ok(route) => match self.session(route, req).await {
                Ok(h) | Err(h) => h,
            },
        }
    }

    /// A `/v1/sessions` route: authenticate, validate, authorize, then exactly
    /// one store call (a read, or one script).
    async fn session(&self, route: Route, req: &Incoming<'_>) -> Result<Handled, Handled> {
        let backend = self.backend()?;
        let now_s = u64::try_from(req.now_ms / 1000).unwrap_or(0);
        let caller = backend
            .config
            .auth
            .authenticate(req.authorization, now_s, req.local)
            .map_err(Handled::refused)?;
        let bytes = match req.body {
            Body::Bytes(b) => b,
            Body::TooLarge => return Err(Handled::refused(ApiError::PayloadTooLarge)),
            Body::Unreadable => return Err(Handled::refused(ApiError::UnreadableBody)),
        };
        let body = wire::json_body(bytes).map_err(Handled::refused)?;
        if let Some(op) = wire::device_op(&route, &body).map_err(Handled::refused)? {
            return self.devices(backend, &route, op, caller.as_ref()).await;
        }
        let command = wire::command(&route, &body).map_err(Handled::refused)?;
        let created = match &command {
            Some(Command::Create(spec)) => Some(spec.session_id.clone()),
            _ => None,
        };
        let only_if_active = match &caller {
            Some(c) => wire::authorize(c, &route, created.as_deref()).map_err(Handled::refused)?,
            None => false,
        };
        let Some(command) = command else {
            return self.read(backend, &route).await;
        };
        let expected = wire::expected_version(req.if_match, &body).map_err(Handled::refused)?;
        let idempotency_key = idempotency_key(req.idempotency_key).map_err(Handled::refused)?;
        let mut request = wire::request(&route, command, expected, caller.as_ref(), only_if_active);
        if matches!(request.command, Command::Switch { .. }) {
            request.lag_ms = wire::switch_lag(&body).map_err(Handled::refused)?;
        }
        let options = CallOptions {
            idempotency_key,
            now_ms: None,
        };
        let reply = backend
            .store
            .execute(&request, &options)
            .await
            .map_err(|e| Handled::store_failed(&e))?;
        respond(&route, reply)
    }

    /// `POST …/devices` and `DELETE …/devices/:token`: who may, then one
    /// call of the devices script. The token is never logged nor echoed.
    async fn devices(
        &self,
        backend: &Backend<S>,
        route: &Route,
        mut op: DeviceOp,
        caller: Option<&synckairos_core::api::Caller>,
    ) -> Result<Handled, Handled> {
        if let Some(c) = caller {
            wire::authorize(c, route, None).map_err(Handled::refused)?;
            wire::authorize_device(c, &mut op).map_err(Handled::refused)?;
        }
        let reply = backend
            .store
            .devices(&op)
            .await
            .map_err(|e| Handled::store_failed(&e))?;
        Ok(Handled::ok(match (reply, &op) {
            (
                Ok(DeviceReply::Registered {
                    created,
                    expires_at_ms,
                }),
                DeviceOp::Register { registration, .. },
            ) => ApiResponse::data(
                if created { 201 } else { 200 },
                &DeviceResponse {
                    participant_id: registration.participant_id.clone(),
                    platform: registration.platform,
                    expires_at: synckairos_core::Timestamp(expires_at_ms),
                },
            ),
            (Ok(DeviceReply::Removed { .. }), DeviceOp::Remove { .. }) => ApiResponse::empty(204),
            (Ok(other), _) => {
                return Err(Handled::failed(
                    ApiError::Internal,
                    format!("devices script answered {other:?} to another command"),
                ))
            }
            (Err(e), _) => ApiResponse::error(&ApiError::Domain(e)),
        }))
    }

    /// `GET /v1/sessions/:id`: one read of the stored record.
    async fn read(&self, backend: &Backend<S>, route: &Route) -> Result<Handled, Handled> {
        let id = route.session_id().unwrap_or_default();
        match backend.store.get(id).await {
            Ok(Some(state)) => Ok(Handled::ok(ApiResponse::data(200, &state))),
            Ok(None) => Ok(Handled::refused(ApiError::Domain(
                DomainError::SessionNotFound {
                    session_id: id.to_string(),
                },
            ))),
            Err(e) => Err(Handled::store_failed(&e)),
        }
    }

    fn backend(&self) -> Result<&Backend<S>, Handled> {
        self.backend
            .as_ref()
            .map_err(|e| Handled::failed(ApiError::Unavailable, format!("misconfigured: {e}")))
    }

    async fn ready(&self) -> Handled {
        let not_ready = |reason: &str, cause: String| Handled {
            response: ApiResponse::json(
                503,
                &Probe {
                    status: "not_ready",
                    error: Some(reason),
                },
            ),
            error: Some(cause),
        };
        let backend = match &self.backend {
            Ok(backend) => backend,
            Err(e) => return not_ready("misconfigured", format!("misconfigured: {e}")),
        };
        match backend.store.ping().await {
            Ok(()) => Handled::ok(ApiResponse::json(
                200,
                &Probe {
                    status: "ready",
                    error: None,
                },
            )),
            Err(e) => not_ready(e.public_reason(), e.cause().to_string()),
        }
    }

    async fn time(&self) -> Handled {
        let backend = match self.backend() {
            Ok(backend) => backend,
            Err(handled) => return handled,
        };
        match backend.store.time_ms().await {
            // Not wrapped in `data`: the contract shows this body bare.
            Ok(ms) => Handled::ok(ApiResponse::json(200, &TimeResponse::new(ms))),
            Err(e) => Handled::store_failed(&e),
        }
    }
}

/// The `Idempotency-Key` header: absent or blank is none.
fn idempotency_key(header: Option<&str>) -> Result<Option<String>, ApiError> {
    match header.map(str::trim) {
        None | Some("") => Ok(None),
        Some(k) if valid_idempotency_key(k) => Ok(Some(k.to_string())),
        Some(_) => Err(ApiError::Domain(DomainError::Validation(vec![Issue {
            field: "Idempotency-Key".into(),
            message: format!(
                "Idempotency-Key must be 1-{IDEMPOTENCY_KEY_MAX_LEN} visible ASCII characters"
            ),
            code: IssueCode::InvalidFormat,
        }]))),
    }
}

/// A script's reply as the route's response, with its RateLimit and replay
/// headers.
fn respond(route: &Route, reply: ScriptReply) -> Result<Handled, Handled> {
    let mut response = match reply.result {
        Ok(Reply::State {
            state,
            expired_participant_id,
        }) => match route {
            Route::Create => ApiResponse::data(201, &*state),
            Route::Action(_, SessionAction::Switch) => ApiResponse::data(
                200,
                &SwitchResponse::new(&state, expired_participant_id.as_deref()),
            ),
            _ => ApiResponse::data(200, &*state),
        },
        Ok(Reply::Deleted { .. }) => ApiResponse::empty(204),
        Ok(Reply::NotDue { .. }) => {
            return Err(Handled::failed(
                ApiError::Internal,
                "not_due reply to a REST command".into(),
            ))
        }
        Err(e) => ApiResponse::error(&ApiError::Domain(e)),
    };
    if let Some(rate) = reply.rate {
        response.headers.extend([
            ("ratelimit-policy", rate.policy()),
            ("ratelimit-limit", rate.limit.to_string()),
            ("ratelimit-remaining", rate.remaining.to_string()),
            ("ratelimit-reset", rate.reset_seconds.to_string()),
        ]);
    }
    if reply.replayed {
        response
            .headers
            .push(("idempotent-replayed", "true".into()));
    }
    Ok(Handled::ok(response))
}

/// CORS headers: the allowed origin (`*`, or the request's `Origin` when it
/// is on the list, with `Vary: Origin`) and the headers a page may read; on a
/// preflight also the methods and headers it may send.
fn cors(r: &mut ApiResponse, allowed: &AllowedOrigins, origin: Option<&str>, preflight: bool) {
    match allowed {
        AllowedOrigins::Any => r.headers.push(("access-control-allow-origin", "*".into())),
        AllowedOrigins::List(list) => {
            r.headers.push(("vary", "origin".into()));
            match origin.map(|o| o.trim_end_matches('/')) {
                Some(o) if list.iter().any(|a| a.eq_ignore_ascii_case(o)) => r
                    .headers
                    .push(("access-control-allow-origin", o.to_string())),
                _ => return,
            }
        }
    }
    if preflight {
        r.headers.extend([
            (
                "access-control-allow-methods",
                "GET, POST, DELETE, OPTIONS".to_string(),
            ),
            (
                "access-control-allow-headers",
                "authorization, content-type, if-match, idempotency-key".to_string(),
            ),
            ("access-control-max-age", "86400".to_string()),
        ]);
    } else {
        r.headers.push((
            "access-control-expose-headers",
            "ratelimit-policy, ratelimit-limit, ratelimit-remaining, ratelimit-reset, retry-after, idempotent-replayed".to_string(),
        ));
    }
}

#[cfg(test)]
mod tests;
