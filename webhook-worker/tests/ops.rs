//! The binary: migrations, `/health` `/ready` `/metrics`, delivery, a
//! graceful SIGTERM, a refused configuration, and no secret in its logs.

mod common;

use common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use synckairos_testkit::free_port;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_delivers_and_stops_on_sigterm() {
    let redis = synckairos_testkit::RedisServer::start();
    let db = synckairos_testkit::PgDatabase::fresh();
    let rx = Receiver::start(|_| Answer::Ok).await;
    let eps = format!(
        "[{}]",
        endpoint("bin", &rx.url(), &[SECRET_A, SECRET_B], ALL_EVENTS)
    );
    let bin = env!("CARGO_BIN_EXE_webhook-worker");

    // A bad configuration is refused at start, naming the problem.
    let bad = Command::new(bin)
        .arg("run")
        .env("DATABASE_URL", db.url())
        .env("REDIS_URL", redis.url())
        .env(
            "WEBHOOK_ENDPOINTS",
            eps.replace("session_expired", "session_exploded"),
        )
        .env("WEBHOOK_ALLOW_LOCAL", "true")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("BAD_CONFIG") && err.contains("session_exploded"),
        "{err}"
    );
    let http = Command::new(bin)
        .arg("run")
        .env("DATABASE_URL", db.url())
        .env("REDIS_URL", redis.url())
        .env("WEBHOOK_ENDPOINTS", &eps)
        .output()
        .unwrap();
    assert_eq!(http.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&http.stderr).contains("must be https"));

    let (port, metrics_port) = (free_port(), free_port());
    let log = std::env::temp_dir().join(format!("wh-ops-{}.log", std::process::id()));
    let mut child = Command::new(bin)
        .arg("run")
        .arg("--migrate")
        .env("DATABASE_URL", db.url())
        .env("REDIS_URL", redis.url())
        .env("SHARDS", SHARDS.to_string())
        .env("WEBHOOK_ENDPOINTS", &eps)
        .env("WEBHOOK_ALLOW_LOCAL", "true")
        .env("CONSUMER_NAME", "bin")
        .env("LISTEN", format!("127.0.0.1:{port}"))
        .env("METRICS_LISTEN", format!("127.0.0.1:{metrics_port}"))
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_ready(port, &log).await;
    assert!(http_get(port, "/health").await.contains("\"ok\""));
    assert!(http_get(port, "/metrics").await.starts_with("HTTP/1.1 404"));

    let engine = synckairos_engine::Engine::connect(&redis.url(), settings())
        .await
        .unwrap();
    let id = synckairos_engine::fixtures::uuid(0xb1);
    let create = synckairos_engine::fixtures::create(&synckairos_engine::fixtures::body(
        &id,
        "per_participant",
        2,
        60_000,
    ))
    .unwrap();
    let opts = synckairos_core::script::CallOptions::default();
    engine.execute(&create, &opts).await.unwrap();
    for c in [
        synckairos_core::Command::Start,
        synckairos_core::Command::Switch {
            next_participant_id: None,
        },
        synckairos_core::Command::Complete,
    ] {
        engine
            .execute(&synckairos_core::Request::new(&id, c), &opts)
            .await
            .unwrap();
    }
    rx.wait(Duration::from_secs(30), "2 deliveries", |h| h.len() == 2)
        .await;
    let m = http_get(metrics_port, "/metrics").await;
    assert!(
        m.contains("synckairos_webhook_deliveries_total{endpoint=\"bin\",result=\"delivered\"} 2"),
        "{m}"
    );
    assert!(
        m.contains("synckairos_webhook_ingest_ignored_total 2"),
        "{m}"
    );
    assert!(m.contains("synckairos_webhook_ready 1\n"), "{m}");

    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "no exit within 20 s of SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}");
    let logs = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    assert!(logs.contains("webhook worker started"), "{logs}");
    assert!(logs.contains("stopped"), "{logs}");
    for secret in [SECRET_A, SECRET_B] {
        let key = secret.trim_start_matches("whsec_");
        assert!(!logs.contains(key), "a secret in the logs");
    }
}
