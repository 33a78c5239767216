//! What an idle worker costs: Redis commands counted the way a per-request
//! bill counts them (testkit's `Monitor`), PostgreSQL transactions from
//! `pg_stat_database`; and that it still delivers a new event at once.

mod common;

use common::*;
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(30);

async fn transactions(s: &Stack) -> i64 {
    sqlx::query_scalar(
        "SELECT (xact_commit + xact_rollback)::int8 FROM pg_stat_database
         WHERE datname = current_database()",
    )
    .fetch_one(&s.pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_worker_costs_almost_nothing_and_still_delivers_at_once() {
    let s = stack().await;
    let rx = Receiver::start(|_| Answer::Ok).await;
    let eps = format!(
        "[{},{}]",
        endpoint("one", &rx.url(), &[SECRET_A], ALL_EVENTS),
        endpoint("two", &rx.url(), &[SECRET_A], ALL_EVENTS)
    );
    // The production defaults for the reads, claims and polls.
    let w = s
        .worker("idle", &eps, |c| {
            let d = synckairos_webhook_worker::WorkerConfig::default();
            c.block_ms = d.block_ms;
            c.claim_idle_ms = d.claim_idle_ms;
            c.poll_ms = d.poll_ms;
        })
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let monitor = s.redis.monitor();
    let tx0 = transactions(&s).await;
    let start = Instant::now();
    tokio::time::sleep(WINDOW).await;
    let counts = monitor.counts();
    // The stats collector lags a little: give it its flush.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let tx = transactions(&s).await - tx0;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "idle worker, 2 endpoints: {} Redis commands and {tx} PostgreSQL transactions in {secs:.0} s\n{counts}",
        counts.total
    );
    assert!(
        counts.total as f64 <= 1.0 * secs,
        "an idle worker sent {} Redis commands in {secs:.0} s:\n{counts}",
        counts.total
    );
    assert!(counts.of("xreadgroup") <= 1 + secs as u64 / 10, "{counts}");
    // One claim query per endpoint per second, and the counter's own reads.
    assert!(
        (tx as f64) <= 2.0 * 1.5 * secs + 10.0,
        "{tx} PostgreSQL transactions in {secs:.0} s"
    );

    let t = Instant::now();
    s.play(1, 1, 0).await;
    rx.wait(
        Duration::from_secs(5),
        "delivered after the idle time",
        |h| h.len() == 2,
    )
    .await;
    println!("first delivery after the idle window: {:?}", t.elapsed());
    w.shutdown().await;
}
