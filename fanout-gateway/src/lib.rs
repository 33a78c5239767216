//! # synckairos-fanout-gateway
//!
//! The long-lived process near the clients: it subscribes to the Redis
//! channels of the sessions its clients watch and pushes every snapshot over
//! WebSocket (docs/API.md §5), serves the time every clock is computed from (Redis
//! `TIME`, estimated continuously), and applies `expire` at each deadline.
//!
//! [`run`] takes the bound listeners (the public one, and the internal one of
//! `/metrics`) and a shutdown future, so tests start it on port 0 and stop it
//! when they like; `main.rs` is glue.
#![deny(missing_docs)]

pub mod clock;
pub mod config;
mod conn;
pub mod expiry;
pub mod hub;
pub mod metrics;
pub mod outbox;
pub mod rest;

use anyhow::Context as _;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use synckairos_core::api::{authorize, Route, TimeResponse};
use synckairos_core::validate::parse_uuid;
use synckairos_core::ws::{CloseCode, PolicyReason, MAX_CLIENT_MESSAGE_BYTES};
use synckairos_engine::Engine;
use tokio::sync::watch;

pub use config::Config;

/// What every connection and task shares.
pub struct Shared {
    /// The configuration.
    pub config: Config,
    /// Scripts and reads (snapshots, `expire`).
    pub engine: Engine,
    /// Watchers and the subscriber.
    pub hub: Arc<hub::Hub>,
    /// The Redis clock estimate.
    pub clock: Arc<clock::RedisClock>,
    /// The REST API (served when `REST_API=on`).
    pub api: synckairos_api::Api<rest::EngineStore>,
    /// The general per-client limit of the REST API, per instance.
    pub ip_limiter: rest::InstanceLimiter,
    /// The listener is bound to a loopback address: only then does
    /// `AUTH_MODE=disabled` take effect.
    pub local: bool,
    /// Counters and histograms.
    pub metrics: Arc<metrics::Metrics>,
    /// Turns true at shutdown.
    pub stop: watch::Receiver<bool>,
    next_id: AtomicU64,
    /// New connections per client address in the current second.
    per_ip: std::sync::Mutex<(i64, std::collections::HashMap<std::net::IpAddr, u64>)>,
    /// Open connections per client address (only addresses with one).
    open_per_ip: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, u64>>,
}

/// One open connection of an address, counted until it drops.
struct IpSlot {
    shared: Arc<Shared>,
    ip: std::net::IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.shared.open_per_ip.lock().expect("open-per-ip lock");
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

impl Shared {
    /// Holds one of `ip`'s open connections; `None` when it holds the most
    /// it may.
    fn hold(self: &Arc<Self>, ip: std::net::IpAddr) -> Option<IpSlot> {
        let cap = self.config.max_connections_per_ip;
        let mut open = self.open_per_ip.lock().expect("open-per-ip lock");
        let n = open.entry(ip).or_insert(0);
        if cap > 0 && *n >= cap {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            shared: Arc::clone(self),
            ip,
        })
    }

    /// Counts a new connection of `ip`; `false` when it is over the limit.
    fn admit(&self, ip: std::net::IpAddr) -> bool {
        let limit = self.config.connections_per_ip_per_second;
        if limit == 0 {
            return true;
        }
        let second = clock::local_ms() / 1000;
        let mut guard = self.per_ip.lock().expect("per-ip lock");
        let (window, counts) = &mut *guard;
        if *window != second {
            *window = second;
            counts.clear(); // one second of addresses at most: bounded
        }
        let n = counts.entry(ip).or_insert(0);
        *n += 1;
        *n <= limit
    }
}

