//! `/health`, `/ready`, `/metrics`, and the backlog sampler.

use crate::consumer::Consumer;
use crate::metrics::Metrics;
use crate::stream::Streams;
use axum::extract::State as AxState;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use sqlx::PgPool;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

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
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
        .into_response()
}

/// Every 2 s: the shards' backlog, and the events/s since the last sample.
pub async fn sample(streams: Streams, metrics: Arc<Metrics>, mut stop: watch::Receiver<bool>) {
    let mut last = (Instant::now(), metrics.events.load(Relaxed));
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
        if let Err(e) = Consumer::sample_backlog(&streams, &metrics).await {
            tracing::warn!(error = %e, "cannot sample the stream backlog");
        }
        let now = (Instant::now(), metrics.events.load(Relaxed));
        let rate = (now.1 - last.1) as f64 / now.0.duration_since(last.0).as_secs_f64().max(1e-3);
        *metrics.events_per_second.lock().expect("metrics lock") = rate;
        last = now;
    }
}
