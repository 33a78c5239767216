//! The consumer: shard streams → one PostgreSQL transaction per batch →
//! acknowledgement. At-least-once from Redis, exactly once in PostgreSQL.

use crate::config::ConsumerConfig;
use crate::db;
use crate::event::{self, Entry, Row};
use crate::intake::{Claims, Intake, IntakeConfig};
use crate::metrics::Metrics;
use crate::stream::{ShardInfo, Streams};
use sqlx::PgPool;
use std::collections::HashSet;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Why a step failed. Nothing was acknowledged; the batch in hand is kept
/// and the next step retries it.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// PostgreSQL is unreachable or refused the transaction.
    #[error("postgres: {0}")]
    Postgres(#[from] sqlx::Error),
    /// Redis is unreachable or refused a command.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// What one step did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepOutcome {
    /// Entries in the batch (0: nothing to do).
    pub batch: usize,
    /// Events newly stored.
    pub inserted: u64,
    /// Entries that were already stored (a redelivery).
    pub duplicates: u64,
    /// Entries moved to the dead-letter stream.
    pub dead_lettered: usize,
    /// Time from BEGIN to COMMIT.
    pub commit: Option<Duration>,
    /// Wall-clock ms when the batch committed.
    pub committed_at_ms: i64,
    /// Redis time (ms) of each stored entry's command.
    pub occurred_at_ms: Vec<i64>,
}

struct Batch {
    entries: Vec<Entry>,
    rows: Vec<Row>,
    /// Index into `entries`, and why.
    dead: Vec<(usize, String)>,
    done: Option<StepOutcome>,
}

/// A consumer of every shard stream. [`Consumer::step`] is one batch;
/// [`crate::run`] loops it.
pub struct Consumer {
    intake: Intake,
    pool: PgPool,
    cfg: ConsumerConfig,
    metrics: Arc<Metrics>,
    inflight: Option<Batch>,
}

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Claims for Metrics {
    /// The reading shared with the scrapes (the last one's, usually).
    async fn shard_info(
        &self,
        streams: &Streams,
        max_age: Duration,
    ) -> redis::RedisResult<Arc<Vec<ShardInfo>>> {
        Metrics::shard_info(self, streams, max_age).await
    }

    fn claimed(&self, n: u64) {
        self.claimed.fetch_add(n, Relaxed);
    }
}

impl Consumer {
    /// A consumer named `cfg.name()`, reading with `streams`' connection.
    pub fn new(
        streams: Streams,
        pool: PgPool,
        cfg: ConsumerConfig,
        metrics: Arc<Metrics>,
    ) -> Consumer {
        // Claims are looked for every half claim threshold.
        let intake = Intake::new(
            streams,
            IntakeConfig {
                batch_size: cfg.batch_size,
                block_ms: cfg.block_ms,
                claim_idle_ms: cfg.claim_idle_ms,
                claim_every: Duration::from_millis((cfg.claim_idle_ms / 2).max(1000)),
            },
        );
        Consumer {
            intake,
            pool,
            cfg,
            metrics,
            inflight: None,
        }
    }

    /// A blocking read ends as soon as `stop` turns true (the step then
    /// returns with nothing), so a long `BLOCK_MS` never delays shutdown.
    /// Whatever Redis delivered to that abandoned read stays pending under
    /// this consumer's name, and is taken up again by its next run (or
    /// claimed by another consumer after `CLAIM_IDLE_MS`).
    pub fn stop_on(&mut self, stop: tokio::sync::watch::Receiver<bool>) {
        self.intake.stop_on(stop);
    }

    /// The streams this consumer reads.
    pub fn streams(&self) -> &Streams {
        self.intake.streams()
    }

    /// Whether a batch is in hand (read, not yet acknowledged).
    pub fn has_batch(&self) -> bool {
        self.inflight.is_some()
    }

