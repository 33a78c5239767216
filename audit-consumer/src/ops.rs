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

/// What any service's ops endpoints read: whether it is ready (and why
/// not), its metrics text, and the name of its readiness gauge.
/// [`serve_endpoints`] serves them; a service over PostgreSQL and Redis
/// implements [`Probe`] instead and calls [`serve`]. The edge exporter,
/// which has neither, implements this directly.
pub trait Endpoints: Clone + Send + Sync + 'static {
    /// `Ok` when `/ready` answers ready, else why not (its `error`).
    fn readiness(&self) -> impl Future<Output = Result<(), &'static str>> + Send;
    /// The Prometheus text of `/metrics` (gauges read now).
    fn render(&self) -> impl Future<Output = String> + Send;
    /// The name of the gauge that `/metrics` appends: 1 when `/ready`
    /// would answer ready, 0 when not (the same check, run when scraped).
    fn ready_metric(&self) -> &'static str;
    /// That gauge's `# HELP` text.
    fn ready_help(&self) -> &'static str;
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
/// (anything else is 404 on either) for `probe`, until `stop` turns true:
/// ready when PostgreSQL and Redis both answer within 2 s.
pub async fn serve<P: Probe>(
    public: tokio::net::TcpListener,
    internal: tokio::net::TcpListener,
    probe: P,
    stop: watch::Receiver<bool>,
) {
    serve_endpoints(public, internal, PgRedis(probe), stop).await
}

/// [`serve`] for any [`Endpoints`]: `/health` and `/ready` on `public`,
/// `/metrics` on `internal`, until `stop` turns true.
pub async fn serve_endpoints<E: Endpoints>(
    public: tokio::net::TcpListener,
    internal: tokio::net::TcpListener,
    endpoints: E,
    stop: watch::Receiver<bool>,
) {
    let public_app = Router::new()
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/ready", get(ready::<E>))
        .fallback(not_found)
        .with_state(endpoints.clone());
    let internal_app = Router::new()
        .route("/metrics", get(render::<E>))
        .fallback(not_found)
        .with_state(endpoints);
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

/// A [`Probe`] as [`Endpoints`]: ready when PostgreSQL and Redis answer.
#[derive(Clone)]
struct PgRedis<P>(P);

impl<P: Probe> Endpoints for PgRedis<P> {
    async fn readiness(&self) -> Result<(), &'static str> {
        readiness(&self.0).await
    }

    fn render(&self) -> impl Future<Output = String> + Send {
        self.0.render()
    }

    fn ready_metric(&self) -> &'static str {
        self.0.ready_metric()
    }

    fn ready_help(&self) -> &'static str {
        "1 when /ready answers ready (PostgreSQL and Redis answer), 0 when not."
    }
}

async fn ready<E: Endpoints>(AxState(s): AxState<E>) -> Response {
    match s.readiness().await {
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

async fn render<E: Endpoints>(AxState(s): AxState<E>) -> Response {
    let (mut text, ready) = tokio::join!(s.render(), s.readiness());
    let (name, help) = (s.ready_metric(), s.ready_help());
    let _ = writeln!(
        text,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {}",
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
