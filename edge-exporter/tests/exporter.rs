//! The binary against a stand-in for the Workers Analytics Engine SQL API:
//! the stand-in checks the token, the account, the dataset and the columns
//! of each query, reads the window from its SQL, and answers with the rows
//! that window holds in a synthetic dataset (every second the same mix of
//! sampled data points). The exporter's /metrics must then hold exactly the
//! weighted sums over the windows it was answered for: each second counted
//! once, failed windows queried again, nothing counted twice.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const TOKEN: &str = "edge-test-token-3f9a";
const ACCOUNT: &str = "acct0123";
const DATASET: &str = "synckairos_test";
const SWITCH: &str = "/v1/sessions/:id/switch";
const GET: &str = "/v1/sessions/:id";

/// One data point of the synthetic dataset: what the Worker would have
/// written, and the `_sample_interval` Analytics Engine stored it with.
struct Point {
    route: &'static str,
    status: &'static str,
    latency_ms: f64,
    sample_interval: u64,
}

/// The data points stamped with second `t`.
fn points(t: u64) -> Vec<Point> {
    let mut p = vec![
        // Sampled switches: 1 stored row for 4 requests (fast) or for 1 (slow).
        Point {
            route: SWITCH,
            status: "200",
            latency_ms: if t.is_multiple_of(2) { 20.0 } else { 150.0 },
            sample_interval: if t.is_multiple_of(2) { 4 } else { 1 },
        },
        Point {
            route: GET,
            status: "200",
            latency_ms: 7.0,
            sample_interval: 1,
        },
    ];
    if t.is_multiple_of(3) {
        p.push(Point {
            route: SWITCH,
            status: "503",
            latency_ms: 3000.0,
            sample_interval: 2,
        });
    }
    if t.is_multiple_of(4) {
        // Not a route pattern: must be counted, under `other`.
        p.push(Point {
            route: "/x\"} 1\nevil",
            status: "200",
            latency_ms: 1.0,
            sample_interval: 1,
        });
    }
    p
}

#[derive(Clone, Copy, Debug)]
struct Call {
    start: u64,
    end: u64,
    /// When it was asked, unix seconds.
    at: u64,
    answered: bool,
}

