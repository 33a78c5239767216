//! The REST API on the gateway's own port (`REST_API=on`, the self-hosted
//! shape): axum glue around the HTTP core `synckairos_api`, which the edge
//! worker runs too. The store is the engine on this process's Redis
//! connection: one `EVALSHA` per command, one `GET` per read; `/v1/time`
//! is the gateway's continuous estimate of Redis `TIME`, with no round trip.

use crate::clock::{self, RedisClock};
use crate::Shared;
use axum::body::Body as AxumBody;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use synckairos_api::{Body, Incoming, IpLimit, IpLimiter, SessionStore, StoreError};
use synckairos_core::api::MAX_BODY_BYTES;
use synckairos_core::devices::{DeviceOp, DeviceReply};
use synckairos_core::script::{CallOptions, ScriptReply};
use synckairos_core::{DomainError, Request as Command, SyncState};
use synckairos_engine::{Engine, EngineError};

/// Sessions in Redis through the engine.
pub struct EngineStore {
    engine: Engine,
    clock: Arc<RedisClock>,
}

impl EngineStore {
    /// The store over `engine`, telling time by `clock`.
    pub fn new(engine: Engine, clock: Arc<RedisClock>) -> EngineStore {
        EngineStore { engine, clock }
    }
}

/// Redis out of reach, out of memory or past its plan's limits is a 503;
/// any other error is a 500.
fn store_error(e: EngineError) -> StoreError {
    match &e {
        EngineError::Redis(r) if r.is_io_error() || r.is_timeout() || r.is_connection_dropped() => {
            StoreError::Unavailable {
                reason: "redis unreachable".into(),
                cause: e.to_string(),
            }
        }
        EngineError::Redis(r) => match synckairos_core::script::unavailable_reason(&r.to_string())
            .or((r.code() == Some("OOM")).then_some("redis out of memory"))
        {
            Some(reason) => StoreError::Unavailable {
                reason: reason.into(),
                cause: e.to_string(),
            },
            None => StoreError::Internal(e.to_string()),
        },
        _ => StoreError::Internal(e.to_string()),
    }
}

impl SessionStore for EngineStore {
    async fn execute(
        &self,
        request: &Command,
        options: &CallOptions,
    ) -> Result<ScriptReply, StoreError> {
        self.engine
            .execute(request, options)
            .await
            .map_err(store_error)
    }

    async fn get(&self, session_id: &str) -> Result<Option<SyncState>, StoreError> {
        self.engine.get(session_id).await.map_err(store_error)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.engine.connection();
        match tokio::time::timeout(Duration::from_secs(2), crate::probe(&mut conn)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(store_error(e.into())),
            Err(_) => Err(StoreError::Unavailable {
                reason: "redis timeout".into(),
                cause: "the probe took over 2 s".into(),
            }),
        }
    }

    async fn time_ms(&self) -> Result<i64, StoreError> {
        Ok(self.clock.now_ms())
    }

    async fn devices(&self, op: &DeviceOp) -> Result<Result<DeviceReply, DomainError>, StoreError> {
        self.engine.devices(op, None).await.map_err(store_error)
    }
}

/// Most client addresses one instance tracks in one window. Past it a new
/// address goes uncounted (and is let through) until the window turns, so
/// forged addresses cannot grow memory without bound.
const MAX_TRACKED: usize = 100_000;

/// The general per-client limit, counted per instance in a fixed window
/// (`IP_RATE_LIMIT` requests per `IP_RATE_PERIOD_SECONDS`). N instances
/// behind a balancer allow up to N times the limit; a shared count would
/// cost a Redis round trip on every request (docs/API.md §3).
pub struct InstanceLimiter {
    limit: IpLimit,
    window: Mutex<(i64, HashMap<String, u64>)>,
}

impl InstanceLimiter {
    /// A limiter for `limit`.
    pub fn new(limit: IpLimit) -> InstanceLimiter {
        InstanceLimiter {
            limit,
            window: Mutex::new((0, HashMap::new())),
        }
    }

    fn count(&self, key: &str, now_ms: i64) -> bool {
        let window = now_ms / 1000 / self.limit.period_s.max(1) as i64;
        let mut guard = self.window.lock().expect("limiter lock");
        let (current, counts) = &mut *guard;
        if *current != window {
            *current = window;
            counts.clear();
        }
        if let Some(n) = counts.get_mut(key) {
            *n += 1;
            return *n <= self.limit.limit;
        }
        if counts.len() >= MAX_TRACKED {
            return true;
        }
        counts.insert(key.to_string(), 1);
        self.limit.limit >= 1
    }
}

impl IpLimiter for InstanceLimiter {
    async fn allow(&self, key: &str) -> Result<bool, String> {
        Ok(self.count(key, clock::local_ms()))
    }
}

