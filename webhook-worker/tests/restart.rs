//! A worker killed mid-run (its task dropped wherever it is: an ingest
//! batch read and not queued, attempts in flight) loses nothing: the next
//! one delivers every event at least once, in order per session.

mod common;

use common::*;
use std::time::{Duration, Instant};

/// Waits until `n` of the worker's PostgreSQL connections wait on a lock.
async fn wait_blocked(s: &Stack, n: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let blocked: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE application_name = 'synckairos-webhook-worker'
               AND wait_event_type = 'Lock' AND datname = current_database()",
        )
        .fetch_one(&s.pool)
        .await
        .unwrap();
        if blocked >= n {
            return;
        }
        assert!(Instant::now() < deadline, "{blocked} of {n} blocked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Entries read by the webhooks group and not acknowledged.
async fn pending(s: &Stack) -> u64 {
    let mut conn = s.engine.connection();
    let mut n = 0;
    for shard in 0..SHARDS {
        let r: redis::streams::StreamPendingReply = redis::cmd("XPENDING")
            .arg(synckairos_core::keys::audit_stream(shard))
            .arg("webhooks")
            .query_async(&mut conn)
            .await
            .unwrap();
        n += r.count() as u64;
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_loses_nothing() {
    let s = stack().await;
    // Each answer takes 30 ms, so attempts are in flight when the kill comes.
    let rx = Receiver::start(|_| Answer::OkAfter(Duration::from_millis(30))).await;
    let eps = format!("[{}]", endpoint("r", &rx.url(), &[SECRET_A], ALL_EVENTS));
    let cfg = |c: &mut synckairos_webhook_worker::WorkerConfig| {
        c.lease_ms = 1_000;
        c.timeout_ms = 500;
        c.max_in_flight = 4;
    };
    let a = s.worker("host-a", &eps, cfg).await;
    // 10 sessions × (3 switches + complete) = 40 events.
    let mut events = s.play(1, 10, 3).await;
    rx.wait(Duration::from_secs(30), "some deliveries", |h| h.len() >= 5)
        .await;

    // Hold the queue's table: the next ingest batch is read from the
    // streams (pending under host-a) and waits inside its INSERT; the
    // attempts in flight cannot record their result either.
    let mut lock = s.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE webhook_deliveries IN EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    events.extend(s.play(100, 10, 3).await);
    until(Duration::from_secs(30), "entries read and held", || async {
        pending(&s).await > 0
    })
    .await;
    wait_blocked(&s, 1).await;
    a.kill().await;
    lock.commit().await.unwrap();
    let before = rx.hits().len();
    let held = pending(&s).await;
    println!("killed after {before} requests, {held} stream entries pending");
    assert!(held > 0, "the kill left nothing pending in the streams");

    // The same name again: it takes up its own pending entries, and the
    // killed one's leases run out.
    let b = s.worker("host-a", &eps, cfg).await;
    let n = events.len();
    rx.wait(Duration::from_secs(60), "every event delivered", |h| {
        delivered_ids(h).len() == n
    })
    .await;
    assert_in_order(
        &rx.hits()
            .into_iter()
            .filter(|h| h.delivered())
            .collect::<Vec<_>>(),
    );
    until(Duration::from_secs(10), "queue drained", || async {
        s.queue_len().await == 0
    })
    .await;
    b.shutdown().await;
    assert_eq!(
        s.stream_len().await,
        0,
        "every entry acknowledged and trimmed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_finishes_the_attempts_in_flight() {
    let s = stack().await;
    let rx = Receiver::start(|_| Answer::OkAfter(Duration::from_millis(800))).await;
    let eps = format!("[{}]", endpoint("r", &rx.url(), &[SECRET_A], ALL_EVENTS));
    let w = s
        .worker("grace", &eps, |c| {
            c.timeout_ms = 3_000;
            c.lease_ms = 10_000;
        })
        .await;
    let metrics = w.metrics.clone();
    s.play(1, 1, 0).await;
    rx.wait(Duration::from_secs(30), "an attempt in flight", |h| {
        h.len() == 1
    })
    .await;
    let t = Instant::now();
    w.shutdown().await;
    println!("stopped in {:?} with an attempt in flight", t.elapsed());
    assert_eq!(
        metrics.endpoints[0]
            .delivered
            .load(std::sync::atomic::Ordering::Relaxed),
        1,
        "the attempt in flight was not finished"
    );
    assert_eq!(s.queue_len().await, 0, "its delivery is still queued");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_the_queue_without_doubling_or_reordering() {
    let s = stack().await;
    let rx = Receiver::start(|_| Answer::OkAfter(Duration::from_millis(20))).await;
    let eps = format!("[{}]", endpoint("r", &rx.url(), &[SECRET_A], ALL_EVENTS));
    let few = |c: &mut synckairos_webhook_worker::WorkerConfig| {
        c.max_in_flight = 2;
        c.poll_ms = 50;
    };
    // One process reads the streams; the other only delivers from the
    // shared queue.
    let a = s.worker("proc-a", &eps, few).await;
    let b = s
        .worker("proc-b", &eps, |c| {
            few(c);
            c.ingest = false;
        })
        .await;
    // 20 sessions × (3 switches + complete) = 80 events.
    let n = s.play(1, 20, 3).await.len();
    rx.wait(Duration::from_secs(60), "every event", |h| {
        delivered_ids(h).len() == n
    })
    .await;
    let hits = rx.hits();
    assert_eq!(hits.len(), n, "an event was delivered twice");
    assert_in_order(&hits);
    until(Duration::from_secs(10), "queue drained", || async {
        s.queue_len().await == 0
    })
    .await;
    let by = |w: &Running| {
        w.metrics.endpoints[0]
            .delivered
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let (da, db) = (by(&a), by(&b));
    println!("delivered by the ingesting process: {da}, by the other: {db}");
    assert_eq!(da + db, n as u64);
    assert!(db > 0, "the second process delivered nothing");
    a.shutdown().await;
    b.shutdown().await;
}
