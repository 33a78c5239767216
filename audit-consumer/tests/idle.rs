//! What an idle consumer costs in Redis commands, counted the way a
//! per-request bill counts them (testkit's `Monitor`: one command per client
//! request, nothing a script runs inside), while Prometheus scrapes it every
//! 15 s; and that it still picks up a new event at once.

mod common;

use common::*;
use std::time::{Duration, Instant};

/// The budget: commands per second, averaged over a minute.
const IDLE_BUDGET_PER_SECOND: f64 = 2.0;
const SCRAPE_EVERY: Duration = Duration::from_secs(15);
const WINDOW: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_consumer_costs_at_most_two_commands_a_second_and_still_drains_at_once() {
    let s = stack().await;
    let mut p = s.spawn("idle", &[]);
    wait_ready(&p).await;
    // Start-up (groups, its own pending entries, the first claim) is done
    // once; the budget is for the steady state after it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let monitor = s.redis.monitor();
    let start = Instant::now();
    for i in 1..=(WINDOW.as_secs() / SCRAPE_EVERY.as_secs()) as u32 {
        let body = http_get(p.metrics_port, "/metrics").await;
        assert!(body.starts_with("HTTP/1.1 200"), "{body}");
        let public = http_get(p.port, "/metrics").await;
        assert!(
            public.starts_with("HTTP/1.1 404"),
            "no /metrics on the public port: {public}"
        );
        assert!(
            body.contains("synckairos_audit_pending{shard=\"15\"} 0"),
            "the per-shard gauges are there: {body}"
        );
        tokio::time::sleep_until((start + SCRAPE_EVERY * i).into()).await;
    }
    let counts = monitor.counts();
    let secs = start.elapsed().as_secs_f64();
    let per_minute = counts.total as f64 * 60.0 / secs;
    eprintln!(
        "idle consumer: {per_minute:.0} Redis commands per minute ({secs:.1} s counted)\n{counts}"
    );
    assert!(
        counts.total as f64 <= IDLE_BUDGET_PER_SECOND * secs,
        "an idle consumer sent {} commands in {secs:.1} s ({:.2}/s; budget {IDLE_BUDGET_PER_SECOND}/s):\n{counts}",
        counts.total,
        counts.total as f64 / secs
    );

    // Long blocking reads, yet a new event is stored at once.
    let t = Instant::now();
    let expected = play(&s.engine, 0xA_0000, 1, 0).await;
    s.wait_for(expected.len() as i64, Duration::from_secs(2))
        .await;
    eprintln!(
        "first events after the idle minute stored in {:?}",
        t.elapsed()
    );
    s.assert_exactly(&expected).await;

    // SIGTERM while every worker waits in a 10 s read: it stops at once.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t = Instant::now();
    assert!(p.term().success(), "SIGTERM is a clean exit");
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "SIGTERM during a blocking read took {:?}",
        t.elapsed()
    );
}
