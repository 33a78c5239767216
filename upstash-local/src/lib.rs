//! # upstash-local: a development and test stand-in for Upstash's Redis REST API
//!
//! **Not for production.** This crate exists so that SyncKairos's edge worker
//! (which talks to Upstash Redis over Upstash's REST API) can be developed and
//! tested on one machine, against a real local `redis-server`. Upstash's own
//! emulator cannot be installed here. Production uses Upstash itself.
//!
//! It serves what Upstash's REST API documentation
//! (<https://upstash.com/docs/redis/features/restapi>) specifies:
//!
//! - `POST /` with a JSON array body (`["SET","k","v","EX",100]`): `200
//!   {"result": ...}`; a Redis error is `400 {"error": "<Redis's text>"}`.
//! - The path form `GET /set/k/v` (segments percent-decoded), and `POST
//!   /set/k` with the value as the raw (binary-safe) body, followed by query
//!   parameters as further arguments (`?EX=100`).
//! - `POST /pipeline` with `[["SET","k","v"],["GET","k"]]`: `200
//!   [{"result":"OK"},{"result":"v"}]`, per-command `{"error": ...}` entries;
//!   in order, not atomic.
//! - `POST /multi-exec`: the same shape, run as MULTI/EXEC on one connection;
//!   a transaction discarded as a whole is `400 {"error": ...}`.
//! - Auth: `Authorization: Bearer <token>` or `?_token=<token>`; otherwise
//!   `401 {"error":"WRONGPASS invalid or missing auth token"}`.
//! - `Upstash-Encoding: base64`: every string in the result is base64, except
//!   a top-level `OK` status; numbers and nulls stay; error texts stay plain.
//!   Without it, invalid UTF-8 in a value becomes U+FFFD (lossy), as Upstash
//!   documents.
//! - `Upstash-Response-Format: resp2` for `/` and `/pipeline`
//!   (`application/octet-stream`, raw RESP2); other values are `400`.
//! - `405` for methods other than HEAD, GET, POST and PUT; `400 {"error":"ERR
//!   max request size exceeded"}` for a body over the configured limit.
//! - Blocking commands, SUBSCRIBE and friends, MONITOR, SELECT, MULTI/EXEC
//!   sent as single commands and similar are refused with a `400` that says
//!   why. `/monitor` and `/subscribe/..` (Server-Sent Events on Upstash) are
//!   `404`. `GET /health` is `200` without a token.
//!
//! Commands run over a few real, multiplexed Redis connections
//! ([`redis::aio::ConnectionManager`], which reconnects by itself); requests
//! are spread over them round-robin and pipelined on each. A request's
//! commands are written as one packed block, so `/multi-exec`'s MULTI,
//! commands and EXEC can never interleave with anything else. (A pool that
//! lends each request a connection of its own, as `deadpool-redis` does, sends
//! a `PING` before every request to check the connection: one extra Redis
//! round trip per REST call.)
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use synckairos_upstash_local::{run, Config};
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let config = Config::new("redis://127.0.0.1:6379/", "dev-token");
//! run(listener, config, async { tokio::signal::ctrl_c().await.ok(); }).await
//! # }
//! ```

#![deny(missing_docs)]

mod command;
mod config;
mod reply;
mod server;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

pub use config::{
    Config, DEFAULT_LISTEN, DEFAULT_MAX_REQUEST_BYTES, DEFAULT_POOL_SIZE, DEFAULT_REDIS_TIMEOUT_MS,
    DEFAULT_REDIS_URL,
};

/// Serves the Upstash-compatible REST API on `listener` until `shutdown`
/// completes, then finishes the requests in flight and returns.
///
/// Before serving it checks that Redis answers `PING`, so a wrong
/// `UPSTASH_LOCAL_REDIS_URL` fails at start with a clear error instead of on
/// the first request.
///
/// # Errors
///
/// An invalid configuration, a Redis that cannot be reached at start, or an
/// I/O error of the listener.
pub async fn run(
    listener: tokio::net::TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.validate()?;
    let shown_url = synckairos_core::redact::redact_url(&config.redis_url);
    let timeout = config.redis_timeout();

    let client = redis::Client::open(config.redis_url.as_str())
        .with_context(|| format!("invalid UPSTASH_LOCAL_REDIS_URL {shown_url}"))?;
    let manager_config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout));
    let mut connections = Vec::with_capacity(config.pool_size);
    for _ in 0..config.pool_size {
        let conn = ConnectionManager::new_with_config(client.clone(), manager_config.clone())
            .await
            .with_context(|| {
                format!("cannot connect to Redis at {shown_url} (set UPSTASH_LOCAL_REDIS_URL)")
            })?;
        connections.push(conn);
    }
    {
        let mut conn = connections[0].clone();
        let pong: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .with_context(|| format!("Redis at {shown_url} does not answer PING"))?;
        anyhow::ensure!(
            pong == "PONG",
            "Redis at {shown_url} answered PING with {pong:?}"
        );
    }

    let local = listener
        .local_addr()
        .context("reading the listener's address")?;
    tracing::info!(
        listen = %local,
        redis = %shown_url,
        connections = config.pool_size,
        max_request_bytes = config.max_request_bytes,
        "upstash-local (development/test stand-in for Upstash REST, not for production) serving"
    );

    let state = Arc::new(server::AppState {
        connections: server::Connections::new(connections),
        token: config.token.into_bytes(),
        max_request_bytes: config.max_request_bytes,
    });
    axum::serve(listener, server::router(state))
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving HTTP")?;
    tracing::info!("upstash-local stopped");
    Ok(())
}
