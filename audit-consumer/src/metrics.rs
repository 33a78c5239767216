//! Prometheus text metrics, `synckairos_audit_*`.

use crate::stream::{id_ms, ShardInfo, Streams};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use synckairos_core::prom::Histogram;

const SECONDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
const SIZES: &[f64] = &[1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0];

type Gauge = (&'static str, &'static str, fn(&ShardBacklog) -> f64);

/// One shard's stream, as last sampled, for one consumer group.
#[derive(Clone, Copy, Debug, Default)]
pub struct ShardBacklog {
    /// Entries the group has not acknowledged: not yet read (`lag`) plus
    /// read and pending (the stream length when Redis cannot tell the lag).
    pub unacked: u64,
    /// Entries delivered to a consumer and not yet acknowledged.
    pub pending: u64,
    /// Age of the oldest unacknowledged entry, seconds.
    pub lag_seconds: f64,
}

impl ShardBacklog {
    /// `group`'s backlog on a sampled shard, at wall-clock `now_ms`.
    pub fn of(info: &ShardInfo, group: &str, now_ms: i64) -> ShardBacklog {
        let Some(g) = info.group(group) else {
            // No group yet: everything in the stream is unread.
            return ShardBacklog {
                unacked: info.length,
                pending: 0,
                lag_seconds: age(info.first_entry.as_deref(), now_ms),
            };
        };
        let oldest = match g.pel_count {
            0 => info.oldest_unread.as_deref(),
            _ => g.oldest_pending.as_deref(),
        };
        ShardBacklog {
            unacked: g.lag.map_or(info.length, |lag| lag + g.pel_count),
            pending: g.pel_count,
            lag_seconds: age(oldest, now_ms),
        }
    }
}

/// Seconds since the Redis time of entry `id` (0 without one).
fn age(id: Option<&str>, now_ms: i64) -> f64 {
    id.and_then(id_ms)
        .map_or(0.0, |t| (now_ms - t).max(0) as f64 / 1000.0)
}

/// One reading of every shard stream, shared by whoever needs one (the
/// scrape, the claim check) so that Redis is asked once.
struct Sample {
    at: Instant,
    shards: Arc<Vec<ShardInfo>>,
}

/// Every metric of one consumer.
pub struct Metrics {
    /// Events newly stored.
    pub events: AtomicU64,
    /// Redelivered events that were already stored.
    pub duplicates: AtomicU64,
    /// Entries moved to the dead-letter stream.
    pub dead_letters: AtomicU64,
    /// Entries taken over from another consumer.
    pub claimed: AtomicU64,
    /// Committed batches.
    pub batches: AtomicU64,
    /// Stream entries trimmed once every group had acknowledged them.
    pub trimmed: AtomicU64,
    /// Failed PostgreSQL steps (each retried).
    pub postgres_errors: AtomicU64,
    /// Failed Redis steps (each retried).
    pub redis_errors: AtomicU64,
    /// Entries per committed batch.
    pub batch_size: Histogram,
    /// From BEGIN to COMMIT.
    pub commit_seconds: Histogram,
    /// From the command (Redis time) to its event committed.
    pub event_lag_seconds: Histogram,
    /// Events per second between the last two scrapes.
    pub events_per_second: Mutex<f64>,
    /// Per shard, as of the last scrape.
    pub shards: Mutex<Vec<ShardBacklog>>,
    /// The events counter at the last scrape.
    last_scrape: Mutex<Option<(Instant, u64)>>,
    sample: tokio::sync::Mutex<Option<Sample>>,
}

impl Metrics {
    /// Zeroed metrics.
    pub fn new() -> Metrics {
        Metrics {
            events: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            dead_letters: AtomicU64::new(0),
            claimed: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            trimmed: AtomicU64::new(0),
            postgres_errors: AtomicU64::new(0),
            redis_errors: AtomicU64::new(0),
            batch_size: Histogram::new(SIZES, 1.0),
            commit_seconds: Histogram::new(SECONDS, 1.0),
            event_lag_seconds: Histogram::new(SECONDS, 1.0),
            events_per_second: Mutex::new(0.0),
            shards: Mutex::new(Vec::new()),
            last_scrape: Mutex::new(None),
            sample: tokio::sync::Mutex::new(None),
        }
    }

    /// Every shard stream as read at most `max_age` ago: the last reading
    /// if it is young enough, else a new one ([`Streams::info`], one command
    /// per shard). Concurrent callers share one reading.
    pub async fn shard_info(
        &self,
        streams: &Streams,
        max_age: Duration,
    ) -> redis::RedisResult<Arc<Vec<ShardInfo>>> {
        let mut sample = self.sample.lock().await;
        if let Some(s) = sample.as_ref().filter(|s| s.at.elapsed() <= max_age) {
            return Ok(s.shards.clone());
        }
        let at = Instant::now();
        let shards = Arc::new(streams.info().await?);
        *sample = Some(Sample {
            at,
            shards: shards.clone(),
        });
        Ok(shards)
    }