/// The client's address: the configured proxy header's first entry, else
/// the peer.
pub(crate) fn client_ip(
    shared: &Shared,
    headers: &HeaderMap,
    peer: SocketAddr,
) -> std::net::IpAddr {
    shared
        .config
        .client_ip_header
        .as_ref()
        .and_then(|h| headers.get(h.as_str()))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(peer.ip())
}

/// Reads a body to its end, refusing it past [`MAX_BODY_BYTES`].
async fn read_body(
    headers: &HeaderMap,
    body: AxumBody,
) -> Result<axum::body::Bytes, Body<'static>> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES) {
        return Err(Body::TooLarge);
    }
    match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(Body::TooLarge),
        Err(e) => {
            tracing::warn!(error = %e, "reading a request body failed");
            Err(Body::Unreadable)
        }
    }
}

/// Every request the gateway's own routes do not take.
pub(crate) async fn handle(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    let header = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    // A value with bytes other than visible ASCII is handed on as read
    // (lossily), so the core refuses it (400) rather than ignoring it.
    let lossy = |name: &str| {
        headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()))
    };
    let (if_match, idempotency_key) = (lossy("if-match"), lossy("idempotency-key"));
    let read = read_body(headers, body).await;
    let ip = client_ip(&shared, headers, peer).to_string();
    let incoming = Incoming {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        authorization: header(header::AUTHORIZATION),
        if_match: if_match.as_deref(),
        idempotency_key: idempotency_key.as_deref(),
        origin: header(header::ORIGIN),
        client_ip: Some(&ip),
        body: match &read {
            Ok(bytes) => Body::Bytes(bytes),
            Err(e) => *e,
        },
        now_ms: clock::local_ms(),
        local: shared.local,
    };
    let handled = shared.api.handle(&incoming, &shared.ip_limiter).await;
    let r = handled.response;
    if let Some(error) = &handled.error {
        tracing::error!(method = %parts.method, path = %synckairos_core::api::loggable_path(parts.uri.path()), status = r.status, error = %error, "request failed");
    }
    let method = match parts.method.as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        "HEAD" => "HEAD",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        _ => "other",
    };
    let route =
        synckairos_core::api::route(method, parts.uri.path()).map_or("unmatched", |r| r.pattern());
    shared.metrics.rest.observe(
        method,
        route,
        r.status,
        started.elapsed().as_secs_f64() * 1000.0,
    );
    let mut response = if r.body.is_empty() {
        StatusCode::from_u16(r.status)
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            .into_response()
    } else {
        (
            StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
            r.body,
        )
            .into_response()
    };
    let out = response.headers_mut();
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for (k, v) in r.headers {
        if let Ok(v) = HeaderValue::from_str(&v) {
            out.append(k, v);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_out_of_memory_and_plan_limits_are_unavailable_not_internal() {
        let oom = redis::RedisError::from((
            redis::ErrorKind::Extension,
            "OOM",
            "command not allowed when used memory > 'maxmemory'.".to_string(),
        ));
        assert!(matches!(
            store_error(EngineError::Redis(oom)),
            StoreError::Unavailable { .. }
        ));
        let limit = redis::RedisError::from((
            redis::ErrorKind::Extension,
            "ERR",
            "max requests limit exceeded. Limit: 10000, Usage: 10000.".to_string(),
        ));
        match store_error(EngineError::Redis(limit)) {
            StoreError::Unavailable { reason, .. } => {
                assert_eq!(reason, "redis request limit exceeded")
            }
            other => panic!("{other:?}"),
        }
        let other = redis::RedisError::from((redis::ErrorKind::Parse, "boom"));
        assert!(matches!(
            store_error(EngineError::Redis(other)),
            StoreError::Internal(_)
        ));
    }

    #[test]
    fn the_instance_limit_counts_per_address_per_window() {
        let l = InstanceLimiter::new(IpLimit {
            limit: 2,
            period_s: 10,
        });
        let t = 1_795_455_540_000;
        assert!(l.count("a", t));
        assert!(l.count("a", t + 1));
        assert!(!l.count("a", t + 2), "the third in one window is refused");
        assert!(l.count("b", t + 3), "another address has its own count");
        assert!(l.count("a", t + 10_000), "a new window starts over");
        let zero = InstanceLimiter::new(IpLimit {
            limit: 0,
            period_s: 10,
        });
        assert!(!zero.count("a", t));
    }

    #[test]
    fn forged_addresses_cannot_grow_the_table_without_bound() {
        let l = InstanceLimiter::new(IpLimit {
            limit: 1,
            period_s: 60,
        });
        let t = 1_795_455_540_000;
        for i in 0..MAX_TRACKED + 10 {
            l.count(&i.to_string(), t);
        }
        assert_eq!(l.window.lock().unwrap().1.len(), MAX_TRACKED);
        assert!(l.count("a", t + 60_000));
        assert_eq!(l.window.lock().unwrap().1.len(), 1);
    }
}
