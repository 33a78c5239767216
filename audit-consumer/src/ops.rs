//! `/health`, `/ready` and `/metrics`.

use crate::metrics::Metrics;
use crate::stream::Streams;
use axum::extract::State as AxState;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use sqlx::PgPool;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// A scrape reuses a reading of the shard streams this young (two
/// Prometheus replicas, or a claim check just before, cost nothing more).
pub const SCRAPE_MAX_AGE: Duration = Duration::from_secs(5);
/// How long a scrape waits for Redis before answering with the last values.
const SCRAPE_REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// What the endpoints read.
#[derive(Clone)]
pub struct State {
    /// The streams (Redis reachability).
    pub streams: Streams,
    /// PostgreSQL.
    pub pool: PgPool,
    /// The metrics.
    pub metrics: Arc<Metrics>,
}

/// Serves the endpoints until `stop` turns true.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: State,
    mut stop: watch::Receiver<bool>,
) {
    let app = Router::new()
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(state);
    let r = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await;
    if let Err(e) = r {
        tracing::error!(error = %e, "ops endpoint failed");
    }
}

async fn ready(AxState(s): AxState<State>) -> Response {
    let t = Duration::from_secs(2);
    let pg = tokio::time::timeout(t, sqlx::query("SELECT 1").execute(&s.pool)).await;
    let rd = tokio::time::timeout(t, s.streams.ping()).await;
    let why = match (pg, rd) {
        (Ok(Ok(_)), Ok(Ok(_))) => return Json(json!({"status": "ready"})).into_response(),
        (Ok(Ok(_)), _) => "redis unreachable",
        _ => "postgres unreachable",
    };
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"status": "not_ready", "error": why})),
    )
        .into_response()
}

async fn metrics(AxState(s): AxState<State>) -> Response {
    // The per-shard gauges are read now, not by a timer: an idle consumer
    // costs Redis one command per shard per scrape, and none unscraped.
    let read = tokio::time::timeout(
        SCRAPE_REDIS_TIMEOUT,
        s.metrics.shard_info(&s.streams, SCRAPE_MAX_AGE),
    )
    .await;
    let shards = match read {
        Ok(Ok(shards)) => Some(shards),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot read the stream backlog; gauges keep their last values");
            None
        }
        Err(_) => {
            tracing::warn!("reading the stream backlog timed out; gauges keep their last values");
            None
        }
    };
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    s.metrics.on_scrape(
        shards.as_deref().map(|v| v.as_slice()),
        s.streams.group(),
        now_ms,
    );
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
        .into_response()
}
