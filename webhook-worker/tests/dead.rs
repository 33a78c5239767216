//! Dead letters: an endpoint down for good ends in `sk:webhooks:dead`
//! after its last attempt; `dlq list` shows them and `dlq replay` queues
//! them again, delivered once the receiver is back, with the same
//! webhook-ids.

mod common;

use common::*;
use std::collections::BTreeSet;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_down_for_good_ends_in_dead_letters_that_replay_delivers() {
    let s = stack().await;
    let down = Receiver::start(|_| Answer::Status(503)).await;
    let eps = format!(
        "[{}]",
        endpoint("down", &down.url(), &[SECRET_A], ALL_EVENTS)
    );
    // Three attempts, then the dead letters.
    let w = s
        .worker("dead", &eps, |c| c.retry_schedule = "0,30ms,60ms".into())
        .await;
    // 2 sessions × (2 switches + complete) = 6 events.
    s.play(1, 2, 2).await;
    until(Duration::from_secs(30), "6 dead letters", || async {
        s.dead_len().await == 6
    })
    .await;
    until(Duration::from_secs(10), "queue empty", || async {
        s.queue_len().await == 0
    })
    .await;
    let hits = down.hits();
    assert_eq!(hits.len(), 18, "3 attempts of each of 6 events");
    // A session's next event went only after the one before it was dead.
    assert_in_order(&hits);
    let sent: BTreeSet<String> = arrived_ids(&hits);

    let (code, out, err) = s.cli(&["dlq", "list", "--endpoint", "down"], &[]);
    assert_eq!(code, 0, "{err}");
    let listed: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(listed.len(), 6, "{out}");
    for d in &listed {
        assert_eq!(d["endpoint"], "down");
        assert_eq!(d["attempts"], 3);
        assert_eq!(d["last_status"], 503);
        assert_eq!(d["last_error"], "HTTP 503");
        assert_eq!(
            d["webhook_id"],
            format!("evt_{}", d["event_id"].as_str().unwrap())
        );
        assert_eq!(d["payload"]["data"]["event_id"], d["event_id"]);
    }
    let (_, none, _) = s.cli(&["dlq", "list", "--endpoint", "other"], &[]);
    assert!(none.is_empty());
    let (_, two, _) = s.cli(&["dlq", "list", "--limit", "2"], &[]);
    assert_eq!(two.lines().count(), 2);

    // The receiver is back: replay one by id, then the rest.
    down.set(|_| Answer::Ok);
    let env = [
        ("WEBHOOK_ENDPOINTS", eps.as_str()),
        ("WEBHOOK_ALLOW_LOCAL", "true"),
    ];
    let first = listed[0]["id"].as_str().unwrap();
    let (code, out, err) = s.cli(&["dlq", "replay", first], &env);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("\"result\":\"queued\""), "{out}");
    let (code, out, err) = s.cli(&["dlq", "replay", first, "0-1"], &env);
    assert_eq!(
        code, 2,
        "a missing dead letter fails the replay: {out}{err}"
    );
    assert!(out.contains("not_found"), "{out}");
    let (code, out, err) = s.cli(&["dlq", "replay", "--all", "--endpoint", "down"], &env);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.matches("\"queued\"").count(), 5, "{out}");
    assert_eq!(s.dead_len().await, 0);

    down.wait(Duration::from_secs(30), "6 replayed deliveries", |h| {
        delivered_ids(h).len() == 6
    })
    .await;
    let after = down.hits();
    let delivered: BTreeSet<String> = delivered_ids(&after).into_keys().collect();
    assert_eq!(delivered, sent, "the replays keep their webhook-ids");
    assert!(delivered_ids(&after).values().all(|c| *c == 1));
    until(Duration::from_secs(10), "queue empty", || async {
        s.queue_len().await == 0
    })
    .await;

    // A replay needs the endpoint configured; bad arguments exit 2.
    let (code, _, err) = s.cli(&["dlq", "replay", "not-an-id"], &env);
    assert_eq!(code, 2);
    assert!(err.contains("BAD_ID"), "{err}");
    let (code, _, err) = s.cli(
        &["dlq", "replay", "--all"],
        &[("WEBHOOK_ENDPOINTS", r#"[{"id":"x"}]"#)],
    );
    assert_eq!(code, 2);
    assert!(err.contains("BAD_CONFIG"), "{err}");
    w.shutdown().await;
}
