//! The SQL the exporter sends to the Workers Analytics Engine SQL API, the
//! windows it covers, and the answer it reads back. No I/O.
//!
//! The columns are the Worker's data point (`edge-worker/src/observe.rs`,
//! docs/RUNBOOK.md "Edge metrics"): `blob1` the route pattern, `blob3` the
//! status as text, `double1` the latency in ms. Analytics Engine samples
//! at high volume; each stored row stands for `_sample_interval` requests,
//! so every count is a `SUM(_sample_interval …)`, never a `COUNT()`.

use serde_json::Value;

/// The histogram's upper bounds, ms (exposed in seconds): the edge's
/// latency target (100 ms) is one, and the Upstash call's timeout (5 s by
/// default) the last.
pub const BUCKETS_MS: &[u32] = &[5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000];

/// A span of data-point timestamps, unix seconds, `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// The first second counted.
    pub start: u64,
    /// The first second not counted.
    pub end: u64,
}

/// The next window to query, and how many seconds are given up first.
///
/// `start` is where the last counted window ended (or the first window's
/// start); the window ends `lag` seconds before `now`. `None` while that
/// end has not passed `start` yet (nothing new to ask for). A window longer
/// than `max` (queries failed for that long) starts `max` before its end:
/// the seconds before are skipped.
pub fn next_window(start: u64, now: u64, lag: u64, max: u64) -> Option<(Window, u64)> {
    let end = now.saturating_sub(lag);
    if end <= start {
        return None;
    }
    let from = start.max(end.saturating_sub(max));
    Some((Window { start: from, end }, from - start))
}

/// The query of `window` over `dataset`: per route and status, the
/// requests, their summed latency, and the requests at or under each bound
/// of [`BUCKETS_MS`] (`le_<ms>`), all weighted by `_sample_interval`.
pub fn sql(dataset: &str, window: Window) -> String {
    let mut buckets = String::new();
    for ms in BUCKETS_MS {
        buckets.push_str(&format!(
            ",\n       SUM(if(double1 <= {ms}, _sample_interval, 0)) AS le_{ms}"
        ));
    }
    format!(
        "SELECT blob1 AS route, blob3 AS code,\n       \
         SUM(_sample_interval) AS requests,\n       \
         SUM(_sample_interval * double1) AS latency_ms{buckets}\n\
         FROM {dataset}\n\
         WHERE timestamp >= toDateTime('{}') AND timestamp < toDateTime('{}')\n\
         GROUP BY route, code\n\
         FORMAT JSON",
        sql_time(window.start),
        sql_time(window.end),
    )
}

/// Unix seconds as the SQL API's `DateTime` text, UTC: `2024-06-01 12:00:00`.
pub fn sql_time(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian
/// calendar (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// One row of the answer: one route and status over the window.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// `blob1`, as the Worker wrote it (not yet checked).
    pub route: String,
    /// `blob3`, as the Worker wrote it (not yet checked).
    pub code: String,
    /// Requests (weighted).
    pub requests: f64,
    /// Their latencies summed, ms (weighted).
    pub latency_ms: f64,
    /// Requests at or under each bound of [`BUCKETS_MS`] (weighted).
    pub le: Vec<f64>,
}

/// Reads the SQL API's `FORMAT JSON` answer: `{"meta": [...], "data":
/// [{column: value, ...}], "rows": N}`. Counts may be numbers or, for
/// 64-bit integers, numbers in strings (ClickHouse's JSON quotes them).
pub fn parse(body: &str) -> Result<Vec<Row>, String> {
    let v: Value = serde_json::from_str(body).map_err(|e| format!("not JSON: {e}"))?;
    let data = v
        .get("data")
        .and_then(Value::as_array)
        .ok_or("no \"data\" array")?;
    data.iter()
        .enumerate()
        .map(|(i, r)| row(r).map_err(|e| format!("row {i}: {e}")))
        .collect()
}