struct Fake {
    calls: Mutex<Vec<Call>>,
    failing: AtomicBool,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) to unix seconds (Howard Hinnant's
/// `days_from_civil`), independent of the exporter's formatting.
fn parse_time(s: &str) -> Option<u64> {
    let n = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    if s.len() != 19 {
        return None;
    }
    let (y, m, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
    let (hh, mm, ss) = (n(11..13)?, n(14..16)?, n(17..19)?);
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()
}

/// The window of a query: `timestamp >= toDateTime('…') AND timestamp <
/// toDateTime('…')`.
fn window_of(sql: &str) -> Option<(u64, u64)> {
    let after = |key: &str| {
        let i = sql.find(key)? + key.len();
        parse_time(sql.get(i..i + 19)?)
    };
    Some((
        after("timestamp >= toDateTime('")?,
        after("timestamp < toDateTime('")?,
    ))
}

/// The bucket bounds the query asks for: `SUM(if(double1 <= N, _sample_interval, 0)) AS le_N`.
fn bounds_of(sql: &str) -> Vec<u64> {
    sql.split("SUM(if(double1 <= ")
        .skip(1)
        .filter_map(|rest| {
            let n: String = rest.chars().take_while(char::is_ascii_digit).collect();
            let n: u64 = n.parse().ok()?;
            rest.contains(&format!(", _sample_interval, 0)) AS le_{n}"))
                .then_some(n)
        })
        .collect()
}

async fn sql_api(
    State(fake): State<Arc<Fake>>,
    Path(account): Path<String>,
    headers: HeaderMap,
    sql: String,
) -> Response {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if auth != format!("Bearer {TOKEN}") || account != ACCOUNT {
        return (StatusCode::UNAUTHORIZED, "Authentication error").into_response();
    }
    for needed in [
        "SELECT blob1 AS route, blob3 AS code",
        "SUM(_sample_interval) AS requests",
        "SUM(_sample_interval * double1) AS latency_ms",
        &format!("\nFROM {DATASET}\n"),
        "GROUP BY route, code",
        "FORMAT JSON",
    ] {
        if !sql.contains(needed) {
            return (
                StatusCode::BAD_REQUEST,
                format!("expected {needed:?} in {sql}"),
            )
                .into_response();
        }
    }
    let Some((start, end)) = window_of(&sql) else {
        return (StatusCode::BAD_REQUEST, format!("no window in {sql}")).into_response();
    };
    let bounds = bounds_of(&sql);
    if !bounds.contains(&100) {
        return (StatusCode::BAD_REQUEST, "no 100 ms bucket").into_response();
    }
    let failing = fake.failing.load(SeqCst);
    fake.calls.lock().unwrap().push(Call {
        start,
        end,
        at: unix_now(),
        answered: !failing,
    });
    if failing {
        return (StatusCode::SERVICE_UNAVAILABLE, "upstream unavailable").into_response();
    }
    // GROUP BY route, code over [start, end), weighted by _sample_interval.
    let mut groups: BTreeMap<(&str, &str), (u64, f64, Vec<u64>)> = BTreeMap::new();
    for t in start..end {
        for p in points(t) {
            let g = groups
                .entry((p.route, p.status))
                .or_insert_with(|| (0, 0.0, vec![0; bounds.len()]));
            g.0 += p.sample_interval;
            g.1 += p.sample_interval as f64 * p.latency_ms;
            for (n, b) in g.2.iter_mut().zip(&bounds) {
                if p.latency_ms <= *b as f64 {
                    *n += p.sample_interval;
                }
            }
        }
    }
    let data: Vec<Value> = groups
        .into_iter()
        .map(|((route, code), (requests, latency_ms, le))| {
            // As ClickHouse's JSON has them: UInt64 sums quoted, Float64 not.
            let mut row = json!({"route": route, "code": code,
                "requests": requests.to_string(), "latency_ms": latency_ms});
            for (b, n) in bounds.iter().zip(le) {
                row[format!("le_{b}")] = json!(n.to_string());
            }
            row
        })
        .collect();
    let rows = data.len();
    axum::Json(json!({
        "meta": [{"name": "route", "type": "String"}, {"name": "code", "type": "String"},
                 {"name": "requests", "type": "UInt64"}, {"name": "latency_ms", "type": "Float64"}],
        "data": data,
        "rows": rows,
    }))
    .into_response()
}

async fn start_fake(failing: bool) -> (Arc<Fake>, String) {
    let fake = Arc::new(Fake {
        calls: Mutex::new(Vec::new()),
        failing: AtomicBool::new(failing),
    });
    let app = Router::new()
        .route(
            "/client/v4/accounts/{account}/analytics_engine/sql",
            post(sql_api),
        )
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (
        fake,
        format!("http://127.0.0.1:{port}/client/v4/accounts/{{account}}/analytics_engine/sql"),
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits for `cond` (an expression that may `.await`) to hold, up to
/// `secs`; fails with the exporter's log.
macro_rules! wait_for {
    ($ex:expr, $secs:expr, $what:expr, $cond:expr) => {{
        let deadline = Instant::now() + Duration::from_secs($secs);
        while !$cond {
            assert!(
                Instant::now() < deadline,
                "not within {} s: {}; the exporter's log:\n{}",
                $secs,
                $what,
                $ex.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }};
}

struct Exporter {
    child: Child,
    port: u16,
    metrics_port: u16,
    log: std::path::PathBuf,
    http: reqwest::Client,
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

impl Exporter {
    fn start(name: &str, url: &str, env: &[(&str, &str)]) -> Exporter {
        let (port, metrics_port) = (free_port(), free_port());
        let log =
            std::env::temp_dir().join(format!("edge-exporter-{name}-{}.log", std::process::id()));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_edge-exporter"));
        cmd.env("CF_ACCOUNT_ID", ACCOUNT)
            .env("CF_API_TOKEN", TOKEN)
            .env("ANALYTICS_DATASET", DATASET)
            .env("ANALYTICS_SQL_URL", url)
            .env("SCRAPE_INTERVAL_SECONDS", "0.2")
            .env("LAG_SECONDS", "2")
            .env("LISTEN", format!("127.0.0.1:{port}"))
            .env("METRICS_LISTEN", format!("127.0.0.1:{metrics_port}"))
            .env("RUST_LOG", "debug");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Exporter {
            child,
            port,
            metrics_port,
            log,
            http: synckairos_edge_exporter::client(Duration::from_secs(5)).unwrap(),
        }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn get(&self, port: u16, path: &str) -> Option<(u16, String)> {
        let r = self
            .http
            .get(format!("http://127.0.0.1:{port}{path}"))
            .send()
            .await
            .ok()?;
        Some((r.status().as_u16(), r.text().await.ok()?))
    }

    async fn metrics(&self) -> String {
        let (status, body) = self.get(self.metrics_port, "/metrics").await.unwrap();
        assert_eq!(status, 200, "{body}");
        body
    }

    async fn ready(&self) -> (u16, String) {
        self.get(self.port, "/ready").await.unwrap()
    }

    async fn wait_up(&self) {
        wait_for!(
            self,
            20,
            "/health answers",
            matches!(self.get(self.port, "/health").await, Some((200, _)))
        );
    }

    fn sigterm(&mut self) -> std::process::ExitStatus {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "no exit within 10 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The value of the sample `series` (name and labels, exactly).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// What the counters must hold after counting `windows`.
fn expected(windows: &[(u64, u64)]) -> BTreeMap<String, f64> {
    let mut e = BTreeMap::new();
    let mut add = |k: String, v: f64| *e.entry(k).or_insert(0.0) += v;
    for &(start, end) in windows {
        for t in start..end {
            for p in points(t) {
                let route = if p.route.starts_with("/x") {
                    "other"
                } else {
                    p.route
                };
                let si = p.sample_interval as f64;
                add(
                    format!(
                        "synckairos_edge_requests_total{{route=\"{route}\",code=\"{}\"}}",
                        p.status
                    ),
                    si,
                );
                let h = "synckairos_edge_duration_seconds";
                add(format!("{h}_count{{route=\"{route}\"}}"), si);
                add(format!("{h}_bucket{{route=\"{route}\",le=\"+Inf\"}}"), si);
                add(
                    format!("{h}_sum{{route=\"{route}\"}}"),
                    si * p.latency_ms / 1000.0,
                );
                for (le, ms) in [
                    ("0.025", 25.0),
                    ("0.1", 100.0),
                    ("0.25", 250.0),
                    ("5", 5000.0),
                ] {
                    add(
                        format!("{h}_bucket{{route=\"{route}\",le=\"{le}\"}}"),
                        if p.latency_ms <= ms { si } else { 0.0 },
                    );
                }
            }
        }
    }
    e
}

/// The differences between `text` and what counting `windows` gives.
fn mismatches(text: &str, windows: &[(u64, u64)]) -> Vec<String> {
    expected(windows)
        .into_iter()
        .filter_map(|(series, want)| {
            let got = value(text, &series);
            match got {
                Some(g) if (g - want).abs() < 1e-6 => None,
                _ => Some(format!("{series}: {got:?}, expected {want}")),
            }
        })
        .collect()
}

fn answered(fake: &Fake) -> Vec<(u64, u64)> {
    let calls = fake.calls.lock().unwrap();
    calls
        .iter()
        .filter(|c| c.answered)
        .map(|c| (c.start, c.end))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_each_second_once_retries_failed_windows_and_stops_on_sigterm() {
    let (fake, url) = start_fake(true).await;
    let mut ex = Exporter::start("main", &url, &[]);
    ex.wait_up().await;

    // The API fails: nothing counted, not ready, the same window asked again.
    wait_for!(
        ex,
        20,
        "two failed queries",
        fake.calls.lock().unwrap().len() >= 2
    );
    let (status, body) = ex.ready().await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("no query has succeeded yet"), "{body}");
    let m = ex.metrics().await;
    assert_eq!(
        value(&m, "synckairos_edge_exporter_ready"),
        Some(0.0),
        "{m}"
    );
    assert_eq!(
        value(
            &m,
            "synckairos_edge_exporter_last_success_timestamp_seconds"
        ),
        Some(0.0)
    );
    assert!(
        value(
            &m,
            "synckairos_edge_exporter_queries_total{result=\"refused\"}"
        )
        .unwrap()
            >= 2.0
    );
    assert_eq!(
        value(&m, "synckairos_edge_exporter_queries_total{result=\"ok\"}"),
        Some(0.0)
    );
    // The alerts' series exist before any data.
    assert_eq!(
        value(
            &m,
            &format!("synckairos_edge_requests_total{{route=\"{SWITCH}\",code=\"500\"}}")
        ),
        Some(0.0),
        "{m}"
    );
    assert_eq!(
        value(
            &m,
            &format!("synckairos_edge_duration_seconds_bucket{{route=\"{SWITCH}\",le=\"0.1\"}}")
        ),
        Some(0.0),
        "{m}"
    );
    let first_start = fake.calls.lock().unwrap()[0].start;
    assert!(
        fake.calls
            .lock()
            .unwrap()
            .iter()
            .all(|c| c.start == first_start),
        "a failed window must be asked again from its start: {:?}",
        fake.calls.lock().unwrap()
    );

    // The API recovers: the first answered window starts where the failed
    // ones did, and the exporter turns ready.
    fake.failing.store(false, SeqCst);
    wait_for!(ex, 20, "/ready answers 200", ex.ready().await.0 == 200);
    assert_eq!(answered(&fake)[0].0, first_start);

    // Several intervals: the counters are the weighted sums over exactly
    // the windows answered, which follow each other without overlap.
    wait_for!(ex, 20, "three answered windows", answered(&fake).len() >= 3);
    // A window is logged by the stand-in just before the exporter adds it:
    // compare again until a scrape falls between two windows.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let windows = answered(&fake);
        let m = ex.metrics().await;
        let wrong = mismatches(&m, &windows);
        if wrong.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the counters do not match the answered windows {windows:?}:\n{}\n{m}",
            wrong.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let windows = answered(&fake);
    for w in windows.windows(2) {
        assert_eq!(
            w[0].1, w[1].0,
            "windows must follow each other: {windows:?}"
        );
    }
    for c in fake.calls.lock().unwrap().iter() {
        assert!(c.start < c.end, "{c:?}");
        assert!(
            c.end + 2 <= c.at,
            "the window must end LAG_SECONDS before now: {c:?}"
        );
    }
    let m = ex.metrics().await;
    assert!(
        value(
            &m,
            &format!("synckairos_edge_requests_total{{route=\"{SWITCH}\",code=\"503\"}}")
        )
        .unwrap()
            > 0.0
    );
    assert_eq!(value(&m, "synckairos_edge_exporter_ready"), Some(1.0));
    let end = value(&m, "synckairos_edge_exporter_window_end_timestamp_seconds").unwrap();
    assert!(end >= windows.last().unwrap().1 as f64 - 1.0, "{m}");
    assert!(!m.contains("evil"), "{m}");
    // /metrics is on the internal port only.
    assert_eq!(ex.get(ex.port, "/metrics").await.unwrap().0, 404);

    let status = ex.sigterm();
    assert!(status.success(), "{status}");
    let logs = ex.logs();
    assert!(logs.contains("edge exporter started"), "{logs}");
    assert!(logs.contains("query failed"), "{logs}");
    assert!(logs.contains("stopped"), "{logs}");
    assert!(!logs.contains(TOKEN), "the token is in the logs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_counted_as_refused_and_never_ready() {
    let (fake, url) = start_fake(false).await;
    let ex = Exporter::start("token", &url, &[("CF_API_TOKEN", "not-the-token")]);
    ex.wait_up().await;
    wait_for!(
        ex,
        20,
        "two refused queries",
        matches!(
            value(&ex.metrics().await, "synckairos_edge_exporter_queries_total{result=\"refused\"}"),
            Some(n) if n >= 2.0
        )
    );
    assert_eq!(ex.ready().await.0, 503);
    assert!(fake.calls.lock().unwrap().is_empty());
    let logs = ex.logs();
    assert!(logs.contains("status 401: Authentication error"), "{logs}");
    assert!(!logs.contains("not-the-token"), "the token is in the logs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_long_outage_at_most_max_window_is_queried_and_the_rest_is_skipped() {
    let (fake, url) = start_fake(true).await;
    let ex = Exporter::start("outage", &url, &[("MAX_WINDOW_SECONDS", "2")]);
    ex.wait_up().await;
    // Failing for over 3 s: the unqueried span outgrows MAX_WINDOW_SECONDS.
    wait_for!(ex, 20, "a failed window over 3 s long", {
        let calls = fake.calls.lock().unwrap();
        calls.last().is_some_and(|c| c.end >= calls[0].start + 4)
    });
    fake.failing.store(false, SeqCst);
    wait_for!(ex, 20, "an answered window", !answered(&fake).is_empty());
    let (start, end) = answered(&fake)[0];
    assert!(end - start <= 2, "{start}..{end}");
    let m = ex.metrics().await;
    assert!(
        value(&m, "synckairos_edge_exporter_skipped_seconds_total").unwrap() >= 1.0,
        "{m}"
    );
    assert!(ex.logs().contains("the oldest data is not counted"));
}

#[test]
fn a_bad_configuration_is_refused_at_start() {
    let out = Command::new(env!("CARGO_BIN_EXE_edge-exporter"))
        .env("CF_ACCOUNT_ID", ACCOUNT)
        .env("CF_API_TOKEN", TOKEN)
        .env("ANALYTICS_DATASET", "edge; DROP TABLE x")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("BAD_CONFIG") && err.contains("ANALYTICS_DATASET"),
        "{err}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_edge-exporter"))
        .env_remove("CF_API_TOKEN")
        .env("CF_ACCOUNT_ID", ACCOUNT)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--api-token"));
}
