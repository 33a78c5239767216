//! The ops endpoints of the binary: `/health` and `/ready` on `LISTEN`,
//! `/metrics` only on the internal `METRICS_LISTEN`.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_served_on_the_internal_port_only() {
    let s = stack().await;
    let p = s.spawn("ops", &[]);
    wait_ready(&p).await;
    assert_ne!(p.port, p.metrics_port);

    let metrics = http_get(p.metrics_port, "/metrics").await;
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(
        metrics.contains("\nsynckairos_audit_events_total 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("synckairos_audit_stream_unacked{shard=\"0\"} 0"),
        "{metrics}"
    );

    let public = http_get(p.port, "/metrics").await;
    assert!(public.starts_with("HTTP/1.1 404"), "{public}");
    assert!(public.contains("NOT_FOUND"), "{public}");
    let health = http_get(p.port, "/health").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");

    // The internal port serves nothing else.
    for path in ["/health", "/ready"] {
        let r = http_get(p.metrics_port, path).await;
        assert!(
            r.starts_with("HTTP/1.1 404"),
            "{path} on the metrics port: {r}"
        );
    }
}
