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
pub mod conn;
pub mod consumer;
pub mod db;
pub mod dlq;
pub mod event;
pub mod intake;
pub mod metrics;
pub mod ops;
pub mod service;
pub mod stream;

pub use config::{Connections, ConsumerConfig};
pub use conn::{RedisConn, RedisTarget};
pub use consumer::{Consumer, StepError, StepOutcome};

use anyhow::Context as _;
use metrics::Metrics;
use service::{Backoff, Event};
use std::future::Future;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use stream::Streams;

/// A connection to the Redis of `url` that reconnects by itself: one
/// server (`redis://`, `rediss://`), or a cluster
/// (`redis+cluster://host1:port,host2:port`; see [`RedisTarget`]).
pub async fn redis(url: &str) -> anyhow::Result<RedisConn> {
    RedisConn::connect(&RedisTarget::parse(url)?).await
}

/// A consumer for `conns` with `cfg` (does not touch PostgreSQL yet).
pub async fn consumer(
    conns: &Connections,
    cfg: ConsumerConfig,
    metrics: Arc<Metrics>,
) -> anyhow::Result<Consumer> {
    cfg.validate().map_err(anyhow::Error::msg)?;
    let conn = RedisConn::connect(&conns.target()?).await?;
    let streams = Streams::new(conn, conns.shards, &cfg.group, &cfg.name());
    let pool = db::pool(&conns.database_url, 4).with_context(|| {
        format!(
            "DATABASE_URL {} is not a PostgreSQL URL",
            synckairos_core::redact::redact_url(&conns.database_url)
        )
    })?;
    Ok(Consumer::new(streams, pool, cfg, metrics))
}

/// `cfg.workers` consumers for `conns`: the first named `cfg.name()`, the
/// others `<name>-1`, `<name>-2`, … (stable across restarts, so each finds its
/// own unacknowledged entries again).
pub async fn consumers(
    conns: &Connections,
    cfg: ConsumerConfig,
    metrics: Arc<Metrics>,
) -> anyhow::Result<Vec<Consumer>> {
    let name = cfg.name();
    let mut out = Vec::new();
    for i in 0..cfg.workers.max(1) {
        let cfg = ConsumerConfig {
            consumer_name: Some(if i == 0 {
                name.clone()
            } else {
                format!("{name}-{i}")
            }),
            ..cfg.clone()
        };
        out.push(consumer(conns, cfg, metrics.clone()).await?);
    }
    Ok(out)
}

/// Runs `consumers` side by side until `shutdown` resolves, serving
/// `/health` and `/ready` on `listener` and `/metrics` on `metrics_listener`
/// (an internal port). On shutdown each
/// finishes the batch in hand (commit, acknowledge) within `grace`, then
/// this returns.
pub async fn run(
    consumers: Vec<Consumer>,
    listener: tokio::net::TcpListener,
    metrics_listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    grace: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let first = consumers.first().context("no consumer to run")?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let http = tokio::spawn(ops::serve(
        listener,
        metrics_listener,
        ops::State {
            streams: first.streams().clone(),
            pool: first.pool().clone(),
            metrics: metrics.clone(),
        },
        stop_rx,
    ));
    tracing::info!(
        consumer = first.streams().consumer(),
        workers = consumers.len(),
        shards = first.streams().keys().len(),
        batch_size = first.config().batch_size,
        "audit consumer started"
    );
    let (signal_tx, signal) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = signal_tx.send(true);
    });
    let mut workers = tokio::task::JoinSet::new();
    for c in consumers {
        workers.spawn(drive(c, metrics.clone(), grace, signal.clone()));
    }
    while let Some(r) = workers.join_next().await {
        if let Err(e) = r {
            tracing::error!(error = %e, "a consumer task failed");
        }
    }
    let _ = stop_tx.send(true);
    let _ = http.await;
    tracing::info!("stopped");
    Ok(())
}

/// One consumer's loop ([`service::drive`]): steps with backoff until the
/// signal, then the batch in hand is finished within `grace`.
async fn drive(
    consumer: Consumer,
    metrics: Arc<Metrics>,
    grace: Duration,
    signal: tokio::sync::watch::Receiver<bool>,
) {
    let cfg = consumer.config().clone();
    let name = consumer.streams().consumer().to_string();
    let backoff = Backoff {
        min: Duration::from_millis(cfg.backoff_min_ms),
        max: Duration::from_millis(cfg.backoff_max_ms),
    };
    service::drive(consumer, backoff, grace, signal, |consumer, event| match event {
        Event::GraceExceeded => {
            tracing::warn!(consumer = %name, "the step in progress did not finish within the grace period")
        }
        Event::StepFailed { error: e, retry_in } => {
            count_error(&metrics, e);
            tracing::warn!(consumer = %name, error = %e, retry_in_ms = retry_in.as_millis() as u64,
                batch_in_hand = consumer.has_batch(), "step failed; nothing acknowledged");
        }
        Event::ShuttingDown => {
            tracing::info!(consumer = %name, batch_in_hand = consumer.has_batch(), "shutting down")
        }
        Event::LastBatchDone(o) => {
            tracing::info!(consumer = %name, events = o.inserted, "last batch stored and acknowledged")
        }
        Event::LastBatchFailed(e) => {
            count_error(&metrics, e);
            tracing::warn!(consumer = %name, error = %e, "last batch not stored yet; retrying until the deadline");
        }
        Event::LeftPending => tracing::warn!(consumer = %name,
            "stopping with a batch unacknowledged: it stays pending and is delivered again"),
    })
    .await;
}

impl service::Steps for Consumer {
    type Outcome = StepOutcome;
    type Error = StepError;

    fn step(&mut self, block: bool) -> impl Future<Output = Result<StepOutcome, StepError>> + Send {
        Consumer::step(self, block)
    }

    fn has_batch(&self) -> bool {
        Consumer::has_batch(self)
    }

    fn stop_on(&mut self, stop: tokio::sync::watch::Receiver<bool>) {
        Consumer::stop_on(self, stop)
    }
}

fn count_error(metrics: &Metrics, e: &StepError) {
    match e {
        StepError::Postgres(_) => metrics.postgres_errors.fetch_add(1, Relaxed),
        StepError::Redis(_) => metrics.redis_errors.fetch_add(1, Relaxed),
    };
}
