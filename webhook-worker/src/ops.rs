//! `/health` and `/ready` (public ops port), `/metrics` (internal port).

use crate::metrics::Metrics;
use axum::extract::State as AxState;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use redis::aio::ConnectionManager;
use serde_json::json;
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// What the endpoints read.
#[derive(Clone)]
pub struct State {
    /// Redis.
    pub redis: ConnectionManager,
    /// PostgreSQL.
    pub pool: PgPool,
    /// The metrics.
    pub metrics: Arc<Metrics>,
}

/// Serves `/health` and `/ready` on `public`, `/metrics` on `internal`,
/// until `stop` turns true.
pub async fn serve(
    public: tokio::net::TcpListener,
    internal: tokio::net::TcpListener,
    state: State,
    stop: watch::Receiver<bool>,
) {
    let public_app = Router::new()
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/ready", get(ready))
        .fallback(not_found)
        .with_state(state.clone());
    let internal_app = Router::new()
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(state);
    tokio::join!(
        serve_one(public, public_app, stop.clone(), "ops"),
        serve_one(internal, internal_app, stop, "metrics"),
    );
}

async fn serve_one(
    listener: tokio::net::TcpListener,
    app: Router,
    mut stop: watch::Receiver<bool>,
    what: &'static str,
) {
    let r = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await;
    if let Err(e) = r {
        tracing::error!(error = %e, endpoint = what, "endpoint failed");
    }
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": {"code": "NOT_FOUND", "message": "no such endpoint"}})),
    )
        .into_response()
}

async fn ready(AxState(s): AxState<State>) -> Response {
    let t = Duration::from_secs(2);
    let pg = tokio::time::timeout(t, sqlx::query("SELECT 1").execute(&s.pool)).await;
    let mut conn = s.redis.clone();
    let rd = tokio::time::timeout(t, redis::cmd("PING").query_async::<String>(&mut conn)).await;
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
    // The gauges are read now, not by a timer: one query and one XLEN per
    // scrape, none unscraped.
    let t = Duration::from_secs(2);
    match tokio::time::timeout(t, crate::queue::depth(&s.pool)).await {
        Ok(Ok(d)) => *s.metrics.depth.lock().expect("metrics lock") = d,
        _ => tracing::warn!("cannot read the queue depth; the gauge keeps its last value"),
    }
    match tokio::time::timeout(t, crate::dlq::count(&s.redis)).await {
        Ok(Ok(n)) => *s.metrics.dead_letters.lock().expect("metrics lock") = Some(n),
        _ => tracing::warn!("cannot read the dead letters; the gauge keeps its last value"),
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
        .into_response()
}
