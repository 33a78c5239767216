//! Prometheus text metrics, `synckairos_webhook_*`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use synckairos_core::prom::Histogram;

const SECONDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 1800.0, 7200.0, 36000.0,
];

/// One endpoint's metrics.
pub struct EndpointMetrics {
    /// The endpoint's id (the label).
    pub id: String,
    /// Attempts answered 2xx.
    pub delivered: AtomicU64,
    /// Attempts that failed and will be retried.
    pub failed: AtomicU64,
    /// Deliveries moved to the dead letters after their last attempt.
    pub dead: AtomicU64,
    /// Attempt latency (request to answer, or to the failure).
    pub delivery_seconds: Histogram,
    /// From the event's time to its first attempt's end.
    pub event_age_seconds: Histogram,
}

/// Every metric of one worker process.
pub struct Metrics {
    /// By endpoint, in configuration order.
    pub endpoints: Vec<EndpointMetrics>,
    /// Stream entries that became deliveries.
    pub ingest_events: AtomicU64,
    /// Deliveries queued (an event × each endpoint that wants it).
    pub ingest_deliveries: AtomicU64,
    /// Known audit types no endpoint can subscribe to (acknowledged).
    pub ingest_ignored: AtomicU64,
    /// Types this worker does not know (acknowledged).
    pub ingest_unknown: AtomicU64,
    /// Entries that cannot be read (acknowledged, logged).
    pub ingest_malformed: AtomicU64,
    /// Entries taken over from an idle consumer of the group.
    pub ingest_claimed: AtomicU64,
    /// Stream entries trimmed after this group acknowledged them.
    pub trimmed: AtomicU64,
    /// Failed PostgreSQL operations (retried).
    pub postgres_errors: AtomicU64,
    /// Failed Redis operations (retried).
    pub redis_errors: AtomicU64,
    /// Queue depth by endpoint, read at scrape time.
    pub depth: Mutex<HashMap<String, i64>>,
    /// Entries of the dead-letter stream, read at scrape time.
    pub dead_letters: Mutex<Option<u64>>,
    /// The push sender's, when this process runs it (rendered after these).
    pub push: std::sync::OnceLock<std::sync::Arc<synckairos_push::Metrics>>,
}

