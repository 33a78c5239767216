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
use redis::aio::ConnectionManager;
use sqlx::PgPool;
use std::future::Future;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use synckairos_audit_consumer::stream::Streams;
use tokio::sync::{watch, Notify};

/// A Redis connection that reconnects by itself (`redis://` or `rediss://`).
pub async fn redis(url: &str) -> anyhow::Result<ConnectionManager> {
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
    redis: ConnectionManager,
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
    let conn = redis(&conns.redis_url).await?;
    let blocking = redis(&conns.redis_url).await?;
    let pool = pool(&conns.database_url)?;
    let name = cfg.name();
    let streams = Streams::new(conn.clone(), conns.shards, &cfg.group, &name)
        .with_blocking_connection(blocking);
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
    let ingest = ingest::Ingest::new(
        streams,
        conn.clone(),
        pool.clone(),
        routes,
        metrics.clone(),
        cfg,
    );
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
    let http = tokio::spawn(ops::serve(
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

/// Ingest's loop: steps with backoff until the signal; a step holding a
/// batch is finished within `grace` (the batch read is the batch queued and
/// acknowledged), a blocking read with nothing in hand ends at once.
async fn drive(
    mut ingest: ingest::Ingest,
    metrics: Arc<Metrics>,
    grace: Duration,
    mut signal: watch::Receiver<bool>,
) {
    ingest.stop_on(signal.clone());
    let min = Duration::from_millis(100);
    let mut backoff = min;
    let mut deadline = None;
    loop {
        if *signal.borrow() {
            break;
        }
        let r = {
            let step = ingest.step(true);
            tokio::pin!(step);
            let signalled = tokio::select! {
                r = &mut step => Err(r),
                _ = signal.wait_for(|s| *s) => Ok(()),
            };
            match signalled {
                Err(r) => Some(r),
                Ok(()) => {
                    let d = Instant::now() + grace;
                    deadline = Some(d);
                    tokio::time::timeout_at(d.into(), &mut step).await.ok()
                }
            }
        };
        let Some(r) = r else {
            tracing::warn!("the ingest step in progress did not finish within the grace period");
            break;
        };
        match r {
            Ok(_) => backoff = min,
            Err(e) => {
                count_error(&metrics, &e);
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64,
                    batch_in_hand = ingest.has_batch(), "ingest step failed; nothing acknowledged");
                tokio::select! {
                    _ = signal.wait_for(|s| *s) => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
    let deadline = deadline.unwrap_or_else(|| Instant::now() + grace);
    while ingest.has_batch() && Instant::now() < deadline {
        match tokio::time::timeout_at(deadline.into(), ingest.step(false)).await {
            Ok(Ok(_)) => tracing::info!("last batch queued and acknowledged"),
            Ok(Err(e)) => {
                count_error(&metrics, &e);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(_) => break,
        }
    }
    if ingest.has_batch() {
        tracing::warn!("stopping with a batch unacknowledged: it stays pending and is read again");
    }
}

fn count_error(metrics: &Metrics, e: &ingest::StepError) {
    match e {
        ingest::StepError::Postgres(_) => metrics.postgres_errors.fetch_add(1, Relaxed),
        ingest::StepError::Redis(_) => metrics.redis_errors.fetch_add(1, Relaxed),
    };
}
