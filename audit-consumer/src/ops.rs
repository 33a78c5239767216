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
use std::fmt::Write as _;
use std::future::Future;
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

/// What a service's ops endpoints read: its PostgreSQL, its Redis, its
/// metrics. [`serve`] serves them for any service that has them (the
/// audit consumer, the webhook worker).
pub trait Probe: Clone + Send + Sync + 'static {
    /// PostgreSQL (`/ready` runs `SELECT 1`).
    fn pool(&self) -> &PgPool;
    /// Pings Redis (`/ready`).
    fn ping(&self) -> impl Future<Output = redis::RedisResult<()>> + Send;
    /// The Prometheus text of `/metrics` (gauges read now).
    fn render(&self) -> impl Future<Output = String> + Send;
    /// The name of the gauge that `/metrics` appends: 1 when `/ready`
    /// would answer ready, 0 when not (the same check, run when scraped).
    fn ready_metric(&self) -> &'static str;
}

impl Probe for State {
    fn pool(&self) -> &PgPool {
        &self.pool
    }

    fn ping(&self) -> impl Future<Output = redis::RedisResult<()>> + Send {
        self.streams.ping()
    }

    fn render(&self) -> impl Future<Output = String> + Send {
        metrics(self)
    }

    fn ready_metric(&self) -> &'static str {
        "synckairos_audit_ready"
    }
}

/// Serves `/health` and `/ready` on `public`, `/metrics` on `internal`
/// (anything else is 404 on either) for `probe`, until `stop` turns true.
pub async fn serve<P: Probe>(
    public: tokio::net::TcpListener,
    internal: tokio::net::TcpListener,
    probe: P,
    stop: watch::Receiver<bool>,
) {
    let public_app = Router::new()
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/ready", get(ready::<P>))
        .fallback(not_found)
        .with_state(probe.clone());
    let internal_app = Router::new()
        .route("/metrics", get(render::<P>))
        .fallback(not_found)
        .with_state(probe);
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

async fn ready<P: Probe>(AxState(s): AxState<P>) -> Response {
    match readiness(&s).await {
        Ok(()) => Json(json!({"status": "ready"})).into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not_ready", "error": why})),
        )
            .into_response(),
    }
}

/// What `/ready` answers: ready when PostgreSQL and Redis both answer
/// within 2 s.
async fn readiness<P: Probe>(s: &P) -> Result<(), &'static str> {
    let t = Duration::from_secs(2);
    let pg = tokio::time::timeout(t, sqlx::query("SELECT 1").execute(s.pool())).await;
    let rd = tokio::time::timeout(t, s.ping()).await;
    match (pg, rd) {
        (Ok(Ok(_)), Ok(Ok(_))) => Ok(()),
        (Ok(Ok(_)), _) => Err("redis unreachable"),
        _ => Err("postgres unreachable"),
    }
}

async fn render<P: Probe>(AxState(s): AxState<P>) -> Response {
    let (mut text, ready) = tokio::join!(s.render(), readiness(&s));
    let name = s.ready_metric();
    let _ = writeln!(
        text,
        "# HELP {name} 1 when /ready answers ready (PostgreSQL and Redis answer), 0 when not.\n# TYPE {name} gauge\n{name} {}",
        u8::from(ready.is_ok())
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

async fn metrics(s: &State) -> String {
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
    s.metrics.render()
}
