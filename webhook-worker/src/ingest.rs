//! Ingest: the shard audit streams, read as the worker's own consumer group,
//! into the PostgreSQL queue.
//!
//! The audit consumer's intake ([`synckairos_audit_consumer::intake`]):
//! this consumer's own pending entries first after a restart, entries idle
//! on a dead consumer claimed (`XAUTOCLAIM`), a blocking read on its own
//! connection. A batch's deliveries are committed in one transaction, the
//! endpoints' dispatchers woken, and only then are the entries acknowledged
//! and the streams trimmed (the trim never removes an entry some group has
//! not acknowledged). So an entry is never lost between the stream and the
//! queue, and retries that run for hours hold nothing in the stream.

use crate::metrics::Metrics;
use crate::payload::{self, Decoded, WebhookEvent};
use crate::queue;
use sqlx::PgPool;
use std::collections::HashSet;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use synckairos_audit_consumer::event::Entry;
use synckairos_audit_consumer::intake::{Claims, Intake, IntakeConfig};
use synckairos_audit_consumer::stream::{ShardInfo, Streams};
use tokio::sync::Notify;

/// Why a step failed (PostgreSQL or Redis). Nothing was acknowledged; the
/// batch in hand is kept. The audit consumer's.
pub use synckairos_audit_consumer::consumer::StepError;

/// Where an event type goes: an endpoint's subscriptions and its wake-up.
#[derive(Clone)]
pub struct Route {
    /// The endpoint.
    pub endpoint_id: String,
    /// The event types it receives.
    pub events: HashSet<String>,
    /// Wakes its dispatcher.
    pub wake: Arc<Notify>,
}

/// What one step did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StepOutcome {
    /// Entries in the batch (0: nothing to do).
    pub batch: usize,
    /// Deliveries newly queued.
    pub queued: u64,
}

struct Batch {
    entries: Vec<Entry>,
    events: Vec<WebhookEvent>,
    stored: bool,
}

/// The ingest side of a worker.
pub struct Ingest {
    intake: Intake,
    pool: PgPool,
    routes: Vec<Route>,
    metrics: Arc<Metrics>,
    inflight: Option<Batch>,
    /// Trim a shard only once this group exists on it (`None`: always).
    trim_after: Option<String>,
    /// By shard: whether `trim_after` was seen on it.
    trim_ok: Vec<bool>,
}

impl Claims for Metrics {
    /// A reading of the streams now (one pipelined `XINFO` per shard).
    async fn shard_info(
        &self,
        streams: &Streams,
        _max_age: Duration,
    ) -> redis::RedisResult<Arc<Vec<ShardInfo>>> {
        streams.info().await.map(Arc::new)
    }

    fn claimed(&self, n: u64) {
        self.ingest_claimed.fetch_add(n, Relaxed);
    }
}

impl Ingest {
    /// Ingest reading `streams` (the group and consumer name are theirs)
    /// into `pool`, for `routes`.
    pub fn new(
        streams: Streams,
        pool: PgPool,
        routes: Vec<Route>,
        metrics: Arc<Metrics>,
        cfg: &crate::config::WorkerConfig,
    ) -> Ingest {
        // Entries idle on another consumer of the group (a dead process)
        // are looked for every claim interval.
        let intake = Intake::new(
            streams,
            IntakeConfig {
                batch_size: cfg.batch_size,
                block_ms: cfg.block_ms,
                claim_idle_ms: cfg.claim_idle_ms,
                claim_every: Duration::from_millis(cfg.claim_idle_ms.max(1000)),
            },
        );
        Ingest {
            intake,
            pool,
            routes,
            metrics,
            inflight: None,
            trim_after: Some(cfg.trim_after_group.clone()).filter(|g| !g.is_empty()),
            trim_ok: Vec::new(),
        }
    }

    /// A blocking read ends as soon as `stop` turns true.
    pub fn stop_on(&mut self, stop: tokio::sync::watch::Receiver<bool>) {
        self.intake.stop_on(stop);
    }

    /// The streams.
    pub fn streams(&self) -> &Streams {
        self.intake.streams()
    }

    /// Whether a batch is in hand (read, not yet acknowledged).
    pub fn has_batch(&self) -> bool {
        self.inflight.is_some()
    }

    async fn fill(&mut self, block: bool) -> Result<(), StepError> {
        let r = self.intake.fill(block, &*self.metrics).await;
        if self.intake.group_lost() {
            // Redis lost its data: look for the other groups again too.
            self.trim_ok.clear();
        }
        Ok(r?)
    }

    fn take_batch(&mut self) -> Option<Batch> {
        let entries = self.intake.take_batch()?;
        let mut events = Vec::new();
        for e in &entries {
            match payload::decode(e) {
                Decoded::Event(ev) => events.push(*ev),
                Decoded::Skipped(t) => {
                    if synckairos_core::audit::EventType::parse(&t).is_some() {
                        self.metrics.ingest_ignored.fetch_add(1, Relaxed);
                    } else {
                        self.metrics.ingest_unknown.fetch_add(1, Relaxed);
                        tracing::debug!(shard = e.shard, entry = %e.id, event_type = %t,
                            "skipping an entry of an unknown type");
                    }
                }
                Decoded::Malformed(why) => {
                    self.metrics.ingest_malformed.fetch_add(1, Relaxed);
                    tracing::error!(shard = e.shard, entry = %e.id, reason = %why,
                        "skipping an entry that cannot be read");
                }
            }
        }
        Some(Batch {
            entries,
            events,
            stored: false,
        })
    }

