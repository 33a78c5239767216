//! Prometheus text metrics, `synckairos_gateway_*`, with fixed label sets.
//!
//! The alert rules (`deploy/prometheus/alerts.yml`) and the dashboards
//! (`deploy/grafana/`) name these series; `scripts/check-ops.sh` fails when
//! one they name is missing from a live scrape.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

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
    /// 1 while the Redis subscriber is linked (subscribed and caught up),
    /// 0 while it reconnects; read from the hub when scraped.
    pub redis_connected: AtomicI64,
    /// 1 when `/ready` would answer ready, 0 when not; evaluated (the same
    /// check) when scraped.
    pub ready: AtomicI64,
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
    /// REST requests (`REST_API=on`) by route and status, and their time.
    pub rest: RestMetrics,
}

/// The REST API's requests (`REST_API=on`): a count by method, route
/// pattern ([`synckairos_core::api::Route::pattern`], `unmatched` for a path
/// no route takes) and status code, and the time to answer by method and
/// route. Every label comes from a fixed set (the routes, the statuses the
/// HTTP core answers), so the series stay bounded.
#[derive(Default)]
pub struct RestMetrics {
    routes: Mutex<BTreeMap<(&'static str, &'static str), RouteStats>>,
}

struct RouteStats {
    by_status: BTreeMap<u16, u64>,
    latency: Histogram,
}

impl RestMetrics {
    /// Counts one answered request of `method` (upper case) on `route`
    /// with `status`, answered in `ms`.
    pub fn observe(&self, method: &'static str, route: &'static str, status: u16, ms: f64) {
        let mut routes = self.routes.lock().expect("rest metrics lock");
        let stats = routes.entry((method, route)).or_insert_with(|| RouteStats {
            by_status: BTreeMap::new(),
            latency: Histogram::new(LATENCY_MS, 1000.0),
        });
        *stats.by_status.entry(status).or_insert(0) += 1;
        stats.latency.observe(ms);
    }

    fn render(&self, out: &mut String) {
        let routes = self.routes.lock().expect("rest metrics lock");
        let _ = writeln!(
            out,
            "# HELP synckairos_gateway_rest_requests_total REST requests answered (REST_API=on), by method, route and status code.\n# TYPE synckairos_gateway_rest_requests_total counter"
        );
        for ((method, route), stats) in routes.iter() {
            for (code, n) in &stats.by_status {
                let _ = writeln!(
                    out,
                    "synckairos_gateway_rest_requests_total{{method=\"{method}\",route=\"{route}\",code=\"{code}\"}} {n}"
                );
            }
        }
        let name = "synckairos_gateway_rest_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time to answer a REST request (REST_API=on), body read included, by method and route.\n# TYPE {name} histogram"
        );
        for ((method, route), stats) in routes.iter() {
            let labels = format!("method=\"{method}\",route=\"{route}\"");
            stats.latency.render_series(out, name, &labels);
        }
    }
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
            redis_connected: AtomicI64::new(0),
            ready: AtomicI64::new(0),
            redis_rebuilds: AtomicU64::new(0),
            expired: AtomicU64::new(0),
            expiry_leader: AtomicI64::new(0),
            syncs_from_memory: AtomicU64::new(0),
            clock_offset_ms: AtomicI64::new(0),
            clock_error_us: AtomicI64::new(0),
            fanout_latency: Histogram::new(LATENCY_MS, 1000.0),
            expiry_lag: Histogram::new(LATENCY_MS, 1000.0),
            rest: RestMetrics::default(),
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
            "synckairos_gateway_redis_connected",
            "gauge",
            "1 while the Redis subscriber is linked (subscribed and caught up), 0 while it reconnects.",
            self.redis_connected.load(Relaxed).to_string(),
        );
        one(
            "synckairos_gateway_ready",
            "gauge",
            "1 when /ready answers ready (Redis answers and the subscriber is linked), 0 when not.",
            self.ready.load(Relaxed).to_string(),
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
        self.rest.render(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_requests_are_counted_by_method_route_and_status() {
        let m = Metrics::default();
        let switch = "/v1/sessions/:id/switch";
        m.rest.observe("POST", switch, 200, 3.0);
        m.rest.observe("POST", switch, 200, 30.0);
        m.rest.observe("POST", switch, 503, 2000.0);
        m.rest.observe("GET", "unmatched", 404, 0.2);
        m.redis_connected.store(1, Relaxed);
        let t = m.render();
        for line in [
            "synckairos_gateway_rest_requests_total{method=\"POST\",route=\"/v1/sessions/:id/switch\",code=\"200\"} 2\n",
            "synckairos_gateway_rest_requests_total{method=\"POST\",route=\"/v1/sessions/:id/switch\",code=\"503\"} 1\n",
            "synckairos_gateway_rest_requests_total{method=\"GET\",route=\"unmatched\",code=\"404\"} 1\n",
            "synckairos_gateway_rest_duration_seconds_bucket{method=\"POST\",route=\"/v1/sessions/:id/switch\",le=\"0.005\"} 1\n",
            "synckairos_gateway_rest_duration_seconds_bucket{method=\"POST\",route=\"/v1/sessions/:id/switch\",le=\"0.05\"} 2\n",
            "synckairos_gateway_rest_duration_seconds_bucket{method=\"POST\",route=\"/v1/sessions/:id/switch\",le=\"+Inf\"} 3\n",
            "synckairos_gateway_rest_duration_seconds_count{method=\"POST\",route=\"/v1/sessions/:id/switch\"} 3\n",
            "synckairos_gateway_redis_connected 1\n",
            "synckairos_gateway_ready 0\n",
        ] {
            assert!(t.contains(line), "{line} missing from:\n{t}");
        }
        for name in [
            "synckairos_gateway_rest_requests_total",
            "synckairos_gateway_rest_duration_seconds",
        ] {
            assert_eq!(t.matches(&format!("# TYPE {name} ")).count(), 1, "{name}");
        }
    }

    #[test]
    fn an_idle_server_still_declares_its_rest_series() {
        let t = Metrics::default().render();
        assert!(t.contains("# TYPE synckairos_gateway_rest_requests_total counter\n"));
        assert!(t.contains("# TYPE synckairos_gateway_rest_duration_seconds histogram\n"));
    }
}
