//! What bounds a session's life and memory: the idempotency entries a session
//! keeps, the tombstone a delete leaves, the idle ends the scheduler applies,
//! and the wake-ups that let one scheduler sleep until the next deadline.

mod common;

use common::{audit_after, body, cmd, conn, create, state, uuid};
use futures::StreamExt;
use std::time::Duration;
use synckairos_core::audit::EventType;
use synckairos_core::keys::{SessionKeys, WAKE_CHANNEL};
use synckairos_core::model::Reply;
use synckairos_core::script::{CallOptions, Due, ScriptReply, Settings};
use synckairos_core::{Command, DomainError, ExpiryReason, Request, Status};
use synckairos_engine::Engine;
use synckairos_testkit::RedisServer;

const T0: i64 = 1_800_000_000_000;

async fn engine(server: &RedisServer, settings: Settings) -> Engine {
    Engine::connect(&server.url(), settings)
        .await
        .expect("connect")
}

async fn at(e: &Engine, req: &Request, now_ms: i64, key: Option<&str>) -> ScriptReply {
    let opts = CallOptions {
        now_ms: Some(now_ms),
        idempotency_key: key.map(str::to_string),
    };
    e.execute(req, &opts).await.expect("execute")
}

async fn query<T: redis::FromRedisValue>(
    c: &mut redis::aio::MultiplexedConnection,
    args: &[&str],
) -> T {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query_async(c).await.expect("query")
}

#[tokio::test]
async fn idempotency_memory_is_bounded_per_session_and_goes_with_the_delete() {
    let server = RedisServer::start();
    let settings = Settings {
        switch_limit: 0,
        idempotency_keys: 4,
        ..Settings::default()
    };
    let e = engine(&server, settings).await;
    let mut c = conn(&server).await;
    let sid = uuid(0x1de_0001);
    let keys = SessionKeys::new(&sid, Settings::default().shards);
    at(
        &e,
        &create(&body(&sid, "per_participant", 2, 60_000)),
        T0,
        None,
    )
    .await;
    at(&e, &cmd(&sid, Command::Start), T0, None).await;
    // Ten commands, each with a fresh key: pause, resume, pause, …
    let mut first = Vec::new();
    for i in 0..10 {
        let c = if i % 2 == 0 {
            Command::Pause
        } else {
            Command::Resume
        };
        let r = at(&e, &cmd(&sid, c), T0 + 10 * (i + 1), Some(&format!("k{i}"))).await;
        assert!(r.result.is_ok(), "{r:?}");
        first.push(r);
    }
    let fields: Vec<String> = query(&mut c, &["HKEYS", &keys.idempotency]).await;
    assert_eq!(
        fields.len(),
        5,
        "4 stored replies and their order: {fields:?}"
    );
    for i in 6..10 {
        assert!(fields.contains(&format!("k{i}")), "{fields:?}");
    }
    // The newest keys still replay their first reply, exactly.
    let c9 = at(&e, &cmd(&sid, Command::Resume), T0 + 500, Some("k9")).await;
    assert!(c9.replayed);
    assert_eq!(c9.result, first[9].result);
    // An evicted key runs again: the pause of k0 pauses a second time
    // (clients pair retries with If-Match to make that harmless).
    let c0 = at(&e, &cmd(&sid, Command::Pause), T0 + 600, Some("k0")).await;
    assert!(!c0.replayed);
    assert_eq!(state(&c0).version, 13, "applied again: 2 + 10 + 1");

    // Memory per session stays bounded however many keys a client sends.
    for i in 10..200 {
        let c = if i % 2 == 0 {
            Command::Resume
        } else {
            Command::Pause
        };
        let r = at(&e, &cmd(&sid, c), T0 + 1_000 + i, Some(&format!("k{i}"))).await;
        assert!(r.result.is_ok(), "{r:?}");
    }
    let n: i64 = query(&mut c, &["HLEN", &keys.idempotency]).await;
    assert_eq!(n, 5);

    // The delete takes the session's entries with it (its own reply stays,
    // so that the delete's retry replays).
    let d = at(&e, &cmd(&sid, Command::Delete), T0 + 2_000, Some("del")).await;
    assert_eq!(d.result, Ok(Reply::Deleted { existed: true }));
    let fields: Vec<String> = query(&mut c, &["HKEYS", &keys.idempotency]).await;
    assert_eq!(fields.len(), 2, "{fields:?}");
    assert!(fields.contains(&"del".to_string()));
    let again = at(&e, &cmd(&sid, Command::Delete), T0 + 2_001, Some("del")).await;
    assert!(again.replayed);
    assert_eq!(again.result, Ok(Reply::Deleted { existed: true }));
}

