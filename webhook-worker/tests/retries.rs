//! Retries: a receiver that fails (500s, a timeout, a 429 with
//! Retry-After) and then recovers gets every event, in version order per
//! session, while a healthy endpoint is served without waiting for it.

mod common;

use common::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_endpoint_recovers_in_order_and_never_delays_a_healthy_one() {
    let s = stack().await;
    // For its first 500 ms every request gets a 500, then for 500 ms every
    // one is too slow (the worker's timeout is 400 ms), then for 300 ms a
    // 429 with Retry-After: 2; then 204s.
    let t0 = std::sync::Arc::new(std::sync::OnceLock::<std::time::Instant>::new());
    let flaky = Receiver::start(move |_| {
        let ms = t0
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_millis();
        match ms {
            0..500 => Answer::Status(500),
            500..1000 => Answer::Slow(Duration::from_millis(1_500)),
            1000..1300 => Answer::RetryAfter(429, 2),
            _ => Answer::Ok,
        }
    })
    .await;
    let healthy = Receiver::start(|_| Answer::Ok).await;
    let eps = format!(
        "[{},{}]",
        endpoint("flaky", &flaky.url(), &[SECRET_A], ALL_EVENTS),
        endpoint("healthy", &healthy.url(), &[SECRET_A], ALL_EVENTS)
    );
    // Enough attempts to outlast the failures (none may be dead-lettered).
    let w = s
        .worker("retry", &eps, |c| {
            c.retry_schedule = format!("0,50ms,100ms,{}", vec!["200ms"; 20].join(","))
        })
        .await;
    // 6 sessions × (4 switches + complete) = 30 events.
    let events = s.play(1, 6, 4).await;
    let n = events.len();
    assert_eq!(n, 30);

    healthy
        .wait(Duration::from_secs(30), "healthy has every event", |h| {
            h.len() == n
        })
        .await;
    let healthy_done = healthy.hits().iter().map(|h| h.at_ms).max().unwrap();
    flaky
        .wait(
            Duration::from_secs(60),
            "flaky has every event delivered",
            |h| delivered_ids(h).len() == n,
        )
        .await;
    assert_eq!(s.dead_len().await, 0, "a delivery was dead-lettered");
    let fh = flaky.hits();
    let first_ok = fh.iter().find(|h| h.delivered()).unwrap().at_ms;
    for kind in [
        Answer::Status(500),
        Answer::Slow(Duration::from_millis(1_500)),
        Answer::RetryAfter(429, 2),
    ] {
        assert!(fh.iter().any(|h| h.answer == kind), "no {kind:?} answer");
    }
    let retry_after = fh
        .iter()
        .find(|h| h.answer == Answer::RetryAfter(429, 2))
        .unwrap();
    println!(
        "healthy: all {n} by +{} ms; flaky: first 2xx at +{} ms, {} requests",
        healthy_done - fh[0].at_ms,
        first_ok - fh[0].at_ms,
        fh.len()
    );
    // The healthy endpoint had everything while the flaky one was still failing.
    assert!(
        healthy_done < first_ok,
        "healthy finished at {healthy_done}, flaky's first success at {first_ok}"
    );
    // Retry-After: 2 was honoured.
    let next = fh
        .iter()
        .find(|h| h.at_ms > retry_after.at_ms && h.session() == retry_after.session())
        .unwrap();
    assert!(
        next.at_ms - retry_after.at_ms >= 1_900,
        "retried {} ms after a Retry-After of 2 s",
        next.at_ms - retry_after.at_ms
    );

    // Order per session on both, every id at least once on the flaky one,
    // exactly once where the receiver always answered in time.
    assert_in_order(&fh);
    assert_in_order(&healthy.hits());
    let expected: std::collections::BTreeSet<String> = arrived_ids(&healthy.hits());
    assert_eq!(expected.len(), n);
    assert_eq!(arrived_ids(&fh), expected);
    assert!(delivered_ids(&fh).values().all(|c| *c == 1));
    assert!(delivered_ids(&healthy.hits()).values().all(|c| *c == 1));
    assert_eq!(
        healthy.hits().len(),
        n,
        "the healthy endpoint got a duplicate"
    );
    // The same webhook-id and body on every attempt of an event.
    for h in &fh {
        let first = fh
            .iter()
            .find(|x| x.webhook_id() == h.webhook_id())
            .unwrap();
        assert_eq!(first.body, h.body);
    }

    until(Duration::from_secs(10), "queue drained", || async {
        s.queue_len().await == 0
    })
    .await;
    let m = http_get(w.metrics_port, "/metrics").await;
    let failed = fh.iter().filter(|h| !h.delivered()).count();
    assert!(
        m.contains(&format!(
            "synckairos_webhook_deliveries_total{{endpoint=\"flaky\",result=\"failed\"}} {failed}"
        )),
        "{m}"
    );
    assert!(
        m.contains("synckairos_webhook_deliveries_total{endpoint=\"healthy\",result=\"failed\"} 0"),
        "{m}"
    );
    w.shutdown().await;
}