    fn take_batch(&mut self) -> Option<Batch> {
        let entries = self.intake.take_batch()?;
        let n = entries.len();
        let mut rows = Vec::with_capacity(n);
        let mut dead = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            if e.deliveries > self.cfg.max_deliveries {
                dead.push((
                    i,
                    format!(
                        "delivered {} times without being stored (more than {})",
                        e.deliveries, self.cfg.max_deliveries
                    ),
                ));
                continue;
            }
            match event::decode(e) {
                Ok(r) => rows.push(r),
                Err(why) => dead.push((i, why)),
            }
        }
        Some(Batch {
            entries,
            rows,
            dead,
            done: None,
        })
    }

    /// One batch: read (unless a failed batch is in hand), store in one
    /// transaction, then dead-letter, acknowledge and delete. With `block`,
    /// waits up to the block time for entries when there are none.
    ///
    /// On error nothing of the batch is acknowledged and the next call
    /// retries the same batch without reading again.
    pub async fn step(&mut self, block: bool) -> Result<StepOutcome, StepError> {
        if self.inflight.is_none() {
            self.intake.fill(block, &*self.metrics).await?;
            match self.take_batch() {
                Some(b) => self.inflight = Some(b),
                None => return Ok(StepOutcome::default()),
            }
        }
        let mut batch = self.inflight.take().expect("a batch in hand");
        if batch.done.is_none() {
            // While PostgreSQL commits, read the next batch's entries.
            let want = self.cfg.batch_size.saturating_sub(self.intake.queued());
            let prefetch = self.intake.caught_up() && want > 0;
            let streams = self.intake.streams().clone();
            let (stored, fetched) = tokio::join!(self.store(&mut batch), async {
                match prefetch {
                    true => Some(streams.read(want, None).await),
                    false => None,
                }
            });
            match fetched {
                Some(Ok(entries)) => {
                    self.intake.hold(entries);
                }
                // Whatever that read delivered stays pending under this
                // name: a claim (of entries idle past CLAIM_IDLE_MS, this
                // consumer's own included) brings it back.
                Some(Err(e)) => tracing::debug!(error = %e, "read-ahead failed"),
                None => {}
            }
            match stored {
                Ok(outcome) => batch.done = Some(outcome),
                Err(e) => {
                    self.inflight = Some(batch);
                    return Err(e);
                }
            }
        }
        let done: Vec<(u16, String)> = {
            let dead: HashSet<usize> = batch.dead.iter().map(|(i, _)| *i).collect();
            batch
                .entries
                .iter()
                .enumerate()
                .filter(|(i, _)| !dead.contains(i))
                .map(|(_, e)| (e.shard, e.id.clone()))
                .collect()
        };
        let dead: Vec<(&Entry, &str)> = batch
            .dead
            .iter()
            .map(|(i, why)| (&batch.entries[*i], why.as_str()))
            .collect();
        match self.intake.streams().settle(&done, &dead).await {
            Ok(trimmed) => {
                self.metrics.trimmed.fetch_add(trimmed, Relaxed);
            }
            Err(e) => {
                self.inflight = Some(batch);
                return Err(e.into());
            }
        }
        for (e, why) in &dead {
            tracing::error!(shard = e.shard, entry = %e.id, deliveries = e.deliveries, reason = %why,
                "audit entry moved to the dead-letter stream");
        }
        self.intake.release(&batch.entries);
        let outcome = batch.done.take().expect("stored");
        self.metrics
            .dead_letters
            .fetch_add(dead.len() as u64, Relaxed);
        self.metrics.batches.fetch_add(1, Relaxed);
        self.metrics.events.fetch_add(outcome.inserted, Relaxed);
        self.metrics
            .duplicates
            .fetch_add(outcome.duplicates, Relaxed);
        self.metrics.batch_size.observe(batch.entries.len() as f64);
        if let Some(c) = outcome.commit {
            self.metrics.commit_seconds.observe(c.as_secs_f64());
        }
        for at in &outcome.occurred_at_ms {
            self.metrics
                .event_lag_seconds
                .observe((outcome.committed_at_ms - at) as f64 / 1000.0);
        }
        Ok(outcome)
    }

    /// Stores the batch's rows in one transaction. A data error (a row
    /// PostgreSQL refuses) is isolated: each row is retried alone and the
    /// refused ones join the dead letters, so one bad entry never blocks the rest.
    async fn store(&self, batch: &mut Batch) -> Result<StepOutcome, StepError> {
        let started = Instant::now();
        let whole = async {
            let mut tx = self.pool.begin().await?;
            let n = db::insert(&mut tx, &batch.rows).await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(n)
        }
        .await;
        let (inserted, duplicates) = match whole {
            Ok(n) => (n.events, n.duplicates),
            Err(e) if db::is_data_error(&e) => {
                tracing::warn!(error = %e, rows = batch.rows.len(),
                    "batch refused by PostgreSQL; storing its rows one by one");
                let (mut ins, mut dup) = (0, 0);
                let mut keep = Vec::new();
                let mut rows = std::mem::take(&mut batch.rows).into_iter();
                while let Some(row) = rows.next() {
                    let one = async {
                        let mut tx = self.pool.begin().await?;
                        let n = db::insert(&mut tx, std::slice::from_ref(&row)).await?;
                        tx.commit().await?;
                        Ok::<_, sqlx::Error>(n)
                    }
                    .await;
                    match one {
                        Ok(n) => {
                            ins += n.events;
                            dup += n.duplicates;
                            keep.push(row);
                        }
                        Err(e) if db::is_data_error(&e) => {
                            let i = batch
                                .entries
                                .iter()
                                .position(|x| x.event_id() == row.event_id)
                                .expect("a row comes from an entry");
                            batch.dead.push((i, format!("refused by PostgreSQL: {e}")));
                        }
                        Err(e) => {
                            // Rows stored so far are committed; a retry
                            // finds them as duplicates.
                            keep.push(row);
                            keep.extend(rows);
                            batch.rows = keep;
                            return Err(e.into());
                        }
                    }
                }
                batch.rows = keep;
                (ins, dup)
            }
            Err(e) => return Err(e.into()),
        };
        Ok(StepOutcome {
            batch: batch.entries.len(),
            inserted,
            duplicates,
            dead_lettered: batch.dead.len(),
            commit: Some(started.elapsed()),
            committed_at_ms: wall_ms(),
            occurred_at_ms: batch.rows.iter().map(|r| r.event.at_ms).collect(),
        })
    }

    /// The consumer's pool (for readiness).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The configuration.
    pub fn config(&self) -> &ConsumerConfig {
        &self.cfg
    }
}