#[tokio::test]
async fn a_key_reused_with_a_different_request_is_refused() {
    let server = RedisServer::start();
    let e = engine(
        &server,
        Settings {
            switch_limit: 0,
            ..Settings::default()
        },
    )
    .await;
    let sid = uuid(0x1de_0002);
    let st = state(
        &at(
            &e,
            &create(&body(&sid, "per_participant", 3, 60_000)),
            T0,
            None,
        )
        .await,
    )
    .clone();
    at(&e, &cmd(&sid, Command::Start), T0, None).await;
    let to = |i: usize| Command::Switch {
        next_participant_id: Some(st.participants[i].participant_id.clone()),
    };
    let first = at(&e, &cmd(&sid, to(1)), T0 + 10, Some("m1")).await;
    assert!(first.result.is_ok());
    // Same command, same body: the first reply.
    let retry = at(&e, &cmd(&sid, to(1)), T0 + 20, Some("m1")).await;
    assert!(retry.replayed);
    assert_eq!(retry.result, first.result);
    // Same command, another body.
    let other = at(&e, &cmd(&sid, to(2)), T0 + 30, Some("m1")).await;
    assert_eq!(other.result, Err(DomainError::IdempotencyKeyReused));
    assert!(!other.replayed);
    // Same body, another caller.
    let mut req = cmd(&sid, to(1));
    req.actor = Some(st.participants[0].participant_id.clone());
    let by_other = at(&e, &req, T0 + 40, Some("m1")).await;
    assert_eq!(by_other.result, Err(DomainError::IdempotencyKeyReused));
    // Same body, another If-Match.
    let mut req = cmd(&sid, to(1));
    req.expected_version = Some(3);
    let other_version = at(&e, &req, T0 + 50, Some("m1")).await;
    assert_eq!(other_version.result, Err(DomainError::IdempotencyKeyReused));
    // Another command.
    let pause = at(&e, &cmd(&sid, Command::Pause), T0 + 60, Some("m1")).await;
    assert_eq!(pause.result, Err(DomainError::IdempotencyKeyReused));
    // Nothing of that ran.
    assert_eq!(e.get(&sid).await.unwrap().unwrap().version, 3);
}

#[tokio::test]
async fn an_expired_entry_is_gone_and_the_key_runs_again() {
    let server = RedisServer::start();
    let e = engine(
        &server,
        Settings {
            switch_limit: 0,
            idempotency_ttl_s: 5,
            ..Settings::default()
        },
    )
    .await;
    let sid = uuid(0x1de_0003);
    at(
        &e,
        &create(&body(&sid, "per_participant", 2, 60_000)),
        T0,
        None,
    )
    .await;
    at(&e, &cmd(&sid, Command::Start), T0, None).await;
    let sw = || {
        cmd(
            &sid,
            Command::Switch {
                next_participant_id: None,
            },
        )
    };
    at(&e, &sw(), T0 + 1, Some("s")).await;
    assert!(at(&e, &sw(), T0 + 4_999, Some("s")).await.replayed);
    let later = at(&e, &sw(), T0 + 5_001, Some("s")).await;
    assert!(!later.replayed, "older than IDEMPOTENCY_TTL_SECONDS");
    assert_eq!(state(&later).version, 4);
}

#[tokio::test]
async fn a_deleted_id_is_refused_until_its_tombstone_expires() {
    let server = RedisServer::start();
    let e = engine(
        &server,
        Settings {
            tombstone_ttl_s: 2,
            ..Settings::default()
        },
    )
    .await;
    let mut c = conn(&server).await;
    let sid = uuid(0x1de_0004);
    let keys = SessionKeys::new(&sid, Settings::default().shards);
    let make = create(&body(&sid, "per_participant", 2, 60_000));
    at(&e, &make, T0, None).await;
    at(&e, &cmd(&sid, Command::Start), T0 + 1, None).await;
    let d = at(&e, &cmd(&sid, Command::Delete), T0 + 2, None).await;
    assert_eq!(d.result, Ok(Reply::Deleted { existed: true }));
    let ttl: i64 = query(&mut c, &["TTL", &keys.tombstone]).await;
    assert!((1..=2).contains(&ttl), "tombstone TTL {ttl}");

    let again = at(&e, &make, T0 + 3, None).await;
    assert_eq!(
        again.result,
        Err(DomainError::SessionDeleted {
            session_id: sid.clone()
        })
    );
    assert_eq!(
        DomainError::SessionDeleted {
            session_id: sid.clone()
        }
        .http_status(),
        409
    );
    // Deleting what is gone leaves no new tombstone and says so.
    let d2 = at(&e, &cmd(&sid, Command::Delete), T0 + 4, None).await;
    assert_eq!(d2.result, Ok(Reply::Deleted { existed: false }));

    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let fresh = at(&e, &make, T0 + 5, None).await;
    assert_eq!(state(&fresh).version, 1, "a new incarnation");
    assert_eq!(state(&fresh).created_at.ms(), T0 + 5);
}