/// Serves until `shutdown` completes; then stops accepting, closes every
/// client with 1012 (reconnect elsewhere) and waits up to the configured
/// grace for them to go. `listener` is the public port (`/ws`, `/health`,
/// `/ready`, `/v1/time`, REST); `metrics_listener` the internal one, which
/// serves `/metrics` and nothing else (`METRICS_LISTEN`).
pub async fn run(
    listener: tokio::net::TcpListener,
    metrics_listener: tokio::net::TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // rustls needs one process-wide crypto provider for rediss://; a second
    // call (tests run several gateways in one process) is a harmless no-op.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Messages name the Redis by its redacted URL: host and port, never the password.
    let nodes = hub::Nodes::new(&config.redis)
        .with_context(|| format!("{} is not a Redis target", config.redis))?;
    let engine = Engine::connect_target(&config.redis, config.api.settings.clone())
        .await
        .with_context(|| format!("connecting to Redis at {}", config.redis))?;
    let metrics = Arc::new(metrics::Metrics::default());
    let (stop_tx, stop) = watch::channel(false);
    let (hub, subscriber) = hub::Hub::new(
        nodes,
        engine.connection(),
        config.api.settings.shards,
        Arc::clone(&metrics),
        stop.clone(),
    );
    let clock = Arc::new(clock::RedisClock::default());
    let ip_limiter = rest::InstanceLimiter::new(config.api.ip_limit);
    let api = synckairos_api::Api::new(
        config.api.clone(),
        rest::EngineStore::new(engine.clone(), Arc::clone(&clock)),
    );
    let shared = Arc::new(Shared {
        config,
        engine,
        hub,
        clock,
        api,
        ip_limiter,
        local: listener.local_addr()?.ip().is_loopback(),
        metrics,
        stop,
        next_id: AtomicU64::new(1),
        per_ip: Default::default(),
        open_per_ip: Default::default(),
    });
    let tasks = vec![tokio::spawn(subscriber)];
    // The scheduler's lease renewals are also the clock's samples.
    let mut expiry_task = if shared.config.expiry {
        tokio::spawn(expiry::run(Arc::clone(&shared)))
    } else {
        tokio::spawn(expiry::clock_only(Arc::clone(&shared)))
    };
    let app = Router::new()
        .route("/ws", get(ws))
        .route("/ready", get(ready));
    // With REST on, the HTTP core answers everything else (`/health` and
    // `/v1/time` too, with its CORS headers, and 404 for `/metrics`, which
    // lives on the internal port); WebSocket-only, a fixed few.
    let app = if shared.config.rest {
        app.fallback(rest::handle)
    } else {
        app.route("/health", get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }))
            .route("/v1/time", get(time))
            .route("/metrics", get(metrics_moved))
            .fallback(|| async {
                (
                    StatusCode::BAD_REQUEST,
                    axum::Json(serde_json::json!({"error": {"code": "INVALID_PATH", "message": "The WebSocket endpoint is /ws"}})),
                )
            })
    }
    .with_state(Arc::clone(&shared));
    let metrics_app = Router::new()
        .route("/metrics", get(metrics_text))
        .with_state(Arc::clone(&shared));
    tracing::info!(
        listen = %listener.local_addr()?,
        metrics = %metrics_listener.local_addr()?,
        "fanout-gateway serving"
    );
    // Kept alive until run returns: a dropped sender would read as "stopped".
    let stop_tx = Arc::new(stop_tx);
    let signal = Arc::clone(&stop_tx);
    // No Nagle: a snapshot is one small write that must leave at once
    // (with Nagle and delayed ACKs, a message could wait ~40 ms).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp: &mut tokio::net::TcpStream| {
        let _ = tcp.set_nodelay(true);
    });
    let serve = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        tracing::info!("shutdown: closing clients with 1012");
        let _ = signal.send(true);
    });
    let mut metrics_stop = shared.stop.clone();
    let metrics_serve =
        axum::serve(metrics_listener, metrics_app).with_graceful_shutdown(async move {
            let _ = metrics_stop.wait_for(|stopped| *stopped).await;
        });
    let (served, metrics_served) = tokio::join!(serve, metrics_serve);
    served.context("serving HTTP")?;
    metrics_served.context("serving /metrics (METRICS_LISTEN)")?;
    let deadline = tokio::time::Instant::now() + shared.config.shutdown_grace;
    while shared.metrics.connections.load(Relaxed) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The scheduler releases its lease when it sees the stop.
    if tokio::time::timeout(Duration::from_secs(2), &mut expiry_task)
        .await
        .is_err()
    {
        expiry_task.abort();
    }
    for t in tasks {
        t.abort();
    }
    drop(stop_tx);
    tracing::info!("fanout-gateway stopped");
    Ok(())
}

#[derive(Deserialize)]
struct WsQuery {
    #[serde(rename = "sessionId")]
    session_id: Option<String>,
    token: Option<String>,
}

