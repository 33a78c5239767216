//! Deliveries of real audit entries to a real HTTP receiver: the headers
//! and signatures (checked by Standard Webhooks' own library), the bodies
//! of each event type, skipped types, first-attempt latency, and metrics.

mod common;

use common::*;
use standardwebhooks::Webhook;
use std::time::Duration;
use synckairos_core::Command as Cmd;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_deliveries_of_every_type_verify_with_both_rotated_secrets() {
    let s = stack().await;
    let rx = Receiver::start(|_| Answer::Ok).await;
    let eps = format!(
        "[{}]",
        endpoint("rotating", &rx.url(), &[SECRET_A, SECRET_B], ALL_EVENTS)
    );
    let w = s.worker("sig", &eps, |_| {}).await;

    // participant_switched ×2, session_completed (v5).
    let played = s.play(1, 1, 2).await;
    // session_expired: a bank of 1 s, run out, then the expire command.
    let short = s.session(2, 1_000).await;
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let expired_v = s.exec(&short, Cmd::Expire).await;
    // low_time_warning, as the core will write it (not yet a script's).
    let warned = s.session(3, 60_000).await;
    let due = wall_ms() - 2;
    let warn_id = s
        .xadd(
            &warned,
            "low_time_warning",
            &[("due", due.to_string()), ("warn", "10000".into())],
        )
        .await;
    // A type nobody knows: acknowledged and skipped.
    s.xadd(&warned, "something_from_the_future", &[]).await;

    rx.wait(Duration::from_secs(30), "5 deliveries", |h| h.len() >= 5)
        .await;
    // Nothing more comes (session_created, session_started are not webhook types).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let hits = rx.hits();
    assert_eq!(hits.len(), 5, "{hits:?}");

    let a = Webhook::new(SECRET_A).unwrap();
    let b = Webhook::new(SECRET_B).unwrap();
    let wrong = Webhook::new("whsec_d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZw==").unwrap();
    for h in &hits {
        let mut headers = http::HeaderMap::new();
        for (k, v) in &h.headers {
            headers.insert(k.clone(), v.clone());
        }
        a.verify(&h.body, &headers).expect("signature of secret A");
        b.verify(&h.body, &headers).expect("signature of secret B");
        assert!(wrong.verify(&h.body, &headers).is_err());
        let sig = h.headers["webhook-signature"].to_str().unwrap();
        assert_eq!(sig.split(' ').count(), 2, "{sig}");
        assert!(sig.split(' ').all(|p| p.starts_with("v1,")));
        assert_eq!(h.headers["content-type"], "application/json");
        assert!(h.headers["user-agent"]
            .to_str()
            .unwrap()
            .starts_with("SyncKairos-Webhooks/"));
        let ts: i64 = h.headers["webhook-timestamp"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((ts - wall_ms() / 1000).abs() < 60);
        let body = h.json();
        let id = h.webhook_id();
        assert_eq!(
            id,
            format!("evt_{}", body["data"]["event_id"].as_str().unwrap())
        );
        assert_eq!(body["timestamp"], body["data"]["occurred_at"]);
        assert_eq!(
            body["data"]["state"]["session_id"],
            body["data"]["session_id"]
        );
    }
    let by_type = |t: &str| -> Vec<serde_json::Value> {
        hits.iter()
            .map(|h| h.json())
            .filter(|b| b["type"] == t)
            .collect()
    };
    let switched = by_type("participant_switched");
    assert_eq!(switched.len(), 2);
    assert_eq!(
        switched
            .iter()
            .map(|b| b["data"]["version"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        played[..2].iter().map(|(_, v)| *v).collect::<Vec<_>>()
    );
    assert_eq!(
        switched[0]["data"]["active_participant_id"],
        switched[0]["data"]["state"]["active_participant_id"]
    );
    let completed = by_type("session_completed");
    assert_eq!(completed[0]["data"]["state"]["status"], "completed");
    let expired = by_type("session_expired");
    assert_eq!(expired[0]["data"]["version"], expired_v);
    assert_eq!(expired[0]["data"]["state"]["status"], "expired");
    assert!(expired[0]["data"]["expired_participant_id"].is_string());
    let warning = by_type("low_time_warning");
    let d = &warning[0]["data"];
    assert_eq!(d["event_id"], warn_id);
    assert_eq!(d["threshold_ms"], 10_000);
    assert_eq!(d["due_at"], synckairos_core::time::format_iso(due));
    assert_eq!(d["participant_id"], d["state"]["active_participant_id"]);
    let remaining = d["remaining_ms"].as_i64().unwrap();
    assert!((59_000..=60_000).contains(&remaining), "{remaining}");

    // Metrics: delivered, queue empty, the unknown type counted.
    until(Duration::from_secs(10), "queue drained", || async {
        s.queue_len().await == 0
    })
    .await;
    let m = http_get(w.metrics_port, "/metrics").await;
    for line in [
        "synckairos_webhook_deliveries_total{endpoint=\"rotating\",result=\"delivered\"} 5",
        "synckairos_webhook_queue_depth{endpoint=\"rotating\"} 0",
        "synckairos_webhook_dead_letters 0",
        "synckairos_webhook_ingest_unknown_total 1",
        "synckairos_webhook_ingest_events_total 5",
        "synckairos_webhook_delivery_seconds_count{endpoint=\"rotating\"} 5",
        "synckairos_webhook_event_age_seconds_count{endpoint=\"rotating\"} 5",
    ] {
        assert!(m.contains(line), "no {line} in:\n{m}");
    }
    assert!(!m.contains("MfKQ9r8"), "a secret in the metrics");
    assert!(http_get(w.ops_port, "/ready")
        .await
        .starts_with("HTTP/1.1 200"));
    w.shutdown().await;
    // Acknowledged and trimmed (no other group on the streams).
    assert_eq!(s.stream_len().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_attempts_arrive_within_milliseconds_of_the_event() {
    let s = stack().await;
    let rx = Receiver::start(|_| Answer::Ok).await;
    let eps = format!(
        "[{}]",
        endpoint(
            "fast",
            &rx.url(),
            &[SECRET_A],
            r#"["participant_switched"]"#
        )
    );
    let w = s.worker("lat", &eps, |_| {}).await;
    // Warm up (connections, prepared statements).
    let id = s.session(1, 600_000).await;
    s.exec(
        &id,
        Cmd::Switch {
            next_participant_id: None,
        },
    )
    .await;
    rx.wait(Duration::from_secs(30), "warm-up", |h| h.len() == 1)
        .await;
    // 200 switches over 20 sessions, 10 ms apart: the latency of each from
    // its Redis time (the same clock as the receiver's, one machine) to
    // its arrival.
    let ids: Vec<String> =
        futures::future::join_all((0..20).map(|i| s.session(10 + i, 600_000))).await;
    let n = 200;
    for i in 0..n {
        s.exec(
            &ids[i % ids.len()],
            Cmd::Switch {
                next_participant_id: None,
            },
        )
        .await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    rx.wait(Duration::from_secs(60), "every switch", |h| {
        h.len() == n + 1
    })
    .await;
    let mut lat: Vec<i64> = rx.hits()[1..]
        .iter()
        .map(|h| {
            let at =
                synckairos_core::time::parse_iso(h.json()["timestamp"].as_str().unwrap()).unwrap();
            h.at_ms - at
        })
        .collect();
    lat.sort_unstable();
    let (p50, p99, max) = (pct(&lat, 0.5), pct(&lat, 0.99), *lat.last().unwrap());
    println!("first-attempt latency, event to receiver: p50 {p50} ms, p99 {p99} ms, max {max} ms ({n} events)");
    // What this asserts is that every event came by its first attempt: the
    // first retry waits 5 s (DEFAULT_SCHEDULE), so everything within 2 s was
    // a first attempt. How fast that is is measured, not asserted here (a
    // shared 2-core CI machine saw p99 285 ms once); docs/BENCHMARKS.md
    // ("Notifications") reports it against its target.
    assert!(max <= 2_000, "max {max} ms: a retry, not a first attempt");
    assert!(p50 <= 200, "p50 {p50} ms");
    w.shutdown().await;
}