    /// Updates the scrape-time gauges: the events per second since the
    /// previous scrape and, from `shards` (when read), each shard's backlog
    /// of `group`.
    pub fn on_scrape(&self, shards: Option<&[ShardInfo]>, group: &str, now_ms: i64) {
        let now = (Instant::now(), self.events.load(Relaxed));
        let mut last = self.last_scrape.lock().expect("metrics lock");
        if let Some((t, n)) = *last {
            let secs = now.0.duration_since(t).as_secs_f64().max(1e-3);
            *self.events_per_second.lock().expect("metrics lock") = (now.1 - n) as f64 / secs;
        }
        *last = Some(now);
        if let Some(shards) = shards {
            *self.shards.lock().expect("metrics lock") = shards
                .iter()
                .map(|s| ShardBacklog::of(s, group, now_ms))
                .collect();
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let counters = [
            (
                "events_total",
                "Audit events stored in PostgreSQL.",
                &self.events,
            ),
            (
                "duplicates_total",
                "Redelivered events that were already stored.",
                &self.duplicates,
            ),
            (
                "dead_letters_total",
                "Entries moved to the dead-letter stream.",
                &self.dead_letters,
            ),
            (
                "claimed_total",
                "Entries claimed from idle consumers.",
                &self.claimed,
            ),
            ("batches_total", "Committed batches.", &self.batches),
            (
                "trimmed_total",
                "Stream entries trimmed once every consumer group had acknowledged them.",
                &self.trimmed,
            ),
        ];
        write_counters(&mut out, "synckairos_audit", &counters);
        write_errors(
            &mut out,
            "synckairos_audit",
            "Failed steps, retried with backoff.",
            [&self.postgres_errors, &self.redis_errors],
        );
        let eps = *self.events_per_second.lock().expect("metrics lock");
        let _ = writeln!(
            out,
            "# HELP synckairos_audit_events_per_second Events stored per second, last interval.\n# TYPE synckairos_audit_events_per_second gauge\nsynckairos_audit_events_per_second {eps:.1}"
        );
        let shards = self.shards.lock().expect("metrics lock").clone();
        let gauges: [Gauge; 3] = [
            (
                "stream_unacked",
                "Entries in the shard stream not yet acknowledged.",
                |s| s.unacked as f64,
            ),
            (
                "pending",
                "Entries delivered to a consumer, not yet acknowledged.",
                |s| s.pending as f64,
            ),
            (
                "lag_seconds",
                "Age of the oldest unacknowledged entry.",
                |s| s.lag_seconds,
            ),
        ];
        for (name, help, f) in gauges {
            let _ = writeln!(
                out,
                "# HELP synckairos_audit_{name} {help}\n# TYPE synckairos_audit_{name} gauge"
            );
            for (i, s) in shards.iter().enumerate() {
                let _ = writeln!(out, "synckairos_audit_{name}{{shard=\"{i}\"}} {}", f(s));
            }
        }
        self.batch_size.render(
            &mut out,
            "synckairos_audit_batch_size",
            "Entries per committed batch.",
        );
        self.commit_seconds.render(
            &mut out,
            "synckairos_audit_commit_seconds",
            "PostgreSQL transaction time per batch.",
        );
        self.event_lag_seconds.render(
            &mut out,
            "synckairos_audit_event_lag_seconds",
            "From the command (Redis time) to its event committed.",
        );
        out
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

/// Writes `counters` (name, help, value) as Prometheus counters named
/// `<prefix>_<name>` (the audit consumer's and the webhook worker's).
pub fn write_counters(out: &mut String, prefix: &str, counters: &[(&str, &str, &AtomicU64)]) {
    for (name, help, v) in counters {
        let _ = writeln!(
            out,
            "# HELP {prefix}_{name} {help}\n# TYPE {prefix}_{name} counter\n{prefix}_{name} {}",
            v.load(Relaxed)
        );
    }
}

/// Writes the counter `<prefix>_errors_total`, by dependency: the
/// PostgreSQL then the Redis failures.
pub fn write_errors(
    out: &mut String,
    prefix: &str,
    help: &str,
    [postgres, redis]: [&AtomicU64; 2],
) {
    let _ = writeln!(
        out,
        "# HELP {prefix}_errors_total {help}\n# TYPE {prefix}_errors_total counter\n{prefix}_errors_total{{dependency=\"postgres\"}} {}\n{prefix}_errors_total{{dependency=\"redis\"}} {}",
        postgres.load(Relaxed),
        redis.load(Relaxed)
    );
}
