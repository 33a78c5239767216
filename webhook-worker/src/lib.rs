//! # synckairos-webhook-worker
//!
//! Delivers session events to HTTPS endpoints as Standard Webhooks. It
//! reads the shard audit streams as a consumer group of its own
//! (`webhooks`), queues one delivery per (endpoint, event) in PostgreSQL and
//! acknowledges the entries once queued ([`ingest`]); one dispatcher per
//! endpoint sends the heads of that endpoint's session queues, in stream
//! order per session, and retries with backoff for hours ([`dispatch`]);
//! after the last attempt a delivery goes to the dead-letter stream
//! `sk:webhooks:dead`, from which `dlq replay` queues it again ([`dlq`]).
//!
//! [`run`] is the whole process; [`Worker::run`] is the delivery side
//! alone, for a `main` that runs other destinations (mobile push) as tasks
//! of the same process.
#![deny(missing_docs)]

pub mod config;
pub mod dispatch;
pub mod dlq;
pub mod guard;
pub mod ingest;
pub mod metrics;
pub mod ops;
pub mod payload;
pub mod queue;
pub mod sign;

pub use config::{Connections, Endpoint, WorkerConfig};

use anyhow::Context as _;
use metrics::Metrics;
use sqlx::PgPool;
use std::future::Future;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use synckairos_audit_consumer::service::{self, Backoff, Event};
use synckairos_audit_consumer::stream::Streams;
use synckairos_audit_consumer::RedisConn;
use tokio::sync::{watch, Notify};

/// A connection to the Redis of `url` that reconnects by itself: one
/// server (`redis://`, `rediss://`) or a cluster (`redis+cluster://…`).
pub async fn redis(url: &str) -> anyhow::Result<RedisConn> {
    synckairos_audit_consumer::redis(url).await
}

/// A PostgreSQL pool (lazy: the worker starts while PostgreSQL is down).
pub fn pool(url: &str) -> anyhow::Result<PgPool> {
    queue::pool(url, 8).with_context(|| {
        format!(
            "DATABASE_URL {} is not a PostgreSQL URL",
            synckairos_core::redact::redact_url(url)
        )
    })
}

/// A worker, ready to run: its ingest and one dispatcher per endpoint.
pub struct Worker {
    ingest: ingest::Ingest,
    dispatchers: Vec<dispatch::Dispatcher>,
    redis: RedisConn,
    pool: PgPool,
    metrics: Arc<Metrics>,
    with_ingest: bool,
}

/// Builds a worker for `conns` with `cfg` and `endpoints` (validated with
/// [`WorkerConfig::load_endpoints`]). Touches neither Redis's groups nor
/// PostgreSQL yet.
pub async fn worker(
    conns: &Connections,
    cfg: &WorkerConfig,
    endpoints: Vec<Endpoint>,
    metrics: Arc<Metrics>,
) -> anyhow::Result<Worker> {
    cfg.validate().map_err(anyhow::Error::msg)?;
    let schedule = cfg.schedule().map_err(anyhow::Error::msg)?;
    let conn = RedisConn::connect(&conns.target()?).await?;
    let pool = pool(&conns.database_url)?;
    let name = cfg.name();
    let streams = Streams::new(conn.clone(), conns.shards, &cfg.group, &name);
    let shared = dispatch::Shared {
        pool: pool.clone(),
        redis: conn.clone(),
        me: name,
        schedule: Arc::new(schedule),
        lease: Duration::from_millis(cfg.lease_ms),
        poll: Duration::from_millis(cfg.poll_ms),
        allow_local: cfg.allow_local,
        metrics: metrics.clone(),
    };
    let mut routes = Vec::new();
    let mut dispatchers = Vec::new();
    for ep in endpoints {
        let wake = Arc::new(Notify::new());
        routes.push(ingest::Route {
            endpoint_id: ep.id.clone(),
            events: ep.events.clone(),
            wake: wake.clone(),
        });
        dispatchers.push(dispatch::Dispatcher::new(ep, shared.clone(), wake)?);
    }
    let ingest = ingest::Ingest::new(streams, pool.clone(), routes, metrics.clone(), cfg);
    Ok(Worker {
        ingest,
        dispatchers,
        redis: conn,
        pool,
        metrics,
        with_ingest: cfg.ingest,
    })
}

