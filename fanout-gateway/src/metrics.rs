//! Prometheus text metrics, `synckairos_gateway_*`, with fixed label sets.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

pub use synckairos_core::prom::Histogram;

const LATENCY_MS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 1000.0];

/// Every metric of one gateway.
pub struct Metrics {
    /// Open WebSocket connections.
    pub connections: AtomicI64,
    /// Sessions with at least one local watcher (= Redis subscriptions).
    pub watched_sessions: AtomicI64,
    /// Messages sent to clients.
    pub messages_sent: AtomicU64,
    /// Snapshots replaced in a client's queue by a newer one before sending.
    pub coalesced: AtomicU64,
    /// Clients closed for being too slow (1013) or missing a heartbeat.
    pub dropped_slow: AtomicU64,
    /// Clients dropped for missing a heartbeat.
    pub dropped_heartbeat: AtomicU64,
    /// Connections refused (limit, origin, auth, bad parameters).
    pub refused: AtomicU64,
    /// Redis subscriber (re)connections.
    pub redis_reconnects: AtomicU64,
    /// Times the engine's cluster connection was rebuilt after it stopped
    /// answering (read from the engine when rendered).
    pub redis_rebuilds: AtomicU64,
    /// Expired transitions this gateway applied.
    pub expired: AtomicU64,
    /// 1 while this gateway holds the expiry lease (runs the scheduler).
    pub expiry_leader: AtomicI64,
    /// `STATE_SYNC`s served from the hub's latest snapshot, without a read.
    pub syncs_from_memory: AtomicU64,
    /// Estimated Redis-minus-local clock offset, ms.
    pub clock_offset_ms: AtomicI64,
    /// The offset's error bound (half the round trip plus the drift since
    /// the sample), µs.
    pub clock_error_us: AtomicI64,
    /// Snapshot `server_time_ms` to send.
    pub fanout_latency: Histogram,
    /// Deadline to the applied `expired` transition.
    pub expiry_lag: Histogram,
    /// Time to answer a REST request (`REST_API=on`), body read included.
    pub rest_latency: Histogram,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            connections: AtomicI64::new(0),
            watched_sessions: AtomicI64::new(0),
            messages_sent: AtomicU64::new(0),
            coalesced: AtomicU64::new(0),
            dropped_slow: AtomicU64::new(0),
            dropped_heartbeat: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            redis_reconnects: AtomicU64::new(0),
            redis_rebuilds: AtomicU64::new(0),
            expired: AtomicU64::new(0),
            expiry_leader: AtomicI64::new(0),
            syncs_from_memory: AtomicU64::new(0),
            clock_offset_ms: AtomicI64::new(0),
            clock_error_us: AtomicI64::new(0),
            fanout_latency: Histogram::new(LATENCY_MS, 1000.0),
            expiry_lag: Histogram::new(LATENCY_MS, 1000.0),
            rest_latency: Histogram::new(LATENCY_MS, 1000.0),
        }
    }
}

impl Metrics {
    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut one = |name: &str, kind: &str, help: &str, v: String| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        };
        one(
            "synckairos_gateway_connections",
            "gauge",
            "Open WebSocket connections.",
            self.connections.load(Relaxed).to_string(),
        );
        one(
            "synckairos_gateway_watched_sessions",
            "gauge",
            "Sessions with a local watcher.",
            self.watched_sessions.load(Relaxed).to_string(),
        );
        one(
            "synckairos_gateway_messages_sent_total",
            "counter",
            "Messages sent to clients.",
            self.messages_sent.load(Relaxed).to_string(),
        );
        one(
            "synckairos_gateway_coalesced_total",
            "counter",
            "Snapshots superseded in a client queue before sending.",
            self.coalesced.load(Relaxed).to_string(),
        );
        one(
            "synckairos_gateway_dropped_slow_total",
            "counter",
            "Clients closed with 1013 for falling behind.",
            self.dropped_slow.load(Relaxed).to_string(),
        );
        one(
            "synckairos_gateway_dropped_heartbeat_total",
            "counter",
            "Clients dropped for a missed heartbeat.",
            self.dropped_heartbeat.load(Relaxed).to_string(),
        );
        one(
            "synckairos_gateway_refused_total",
            "counter",
            "Connections refused.",
            self.refused.load(Relaxed).to_string(),
        );
        one(
            "synckairos_gateway_redis_reconnects_total",
            "counter",
            "Redis subscriber reconnections.",
            self.redis_reconnects.load(Relaxed).to_string(),
        );
        one(
            "synckairos_gateway_redis_rebuilds_total",
            "counter",
            "Redis Cluster connection rebuilds after a run of commands without an answer.",
            self.redis_rebuilds.load(Relaxed).to_string(),
        );
        one(
            "synckairos_gateway_expired_total",
            "counter",
            "Expired transitions applied by this gateway.",
            self.expired.load(Relaxed).to_string(),
        );
        one(
            "synckairos_gateway_expiry_leader",
            "gauge",
            "1 while this gateway holds the expiry lease and runs the scheduler.",
            self.expiry_leader.load(Relaxed).to_string(),
        );
        one(
            "synckairos_gateway_syncs_from_memory_total",
            "counter",
            "STATE_SYNCs served from the latest published snapshot, without a Redis read.",
            self.syncs_from_memory.load(Relaxed).to_string(),
        );
        one(
            "synckairos_gateway_clock_offset_seconds",
            "gauge",
            "Estimated Redis TIME minus local clock.",
            (self.clock_offset_ms.load(Relaxed) as f64 / 1000.0).to_string(),
        );
        one(
            "synckairos_gateway_clock_error_bound_seconds",
            "gauge",
            "Error bound of the offset: half the round trip plus the drift since the sample.",
            (self.clock_error_us.load(Relaxed) as f64 / 1e6).to_string(),
        );
        self.fanout_latency.render(
            &mut out,
            "synckairos_gateway_fanout_latency_seconds",
            "From a snapshot's server_time_ms to its send to a client.",
        );
        self.expiry_lag.render(
            &mut out,
            "synckairos_gateway_expiry_lag_seconds",
            "From a deadline to the expired transition.",
        );
        self.rest_latency.render(
            &mut out,
            "synckairos_gateway_rest_duration_seconds",
            "Time to answer a REST request (REST_API=on).",
        );
        out
    }
}
