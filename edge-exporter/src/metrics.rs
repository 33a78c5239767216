//! The exporter's Prometheus series: the edge's requests as monotonically
//! increasing counters (`synckairos_edge_*`, the shape of the native
//! `synckairos_gateway_rest_*`), and the exporter's own health
//! (`synckairos_edge_exporter_*`).
//!
//! Every label comes from a bounded set: a route is kept only when it
//! looks like a route pattern ([`is_route_pattern`]) and fewer than
//! [`MAX_ROUTES`] are known, a code only when it is an HTTP status; anything
//! else is counted under `other`, so the totals still add up.

use crate::query::{Row, Window, BUCKETS_MS};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

/// The most routes with series of their own (the API has about 15).
pub const MAX_ROUTES: usize = 32;
/// The label of a route or a code outside the bounded set.
pub const OTHER: &str = "other";
/// The route the edge SLOs are about; its series exist from the start, so
/// the first 5xx (or the first request) is a counter increase that
/// `rate()` sees, not a series appearing with its value already counted.
pub const SWITCH: &str = "/v1/sessions/:id/switch";

/// How one query ended (`synckairos_edge_exporter_queries_total{result}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueryResult {
    /// Answered and counted.
    Ok,
    /// The API answered with an error status (a bad token, a bad query,
    /// a rate limit, an outage).
    Refused,
    /// No answer: the connection failed or the query timed out.
    Unreachable,
    /// Answered 2xx with a body that is not the expected JSON.
    Invalid,
}

impl QueryResult {
    const ALL: [QueryResult; 4] = [
        QueryResult::Ok,
        QueryResult::Refused,
        QueryResult::Unreachable,
        QueryResult::Invalid,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            QueryResult::Ok => "ok",
            QueryResult::Refused => "refused",
            QueryResult::Unreachable => "unreachable",
            QueryResult::Invalid => "invalid",
        }
    }
}

