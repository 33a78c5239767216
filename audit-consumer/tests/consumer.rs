//! The consumer against a real redis-server and a fresh PostgreSQL database:
//! exactly once through crashes, outages, poison and a lost consumer.

mod common;

use common::*;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use synckairos_audit_consumer::ConsumerConfig;
use synckairos_core::keys;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_events_land_exactly_once() {
    let s = stack().await;
    // 1000 sessions × (create, start, 8 switches) = 10,000 events on 16 shards.
    let expected = play(&s.engine, 0x1_0000, 1000, 8).await;
    assert_eq!(expected.len(), 10_000);
    let mut shards = BTreeSet::new();
    for (sid, _) in &expected {
        shards.insert(keys::shard_of(sid, SHARDS));
    }
    assert_eq!(shards.len(), SHARDS as usize, "every shard has events");

    let (mut c, m) = s
        .consumer(
            "solo",
            ConsumerConfig {
                batch_size: 500,
                ..Default::default()
            },
        )
        .await;
    drain(&mut c, &s, 10_000).await;
    // Nothing more to do, and nothing doubled by stepping on.
    for _ in 0..3 {
        assert_eq!(c.step(false).await.expect("step").batch, 0);
    }
    s.assert_exactly(&expected).await;
    assert_eq!(m.events.load(std::sync::atomic::Ordering::Relaxed), 10_000);

    // The session and participant tables hold each session's latest version.
    let (sessions, at_latest): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE version = 10 AND status = 'running'
             AND snapshot->>'version' = '10') FROM sync_sessions",
    )
    .fetch_one(&s.pool)
    .await
    .unwrap();
    assert_eq!((sessions, at_latest), (1000, 1000));
    let (participants, cycles): (i64, i64) = sqlx::query_as(
        "SELECT count(*), sum(cycle_count)::int8 FROM sync_participants WHERE version = 10",
    )
    .fetch_one(&s.pool)
    .await
    .unwrap();
    assert_eq!((participants, cycles), (2000, 8000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_version_never_overwrites_a_newer_session_row() {
    let s = stack().await;
    let expected = play(&s.engine, 0x2_0000, 3, 4).await;
    let (mut c, _) = s.consumer("solo", ConsumerConfig::default()).await;
    drain(&mut c, &s, expected.len() as i64).await;
    // Replaying an old event (a late redelivery) leaves the newer row alone.
    let sid = &expected.iter().next().unwrap().0;
    let shard = keys::shard_of(sid, SHARDS);
    let old = synckairos_core::record::encode(
        &s.engine
            .get(sid)
            .await
            .unwrap()
            .map(|mut st| {
                st.version = 2;
                st
            })
            .unwrap(),
    );
    let mut conn = s.redis.client().get_connection().unwrap();
    let _: String = redis::cmd("XADD")
        .arg(keys::audit_stream(shard))
        .arg("*")
        .arg(&[
            ("type", "session_started"),
            ("sid", sid.as_str()),
            ("v", "2"),
            ("at", "1"),
            ("snap", old.as_str()),
        ])
        .query(&mut conn)
        .unwrap();
    drain(&mut c, &s, expected.len() as i64 + 1).await;
    let v: i64 = sqlx::query_scalar("SELECT version FROM sync_sessions WHERE session_id = $1")
        .bind(sid)
        .fetch_one(&s.pool)
        .await
        .unwrap();
    assert_eq!(v, 6);
}

/// Holds `LOCK TABLE sync_events` so a consumer's insert waits inside its
/// transaction: the consumer is then provably in the middle of a batch.
async fn lock_events(s: &Stack) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut tx = s.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE sync_events IN EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx
}

/// Waits until `n` consumer connections are blocked on the lock.
async fn wait_blocked(s: &Stack, n: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let blocked: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE application_name = 'synckairos-audit-consumer'
               AND wait_event_type = 'Lock' AND datname = current_database()",
        )
        .fetch_one(&s.pool)
        .await
        .unwrap();
        if blocked >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{blocked} of {n} consumers blocked mid-batch"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_batch_then_restart_loses_and_doubles_nothing() {
    let s = stack().await;
    let mut expected = play(&s.engine, 0x3_0000, 200, 8).await;
    // Five kills in a row would charge the oldest entries five deliveries;
    // the dead-letter rule is for entries that kill consumers, not this test.
    let env = [
        ("BATCH_SIZE", "300"),
        ("CLAIM_IDLE_MS", "60000"),
        ("MAX_DELIVERIES", "20"),
    ];

    // 1. Killed while its INSERT waits inside the transaction.
    let lock = lock_events(&s).await;
    let mut p = s.spawn("host-a", &env);
    wait_blocked(&s, 1).await;
    p.kill9();
    lock.rollback().await.unwrap();
    assert_eq!(s.count().await, 0, "a killed transaction commits nothing");

    // 2. Killed at arbitrary moments while events keep coming.
    let load = {
        let engine = s.engine.clone();
        tokio::spawn(async move { play(&engine, 0x3_1000, 300, 8).await })
    };
    for round in 0..4 {
        let mut p = s.spawn("host-a", &env);
        tokio::time::sleep(Duration::from_millis(300 + 170 * round)).await;
        p.kill9();
    }
    expected.extend(load.await.unwrap());

    // 3. The same host name again: it finds its own pending entries.
    let mut p = s.spawn("host-a", &env);
    s.wait_for(expected.len() as i64, Duration::from_secs(60))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(p.term().success(), "SIGTERM is a clean exit");
    s.assert_exactly(&expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_for_10_s_under_load_loses_nothing() {
    let pg = synckairos_testkit::PostgresServer::start();
    let db = synckairos_testkit::PgDatabase::fresh_on(&pg.admin_url());
    let s = stack_on(synckairos_testkit::RedisServer::start(), db).await;
    let mut p = s.spawn(
        "host-a",
        &[("BATCH_SIZE", "200"), ("BACKOFF_MAX_MS", "1000")],
    );

    let load = {
        let engine = s.engine.clone();
        tokio::spawn(async move {
            let mut all = BTreeSet::new();
            // ~14 s of steady commands: 70 rounds of 20 sessions.
            for round in 0..70u128 {
                all.extend(play(&engine, 0x4_0000 + round * 100, 20, 3).await);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            all
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = s.count().await;
    assert!(before > 0, "events flow before the outage");
    pg.stop();
    let ready = http_get(p.port, "/ready").await;
    assert!(
        ready.starts_with("HTTP/1.1 503"),
        "not ready while postgres is down: {ready}"
    );
    assert_eq!(
        p.metric("synckairos_audit_ready").await,
        0.0,
        "the readiness gauge (alerts.yml) says the same"
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    pg.start_again();
    let expected = load.await.unwrap();
    s.wait_for(expected.len() as i64, Duration::from_secs(60))
        .await;
    assert!(
        p.metric("synckairos_audit_errors_total{dependency=\"postgres\"}")
            .await
            > 0.0
    );
    let ready = http_get(p.port, "/ready").await;
    assert!(ready.starts_with("HTTP/1.1 200"), "ready again: {ready}");
    assert_eq!(p.metric("synckairos_audit_ready").await, 1.0);
    assert!(p.term().success());
    s.assert_exactly(&expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_goes_to_the_dead_letter_stream_and_the_rest_flows() {
    let s = stack().await;
    let good = play(&s.engine, 0x5_0000, 50, 4).await;
    let sid = good.iter().next().unwrap().0.clone();
    let shard = keys::shard_of(&sid, SHARDS);
    let stream = keys::audit_stream(shard);
    let snap = synckairos_core::record::encode(&s.engine.get(&sid).await.unwrap().unwrap());
    let mut conn = s.redis.client().get_connection().unwrap();
    let mut xadd = |fields: &[(&str, &str)]| -> String {
        redis::cmd("XADD")
            .arg(&stream)
            .arg("*")
            .arg(fields)
            .query(&mut conn)
            .unwrap()
    };
    let poison = [
        xadd(&[("type", "session_started"), ("sid", &sid)]),
        xadd(&[
            ("type", "nonsense"),
            ("sid", &sid),
            ("v", "9"),
            ("at", "1"),
            ("snap", &snap),
        ]),
        xadd(&[
            ("type", "session_paused"),
            ("sid", &sid),
            ("v", "9"),
            ("at", "1"),
            ("snap", "R1|garbage"),
        ]),
        xadd(&[
            ("type", "session_paused"),
            ("sid", &sid),
            ("v", "9"),
            ("at", "1"),
            ("actor", "a\0b"),
            ("snap", &snap),
        ]),
    ];
    // An entry that keeps killing whoever takes it: delivered 10 times already.
    let crasher = xadd(&[
        ("type", "session_paused"),
        ("sid", &sid),
        ("v", "99"),
        ("at", "1"),
        ("snap", &snap),
    ]);
    let more = play(&s.engine, 0x5_1000, 50, 4).await;
    let mut group_conn = s.redis.client().get_connection().unwrap();
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&stream)
        .arg("audit")
        .arg("0")
        .arg("MKSTREAM")
        .query(&mut group_conn)
        .unwrap();
    let _: redis::Value = redis::cmd("XCLAIM")
        .arg(&stream)
        .arg("audit")
        .arg("ghost")
        .arg(0)
        .arg(&crasher)
        .arg("RETRYCOUNT")
        .arg(10)
        .arg("FORCE")
        .query(&mut group_conn)
        .unwrap();

    let (mut c, m) = s
        .consumer(
            "solo",
            ConsumerConfig {
                claim_idle_ms: 0,
                ..Default::default()
            },
        )
        .await;
    let expected: BTreeSet<_> = good.union(&more).cloned().collect();
    drain(&mut c, &s, expected.len() as i64).await;
    s.assert_exactly(&expected).await;

    let dead = s.redis.stream_entries(&keys::dead_letter_stream(shard));
    let by_source: std::collections::HashMap<String, Vec<(String, String)>> = dead
        .into_iter()
        .map(|(_, f)| {
            let src = f
                .iter()
                .find(|(k, _)| k == "dl_source_id")
                .unwrap()
                .1
                .clone();
            (src, f)
        })
        .collect();
    assert_eq!(by_source.len(), 5, "{by_source:?}");
    let reason = |id: &str| {
        by_source[id]
            .iter()
            .find(|(k, _)| k == "dl_reason")
            .unwrap()
            .1
            .clone()
    };
    assert!(
        reason(&poison[0]).contains("missing field v"),
        "{}",
        reason(&poison[0])
    );
    assert!(
        reason(&poison[1]).contains("unknown type"),
        "{}",
        reason(&poison[1])
    );
    assert!(
        reason(&poison[2]).contains("not a record"),
        "{}",
        reason(&poison[2])
    );
    assert!(reason(&poison[3]).contains("NUL"), "{}", reason(&poison[3]));
    assert!(
        reason(&crasher).contains("delivered 11 times"),
        "{}",
        reason(&crasher)
    );
    // The dead letter keeps the original fields.
    assert!(by_source[&poison[1]]
        .iter()
        .any(|(k, v)| k == "type" && v == "nonsense"));
    assert_eq!(m.dead_letters.load(std::sync::atomic::Ordering::Relaxed), 5);
    let pending: (u64,) = redis::cmd("XPENDING")
        .arg(&stream)
        .arg("audit")
        .query::<Vec<redis::Value>>(&mut group_conn)
        .map(|v| (redis::from_redis_value_ref(&v[0]).unwrap(),))
        .unwrap();
    assert_eq!(pending.0, 0, "everything acknowledged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_consumers_share_the_shards_and_one_takes_over_the_other() {
    let s = stack().await;
    let env = [
        ("BATCH_SIZE", "100"),
        ("CLAIM_IDLE_MS", "2000"),
        ("BLOCK_MS", "200"),
    ];
    let mut a = s.spawn("host-a", &env);
    let mut b = s.spawn("host-b", &env);
    let mut expected = play(&s.engine, 0x6_0000, 400, 8).await;
    s.wait_for(expected.len() as i64, Duration::from_secs(60))
        .await;
    let (ea, eb) = (
        a.metric("synckairos_audit_events_total").await,
        b.metric("synckairos_audit_events_total").await,
    );
    assert!(
        ea > 0.0 && eb > 0.0,
        "both consumers took a share: {ea} / {eb}"
    );
    assert_eq!(ea + eb, expected.len() as f64, "no event stored by both");

    // Both stuck mid-batch; A dies; B must claim what A held.
    let lock = lock_events(&s).await;
    expected.extend(play(&s.engine, 0x6_1000, 100, 8).await);
    wait_blocked(&s, 2).await;
    a.kill9();
    lock.commit().await.unwrap();
    s.wait_for(expected.len() as i64, Duration::from_secs(60))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        b.metric("synckairos_audit_claimed_total").await > 0.0,
        "B claimed A's entries"
    );
    assert!(b.term().success());
    s.assert_exactly(&expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_died_after_commit_before_ack_causes_no_double() {
    let s = stack().await;
    let expected = play(&s.engine, 0x8_0000, 100, 8).await;
    // A "ghost" consumer reads entries, commits them, and dies before XACK.
    let conn = synckairos_audit_consumer::redis(&s.redis.url())
        .await
        .unwrap();
    let ghost = synckairos_audit_consumer::stream::Streams::new(conn, SHARDS, "audit", "ghost");
    ghost.ensure_groups().await.unwrap();
    let taken = ghost.read(40, None).await.unwrap();
    assert!(taken.len() > 100, "{}", taken.len());
    let rows: Vec<_> = taken
        .iter()
        .map(|e| synckairos_audit_consumer::event::decode(e).unwrap())
        .collect();
    let mut tx = s.pool.begin().await.unwrap();
    synckairos_audit_consumer::db::insert(&mut tx, &rows)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(s.count().await, taken.len() as i64);

    // The survivor claims the ghost's entries (all still pending) and stores
    // them again: the event ids make that a no-op.
    let (mut c, m) = s
        .consumer(
            "solo",
            ConsumerConfig {
                claim_idle_ms: 0,
                ..Default::default()
            },
        )
        .await;
    drain(&mut c, &s, expected.len() as i64).await;
    s.assert_exactly(&expected).await;
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(m.duplicates.load(Relaxed), taken.len() as u64);
    assert_eq!(m.claimed.load(Relaxed), taken.len() as u64);
    assert_eq!(m.dead_letters.load(Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_batch_finishes_the_batch_then_exits() {
    let s = stack().await;
    let expected = play(&s.engine, 0x9_0000, 50, 8).await;
    let lock = lock_events(&s).await;
    let mut p = s.spawn("host-a", &[("BATCH_SIZE", "1000")]);
    wait_blocked(&s, 1).await;
    // SIGTERM while the batch's INSERT waits; the lock goes a moment later.
    std::process::Command::new("kill")
        .args(["-TERM", &p.child.id().to_string()])
        .status()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        p.child.try_wait().unwrap().is_none(),
        "still finishing its batch"
    );
    lock.commit().await.unwrap();
    let status = tokio::task::spawn_blocking(move || {
        let st = p.child.wait().unwrap();
        std::mem::forget(p);
        st
    })
    .await
    .unwrap();
    assert!(status.success(), "{status}");
    // The whole batch was stored and acknowledged before the exit.
    s.assert_exactly(&expected).await;
}

/// A low-time warning is an event of the trail at the session's current
/// version: stored in `sync_events` with its type, while the session row
/// keeps the transition's snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_low_time_warning_is_stored_without_moving_the_session_row() {
    let s = stack().await;
    let sid = synckairos_engine::fixtures::uuid(0x5_0000);
    let mut b = synckairos_engine::fixtures::body(&sid, "per_participant", 2, 10_000);
    b["low_time_warning_ms"] = 4_000.into();
    let at = |now: i64| synckairos_core::script::CallOptions {
        now_ms: Some(now),
        idempotency_key: None,
    };
    let t0 = 1_800_000_000_000i64;
    let create = synckairos_engine::fixtures::create(&b).expect("valid body");
    s.engine.execute(&create, &at(t0)).await.expect("create");
    let start = synckairos_core::Request::new(&sid, synckairos_core::Command::Start);
    s.engine.execute(&start, &at(t0)).await.expect("start");
    let expire = synckairos_core::Request::new(&sid, synckairos_core::Command::Expire);
    s.engine
        .execute(&expire, &at(t0 + 6_000))
        .await
        .expect("expire");
    let (mut c, _) = s.consumer("solo", ConsumerConfig::default()).await;
    drain(&mut c, &s, 3).await;
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT event_type, version FROM sync_events WHERE session_id = $1 ORDER BY event_id",
    )
    .bind(&sid)
    .fetch_all(&s.pool)
    .await
    .unwrap();
    let expected: Vec<(String, i64)> = [
        ("session_created", 1),
        ("session_started", 2),
        ("low_time_warning", 2),
    ]
    .iter()
    .map(|(t, v)| (t.to_string(), *v))
    .collect();
    assert_eq!(rows, expected);
    let (version, last): (i64, String) =
        sqlx::query_as("SELECT version, last_event_type FROM sync_sessions WHERE session_id = $1")
            .bind(&sid)
            .fetch_one(&s.pool)
            .await
            .unwrap();
    assert_eq!((version, last.as_str()), (2, "session_started"));
}