async fn ws(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Query<WsQuery>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    if *shared.stop.borrow() {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let refuse = |status: StatusCode, why: &'static str| {
        shared.metrics.refused.fetch_add(1, Relaxed);
        (status, why).into_response()
    };
    if shared.metrics.connections.load(Relaxed) >= shared.config.max_connections as i64 {
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "connection limit reached");
    }
    if let (Some(allowed), Some(origin)) =
        (&shared.config.allowed_origins, headers.get(header::ORIGIN))
    {
        let origin = origin
            .to_str()
            .unwrap_or("")
            .trim_end_matches('/')
            .to_ascii_lowercase();
        if !allowed.contains(&origin) {
            return refuse(StatusCode::FORBIDDEN, "origin not allowed");
        }
    }
    let ip = rest::client_ip(&shared, &headers, peer);
    if !shared.admit(ip) {
        return refuse(
            StatusCode::TOO_MANY_REQUESTS,
            "too many new connections from this address",
        );
    }
    // Refusals are close frames (1008), as the contract says: a browser's
    // WebSocket API cannot see an HTTP status.
    let refusal: Result<(String, Option<_>), PolicyReason> = (|| {
        let raw = q
            .session_id
            .as_deref()
            .ok_or(PolicyReason::MissingSessionId)?;
        let sid = parse_uuid(raw).ok_or(PolicyReason::InvalidSessionId)?;
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let from_query = q.token.as_deref().map(|t| format!("Bearer {t}"));
        let now_s = (clock::local_ms() / 1000) as u64;
        let caller = shared
            .config
            .api
            .auth
            .authenticate(from_query.as_deref().or(bearer), now_s, shared.local)
            .map_err(|_| PolicyReason::Unauthorized)?;
        if let Some(c) = &caller {
            authorize(c, &Route::Get(sid.clone()), None).map_err(|_| PolicyReason::Forbidden)?;
        }
        Ok((sid, caller))
    })();
    let upgrade = upgrade
        .max_message_size(MAX_CLIENT_MESSAGE_BYTES)
        .max_frame_size(MAX_CLIENT_MESSAGE_BYTES)
        .read_buffer_size(1024)
        .write_buffer_size(0);
    match refusal {
        Ok((sid, caller)) => {
            let Some(slot) = shared.hold(ip) else {
                return refuse(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too many open connections from this address",
                );
            };
            let id = shared.next_id.fetch_add(1, Relaxed);
            upgrade.on_upgrade(move |socket| async move {
                conn::serve(shared, socket, sid, caller, id).await;
                drop(slot);
            })
        }
        Err(reason) => {
            shared.metrics.refused.fetch_add(1, Relaxed);
            upgrade.on_upgrade(move |mut socket| async move {
                use axum::extract::ws::{CloseFrame, Message};
                let _ = socket
                    .send(Message::Close(Some(CloseFrame {
                        code: CloseCode::Policy.code(),
                        reason: reason.reason().into(),
                    })))
                    .await;
            })
        }
    }
}

async fn ready(State(shared): State<Arc<Shared>>) -> Response {
    match readiness(&shared).await {
        Ok(()) => axum::Json(serde_json::json!({"status": "ready"})).into_response(),
        Err(why) => not_ready(why),
    }
}

/// What `/ready` answers (and `synckairos_gateway_ready` reports): ready
/// when the subscriber is linked and Redis answers.
async fn readiness(shared: &Shared) -> Result<(), &'static str> {
    let linked = shared.hub.linked.load(Relaxed);
    // A clock sample (every lease renewal is one) that recent proves Redis
    // answers: a probe then costs Redis nothing.
    let fresh = expiry::RENEW_EVERY * 2;
    if linked && shared.clock.last_sample_age().is_some_and(|a| a < fresh) {
        return Ok(());
    }
    let mut conn = shared.engine.connection();
    let ping = tokio::time::timeout(Duration::from_secs(2), probe(&mut conn))
        .await
        .unwrap_or_else(|_| Err(redis::RedisError::from((redis::ErrorKind::Io, "timeout"))));
    match (ping, linked) {
        (Ok(_), true) => Ok(()),
        (Err(_), _) => Err("redis unreachable"),
        (Ok(_), false) => Err("not subscribed"),
    }
}

/// Whether Redis answers: one single-key command (`TYPE` of the expiry
/// lease). Not `PING`, which redis-rs sends to every node of a cluster, so
/// a killed node (gone from the topology only after a refresh) would fail
/// it and pile connection attempts on the engine's cluster connection; a
/// keyed command asks the one primary of the lease's slot, the node the
/// clock samples too.
pub(crate) async fn probe(
    conn: &mut impl redis::aio::ConnectionLike,
) -> redis::RedisResult<String> {
    redis::cmd("TYPE")
        .arg(synckairos_core::keys::EXPIRY_LEASE)
        .query_async(conn)
        .await
}

fn not_ready(why: &str) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(serde_json::json!({"status": "not_ready", "error": why})),
    )
        .into_response()
}

async fn metrics_text(State(shared): State<Arc<Shared>>) -> Response {
    // The link and readiness gauges are read when scraped.
    let m = &shared.metrics;
    m.redis_connected
        .store(shared.hub.linked.load(Relaxed).into(), Relaxed);
    m.ready
        .store(readiness(&shared).await.is_ok().into(), Relaxed);
    m.redis_rebuilds
        .store(shared.engine.connection().rebuilds(), Relaxed);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        shared.metrics.render(),
    )
        .into_response()
}

/// `/metrics` on the public port of the WebSocket-only gateway: it is
/// served on `METRICS_LISTEN` only.
async fn metrics_moved() -> Response {
    let e = synckairos_core::api::ApiError::NotFound;
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "application/json")],
        e.body(),
    )
        .into_response()
}

async fn time(State(shared): State<Arc<Shared>>) -> Response {
    axum::Json(TimeResponse::new(shared.clock.now_ms())).into_response()
}
