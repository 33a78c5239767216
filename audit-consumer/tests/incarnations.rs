//! A session id deleted and created again: two incarnations, each with its
//! own versions from 1, kept apart by their creation time in every table,
//! in the timeline and in restore.

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;
use synckairos_audit_consumer::cli::{self, RestoreError};
use synckairos_audit_consumer::{db, ConsumerConfig};
use synckairos_core::script::CallOptions;
use synckairos_core::{keys, Command as Cmd, Request};
use synckairos_engine::fixtures;

async fn run(s: &Stack, req: Request) -> i64 {
    match s
        .engine
        .execute(&req, &CallOptions::default())
        .await
        .unwrap()
        .result
        .expect("accepted")
    {
        synckairos_core::model::Reply::State { state, .. } => state.version as i64,
        synckairos_core::model::Reply::Deleted { existed } => {
            assert!(existed);
            -1
        }
        other => panic!("unexpected {other:?}"),
    }
}

fn timeline_cli(s: &Stack, sid: &str, extra: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_audit-consumer"))
        .arg("timeline")
        .arg(sid)
        .args(extra)
        .env("DATABASE_URL", s.db.url())
        .env("RUST_LOG", "warn")
        .output()
        .expect("audit-consumer binary");
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_session_id_is_a_second_incarnation_that_collides_with_nothing() {
    let s = stack().await;
    let (mut c, _) = s.consumer("solo", ConsumerConfig::default()).await;
    let sid = fixtures::uuid(0xF_0001);
    let body = fixtures::body(&sid, "per_participant", 2, 600_000);

    // Incarnation 1: v1..v4, then the delete (v5).
    assert_eq!(run(&s, fixtures::create(&body).unwrap()).await, 1);
    run(&s, Request::new(&sid, Cmd::Start)).await;
    run(&s, switch(&sid)).await;
    assert_eq!(run(&s, switch(&sid)).await, 4);
    let first_created = s.engine.get(&sid).await.unwrap().unwrap().created_at.ms();
    run(&s, Request::new(&sid, Cmd::Delete)).await;
    // The id can be created again once its tombstone is gone
    // (TOMBSTONE_TTL_SECONDS): here at once.
    let tombstone = keys::SessionKeys::new(&sid, SHARDS).tombstone;
    let mut redis_conn = s.redis.client().get_connection().unwrap();
    let gone: i64 = redis::cmd("DEL")
        .arg(&tombstone)
        .query(&mut redis_conn)
        .unwrap();
    assert_eq!(gone, 1, "the delete left a tombstone");
    // Both incarnations' events in one batch, too.
    tokio::time::sleep(Duration::from_millis(5)).await;
    // Incarnation 2: v1..v3.
    assert_eq!(run(&s, fixtures::create(&body).unwrap()).await, 1);
    run(&s, Request::new(&sid, Cmd::Start)).await;
    assert_eq!(run(&s, switch(&sid)).await, 3);
    let second_created = s.engine.get(&sid).await.unwrap().unwrap().created_at.ms();
    assert!(second_created > first_created);
    drain(&mut c, &s, 8).await;

    // Events: every one kept, each under its own incarnation.
    let events: Vec<(i64, Vec<i64>)> = sqlx::query_as(
        "SELECT (extract(epoch FROM session_created_at) * 1000)::int8,
                array_agg(version ORDER BY version)
         FROM sync_events WHERE session_id = $1
         GROUP BY session_created_at ORDER BY session_created_at",
    )
    .bind(&sid)
    .fetch_all(&s.pool)
    .await
    .unwrap();
    assert_eq!(
        events,
        vec![
            (first_created, vec![1, 2, 3, 4, 5]),
            (second_created, vec![1, 2, 3])
        ]
    );

    // Sessions: one row per incarnation, each at its own latest version.
    let sessions: Vec<(i64, i64, String, bool)> = sqlx::query_as(
        "SELECT (extract(epoch FROM created_at) * 1000)::int8, version, last_event_type,
                deleted_at IS NOT NULL
         FROM sync_sessions WHERE session_id = $1 ORDER BY created_at",
    )
    .bind(&sid)
    .fetch_all(&s.pool)
    .await
    .unwrap();
    assert_eq!(
        sessions,
        vec![
            (first_created, 5, "session_deleted".to_string(), true),
            (second_created, 3, "participant_switched".to_string(), false)
        ]
    );
    // Participants: each incarnation's own clocks.
    let participants: Vec<(i64, i64, i64)> = sqlx::query_as(
        "SELECT (extract(epoch FROM session_created_at) * 1000)::int8, count(*), max(version)
         FROM sync_participants WHERE session_id = $1
         GROUP BY session_created_at ORDER BY session_created_at",
    )
    .bind(&sid)
    .fetch_all(&s.pool)
    .await
    .unwrap();
    assert_eq!(
        participants,
        vec![(first_created, 2, 5), (second_created, 2, 3)]
    );

    // The operator's view: the latest incarnation by default, any by number.
    let all = db::incarnations(&s.pool, &sid).await.unwrap();
    assert_eq!(all.len(), 2);
    assert!(all[0].deleted && !all[1].deleted);
    let latest = db::timeline(&s.pool, &sid, None).await.unwrap();
    assert_eq!(
        latest.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    let first = db::timeline(&s.pool, &sid, Some(first_created))
        .await
        .unwrap();
    assert_eq!(first.len(), 5);
    assert_eq!(first.last().unwrap().event_type, "session_deleted");
    let (code, out, err) = timeline_cli(&s, &sid, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("2 incarnation(s); showing #2"), "{out}");
    assert!(
        out.contains("timeline of") && out.contains(": 3 events"),
        "{out}"
    );
    let (code, out, _) = timeline_cli(&s, &sid, &["--incarnation", "1"]);
    assert_eq!(code, 0);
    assert!(
        out.contains(": 5 events") && out.contains("session_deleted"),
        "{out}"
    );
    let (code, _, err) = timeline_cli(&s, &sid, &["--incarnation", "3"]);
    assert_eq!(code, 2);
    assert!(err.contains("INCARNATION_NOT_FOUND"), "{err}");

    // Restore: Redis loses the live (second) incarnation; restore brings
    // back that one, at its own next version, not the deleted first.
    let mut conn = s.redis.client().get_connection().unwrap();
    let k = keys::SessionKeys::new(&sid, SHARDS);
    let _: () = redis::cmd("DEL").arg(&k.state).query(&mut conn).unwrap();
    let settings = settings();
    let first_again = cli::restore(
        &s.pool,
        &s.target(),
        settings.clone(),
        &sid,
        None,
        Some(first_created),
    )
    .await;
    assert!(
        matches!(first_again, Err(RestoreError::Deleted { version: 5, .. })),
        "{first_again:?}"
    );
    let st = cli::restore(&s.pool, &s.target(), settings, &sid, None, None)
        .await
        .expect("restored");
    assert_eq!((st.version, st.created_at.ms()), (4, second_created));
    drain(&mut c, &s, 9).await;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM sync_sessions WHERE session_id = $1")
        .bind(&sid)
        .fetch_one(&s.pool)
        .await
        .unwrap();
    assert_eq!(rows, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_migration_gives_existing_rows_their_incarnation() {
    let db = synckairos_testkit::PgDatabase::fresh();
    let pool = sqlx::PgPool::connect(db.url()).await.unwrap();
    // The schema before incarnations: the first migration only.
    let before = sqlx::migrate::Migrator {
        migrations: std::borrow::Cow::Owned(db::MIGRATOR.iter().take(1).cloned().collect()),
        ignore_missing: false,
        locking: true,
        no_tx: false,
    };
    before.run(&pool).await.unwrap();
    let created = "2026-11-23T17:38:20.123Z";
    sqlx::raw_sql(&format!(
        "INSERT INTO sync_sessions VALUES ('s1', 'per_participant', 'running', 2, '{{}}',
             '{{\"created_at\": \"{created}\"}}', 'R1|x', 'session_started', '0-1-0',
             '{created}', now(), NULL, NULL);
         INSERT INTO sync_participants VALUES ('s1', 'p1', 0, NULL, 1, 0, 1, 0, false, 2, now());
         INSERT INTO sync_events (event_id, shard, session_id, event_type, version, occurred_at, snapshot)
         VALUES ('0-1-0', 0, 's1', 'session_created', 1, now(), '{{\"created_at\": \"{created}\"}}'),
                ('0-2-0', 0, 's1', 'session_started', 2, now(), '{{\"created_at\": \"{created}\"}}');"
    ))
    .execute(&pool)
    .await
    .unwrap();

    db::migrate(&pool)
        .await
        .expect("the incarnations migration over existing rows");
    let events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sync_events e JOIN sync_sessions s
             ON s.session_id = e.session_id AND s.created_at = e.session_created_at",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(events, 2, "every event found its incarnation's row");
    let participants: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sync_participants
         WHERE session_created_at = $1::timestamptz",
    )
    .bind(created)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(participants, 1);
    let all = db::incarnations(&pool, "s1").await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(
        synckairos_core::time::format_iso(all[0].created_at_ms),
        created
    );
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_records_the_lag_it_claimed_and_the_lag_credited() {
    let s = stack().await;
    let (mut c, _) = s.consumer("lag", ConsumerConfig::default()).await;
    let sid = fixtures::uuid(0xF_0002);
    let mut body = fixtures::body(&sid, "per_participant", 2, 600_000);
    body["lag_compensation"] =
        serde_json::json!({"initial_ms": 300, "gain_ms": 50, "max_ms": 1_000});
    run(&s, fixtures::create(&body).unwrap()).await;
    run(&s, Request::new(&sid, Cmd::Start)).await;
    // Each player has its own quota of 300 (+50 a move, at most 1,000):
    // white claims 200 (all credited, 150 left), black claims 1,000 (its 300
    // credited), white claims 1,000 again (its 150 credited).
    for claim in [200, 1_000, 1_000] {
        let mut req = switch(&sid);
        req.lag_ms = Some(claim);
        run(&s, req).await;
    }
    drain(&mut c, &s, 5).await;
    let rows = s.db.query(&format!(
        "SELECT version, event_type, lag_claimed_ms, lag_credited_ms FROM sync_events \
         WHERE session_id = '{sid}' ORDER BY version"
    ));
    assert_eq!(
        rows,
        "1|session_created||\n2|session_started||\n\
         3|participant_switched|200|200\n4|participant_switched|1000|300\n\
         5|participant_switched|1000|150"
    );
}
