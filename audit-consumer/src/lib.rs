//! # synckairos-audit-consumer
//!
//! Drains the shard audit streams into PostgreSQL: one consumer group per
//! shard stream, one transaction per batch, `ON CONFLICT DO NOTHING` on the
//! event id (`<shard>-<stream entry id>`), and `XACK` + `XDEL` only after
//! `COMMIT`. A crash anywhere leaves entries pending, never lost; a replay
//! is a no-op. It is also the operator's tool for migrations, restoring a
//! session Redis lost, and reading a session's timeline.
#![deny(missing_docs)]

pub mod cli;
pub mod config;
pub mod consumer;
pub mod db;
pub mod event;
pub mod metrics;
pub mod ops;
pub mod stream;

pub use config::{Connections, ConsumerConfig};
pub use consumer::{Consumer, StepError, StepOutcome};

use anyhow::Context as _;
use metrics::Metrics;
use std::future::Future;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use stream::Streams;

/// A Redis connection that reconnects by itself (`redis://` or `rediss://`).
pub async fn redis(url: &str) -> anyhow::Result<redis::aio::ConnectionManager> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = redis::Client::open(url).context("REDIS_URL")?;
    let cfg = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(3)))
        .set_response_timeout(None);
    redis::aio::ConnectionManager::new_with_config(client, cfg)
        .await
        .context("connecting to redis")
}

/// A consumer for `conns` with `cfg` (does not touch PostgreSQL yet).
pub async fn consumer(
    conns: &Connections,
    cfg: ConsumerConfig,
    metrics: Arc<Metrics>,
) -> anyhow::Result<Consumer> {
    cfg.validate().map_err(anyhow::Error::msg)?;
    let conn = redis(&conns.redis_url).await?;
    let streams = Streams::new(conn, conns.shards, &cfg.group, &cfg.name());
    let pool = db::pool(&conns.database_url, 4).context("DATABASE_URL")?;
    Ok(Consumer::new(streams, pool, cfg, metrics))
}

/// Runs `consumer` until `shutdown` resolves, serving `/health`, `/ready` and
/// `/metrics` on `listener`. On shutdown it finishes the batch in hand
/// (commit, acknowledge) within `grace`, then returns.
pub async fn run(
    mut consumer: Consumer,
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    grace: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let http = tokio::spawn(ops::serve(
        listener,
        ops::State {
            streams: consumer.streams().clone(),
            pool: consumer.pool().clone(),
            metrics: metrics.clone(),
        },
        stop_rx.clone(),
    ));
    let sampler = tokio::spawn(ops::sample(
        consumer.streams().clone(),
        metrics.clone(),
        stop_rx,
    ));
    tracing::info!(
        consumer = consumer.streams().consumer(),
        shards = consumer.streams().keys().len(),
        batch_size = consumer.config().batch_size,
        "audit consumer started"
    );
    let cfg = consumer.config().clone();
    let mut backoff = Duration::from_millis(cfg.backoff_min_ms);
    // A step is never cut short by the signal: it finishes (at most the read
    // block time, or the batch in hand within `grace`), so the batch read is
    // the batch stored and acknowledged.
    let (signal_tx, mut signal) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = signal_tx.send(true);
    });
    let mut deadline = None;
    loop {
        if *signal.borrow() {
            break;
        }
        let r = {
            let step = consumer.step(true);
            tokio::pin!(step);
            tokio::select! {
                r = &mut step => Some(r),
                _ = signal.wait_for(|s| *s) => {
                    let d = Instant::now() + grace;
                    deadline = Some(d);
                    tokio::time::timeout_at(d.into(), &mut step).await.ok()
                }
            }
        };
        let Some(r) = r else {
            tracing::warn!("the step in progress did not finish within the grace period");
            break;
        };
        match r {
            Ok(_) => backoff = Duration::from_millis(cfg.backoff_min_ms),
            Err(e) => {
                count_error(&metrics, &e);
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64,
                    batch_in_hand = consumer.has_batch(), "step failed; nothing acknowledged");
                if *signal.borrow() {
                    break;
                }
                tokio::select! {
                    _ = signal.wait_for(|s| *s) => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_millis(cfg.backoff_max_ms));
            }
        }
    }
    tracing::info!(batch_in_hand = consumer.has_batch(), "shutting down");
    let deadline = deadline.unwrap_or_else(|| Instant::now() + grace);
    while consumer.has_batch() && Instant::now() < deadline {
        match tokio::time::timeout_at(deadline.into(), consumer.step(false)).await {
            Ok(Ok(o)) => tracing::info!(events = o.inserted, "last batch stored and acknowledged"),
            Ok(Err(e)) => {
                count_error(&metrics, &e);
                tracing::warn!(error = %e, "last batch not stored yet; retrying until the deadline");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(_) => break,
        }
    }
    if consumer.has_batch() {
        tracing::warn!(
            "stopping with a batch unacknowledged: it stays pending and is delivered again"
        );
    }
    let _ = stop_tx.send(true);
    let _ = http.await;
    let _ = sampler.await;
    tracing::info!("stopped");
    Ok(())
}

fn count_error(metrics: &Metrics, e: &StepError) {
    match e {
        StepError::Postgres(_) => metrics.postgres_errors.fetch_add(1, Relaxed),
        StepError::Redis(_) => metrics.redis_errors.fetch_add(1, Relaxed),
    };
}
