//! Restore: a session Redis lost comes back from the audit trail, with a new
//! version and a `session_restored` event, and play continues.

mod common;

use common::*;
use std::process::Command;
use synckairos_audit_consumer::cli::{self, RestoreError};
use synckairos_audit_consumer::{db, ConsumerConfig};
use synckairos_core::script::CallOptions;
use synckairos_core::{keys, model::Reply, Command as Cmd, Request, Status};
use synckairos_engine::fixtures;

async fn run(s: &Stack, req: Request) -> synckairos_core::SyncState {
    match s
        .engine
        .execute(&req, &CallOptions::default())
        .await
        .unwrap()
        .result
    {
        Ok(Reply::State { state, .. }) => *state,
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_session_is_restored_paused_and_play_continues() {
    let s = stack().await;
    let (mut c, _) = s.consumer("solo", ConsumerConfig::default()).await;
    let sid = fixtures::uuid(0x7_0001);
    let switch = || {
        Request::new(
            &sid,
            Cmd::Switch {
                next_participant_id: None,
            },
        )
    };
    run(
        &s,
        fixtures::create(&fixtures::body(&sid, "per_participant", 2, 60_000)).unwrap(),
    )
    .await;
    run(&s, Request::new(&sid, Cmd::Start)).await;
    run(&s, switch()).await;
    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    let before = run(&s, switch()).await;
    assert_eq!(before.version, 4);
    drain(&mut c, &s, 4).await;

    // While Redis has it, restore refuses.
    let settings = settings();
    let err = cli::restore(
        &s.pool,
        &s.target(),
        settings.clone(),
        &sid,
        Some("ops"),
        None,
    )
    .await;
    assert!(matches!(err, Err(RestoreError::StillExists(_))), "{err:?}");
    assert_eq!(err.unwrap_err().code(), "SESSION_EXISTS");

    // Redis loses the session (its key and its deadline).
    let k = keys::SessionKeys::new(&sid, SHARDS);
    let mut conn = s.redis.client().get_connection().unwrap();
    let _: () = redis::cmd("DEL").arg(&k.state).query(&mut conn).unwrap();
    let _: () = redis::cmd("ZREM")
        .arg(&k.deadlines)
        .arg(&sid)
        .query(&mut conn)
        .unwrap();
    assert!(s.engine.get(&sid).await.unwrap().is_none());

    let restored = cli::restore(
        &s.pool,
        &s.target(),
        settings.clone(),
        &sid,
        Some("ops"),
        None,
    )
    .await
    .expect("restored");
    assert_eq!(
        restored.version, 5,
        "a new version after the last audited one"
    );
    assert_eq!(
        restored.status,
        Status::Paused,
        "a running session comes back paused"
    );
    assert_eq!(
        restored
            .participants
            .iter()
            .map(|p| p.time_remaining_ms)
            .collect::<Vec<_>>(),
        before
            .participants
            .iter()
            .map(|p| p.time_remaining_ms)
            .collect::<Vec<_>>(),
        "the clocks as the last audited event left them"
    );
    assert_eq!(s.engine.get(&sid).await.unwrap().as_ref(), Some(&restored));
    let again = cli::restore(
        &s.pool,
        &s.target(),
        settings.clone(),
        &sid,
        Some("ops"),
        None,
    )
    .await;
    assert!(
        matches!(again, Err(RestoreError::StillExists(_))),
        "only once: {again:?}"
    );

    // Play continues on the restored session.
    let resumed = run(&s, Request::new(&sid, Cmd::Resume)).await;
    assert_eq!((resumed.version, resumed.status), (6, Status::Running));
    let after = run(&s, switch()).await;
    assert_eq!(after.version, 7);
    drain(&mut c, &s, 7).await;

    let t = db::timeline(&s.pool, &sid, None).await.unwrap();
    let kinds: Vec<(&str, i64)> = t
        .iter()
        .map(|e| (e.event_type.as_str(), e.version))
        .collect();
    assert_eq!(
        kinds,
        [
            ("session_created", 1),
            ("session_started", 2),
            ("participant_switched", 3),
            ("participant_switched", 4),
            ("session_restored", 5),
            ("session_resumed", 6),
            ("participant_switched", 7),
        ]
    );
    assert_eq!(t[4].actor.as_deref(), Some("ops"));
    assert_eq!(t[4].status, "paused");

    // The CLI prints the same trail as a table.
    let out = Command::new(env!("CARGO_BIN_EXE_audit-consumer"))
        .args(["timeline", &sid])
        .env("DATABASE_URL", s.db.url())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        table.contains(&format!("timeline of {sid}: 7 events")),
        "{table}"
    );
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 1 + 2 + 7, "{table}");
    assert!(
        lines[7].contains("session_restored")
            && lines[7].contains("paused")
            && lines[7].contains("ops"),
        "{table}"
    );
    println!("{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_refuses_unknown_and_deleted_sessions() {
    let s = stack().await;
    let (mut c, _) = s.consumer("solo", ConsumerConfig::default()).await;
    let unknown = fixtures::uuid(0x7_1000);
    let r = cli::restore(&s.pool, &s.target(), settings(), &unknown, None, None).await;
    assert_eq!(r.unwrap_err().code(), "SESSION_NOT_FOUND");

    let sid = fixtures::uuid(0x7_1001);
    run(
        &s,
        fixtures::create(&fixtures::body(&sid, "global", 2, 60_000)).unwrap(),
    )
    .await;
    let del = s
        .engine
        .execute(&Request::new(&sid, Cmd::Delete), &CallOptions::default())
        .await
        .unwrap();
    assert!(matches!(del.result, Ok(Reply::Deleted { existed: true })));
    drain(&mut c, &s, 2).await;
    let r = cli::restore(&s.pool, &s.target(), settings(), &sid, None, None).await;
    let e = r.unwrap_err();
    assert_eq!(e.code(), "SESSION_DELETED", "{e}");

    // The CLI exits 2 with the code.
    let out = Command::new(env!("CARGO_BIN_EXE_audit-consumer"))
        .args(["restore", &sid])
        .env("DATABASE_URL", s.db.url())
        .env("REDIS_URL", s.redis.url())
        .env("SHARDS", SHARDS.to_string())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("SESSION_DELETED"));
}
