//! What the edge worker tells operators, read where they read it: the built
//! worker under workerd (through upstash-local, into a real redis-server)
//! prints one JSON log line per request, and writes one Analytics Engine
//! data point per request through the `ANALYTICS` binding, here the local
//! stand-in (`edge-worker/local/analytics.js`) that prints each point it
//! accepts. The test asserts both from workerd's output.

use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use synckairos_e2e::{token, uuid, Stack, Transport};

/// workerd's output so far: its JSON lines (console output may come with a
/// prefix; the object starts at the first `{`), but for the `/health`
/// requests with which the harness waited for the worker to come up.
fn json_lines(stack: &Stack) -> Vec<Value> {
    let log = std::fs::read_to_string(stack.redis.dir().join("workerd.log")).expect("workerd.log");
    log.lines()
        .filter_map(|l| l.find('{').map(|i| &l[i..]))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["route"] != "/health" && v["analytics_engine"]["indexes"][0] != "/health")
        .collect()
}

/// Waits until workerd printed `n` request log lines (its output is
/// buffered apart from the response).
fn wait_for_lines(stack: &Stack, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let lines = json_lines(stack);
        let requests = lines.iter().filter(|v| v["msg"] == "request").count();
        let points = lines
            .iter()
            .filter(|v| v.get("analytics_engine").is_some())
            .count();
        if requests >= n && points >= n {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "workerd printed {requests} request lines and {points} data points, not {n}:\n{}",
            std::fs::read_to_string(stack.redis.dir().join("workerd.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// (method, path, cf-ray, body, status, route, error code, calls Upstash)
type Case = (
    Method,
    String,
    Option<&'static str>,
    Option<Value>,
    u16,
    &'static str,
    &'static str,
    bool,
);

#[tokio::test]
async fn every_request_logs_one_json_line_and_writes_one_data_point() {
    let stack = Stack::start(Transport::Edge);
    let http = Client::new();
    let admin = token("admin", "ops", None);
    let (sid, p1, p2) = (uuid(), uuid(), uuid());
    let call = |method: Method, path: &str, ray: Option<&str>, body: Option<Value>| {
        let mut r = http
            .request(method, format!("{}{path}", stack.base))
            .bearer_auth(&admin);
        if let Some(ray) = ray {
            r = r.header("cf-ray", ray);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        r.send()
    };
    let create = json!({"session_id": sid, "sync_mode": "per_participant", "total_time_ms": 60000,
        "participants": [
            {"participant_id": p1, "participant_index": 0, "total_time_ms": 60000},
            {"participant_id": p2, "participant_index": 1, "total_time_ms": 60000}]});
    let mut ids = Vec::new();
    // (method, path, cf-ray, body, status, route, error code, calls Upstash)
    let cases: Vec<Case> = vec![
        (
            Method::POST,
            "/v1/sessions".into(),
            Some("8f2c1a7e5b3d9f01-AMS"),
            Some(create),
            201,
            "/v1/sessions",
            "",
            true,
        ),
        (
            Method::POST,
            format!("/v1/sessions/{sid}/start"),
            None,
            None,
            200,
            "/v1/sessions/:id/start",
            "",
            true,
        ),
        (
            Method::POST,
            format!("/v1/sessions/{sid}/switch"),
            None,
            None,
            200,
            "/v1/sessions/:id/switch",
            "",
            true,
        ),
        (
            Method::GET,
            format!("/v1/sessions/{}", uuid()),
            None,
            None,
            404,
            "/v1/sessions/:id",
            "SESSION_NOT_FOUND",
            true,
        ),
        (
            Method::POST,
            format!("/v1/sessions/{sid}/resume"),
            None,
            None,
            400,
            "/v1/sessions/:id/resume",
            "INVALID_STATE_TRANSITION",
            true,
        ),
        (
            Method::GET,
            "/nowhere".into(),
            None,
            None,
            404,
            "unmatched",
            "NOT_FOUND",
            false,
        ),
        (
            Method::GET,
            "/v1/time".into(),
            None,
            None,
            200,
            "/v1/time",
            "",
            true,
        ),
    ];
    for (method, path, ray, body, status, ..) in &cases {
        let r = call(method.clone(), path, *ray, body.clone())
            .await
            .expect("the worker answers");
        let id = r.headers()["x-request-id"]
            .to_str()
            .expect("ascii")
            .to_string();
        assert_eq!(
            r.status(),
            StatusCode::from_u16(*status).unwrap(),
            "{method} {path}: {}",
            r.text().await.unwrap_or_default()
        );
        if let Some(ray) = ray {
            assert_eq!(id, *ray, "cf-ray is the request id");
        } else {
            assert_eq!(id.len(), 16, "a made-up id is 16 hex digits: {id}");
            assert!(id.chars().all(|c| c.is_ascii_hexdigit()), "{id}");
        }
        ids.push(id);
    }
    let lines = wait_for_lines(&stack, cases.len());
    let requests: Vec<&Value> = lines.iter().filter(|v| v["msg"] == "request").collect();
    let points: Vec<&Value> = lines
        .iter()
        .filter_map(|v| v.get("analytics_engine"))
        .collect();
    assert_eq!(
        requests.len(),
        cases.len(),
        "one log line per request: {requests:#?}"
    );
    assert_eq!(
        points.len(),
        cases.len(),
        "one data point per request: {points:#?}"
    );
    for (i, (method, path, _, _, status, route, code, upstash)) in cases.iter().enumerate() {
        let (line, point) = (requests[i], points[i]);
        let what = format!("{method} {path}: {line} / {point}");
        assert_eq!(line["request_id"], ids[i].as_str(), "{what}");
        assert_eq!(line["level"], "info", "{what}");
        assert_eq!(line["method"], method.as_str(), "{what}");
        assert_eq!(line["route"], *route, "{what}");
        assert_eq!(line["status"], *status, "{what}");
        assert!(
            !line.to_string().contains(&sid),
            "no session id in the log line: {what}"
        );
        if code.is_empty() {
            assert!(line.get("code").is_none(), "{what}");
        } else {
            assert_eq!(line["code"], *code, "{what}");
        }
        let latency = line["latency_ms"].as_f64().expect("latency_ms");
        assert!(latency >= 0.0, "{what}");
        match line["upstash_ms"].as_f64() {
            Some(u) => {
                assert!(*upstash, "no Upstash call expected: {what}");
                assert!(u >= 0.0 && u <= latency, "{what}");
            }
            None => assert!(!upstash && line["upstash_ms"].is_null(), "{what}"),
        }
        assert_eq!(point["dataset"], "synckairos_edge", "{what}");
        assert_eq!(point["indexes"], json!([route]), "{what}");
        assert_eq!(
            point["blobs"],
            json!([route, method.as_str(), status.to_string(), code]),
            "{what}"
        );
        let d = point["doubles"].as_array().expect("doubles");
        assert_eq!(d.len(), 4, "{what}");
        assert_eq!(d[2].as_f64(), Some(f64::from(*status)), "{what}");
        assert_eq!(d[3].as_f64(), Some(0.0), "no 5xx here: {what}");
        assert!((d[0].as_f64().unwrap() - latency).abs() < 0.01, "{what}");
    }
}

/// A 5xx is logged at `error` with the cause, counted as an error in the
/// data point, and the client sees only the generic body.
#[tokio::test]
async fn an_upstash_failure_is_an_error_line_and_an_error_point() {
    let mut stack = Stack::start(Transport::Edge);
    stack.redis.kill();
    let r = Client::new()
        .post(format!("{}/v1/sessions/{}/switch", stack.base, uuid()))
        .bearer_auth(token("admin", "ops", None))
        .send()
        .await
        .expect("the worker answers");
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let body = r.text().await.unwrap();
    let lines = wait_for_lines(&stack, 1);
    let line = lines
        .iter()
        .find(|v| v["msg"] == "request")
        .expect("a request line");
    assert_eq!(line["request_id"], id.as_str());
    assert_eq!(line["level"], "error");
    assert_eq!(line["status"], 503);
    let cause = line["error"].as_str().expect("the cause is logged");
    assert!(!body.contains(cause), "the cause stays in the log: {body}");
    let point = lines
        .iter()
        .find_map(|v| v.get("analytics_engine"))
        .expect("a data point");
    assert_eq!(point["doubles"][3].as_f64(), Some(1.0), "{point}");
    assert_eq!(point["blobs"][2], "503", "{point}");
}