#[tokio::test]
async fn auto_advance_stops_after_the_idle_cycles_with_the_reason() {
    let server = RedisServer::start();
    let e = engine(
        &server,
        Settings {
            max_idle_cycles: 3,
            ..Settings::default()
        },
    )
    .await;
    let mut c = conn(&server).await;
    let sid = uuid(0x1de_0005);
    let keys = SessionKeys::new(&sid, Settings::default().shards);
    let mut b = body(&sid, "per_cycle", 2, 60_000);
    b["time_per_cycle_ms"] = serde_json::json!(1_000);
    b["cycle_expiry"] = serde_json::json!("auto_advance");
    at(&e, &create(&b), T0, None).await;
    at(&e, &cmd(&sid, Command::Start), T0, None).await;
    let (_, mut last) = audit_after(&mut c, &keys, "0-0").await;

    // Two turns run out: the session keeps running.
    let r = at(&e, &cmd(&sid, Command::Expire), T0 + 2_000, None).await;
    let st = state(&r);
    assert_eq!(st.status, Status::Running);
    assert_eq!(st.idle_cycles, 2);
    // A command resets the count.
    let r = at(
        &e,
        &cmd(
            &sid,
            Command::Switch {
                next_participant_id: None,
            },
        ),
        T0 + 2_500,
        None,
    )
    .await;
    assert_eq!(state(&r).idle_cycles, 0);
    let (_, l) = audit_after(&mut c, &keys, &last).await;
    last = l;
    // Then nobody acts: the third turn in a row to run out ends it, at its
    // own deadline, however late the scheduler comes.
    let r = at(&e, &cmd(&sid, Command::Expire), T0 + 60_000, None).await;
    let st = state(&r).clone();
    assert_eq!(st.status, Status::Expired);
    assert_eq!(st.expiry_reason, Some(ExpiryReason::IdleCycles));
    assert_eq!(st.session_completed_at.unwrap().ms(), T0 + 2_500 + 3_000);
    assert_eq!(st.idle_cycles, 3);
    let (events, _) = audit_after(&mut c, &keys, &last).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event_type, EventType::SessionExpired);
    let audited = synckairos_core::record::decode(&events[0].snapshot).unwrap();
    assert_eq!(audited.expiry_reason, Some(ExpiryReason::IdleCycles));
    let score: Option<i64> = query(&mut c, &["ZSCORE", &keys.deadlines, &sid]).await;
    assert_eq!(score, None, "nothing left to schedule");
}

