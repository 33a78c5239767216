//! Low-time warnings end to end, the way a game backend meets them: the
//! native server (REST, and the expiry scheduler that fires warnings) on a
//! real redis-server, the audit consumer and the webhook worker on a fresh
//! PostgreSQL database, and an HTTP receiver. Sessions are created and started over REST with the
//! deployment's `LOW_TIME_WARNING_MS`; each warning's lateness is its arrival
//! at the receiver minus the moment the clock reached the threshold (Redis
//! time; one machine, one clock). Target p99 ≤ 50 ms; CI asserts only a
//! generous bound and prints what it measured.

use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use synckairos_audit_consumer::Connections;
use synckairos_core::time::Timestamp;
use synckairos_e2e::{Stack, Transport, JWT_SECRET};
use synckairos_testkit::{jwt, PgDatabase};
use synckairos_webhook_worker::config::{self, WorkerConfig};
use synckairos_webhook_worker::metrics::Metrics;

const SESSIONS: usize = 200;
const BANK_MS: i64 = 3_000;
const WARN_MS: i64 = 1_500;
const SECRET: &str = "whsec_dGVzdC1zZWNyZXQtdGVzdC1zZWNyZXQtdGVzdA==";

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

/// (arrival wall ms, body) of every delivery.
type Hits = Arc<Mutex<Vec<(i64, Value)>>>;

async fn receiver() -> (String, Hits) {
    let hits: Hits = Arc::default();
    let h = hits.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let h = h.clone();
            async move {
                let at = wall_ms();
                let v: Value = serde_json::from_slice(&body).expect("a JSON body");
                h.lock().unwrap().push((at, v));
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, hits)
}

