//! The streams' bound with two groups: while the webhook worker is stopped,
//! the audit consumer stores everything and trims nothing the `webhooks`
//! group has not read; once the worker has queued and acknowledged the
//! entries, they are trimmed.

mod common;

use common::*;
use std::sync::Arc;
use std::time::Duration;
use synckairos_audit_consumer::{metrics::Metrics as AuditMetrics, ConsumerConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_consumer_never_trims_what_the_webhook_group_has_not_read() {
    let s = stack().await;
    let rx = Receiver::start(|_| Answer::Ok).await;
    let eps = format!("[{}]", endpoint("r", &rx.url(), &[SECRET_A], ALL_EVENTS));
    let audit_first =
        |c: &mut synckairos_webhook_worker::WorkerConfig| c.trim_after_group = "audit".into();
    // A first run, before the audit consumer ever ran: it creates its
    // group, delivers, acknowledges, and trims nothing (the audit group
    // does not exist yet: a trim would drop what it has not stored).
    let w = s.worker("wh", &eps, audit_first).await;
    s.play(1, 1, 1).await;
    rx.wait(Duration::from_secs(30), "the first run delivers", |h| {
        h.len() == 2
    })
    .await;
    w.shutdown().await;
    assert_eq!(
        s.stream_len().await,
        4,
        "trimmed before the audit group existed"
    );

    // 5 sessions: create, start, 2 switches, complete = 25 entries.
    s.play(10, 5, 2).await;
    let audit = synckairos_audit_consumer::consumer(
        &s.conns(),
        ConsumerConfig {
            consumer_name: Some("audit-1".into()),
            ..Default::default()
        },
        Arc::new(AuditMetrics::new()),
    )
    .await
    .unwrap();
    let mut audit = audit;
    while audit.step(false).await.unwrap().batch > 0 {}
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM sync_events")
        .fetch_one(&s.pool)
        .await
        .unwrap();
    assert_eq!(stored, 4 + 25, "the audit consumer stored everything");
    assert_eq!(
        s.stream_len().await,
        25,
        "entries the webhooks group has not read were trimmed (or the ones it had, not)"
    );

    // The worker runs again: it reads, queues, acknowledges, and trims.
    let w = s.worker("wh", &eps, audit_first).await;
    rx.wait(Duration::from_secs(30), "every event", |h| {
        h.len() == 2 + 15
    })
    .await;
    until(Duration::from_secs(30), "streams trimmed", || async {
        s.stream_len().await == 0
    })
    .await;
    w.shutdown().await;
}