#[tokio::test]
async fn sessions_without_a_deadline_end_at_their_idle_end_never_silently() {
    let server = RedisServer::start();
    let e = engine(
        &server,
        Settings {
            idle_ttl_s: 60,
            base_ttl_s: 60,
            ..Settings::default()
        },
    )
    .await;
    let mut c = conn(&server).await;
    let client = server.client();
    let mut pubsub = client.get_async_pubsub().await.expect("pubsub");
    pubsub.psubscribe("sk:ch:*").await.expect("psubscribe");
    let mut messages = pubsub.into_on_message();

    // Pending, paused, and an uncapped count_up that runs.
    let ids: Vec<String> = (0..3).map(|i| uuid(0x1de_0010 + i)).collect();
    at(
        &e,
        &create(&body(&ids[0], "per_participant", 2, 60_000)),
        T0,
        None,
    )
    .await;
    at(
        &e,
        &create(&body(&ids[1], "per_participant", 2, 60_000)),
        T0,
        None,
    )
    .await;
    at(&e, &cmd(&ids[1], Command::Start), T0 + 1_000, None).await;
    at(&e, &cmd(&ids[1], Command::Pause), T0 + 2_000, None).await;
    at(&e, &create(&body(&ids[2], "count_up", 2, 60_000)), T0, None).await;
    at(&e, &cmd(&ids[2], Command::Start), T0 + 3_000, None).await;
    let ends = [T0 + 60_000, T0 + 62_000, T0 + 63_000];
    for (sid, end) in ids.iter().zip(ends) {
        let keys = SessionKeys::new(sid, Settings::default().shards);
        let score: Option<i64> = query(&mut c, &["ZSCORE", &keys.deadlines, sid]).await;
        assert_eq!(score, Some(end), "scheduled at its idle end");
        // The key's TTL is only a backstop: the idle end plus the base TTL.
        let ttl: i64 = query(&mut c, &["PTTL", &keys.state]).await;
        assert!(ttl > 60_000, "{ttl}");
    }
    // Too early: not due, and it says when.
    let r = at(&e, &cmd(&ids[0], Command::Expire), T0 + 59_999, None).await;
    assert_eq!(
        r.result,
        Ok(Reply::NotDue {
            status: Status::Pending,
            deadline_ms: Some(T0 + 60_000)
        })
    );
    while tokio::time::timeout(Duration::from_millis(200), messages.next())
        .await
        .is_ok()
    {}
    for (sid, end) in ids.iter().zip(ends) {
        let r = at(&e, &cmd(sid, Command::Expire), end + 5, None).await;
        let st = state(&r).clone();
        assert_eq!(st.status, Status::Expired, "{sid}");
        assert_eq!(st.expiry_reason, Some(ExpiryReason::IdleTimeout));
        assert_eq!(st.session_completed_at.unwrap().ms(), end);
        // Watchers are told: the transition is published.
        let m = tokio::time::timeout(Duration::from_secs(5), messages.next())
            .await
            .expect("published")
            .expect("open");
        let published: String = m.get_payload().unwrap();
        assert_eq!(
            synckairos_core::record::decode(&published).unwrap().status,
            Status::Expired
        );
        let keys = SessionKeys::new(sid, Settings::default().shards);
        let (events, _) = audit_after(&mut c, &keys, "0-0").await;
        let last = events.last().unwrap();
        assert_eq!(last.event_type, EventType::SessionExpired, "audited");
    }
    // The running stopwatch was charged up to its idle end, not beyond.
    let st = e.get(&ids[2]).await.unwrap().unwrap();
    assert_eq!(st.participants[0].time_used_ms, 60_000);
}

async fn next_wake(
    wakes: &mut (impl futures::Stream<Item = redis::Msg> + Unpin),
) -> Option<String> {
    tokio::time::timeout(Duration::from_millis(300), wakes.next())
        .await
        .ok()
        .flatten()
        .map(|m| m.get_payload::<String>().unwrap())
}

#[tokio::test]
async fn an_earlier_wake_time_wakes_the_scheduler_and_expire_names_the_next() {
    let server = RedisServer::start();
    let e = engine(
        &server,
        Settings {
            shards: 1,
            ..Settings::default()
        },
    )
    .await;
    let client = server.client();
    let mut pubsub = client.get_async_pubsub().await.expect("pubsub");
    pubsub.subscribe(WAKE_CHANNEL).await.expect("subscribe");
    let mut wakes = pubsub.into_on_message();
    let a = uuid(0x1de_0020);
    let b = uuid(0x1de_0021);
    let idle = Settings::default().idle_ttl_s as i64 * 1000;
    // The first entry of an empty shard wakes the scheduler.
    at(
        &e,
        &create(&body(&a, "per_participant", 2, 10_000)),
        T0,
        None,
    )
    .await;
    assert_eq!(
        next_wake(&mut wakes).await,
        Some(format!("0:{}:{a}", T0 + idle))
    );
    // Starting it moves it earlier: a wake.
    at(&e, &cmd(&a, Command::Start), T0, None).await;
    assert_eq!(
        next_wake(&mut wakes).await,
        Some(format!("0:{}:{a}", T0 + 10_000))
    );
    // A later entry does not wake anyone.
    at(
        &e,
        &create(&body(&b, "per_participant", 2, 20_000)),
        T0,
        None,
    )
    .await;
    at(&e, &cmd(&b, Command::Start), T0, None).await;
    assert_eq!(next_wake(&mut wakes).await, None);
    // Expire names the shard's next due session, so the scheduler needs no
    // other command to know when to wake.
    let r = at(&e, &cmd(&a, Command::Expire), T0 + 5_000, None).await;
    assert_eq!(
        r.next_due,
        Some(Due {
            session_id: a.clone(),
            at_ms: T0 + 10_000
        })
    );
    let r = at(&e, &cmd(&a, Command::Expire), T0 + 10_000, None).await;
    assert_eq!(state(&r).status, Status::Expired);
    assert_eq!(
        r.next_due,
        Some(Due {
            session_id: b.clone(),
            at_ms: T0 + 20_000
        })
    );
    at(&e, &cmd(&b, Command::Delete), T0 + 11_000, None).await;
    let r = at(&e, &cmd(&b, Command::Expire), T0 + 20_000, None).await;
    assert_eq!(r.next_due, None, "the shard is empty");
}