impl Metrics {
    /// Zeroed metrics for these endpoints.
    pub fn new<'a>(endpoints: impl IntoIterator<Item = &'a str>) -> Metrics {
        Metrics {
            endpoints: endpoints
                .into_iter()
                .map(|id| EndpointMetrics {
                    id: id.to_string(),
                    delivered: AtomicU64::new(0),
                    failed: AtomicU64::new(0),
                    dead: AtomicU64::new(0),
                    delivery_seconds: Histogram::new(SECONDS, 1.0),
                    event_age_seconds: Histogram::new(SECONDS, 1.0),
                })
                .collect(),
            ingest_events: AtomicU64::new(0),
            ingest_deliveries: AtomicU64::new(0),
            ingest_ignored: AtomicU64::new(0),
            ingest_unknown: AtomicU64::new(0),
            ingest_malformed: AtomicU64::new(0),
            ingest_claimed: AtomicU64::new(0),
            trimmed: AtomicU64::new(0),
            postgres_errors: AtomicU64::new(0),
            redis_errors: AtomicU64::new(0),
            depth: Mutex::new(HashMap::new()),
            dead_letters: Mutex::new(None),
            push: std::sync::OnceLock::new(),
        }
    }

    /// The metrics of endpoint `id`.
    pub fn endpoint(&self, id: &str) -> Option<&EndpointMetrics> {
        self.endpoints.iter().find(|e| e.id == id)
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP synckairos_webhook_deliveries_total Attempts by result: delivered (2xx), failed (to be retried), dead (last attempt failed).\n# TYPE synckairos_webhook_deliveries_total counter\n");
        for e in &self.endpoints {
            for (result, v) in [
                ("delivered", &e.delivered),
                ("failed", &e.failed),
                ("dead", &e.dead),
            ] {
                let _ = writeln!(
                    out,
                    "synckairos_webhook_deliveries_total{{endpoint=\"{}\",result=\"{result}\"}} {}",
                    e.id,
                    v.load(Relaxed)
                );
            }
        }
        out.push_str("# HELP synckairos_webhook_queue_depth Deliveries queued (waiting, in flight or to be retried).\n# TYPE synckairos_webhook_queue_depth gauge\n");
        let depth = self.depth.lock().expect("metrics lock").clone();
        for e in &self.endpoints {
            let _ = writeln!(
                out,
                "synckairos_webhook_queue_depth{{endpoint=\"{}\"}} {}",
                e.id,
                depth.get(&e.id).copied().unwrap_or(0)
            );
        }
        if let Some(n) = *self.dead_letters.lock().expect("metrics lock") {
            let _ = writeln!(
                out,
                "# HELP synckairos_webhook_dead_letters Entries of the dead-letter stream sk:webhooks:dead.\n# TYPE synckairos_webhook_dead_letters gauge\nsynckairos_webhook_dead_letters {n}"
            );
        }
        let counters = [
            (
                "ingest_events_total",
                "Stream entries of a webhook event type.",
                &self.ingest_events,
            ),
            (
                "ingest_deliveries_total",
                "Deliveries queued (events times the endpoints that want them).",
                &self.ingest_deliveries,
            ),
            (
                "ingest_ignored_total",
                "Entries of audit types no endpoint can subscribe to.",
                &self.ingest_ignored,
            ),
            (
                "ingest_unknown_total",
                "Entries of a type this worker does not know (acknowledged and skipped).",
                &self.ingest_unknown,
            ),
            (
                "ingest_malformed_total",
                "Entries that cannot be read (acknowledged and skipped).",
                &self.ingest_malformed,
            ),
            (
                "ingest_claimed_total",
                "Entries claimed from idle consumers of the group.",
                &self.ingest_claimed,
            ),
            (
                "trimmed_total",
                "Stream entries trimmed once every consumer group had acknowledged them.",
                &self.trimmed,
            ),
        ];
        synckairos_audit_consumer::metrics::write_counters(
            &mut out,
            "synckairos_webhook",
            &counters,
        );
        synckairos_audit_consumer::metrics::write_errors(
            &mut out,
            "synckairos_webhook",
            "Failed operations, retried.",
            [&self.postgres_errors, &self.redis_errors],
        );
        labelled(
            &mut out,
            &self.endpoints,
            "synckairos_webhook_delivery_seconds",
            "Attempt latency, request to answer (or failure).",
            |e| &e.delivery_seconds,
        );
        labelled(
            &mut out,
            &self.endpoints,
            "synckairos_webhook_event_age_seconds",
            "From the event (Redis time) to the end of its first attempt.",
            |e| &e.event_age_seconds,
        );
        if let Some(push) = self.push.get() {
            out.push_str(&push.render());
        }
        out
    }
}

/// A histogram per endpoint under one name, labelled `endpoint`.
fn labelled(
    out: &mut String,
    endpoints: &[EndpointMetrics],
    name: &str,
    help: &str,
    h: fn(&EndpointMetrics) -> &Histogram,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for e in endpoints {
        h(e).render_series(out, name, &format!("endpoint=\"{}\"", e.id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_labelled_series() {
        let m = Metrics::new(["a", "b"]);
        m.endpoints[0].delivered.fetch_add(2, Relaxed);
        m.endpoints[1].delivery_seconds.observe(0.003);
        m.depth.lock().unwrap().insert("b".into(), 7);
        let t = m.render();
        assert!(t.contains(
            "synckairos_webhook_deliveries_total{endpoint=\"a\",result=\"delivered\"} 2\n"
        ));
        assert!(t.contains("synckairos_webhook_queue_depth{endpoint=\"b\"} 7\n"));
        assert!(t.contains(
            "synckairos_webhook_delivery_seconds_bucket{endpoint=\"b\",le=\"0.005\"} 1\n"
        ));
        assert!(t.contains("synckairos_webhook_delivery_seconds_count{endpoint=\"b\"} 1\n"));
        assert_eq!(
            t.matches("# TYPE synckairos_webhook_delivery_seconds histogram")
                .count(),
            1
        );
    }
}