/// Whether `s` looks like a route label the Worker writes: a pattern
/// (`/v1/sessions/:id/switch`), `unmatched`, or `OPTIONS` (a preflight).
pub fn is_route_pattern(s: &str) -> bool {
    s == "unmatched"
        || s == "OPTIONS"
        || (s.starts_with('/')
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/:._-".contains(&b)))
}

fn is_status(s: &str) -> bool {
    s.len() == 3
        && s.bytes().all(|b| b.is_ascii_digit())
        && (b'1'..=b'5').contains(&s.as_bytes()[0])
}

#[derive(Default)]
struct Latency {
    le: [f64; BUCKETS_MS.len()],
    sum_ms: f64,
    count: f64,
}

#[derive(Default)]
struct Inner {
    requests: BTreeMap<(String, String), f64>,
    latency: BTreeMap<String, Latency>,
    queries: [u64; 4],
    last_success: Option<f64>,
    window_end: Option<u64>,
    skipped_seconds: u64,
}

/// Every series of the exporter.
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// Counters at 0, with the switch route's series already there
    /// (statuses 200, 500, 503: what the Worker answers a switch).
    pub fn new() -> Metrics {
        let mut inner = Inner::default();
        for code in ["200", "500", "503"] {
            inner.requests.insert((SWITCH.into(), code.into()), 0.0);
        }
        inner.latency.insert(SWITCH.into(), Latency::default());
        Metrics {
            inner: Mutex::new(inner),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds one window's rows, counts the query as `ok`, and records when
    /// (`now`, unix seconds) and up to where (`window.end`) data is counted.
    pub fn counted(&self, rows: &[Row], window: Window, now: f64) {
        let mut m = self.lock();
        for r in rows {
            let route = if is_route_pattern(&r.route)
                && (m.latency.contains_key(&r.route) || m.latency.len() < MAX_ROUTES)
            {
                r.route.clone()
            } else {
                OTHER.to_string()
            };
            let code = if is_status(&r.code) {
                r.code.clone()
            } else {
                OTHER.to_string()
            };
            *m.requests.entry((route.clone(), code)).or_insert(0.0) += r.requests;
            let l = m.latency.entry(route).or_default();
            for (b, n) in l.le.iter_mut().zip(&r.le) {
                *b += n;
            }
            l.sum_ms += r.latency_ms;
            l.count += r.requests;
        }
        m.queries[0] += 1;
        m.last_success = Some(now);
        m.window_end = Some(window.end);
    }

    /// Counts a failed query.
    pub fn failed(&self, why: QueryResult) {
        let i = QueryResult::ALL.iter().position(|r| *r == why).unwrap_or(0);
        self.lock().queries[i] += 1;
    }

    /// Counts seconds given up (older than `MAX_WINDOW_SECONDS` when
    /// queried).
    pub fn skipped(&self, seconds: u64) {
        self.lock().skipped_seconds += seconds;
    }

    /// Whether a query has succeeded yet.
    pub fn ready(&self) -> bool {
        self.lock().last_success.is_some()
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let m = self.lock();
        let mut out = String::new();
        let name = "synckairos_edge_requests_total";
        let _ = writeln!(
            out,
            "# HELP {name} Requests the edge Worker answered, by route pattern and status (Workers Analytics Engine, weighted by _sample_interval; counted LAG_SECONDS late).\n# TYPE {name} counter"
        );
        for ((route, code), n) in &m.requests {
            let _ = writeln!(out, "{name}{{route=\"{route}\",code=\"{code}\"}} {n}");
        }
        let name = "synckairos_edge_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time the edge Worker took to answer, Upstash round trip included, by route pattern (Workers Analytics Engine, weighted by _sample_interval).\n# TYPE {name} histogram"
        );
        for (route, l) in &m.latency {
            for (ms, n) in BUCKETS_MS.iter().zip(&l.le) {
                let le = f64::from(*ms) / 1000.0;
                let _ = writeln!(out, "{name}_bucket{{route=\"{route}\",le=\"{le}\"}} {n}");
            }
            let _ = writeln!(
                out,
                "{name}_bucket{{route=\"{route}\",le=\"+Inf\"}} {}\n{name}_sum{{route=\"{route}\"}} {}\n{name}_count{{route=\"{route}\"}} {}",
                l.count,
                l.sum_ms / 1000.0,
                l.count
            );
        }
        let name = "synckairos_edge_exporter_queries_total";
        let _ = writeln!(
            out,
            "# HELP {name} Queries to the Analytics Engine SQL API, by result (ok, refused: an error status, unreachable: no answer in time, invalid: an answer that is not the expected JSON).\n# TYPE {name} counter"
        );
        for (r, n) in QueryResult::ALL.iter().zip(m.queries) {
            let _ = writeln!(out, "{name}{{result=\"{}\"}} {n}", r.label());
        }
        let name = "synckairos_edge_exporter_last_success_timestamp_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} When a query last succeeded, unix seconds (0: none yet).\n# TYPE {name} gauge\n{name} {}",
            m.last_success.unwrap_or(0.0)
        );
        let name = "synckairos_edge_exporter_window_end_timestamp_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Data points are counted up to this time, unix seconds (0: none yet); LAG_SECONDS behind now when queries succeed.\n# TYPE {name} gauge\n{name} {}",
            m.window_end.unwrap_or(0)
        );
        let name = "synckairos_edge_exporter_skipped_seconds_total";
        let _ = writeln!(
            out,
            "# HELP {name} Seconds of data never counted: queries failed for longer than MAX_WINDOW_SECONDS.\n# TYPE {name} counter\n{name} {}",
            m.skipped_seconds
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(route: &str, code: &str, requests: f64, latency_ms: f64, le: [f64; 10]) -> Row {
        Row {
            route: route.into(),
            code: code.into(),
            requests,
            latency_ms,
            le: le.to_vec(),
        }
    }

    const W: Window = Window { start: 0, end: 60 };

    #[test]
    fn every_route_pattern_of_the_api_is_a_label() {
        let id = "0b1c8f6e-2f4a-4c1e-9a57-3d5e7f9b1c2d";
        for (method, path) in [
            ("GET", "/health".to_string()),
            ("GET", "/ready".into()),
            ("GET", "/v1/time".into()),
            ("GET", "/v1/openapi.json".into()),
            ("OPTIONS", "/v1/sessions".into()),
            ("POST", "/v1/sessions".into()),
            ("GET", format!("/v1/sessions/{id}")),
            ("POST", format!("/v1/sessions/{id}/switch")),
            ("POST", format!("/v1/sessions/{id}/start")),
            ("POST", format!("/v1/sessions/{id}/devices")),
            ("DELETE", format!("/v1/sessions/{id}/devices/abc")),
        ] {
            let pattern = synckairos_core::api::route(method, &path)
                .unwrap()
                .pattern();
            assert!(is_route_pattern(pattern), "{pattern}");
        }
        assert!(is_route_pattern("unmatched"));
        for bad in [
            "",
            "v1",
            "/a\"}",
            "/a b",
            "/a{x}",
            &format!("/{}", "a".repeat(64)),
        ] {
            assert!(!is_route_pattern(bad), "{bad:?}");
        }
    }

    #[test]
    fn counters_add_up_and_labels_stay_bounded() {
        let m = Metrics::new();
        let z = [0.0; 10];
        let mut le = [0.0; 10];
        le[4..].fill(3.0); // 3 requests ≤ 100 ms
        le[1..4].fill(1.0); // 1 of them ≤ 10 ms
        m.counted(&[row(SWITCH, "200", 4.0, 1000.0, le)], W, 10.0);
        m.counted(
            &[
                row(SWITCH, "200", 2.0, 20.0, [2.0; 10]),
                row(SWITCH, "503", 1.0, 6000.0, z),
                row("/a\"}", "200", 7.0, 7.0, [7.0; 10]),
                row("unmatched", "4044", 1.0, 1.0, [1.0; 10]),
            ],
            W,
            11.5,
        );
        let t = m.render();
        for line in [
            "synckairos_edge_requests_total{route=\"/v1/sessions/:id/switch\",code=\"200\"} 6\n",
            "synckairos_edge_requests_total{route=\"/v1/sessions/:id/switch\",code=\"500\"} 0\n",
            "synckairos_edge_requests_total{route=\"/v1/sessions/:id/switch\",code=\"503\"} 1\n",
            "synckairos_edge_requests_total{route=\"other\",code=\"200\"} 7\n",
            "synckairos_edge_requests_total{route=\"unmatched\",code=\"other\"} 1\n",
            "synckairos_edge_duration_seconds_bucket{route=\"/v1/sessions/:id/switch\",le=\"0.005\"} 2\n",
            "synckairos_edge_duration_seconds_bucket{route=\"/v1/sessions/:id/switch\",le=\"0.01\"} 3\n",
            "synckairos_edge_duration_seconds_bucket{route=\"/v1/sessions/:id/switch\",le=\"0.1\"} 5\n",
            "synckairos_edge_duration_seconds_bucket{route=\"/v1/sessions/:id/switch\",le=\"5\"} 5\n",
            "synckairos_edge_duration_seconds_bucket{route=\"/v1/sessions/:id/switch\",le=\"+Inf\"} 7\n",
            "synckairos_edge_duration_seconds_sum{route=\"/v1/sessions/:id/switch\"} 7.02\n",
            "synckairos_edge_duration_seconds_count{route=\"/v1/sessions/:id/switch\"} 7\n",
            "synckairos_edge_exporter_queries_total{result=\"ok\"} 2\n",
            "synckairos_edge_exporter_last_success_timestamp_seconds 11.5\n",
            "synckairos_edge_exporter_window_end_timestamp_seconds 60\n",
        ] {
            assert!(t.contains(line), "{line}in\n{t}");
        }

        let many: Vec<Row> = (0..MAX_ROUTES + 5)
            .map(|i| row(&format!("/r{i}"), "200", 1.0, 1.0, [1.0; 10]))
            .collect();
        m.counted(&many, W, 12.0);
        let t = m.render();
        let routes = t
            .lines()
            .filter(|l| l.starts_with("synckairos_edge_duration_seconds_count{"))
            .count();
        assert_eq!(routes, MAX_ROUTES);
        assert!(t.contains("synckairos_edge_requests_total{route=\"/r0\",code=\"200\"} 1\n"));
        assert!(!t.contains("/r29\"") && !t.contains("/r36\""));
    }

    #[test]
    fn before_any_success_the_exporter_is_not_ready_and_says_so() {
        let m = Metrics::new();
        assert!(!m.ready());
        m.failed(QueryResult::Refused);
        m.failed(QueryResult::Unreachable);
        m.skipped(120);
        let t = m.render();
        assert!(t.contains("synckairos_edge_exporter_queries_total{result=\"ok\"} 0\n"));
        assert!(t.contains("synckairos_edge_exporter_queries_total{result=\"refused\"} 1\n"));
        assert!(t.contains("synckairos_edge_exporter_queries_total{result=\"unreachable\"} 1\n"));
        assert!(t.contains("synckairos_edge_exporter_last_success_timestamp_seconds 0\n"));
        assert!(t.contains("synckairos_edge_exporter_skipped_seconds_total 120\n"));
        m.counted(&[], W, 1.0);
        assert!(m.ready());
    }
}