impl Worker {
    /// What `/ready` and `/metrics` read.
    pub fn ops_state(&self) -> ops::State {
        ops::State {
            redis: self.redis.clone(),
            pool: self.pool.clone(),
            metrics: self.metrics.clone(),
        }
    }

    /// Runs ingest and every dispatcher until `stop` turns true; then the
    /// batch in hand is finished and the attempts in flight are given
    /// `grace` to end.
    pub async fn run(self, stop: watch::Receiver<bool>, grace: Duration) {
        tracing::info!(
            consumer = self.ingest.streams().consumer(),
            group = self.ingest.streams().group(),
            shards = self.ingest.streams().keys().len(),
            endpoints = self.dispatchers.len(),
            ingest = self.with_ingest,
            "webhook worker started"
        );
        let mut tasks = tokio::task::JoinSet::new();
        for d in self.dispatchers {
            tasks.spawn(d.run(stop.clone(), grace));
        }
        if self.with_ingest {
            tasks.spawn(drive(self.ingest, self.metrics.clone(), grace, stop));
        }
        while let Some(r) = tasks.join_next().await {
            if let Err(e) = r {
                tracing::error!(error = %e, "a worker task failed");
            }
        }
    }
}

/// Runs `worker` until `shutdown` resolves, serving `/health` and `/ready`
/// on `listener` and `/metrics` on `metrics_listener`. On shutdown the batch
/// in hand and the attempts in flight get `grace` to finish.
pub async fn run(
    worker: Worker,
    listener: tokio::net::TcpListener,
    metrics_listener: tokio::net::TcpListener,
    grace: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (stop_http, stop_http_rx) = watch::channel(false);
    let http = tokio::spawn(synckairos_audit_consumer::ops::serve(
        listener,
        metrics_listener,
        worker.ops_state(),
        stop_http_rx,
    ));
    let (signal_tx, signal) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = signal_tx.send(true);
    });
    worker.run(signal, grace).await;
    let _ = stop_http.send(true);
    let _ = http.await;
    tracing::info!("stopped");
    Ok(())
}

/// Ingest's loop ([`service::drive`]): steps with backoff until the signal;
/// a step holding a batch is finished within `grace` (the batch read is the
/// batch queued and acknowledged), a blocking read with nothing in hand ends
/// at once.
async fn drive(
    ingest: ingest::Ingest,
    metrics: Arc<Metrics>,
    grace: Duration,
    signal: watch::Receiver<bool>,
) {
    let backoff = Backoff {
        min: Duration::from_millis(100),
        max: Duration::from_secs(5),
    };
    service::drive(
        ingest,
        backoff,
        grace,
        signal,
        |ingest, event| match event {
            Event::GraceExceeded => {
                tracing::warn!("the ingest step in progress did not finish within the grace period")
            }
            Event::StepFailed { error: e, retry_in } => {
                count_error(&metrics, e);
                tracing::warn!(error = %e, retry_in_ms = retry_in.as_millis() as u64,
                batch_in_hand = ingest.has_batch(), "ingest step failed; nothing acknowledged");
            }
            Event::ShuttingDown => {}
            Event::LastBatchDone(_) => tracing::info!("last batch queued and acknowledged"),
            Event::LastBatchFailed(e) => count_error(&metrics, e),
            Event::LeftPending => tracing::warn!(
                "stopping with a batch unacknowledged: it stays pending and is read again"
            ),
        },
    )
    .await;
}

impl service::Steps for ingest::Ingest {
    type Outcome = ingest::StepOutcome;
    type Error = ingest::StepError;

    fn step(
        &mut self,
        block: bool,
    ) -> impl Future<Output = Result<ingest::StepOutcome, ingest::StepError>> + Send {
        ingest::Ingest::step(self, block)
    }

    fn has_batch(&self) -> bool {
        ingest::Ingest::has_batch(self)
    }

    fn stop_on(&mut self, stop: watch::Receiver<bool>) {
        ingest::Ingest::stop_on(self, stop)
    }
}

fn count_error(metrics: &Metrics, e: &ingest::StepError) {
    match e {
        ingest::StepError::Postgres(_) => metrics.postgres_errors.fetch_add(1, Relaxed),
        ingest::StepError::Redis(_) => metrics.redis_errors.fetch_add(1, Relaxed),
    };
}