fn pct(sorted: &[i64], p: f64) -> i64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn low_time_warnings_reach_a_webhook_on_time() {
    let warn = WARN_MS.to_string();
    let stack = Stack::start_with(Transport::Native, &[("LOW_TIME_WARNING_MS", &warn)]);
    let db = PgDatabase::fresh();
    let pool = sqlx::PgPool::connect(db.url()).await.expect("postgres");
    synckairos_webhook_worker::queue::migrate(&pool)
        .await
        .expect("migrations");

    let (url, hits) = receiver().await;
    let conns = Connections::new(
        db.url(),
        &stack.redis.url(),
        synckairos_core::keys::DEFAULT_SHARDS,
    );
    // The audit consumer, as deployed: its group exists before any event.
    let audit_metrics = Arc::new(synckairos_audit_consumer::metrics::Metrics::default());
    let consumers = synckairos_audit_consumer::consumers(
        &conns,
        synckairos_audit_consumer::ConsumerConfig {
            consumer_name: Some("e2e-audit".into()),
            workers: 1,
            block_ms: 2_000,
            ..Default::default()
        },
        audit_metrics.clone(),
    )
    .await
    .expect("audit consumer");
    for c in &consumers {
        c.streams().ensure_groups().await.expect("audit groups");
    }
    let (audit_stop_tx, audit_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let aops = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let amops = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let audit = tokio::spawn(async move {
        synckairos_audit_consumer::run(
            consumers,
            aops,
            amops,
            audit_metrics,
            Duration::from_secs(5),
            async move {
                let _ = audit_stop_rx.await;
            },
        )
        .await
        .expect("the audit consumer runs");
    });

    let mut cfg = WorkerConfig {
        consumer_name: Some("e2e".into()),
        allow_local: true,
        ..Default::default()
    };
    cfg.block_ms = 2_000;
    let endpoints = json!([{"id": "game", "url": url, "secrets": [SECRET],
        "events": ["low_time_warning", "session_expired"]}])
    .to_string();
    let eps = config::parse_endpoints(&endpoints, true, &cfg).expect("endpoints");
    let metrics = Arc::new(Metrics::new(eps.iter().map(|e| e.id.as_str())));
    let w = synckairos_webhook_worker::worker(&conns, &cfg, eps, metrics)
        .await
        .expect("worker");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let ops = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mops = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let worker = tokio::spawn(async move {
        synckairos_webhook_worker::run(w, ops, mops, Duration::from_secs(5), async move {
            let _ = stop_rx.await;
        })
        .await
        .expect("the worker runs");
    });

    // Sessions created and started over REST, 10 ms apart, none naming a
    // threshold: the deployment's applies.
    let http = reqwest::Client::new();
    let admin = jwt(JWT_SECRET, "admin", "ops", None);
    let mut ids = Vec::new();
    for i in 0..SESSIONS {
        let sid = format!("00000000-0000-4000-8000-{:012x}", 0x7000 + i);
        let body = json!({"session_id": sid, "sync_mode": "per_participant",
            "total_time_ms": BANK_MS, "participants": [
                {"participant_id": format!("00000000-0000-4000-8000-{:012x}", 0x8000 + 2 * i),
                 "participant_index": 0, "total_time_ms": BANK_MS},
                {"participant_id": format!("00000000-0000-4000-8000-{:012x}", 0x8001 + 2 * i),
                 "participant_index": 1, "total_time_ms": BANK_MS}]});
        let r = http
            .post(format!("{}/v1/sessions", stack.base))
            .bearer_auth(&admin)
            .json(&body)
            .send()
            .await
            .expect("create");
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
        let created: Value = r.json().await.unwrap();
        assert_eq!(created["data"]["low_time_warning_ms"], WARN_MS);
        let r = http
            .post(format!("{}/v1/sessions/{sid}/start", stack.base))
            .bearer_auth(&admin)
            .send()
            .await
            .expect("start");
        assert_eq!(r.status(), 200);
        ids.push(sid);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Every session warns once, then runs out: 2 deliveries each.
    let deadline = Instant::now() + Duration::from_secs(60);
    while hits.lock().unwrap().len() < 2 * SESSIONS {
        assert!(
            Instant::now() < deadline,
            "only {} of {} deliveries within 60 s",
            hits.lock().unwrap().len(),
            2 * SESSIONS
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let hits = hits.lock().unwrap().clone();
    assert_eq!(
        hits.len(),
        2 * SESSIONS,
        "no more than one warning per turn"
    );

    let (mut late, mut fired, mut sent) = (Vec::new(), Vec::new(), Vec::new());
    for sid in &ids {
        let mine: Vec<&(i64, Value)> = hits
            .iter()
            .filter(|(_, v)| v["data"]["session_id"] == sid.as_str())
            .collect();
        let types: Vec<&str> = mine
            .iter()
            .map(|(_, v)| v["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["low_time_warning", "session_expired"], "{sid}");
        let (arrived, w) = mine[0];
        let d = &w["data"];
        assert_eq!(d["threshold_ms"], WARN_MS);
        assert_eq!(d["version"], 2, "the warning carries the session's version");
        let due: Timestamp = serde_json::from_value(d["due_at"].clone()).expect("due_at");
        let started: Timestamp =
            serde_json::from_value(d["state"]["cycle_started_at"].clone()).expect("started");
        assert_eq!(due.ms(), started.ms() + BANK_MS - WARN_MS, "due exactly");
        let remaining = d["remaining_ms"].as_i64().unwrap();
        assert!(
            remaining <= WARN_MS && remaining > 0,
            "remaining {remaining}"
        );
        let at: Timestamp = serde_json::from_value(d["occurred_at"].clone()).expect("occurred_at");
        late.push(arrived - due.ms());
        fired.push(at.ms() - due.ms());
        sent.push(arrived - at.ms());
    }
    for v in [&mut late, &mut fired, &mut sent] {
        v.sort_unstable();
    }
    assert!(
        late[0] >= 0,
        "a warning arrived before it was due: {late:?}"
    );
    let (p50, p99, max) = (pct(&late, 0.5), pct(&late, 0.99), late[late.len() - 1]);
    println!(
        "low-time warning lateness over {SESSIONS} sessions (due → webhook received): \
         p50 {p50} ms, p99 {p99} ms, max {max} ms (target p99 ≤ 50 ms); of which \
         due → fired by the scheduler p50 {} / p99 {} / max {} ms, \
         fired → received p50 {} / p99 {} / max {} ms",
        pct(&fired, 0.5),
        pct(&fired, 0.99),
        fired[fired.len() - 1],
        pct(&sent, 0.5),
        pct(&sent, 0.99),
        sent[sent.len() - 1],
    );
    // CI machines stall; the target is reported above, not asserted.
    assert!(p99 < 1_000, "lateness p99 {p99} ms");

    // The audit trail holds every warning, at its session's version.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM sync_events WHERE event_type = 'low_time_warning' AND version = 2",
        )
        .fetch_one(&pool)
        .await
        .expect("count");
        if n == SESSIONS as i64 {
            break;
        }
        assert!(Instant::now() < deadline, "{n} warnings in the audit trail");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let _ = stop_tx.send(());
    let _ = worker.await;
    let _ = audit_stop_tx.send(());
    let _ = audit.await;
}