    /// One batch: read (unless a failed batch is in hand), queue its
    /// deliveries in one transaction, wake the dispatchers, acknowledge and
    /// trim. With `block`, waits up to the block time for entries.
    pub async fn step(&mut self, block: bool) -> Result<StepOutcome, StepError> {
        if self.inflight.is_none() {
            self.fill(block).await?;
            match self.take_batch() {
                Some(b) => self.inflight = Some(b),
                None => return Ok(StepOutcome::default()),
            }
        }
        let mut batch = self.inflight.take().expect("a batch in hand");
        let mut queued = 0;
        if !batch.stored {
            match self.store(&batch).await {
                Ok((n, woken)) => {
                    queued = n;
                    batch.stored = true;
                    for r in &self.routes {
                        if woken.contains(&r.endpoint_id) {
                            r.wake.notify_one();
                        }
                    }
                    self.metrics
                        .ingest_events
                        .fetch_add(batch.events.len() as u64, Relaxed);
                    self.metrics.ingest_deliveries.fetch_add(n, Relaxed);
                }
                Err(e) => {
                    self.inflight = Some(batch);
                    return Err(e.into());
                }
            }
        }
        let done: Vec<(u16, String)> = batch
            .entries
            .iter()
            .map(|e| (e.shard, e.id.clone()))
            .collect();
        match self.acknowledge(&done).await {
            Ok(trimmed) => {
                self.metrics.trimmed.fetch_add(trimmed, Relaxed);
            }
            Err(e) => {
                self.inflight = Some(batch);
                return Err(e.into());
            }
        }
        self.intake.release(&batch.entries);
        Ok(StepOutcome {
            batch: batch.entries.len(),
            queued,
        })
    }

    /// Acknowledges `done` and trims the shards touched, except a shard
    /// where the group named by `WEBHOOK_TRIM_AFTER_GROUP` (the audit
    /// consumer's) does not exist yet: trimming there would remove entries
    /// that group will read once it is created (the trim only knows the
    /// groups that exist). There the entries are only acknowledged.
    async fn acknowledge(&mut self, done: &[(u16, String)]) -> Result<u64, redis::RedisError> {
        let Some(required) = self.trim_after.clone() else {
            return self.streams().settle(done, &[]).await;
        };
        let shards = self.streams().keys().len();
        if self.trim_ok.len() != shards {
            self.trim_ok = vec![false; shards];
        }
        let mut unknown: Vec<u16> = done
            .iter()
            .map(|(s, _)| *s)
            .filter(|s| !self.trim_ok[*s as usize])
            .collect();
        unknown.sort_unstable();
        unknown.dedup();
        if !unknown.is_empty() {
            let cmds: Vec<(u16, redis::Cmd)> = unknown
                .iter()
                .map(|s| {
                    let mut x = redis::cmd("XINFO");
                    x.arg("GROUPS").arg(&self.streams().keys()[*s as usize]);
                    (*s, x)
                })
                .collect();
            let replies = self.streams().conn().pipelined(&cmds).await?;
            for (s, groups) in unknown.iter().zip(&replies) {
                self.trim_ok[*s as usize] = has_group(groups, &required);
            }
        }
        let (trim, keep): (Vec<_>, Vec<_>) = done
            .iter()
            .cloned()
            .partition(|(s, _)| self.trim_ok[*s as usize]);
        if !keep.is_empty() {
            let cmds: Vec<(u16, redis::Cmd)> = keep
                .iter()
                .map(|(s, id)| {
                    let mut x = redis::cmd("XACK");
                    x.arg(&self.streams().keys()[*s as usize])
                        .arg(self.streams().group())
                        .arg(id);
                    (*s, x)
                })
                .collect();
            self.streams().conn().pipelined(&cmds).await?;
        }
        match trim.is_empty() {
            true => Ok(0),
            false => self.streams().settle(&trim, &[]).await,
        }
    }

    /// Queues the batch's deliveries in one transaction; returns how many
    /// and the endpoints that got some.
    async fn store(&self, batch: &Batch) -> Result<(u64, HashSet<String>), sqlx::Error> {
        let mut rows: Vec<(&str, &WebhookEvent)> = Vec::new();
        let mut woken = HashSet::new();
        for ev in &batch.events {
            for r in &self.routes {
                if r.events.contains(&ev.event_type) {
                    rows.push((r.endpoint_id.as_str(), ev));
                    woken.insert(r.endpoint_id.clone());
                }
            }
        }
        if rows.is_empty() {
            return Ok((0, woken));
        }
        let mut tx = self.pool.begin().await?;
        let n = queue::enqueue(&mut tx, &rows).await?;
        tx.commit().await?;
        Ok((n, woken))
    }
}

/// Whether an `XINFO GROUPS` reply lists `name`.
fn has_group(groups: &redis::Value, name: &str) -> bool {
    let redis::Value::Array(gs) = groups else {
        return false;
    };
    gs.iter().any(|g| {
        let fields: Vec<(&redis::Value, &redis::Value)> = match g {
            redis::Value::Array(items) => items
                .chunks(2)
                .filter_map(|kv| match kv {
                    [k, v] => Some((k, v)),
                    _ => None,
                })
                .collect(),
            redis::Value::Map(pairs) => pairs.iter().map(|(k, v)| (k, v)).collect(),
            _ => Vec::new(),
        };
        fields.iter().any(|(k, v)| {
            redis::from_redis_value_ref::<String>(k).ok().as_deref() == Some("name")
                && redis::from_redis_value_ref::<String>(v).ok().as_deref() == Some(name)
        })
    })
}
