//! `/health` and `/ready` (public ops port), `/metrics` (internal port):
//! the audit consumer's servers ([`synckairos_audit_consumer::ops::serve`])
//! over this worker's PostgreSQL, Redis and metrics.

use crate::metrics::Metrics;
use sqlx::PgPool;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use synckairos_audit_consumer::ops::Probe;
use synckairos_audit_consumer::RedisConn;

/// What the endpoints read.
#[derive(Clone)]
pub struct State {
    /// Redis.
    pub redis: RedisConn,
    /// PostgreSQL.
    pub pool: PgPool,
    /// The metrics.
    pub metrics: Arc<Metrics>,
}

impl Probe for State {
    fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn ping(&self) -> redis::RedisResult<()> {
        let mut conn = self.redis.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(drop)
    }

    fn render(&self) -> impl Future<Output = String> + Send {
        metrics(self)
    }

    fn ready_metric(&self) -> &'static str {
        "synckairos_webhook_ready"
    }
}

async fn metrics(s: &State) -> String {
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
    s.metrics.render()
}