fn row(r: &Value) -> Result<Row, String> {
    let text = |k: &str| match r.get(k) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        _ => Err(format!("no text column {k}")),
    };
    let number = |k: &str| {
        let n = match r.get(k) {
            Some(Value::Number(n)) => n.as_f64(),
            Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
            _ => None,
        };
        match n {
            Some(n) if n.is_finite() && n >= 0.0 => Ok(n),
            _ => Err(format!("column {k} is not a count: {:?}", r.get(k))),
        }
    };
    Ok(Row {
        route: text("route")?,
        code: text("code")?,
        requests: number("requests")?,
        latency_ms: number("latency_ms")?,
        le: BUCKETS_MS
            .iter()
            .map(|ms| number(&format!("le_{ms}")))
            .collect::<Result<_, _>>()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_follow_each_other_and_lag_behind_now() {
        // Nothing until the end passes the start.
        assert_eq!(next_window(1000, 1300, 300, 3600), None);
        assert_eq!(
            next_window(1000, 1360, 300, 3600),
            Some((
                Window {
                    start: 1000,
                    end: 1060
                },
                0
            ))
        );
        // After failures, one longer window from where counting stopped…
        assert_eq!(
            next_window(1000, 2300, 300, 3600),
            Some((
                Window {
                    start: 1000,
                    end: 2000
                },
                0
            ))
        );
        // …at most `max` long; the rest is skipped.
        assert_eq!(
            next_window(1000, 10_300, 300, 3600),
            Some((
                Window {
                    start: 6400,
                    end: 10_000
                },
                5400
            ))
        );
        assert_eq!(next_window(0, 100, 300, 3600), None);
    }

    #[test]
    fn times_are_utc_datetime_text() {
        assert_eq!(sql_time(0), "1970-01-01 00:00:00");
        assert_eq!(sql_time(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(sql_time(1_717_243_199), "2024-06-01 11:59:59");
        assert_eq!(sql_time(4_102_444_800), "2100-01-01 00:00:00");
    }

    #[test]
    fn the_sql_weights_by_the_sample_interval_and_names_the_window() {
        let q = sql(
            "synckairos_edge",
            Window {
                start: 1_717_243_140,
                end: 1_717_243_200,
            },
        );
        assert!(
            q.starts_with("SELECT blob1 AS route, blob3 AS code,"),
            "{q}"
        );
        assert!(q.contains("SUM(_sample_interval) AS requests"), "{q}");
        assert!(
            q.contains("SUM(_sample_interval * double1) AS latency_ms"),
            "{q}"
        );
        assert!(
            q.contains("SUM(if(double1 <= 100, _sample_interval, 0)) AS le_100"),
            "{q}"
        );
        assert!(q.contains("\nFROM synckairos_edge\n"), "{q}");
        assert!(
            q.contains(
                "WHERE timestamp >= toDateTime('2024-06-01 11:59:00') \
                 AND timestamp < toDateTime('2024-06-01 12:00:00')"
            ),
            "{q}"
        );
        assert!(q.contains("GROUP BY route, code\nFORMAT JSON"), "{q}");
        assert!(!q.contains("COUNT("), "{q}");
    }

    #[test]
    fn answers_are_read_with_counts_as_numbers_or_strings() {
        let mut r = serde_json::json!({
            "route": "/v1/sessions/:id/switch", "code": "200",
            "requests": "12", "latency_ms": 340.5,
        });
        for (i, ms) in BUCKETS_MS.iter().enumerate() {
            r[format!("le_{ms}")] = if i % 2 == 0 {
                serde_json::json!(i.to_string())
            } else {
                serde_json::json!(i)
            };
        }
        let body = serde_json::json!({
            "meta": [{"name": "route", "type": "String"}],
            "data": [r], "rows": 1,
        })
        .to_string();
        let rows = parse(&body).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].route, "/v1/sessions/:id/switch");
        assert_eq!(rows[0].code, "200");
        assert_eq!(rows[0].requests, 12.0);
        assert_eq!(rows[0].latency_ms, 340.5);
        assert_eq!(
            rows[0].le,
            (0..BUCKETS_MS.len()).map(|i| i as f64).collect::<Vec<_>>()
        );
        assert_eq!(parse(r#"{"meta":[],"data":[],"rows":0}"#), Ok(vec![]));
    }

    #[test]
    fn malformed_answers_are_errors() {
        assert!(parse("Unknown column blob9")
            .unwrap_err()
            .starts_with("not JSON"));
        assert!(parse(r#"{"errors":[]}"#).unwrap_err().contains("data"));
        let e = parse(r#"{"data":[{"route":"/x","code":"200","requests":"-1"}]}"#).unwrap_err();
        assert!(e.contains("row 0") && e.contains("requests"), "{e}");
        let e = parse(r#"{"data":[{"route":"/x","code":"200","requests":1,"latency_ms":1}]}"#)
            .unwrap_err();
        assert!(e.contains("le_5"), "{e}");
    }
}
