//! Behaviour of the engine against a real redis-server (one per test):
//! contention, one round trip per command, expiry races and the TTL rule,
//! idempotency, and every refusal.

mod common;

use common::{audit_after, body, cmd, conn, create, state, uuid};
use std::collections::BTreeMap;
use std::time::Duration;
use synckairos_core::audit::EventType;
use synckairos_core::keys::SessionKeys;
use synckairos_core::model::Reply;
use synckairos_core::script::{CallOptions, ScriptReply, Settings};
use synckairos_core::{Action, Command, DomainError, Request, Status, SyncState};
use synckairos_engine::Engine;
use synckairos_testkit::RedisServer;

fn with_metadata(sid: &str) -> serde_json::Value {
    let mut b = body(sid, "global", 1, 5_000);
    b["metadata"] = serde_json::json!({"note": "a|b\nc", "n": 1});
    b
}

fn unlimited() -> Settings {
    Settings {
        switch_limit: 0,
        ..Settings::default()
    }
}

async fn engine(server: &RedisServer, settings: Settings) -> Engine {
    Engine::connect(&server.url(), settings)
        .await
        .expect("connect")
}

async fn run(e: &Engine, req: &Request) -> ScriptReply {
    e.execute(req, &CallOptions::default())
        .await
        .expect("execute")
}

async fn run_at(e: &Engine, req: &Request, now_ms: i64) -> ScriptReply {
    let opts = CallOptions {
        now_ms: Some(now_ms),
        ..CallOptions::default()
    };
    e.execute(req, &opts).await.expect("execute")
}

fn switch() -> Command {
    Command::Switch {
        next_participant_id: None,
    }
}

async fn started(e: &Engine, sid: &str, mode: &str, bank_ms: i64) -> SyncState {
    let r = run(e, &create(&body(sid, mode, 2, bank_ms))).await;
    state(&r);
    state(&run(e, &cmd(sid, Command::Start)).await).clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_switches_lose_nothing() {
    let server = RedisServer::start();
    let mut engines = Vec::new();
    for _ in 0..8 {
        engines.push(engine(&server, unlimited()).await);
    }
    let sid = uuid(0xc0_0001);
    started(&engines[0], &sid, "per_participant", 86_400_000).await;

    let mut tasks = Vec::new();
    for t in 0..64 {
        let e = engines[t % engines.len()].clone();
        let sid = sid.clone();
        tasks.push(tokio::spawn(async move {
            let mut versions = Vec::new();
            for _ in 0..50 {
                let r = run(&e, &cmd(&sid, switch())).await;
                versions.push(state(&r).version);
            }
            versions
        }));
    }
    let mut versions: Vec<u64> = Vec::new();
    for t in tasks {
        versions.extend(t.await.expect("task"));
    }
    versions.sort_unstable();
    // create = 1, start = 2, then 3200 accepted switches = 3..=3202, each once.
    assert_eq!(versions, (3..=3202).collect::<Vec<u64>>());

    let keys = SessionKeys::new(&sid, Settings::default().shards);
    let (events, _) = audit_after(&mut conn(&server).await, &keys, "0-0").await;
    let ours: Vec<_> = events.iter().filter(|e| e.session_id == sid).collect();
    assert_eq!(ours.len(), 3202);
    for (i, e) in ours.iter().enumerate() {
        assert_eq!(
            e.version,
            i as u64 + 1,
            "consecutive versions in the stream"
        );
        assert_eq!(e.state().expect("snapshot").version, e.version);
    }
    assert_eq!(
        ours.iter()
            .filter(|e| e.event_type == EventType::ParticipantSwitched)
            .count(),
        3200
    );
    let last = engines[0].get(&sid).await.unwrap().unwrap();
    assert_eq!(last.version, 3202);
    eprintln!("contention: 64 tasks x 50 switches -> versions 3..=3202 each once, 3202 audit events with consecutive versions");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_switches_with_if_match_never_both_win() {
    let server = RedisServer::start();
    let e = engine(&server, unlimited()).await;
    let sid = uuid(0xc0_0002);
    started(&e, &sid, "per_participant", 86_400_000).await;
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let e = e.clone();
        let sid = sid.clone();
        tasks.push(tokio::spawn(async move {
            let (mut won, mut lost) = (Vec::new(), 0);
            for _ in 0..50 {
                let seen = e.get(&sid).await.unwrap().unwrap().version;
                let mut req = cmd(&sid, switch());
                req.expected_version = Some(seen);
                match run(&e, &req).await.result {
                    Ok(Reply::State { state, .. }) => {
                        assert_eq!(state.version, seen + 1);
                        won.push(state.version);
                    }
                    Err(DomainError::VersionConflict {
                        expected_version,
                        actual_version,
                    }) => {
                        assert_eq!(expected_version, seen);
                        assert!(actual_version > seen);
                        lost += 1;
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            (won, lost)
        }));
    }
    let (mut won, mut lost) = (Vec::new(), 0);
    for t in tasks {
        let (w, l) = t.await.unwrap();
        won.extend(w);
        lost += l;
    }
    won.sort_unstable();
    let n = won.len() as u64;
    assert_eq!(won, (3..3 + n).collect::<Vec<_>>(), "each version won once");
    assert_eq!(n + lost, 3200);
    assert_eq!(e.get(&sid).await.unwrap().unwrap().version, 2 + n);
    eprintln!("if-match contention: {n} accepted, {lost} conflicts, no version accepted twice");
}

async fn commandstats(c: &mut redis::aio::MultiplexedConnection) -> BTreeMap<String, u64> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(c)
        .await
        .unwrap();
    info.lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest.split(',').find_map(|kv| kv.strip_prefix("calls="))?;
            Some((name.to_string(), calls.parse().ok()?))
        })
        .collect()
}

#[tokio::test]
async fn every_command_is_one_script_call() {
    let server = RedisServer::start();
    let e = engine(&server, Settings::default()).await;
    let mut c = conn(&server).await;
    let sid = uuid(0xc0_0003);
    let commands = [
        create(&body(&sid, "per_participant", 2, 60_000)),
        cmd(&sid, Command::Start),
        cmd(&sid, switch()),
        cmd(&sid, Command::Pause),
        cmd(&sid, Command::Resume),
        cmd(&sid, Command::Expire),
        cmd(&sid, Command::Complete),
        cmd(&sid, Command::Cancel), // refused: still one call
        cmd(&sid, Command::Delete),
    ];
    for req in &commands {
        let before = commandstats(&mut c).await;
        e.execute(req, &CallOptions::default()).await.unwrap();
        let after = commandstats(&mut c).await;
        let delta = |k: &str| after.get(k).unwrap_or(&0) - before.get(k).unwrap_or(&0);
        assert_eq!(delta("evalsha"), 1, "{}: one EVALSHA", req.command.name());
        assert_eq!(delta("eval"), 0, "{}: no EVAL", req.command.name());
        // Everything else that moved ran inside the script (or is our INFO).
        for (k, v) in &after {
            let moved = v - before.get(k).unwrap_or(&0);
            let inside = [
                "get", "set", "del", "zadd", "zrem", "zrange", "exists", "publish", "xadd", "time",
                "info", "evalsha",
            ];
            assert!(
                moved == 0 || inside.contains(&k.as_str()),
                "{}: unexpected {k} x{moved}",
                req.command.name()
            );
        }
    }
}

#[tokio::test]
async fn lost_script_cache_falls_back_to_eval() {
    let server = RedisServer::start();
    let e = engine(&server, Settings::default()).await;
    let mut c = conn(&server).await;
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut c)
        .await
        .unwrap();
    let sid = uuid(0xc0_0004);
    let r = run(&e, &create(&body(&sid, "global", 2, 60_000))).await;
    assert_eq!(state(&r).version, 1);
    let stats = commandstats(&mut c).await;
    assert_eq!(stats.get("eval"), Some(&1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_expirers_make_one_transition() {
    let server = RedisServer::start();
    let (a, b) = (
        engine(&server, Settings::default()).await,
        engine(&server, Settings::default()).await,
    );
    let mut c = conn(&server).await;
    for round in 0..50u128 {
        let sid = uuid(0xe0_0000 + round);
        let keys = SessionKeys::new(&sid, Settings::default().shards);
        let t0 = 1_800_000_000_000 + round as i64 * 100_000;
        run_at(&a, &create(&body(&sid, "per_participant", 2, 5_000)), t0).await;
        run_at(&a, &cmd(&sid, Command::Start), t0).await;
        let deadline = t0 + 5_000;
        let score: i64 = redis::cmd("ZSCORE")
            .arg(&keys.deadlines)
            .arg(&sid)
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(score, deadline);
        let expire = cmd(&sid, Command::Expire);
        let (ra, rb) = tokio::join!(
            run_at(&a, &expire, deadline + 3),
            run_at(&b, &expire, deadline + 4)
        );
        let transitions: Vec<_> = [&ra, &rb]
            .into_iter()
            .filter(|r| matches!(r.result, Ok(Reply::State { .. })))
            .collect();
        assert_eq!(transitions.len(), 1, "exactly one expiry: {ra:?} / {rb:?}");
        let st = state(transitions[0]);
        assert_eq!(st.status, Status::Expired);
        assert_eq!(st.session_completed_at.unwrap().ms(), deadline);
        assert!(st.participants[0].has_expired && st.participants[0].time_remaining_ms == 0);
        let other = if transitions[0] == &ra { &rb } else { &ra };
        assert_eq!(
            other.result,
            Ok(Reply::NotDue {
                status: Status::Expired,
                deadline_ms: None
            })
        );
        let (events, _) = audit_after(&mut c, &keys, "0-0").await;
        let expired = events
            .iter()
            .filter(|e| e.session_id == sid && e.event_type == EventType::SessionExpired)
            .count();
        assert_eq!(expired, 1);
        let gone: Option<i64> = redis::cmd("ZSCORE")
            .arg(&keys.deadlines)
            .arg(&sid)
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(gone, None, "no deadline left for an expired session");
    }
}

#[tokio::test]
async fn expire_before_the_deadline_does_nothing() {
    let server = RedisServer::start();
    let e = engine(&server, Settings::default()).await;
    let sid = uuid(0xe1_0000);
    let t0 = 1_800_000_000_000;
    run_at(&e, &create(&body(&sid, "per_cycle", 3, 2_000)), t0).await;
    run_at(&e, &cmd(&sid, Command::Start), t0).await;
    let r = run_at(&e, &cmd(&sid, Command::Expire), t0 + 1_999).await;
    assert_eq!(
        r.result,
        Ok(Reply::NotDue {
            status: Status::Running,
            deadline_ms: Some(t0 + 2_000)
        })
    );
    assert_eq!(e.get(&sid).await.unwrap().unwrap().version, 2);
}

#[tokio::test]
async fn a_running_session_outlives_the_base_ttl_until_its_deadline() {
    let server = RedisServer::start();
    let settings = Settings {
        base_ttl_s: 1,
        ..Settings::default()
    };
    let e = engine(&server, settings).await;
    let mut c = conn(&server).await;
    let sid = uuid(0xe2_0000);
    let keys = SessionKeys::new(&sid, Settings::default().shards);
    run(&e, &create(&body(&sid, "per_participant", 2, 3_000))).await;
    let pending_ttl: i64 = redis::cmd("PTTL")
        .arg(&keys.state)
        .query_async(&mut c)
        .await
        .unwrap();
    let idle_ms = Settings::default().idle_ttl_s as i64 * 1000;
    assert!(
        pending_ttl > idle_ms && pending_ttl <= idle_ms + 1_000,
        "not running: its idle end + the base TTL, got {pending_ttl}"
    );
    run(&e, &cmd(&sid, Command::Start)).await;
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&keys.state)
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(
        ttl > 3_000 && ttl <= 4_000,
        "deadline (3 s) + base (1 s), got {ttl}"
    );
    // Past the base TTL but before the deadline the session is still there.
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    let st = e
        .get(&sid)
        .await
        .unwrap()
        .expect("still stored before its deadline");
    assert_eq!(st.status, Status::Running);
    // At the deadline the scheduler's expire finds it and expires it.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let r = run(&e, &cmd(&sid, Command::Expire)).await;
    assert_eq!(state(&r).status, Status::Expired);
}

#[tokio::test]
async fn idempotent_retries_get_the_first_reply() {
    let server = RedisServer::start();
    let e = engine(&server, Settings::default()).await;
    let mut c = conn(&server).await;
    let sid = uuid(0x1d_0000);
    let keys = SessionKeys::new(&sid, Settings::default().shards);
    started(&e, &sid, "per_participant", 60_000).await;
    let with_key = |k: &str| CallOptions {
        idempotency_key: Some(k.to_string()),
        ..CallOptions::default()
    };
    let first = e
        .execute(&cmd(&sid, switch()), &with_key("k1"))
        .await
        .unwrap();
    let retry = e
        .execute(&cmd(&sid, switch()), &with_key("k1"))
        .await
        .unwrap();
    assert!(!first.replayed && retry.replayed);
    assert_eq!(first.result, retry.result);
    assert_eq!(first.rate, retry.rate);
    assert_eq!(
        e.get(&sid).await.unwrap().unwrap().version,
        3,
        "the retry did not switch again"
    );
    let (events, _) = audit_after(&mut c, &keys, "0-0").await;
    assert_eq!(events.len(), 3, "create, start, one switch");

    let reused = e
        .execute(&cmd(&sid, Command::Pause), &with_key("k1"))
        .await
        .unwrap();
    assert_eq!(reused.result, Err(DomainError::IdempotencyKeyReused));

    // Refusals are not stored: the same key works once the command can succeed.
    let refused = e
        .execute(&cmd(&sid, Command::Resume), &with_key("k2"))
        .await
        .unwrap();
    assert!(matches!(
        refused.result,
        Err(DomainError::InvalidTransition { .. })
    ));
    run(&e, &cmd(&sid, Command::Pause)).await;
    let ok = e
        .execute(&cmd(&sid, Command::Resume), &with_key("k2"))
        .await
        .unwrap();
    assert_eq!(state(&ok).status, Status::Running);
    assert!(!ok.replayed);

    // A create retried with its key replays instead of SESSION_EXISTS, metadata
    // (which follows a line break in the stored record) included.
    let sid2 = uuid(0x1d_0001);
    let c1 = e
        .execute(&create(&with_metadata(&sid2)), &with_key("c"))
        .await
        .unwrap();
    let c2 = e
        .execute(&create(&with_metadata(&sid2)), &with_key("c"))
        .await
        .unwrap();
    assert!(c2.replayed);
    assert_eq!(c1.result, c2.result);
    assert!(state(&c2).metadata.as_ref().unwrap().get().contains("a|b"));
    let ttl: i64 = redis::cmd("TTL")
        .arg(&keys.idempotency)
        .query_async(&mut c)
        .await
        .unwrap();
    let want = Settings::default().idempotency_ttl_s as i64;
    assert_eq!(want, 3600, "the default keeps a first reply for an hour");
    assert!(
        ttl > want - 60 && ttl <= want,
        "stored with its TTL, got {ttl}"
    );
}

#[tokio::test]
async fn the_switch_limit_counts_per_session_per_second() {
    let server = RedisServer::start();
    let e = engine(
        &server,
        Settings {
            switch_limit: 3,
            ..Settings::default()
        },
    )
    .await;
    let sid = uuid(0x5a_0000);
    let t0 = 1_800_000_000_000;
    run_at(&e, &create(&body(&sid, "per_participant", 2, 60_000)), t0).await;
    run_at(&e, &cmd(&sid, Command::Start), t0).await;
    let mut remaining = Vec::new();
    for i in 0..3 {
        let r = run_at(&e, &cmd(&sid, switch()), t0 + 100 + i).await;
        assert!(r.result.is_ok());
        remaining.push(r.rate.unwrap().remaining);
    }
    assert_eq!(remaining, vec![2, 1, 0]);
    let r = run_at(&e, &cmd(&sid, switch()), t0 + 900).await;
    assert_eq!(
        r.result,
        Err(DomainError::RateLimited {
            retry_after_seconds: 1
        })
    );
    let info = r.rate.unwrap();
    assert_eq!((info.limit, info.remaining, info.reset_seconds), (3, 0, 1));
    assert_eq!(info.policy(), "3;w=1");
    assert_eq!(
        e.get(&sid).await.unwrap().unwrap().version,
        5,
        "refused switch changed nothing"
    );
    // Another session has its own window; the next second opens a new one.
    let other = uuid(0x5a_0001);
    run_at(&e, &create(&body(&other, "per_participant", 2, 60_000)), t0).await;
    run_at(&e, &cmd(&other, Command::Start), t0).await;
    assert!(run_at(&e, &cmd(&other, switch()), t0 + 901)
        .await
        .result
        .is_ok());
    assert!(run_at(&e, &cmd(&sid, switch()), t0 + 1_000)
        .await
        .result
        .is_ok());
}

#[tokio::test]
async fn unknown_sessions_are_refused_and_delete_is_idempotent() {
    let server = RedisServer::start();
    let e = engine(&server, Settings::default()).await;
    let sid = uuid(0x404);
    for c in [
        Command::Start,
        switch(),
        Command::Pause,
        Command::Resume,
        Command::Complete,
        Command::Cancel,
        Command::Expire,
    ] {
        let name = c.name();
        let err = run(&e, &cmd(&sid, c)).await.result.unwrap_err();
        assert_eq!(
            err,
            DomainError::SessionNotFound {
                session_id: sid.clone()
            },
            "{name}"
        );
        assert_eq!(err.code(), "SESSION_NOT_FOUND");
        assert_eq!(err.to_string(), format!("Session {sid} not found"));
        assert_eq!(err.http_status(), 404);
    }
    assert_eq!(
        run(&e, &cmd(&sid, Command::Delete)).await.result,
        Ok(Reply::Deleted { existed: false })
    );
    assert!(e.get(&sid).await.unwrap().is_none());
}

#[tokio::test]
async fn existing_ids_wrong_versions_and_unknown_participants_are_refused() {
    let server = RedisServer::start();
    let e = engine(&server, Settings::default()).await;
    let sid = uuid(0x409);
    started(&e, &sid, "per_participant", 60_000).await;

    let err = run(&e, &create(&body(&sid, "global", 1, 5_000)))
        .await
        .result
        .unwrap_err();
    assert_eq!((err.code(), err.http_status()), ("SESSION_EXISTS", 409));
    assert_eq!(
        e.get(&sid).await.unwrap().unwrap().status,
        Status::Running,
        "not reset"
    );

    let mut req = cmd(&sid, Command::Pause);
    req.expected_version = Some(1);
    let err = run(&e, &req).await.result.unwrap_err();
    assert_eq!(
        err,
        DomainError::VersionConflict {
            expected_version: 1,
            actual_version: 2
        }
    );
    assert_eq!((err.code(), err.http_status()), ("CONFLICT", 409));
    req.expected_version = Some(2);
    assert_eq!(state(&run(&e, &req).await).status, Status::Paused);
    run(&e, &cmd(&sid, Command::Resume)).await;

    let ghost = uuid(0xdead);
    let err = run(
        &e,
        &cmd(
            &sid,
            Command::Switch {
                next_participant_id: Some(ghost.clone()),
            },
        ),
    )
    .await
    .result
    .unwrap_err();
    assert_eq!(err.code(), "VALIDATION_ERROR");
    assert_eq!(
        err.to_string(),
        format!("Participant {ghost} not found in session")
    );
    // Ids are case-insensitive.
    let upper = uuid(0xa001).to_uppercase();
    let r = run(
        &e,
        &cmd(
            &sid,
            Command::Switch {
                next_participant_id: Some(upper),
            },
        ),
    )
    .await;
    assert_eq!(
        state(&r).active_participant_id.as_deref(),
        Some(uuid(0xa001).as_str())
    );
}

#[tokio::test]
async fn every_illegal_transition_is_refused_with_its_message() {
    let server = RedisServer::start();
    let e = engine(&server, Settings::default()).await;
    let t0 = 1_800_000_000_000;
    let setups: [(Status, &[Command]); 6] = [
        (Status::Pending, &[]),
        (Status::Running, &[Command::Start]),
        (Status::Paused, &[Command::Start, Command::Pause]),
        (Status::Completed, &[Command::Start, Command::Complete]),
        (Status::Cancelled, &[Command::Cancel]),
        (Status::Expired, &[Command::Start, Command::Expire]),
    ];
    let actions = [
        (Action::Start, Command::Start),
        (Action::Switch, switch()),
        (Action::Pause, Command::Pause),
        (Action::Resume, Command::Resume),
        (Action::Complete, Command::Complete),
        (Action::Cancel, Command::Cancel),
    ];
    let allowed = |s: Status, a: Action| {
        matches!(
            (s, a),
            (
                Status::Pending,
                Action::Start | Action::Complete | Action::Cancel
            ) | (
                Status::Running,
                Action::Switch | Action::Pause | Action::Complete | Action::Cancel
            ) | (
                Status::Paused,
                Action::Resume | Action::Complete | Action::Cancel
            )
        )
    };
    let mut n = 0u128;
    let mut refused = 0;
    for (status, setup) in &setups {
        for (action, command) in &actions {
            n += 1;
            let sid = uuid(0x7a_0000 + n);
            run_at(&e, &create(&body(&sid, "per_participant", 2, 1_000)), t0).await;
            for c in setup.iter() {
                // Expire lands after the 1 s bank ran out; everything else at t0.
                let at = if matches!(c, Command::Expire) {
                    t0 + 5_000
                } else {
                    t0
                };
                run_at(&e, &cmd(&sid, c.clone()), at).await;
            }
            let before = e.get(&sid).await.unwrap().unwrap();
            assert_eq!(before.status, *status);
            let at = if *status == Status::Expired {
                t0 + 6_000
            } else {
                t0 + 10
            };
            let r = run_at(&e, &cmd(&sid, command.clone()), at).await;
            if allowed(*status, *action) {
                assert!(r.result.is_ok(), "{status} {action:?}: {r:?}");
                continue;
            }
            refused += 1;
            let err = r.result.unwrap_err();
            assert_eq!(
                err,
                DomainError::InvalidTransition {
                    session_id: sid.clone(),
                    action: *action,
                    status: *status
                }
            );
            assert_eq!(
                (err.code(), err.http_status()),
                ("INVALID_STATE_TRANSITION", 400)
            );
            let expected = match action {
                Action::Switch => format!("Session {sid} not running (current status: {status})"),
                a => format!(
                    "Session {sid} cannot be {} (current status: {status})",
                    a.past()
                ),
            };
            assert_eq!(err.to_string(), expected);
            assert_eq!(
                e.get(&sid).await.unwrap().unwrap(),
                before,
                "a refusal changes nothing"
            );
        }
    }
    assert_eq!(refused, 26, "36 combinations, 10 of them allowed");
}

#[tokio::test]
async fn a_command_after_the_deadline_sees_the_expiry_first() {
    let server = RedisServer::start();
    let e = engine(&server, Settings::default()).await;
    let t0 = 1_800_000_000_000;
    let sid = uuid(0xdd_0001);
    run_at(&e, &create(&body(&sid, "per_participant", 2, 2_000)), t0).await;
    run_at(&e, &cmd(&sid, Command::Start), t0).await;
    // A late switch does not switch: it reports who ran out.
    let r = run_at(&e, &cmd(&sid, switch()), t0 + 2_500).await;
    match &r.result {
        Ok(Reply::State {
            state,
            expired_participant_id,
        }) => {
            assert_eq!(state.status, Status::Expired);
            assert_eq!(
                expired_participant_id.as_deref(),
                Some(uuid(0xa000).as_str())
            );
            assert_eq!(
                state.participants[0].time_used_ms, 2_000,
                "charged up to the deadline only"
            );
        }
        other => panic!("{other:?}"),
    }
    // A late pause keeps the expiry and is refused.
    let sid = uuid(0xdd_0002);
    run_at(&e, &create(&body(&sid, "per_participant", 2, 2_000)), t0).await;
    run_at(&e, &cmd(&sid, Command::Start), t0).await;
    let r = run_at(&e, &cmd(&sid, Command::Pause), t0 + 2_500).await;
    assert!(matches!(
        r.result,
        Err(DomainError::InvalidTransition {
            status: Status::Expired,
            action: Action::Pause,
            ..
        })
    ));
    assert_eq!(e.get(&sid).await.unwrap().unwrap().status, Status::Expired);
}

#[tokio::test]
async fn delete_publishes_and_audits() {
    let server = RedisServer::start();
    let e = engine(&server, Settings::default()).await;
    let mut c = conn(&server).await;
    let sid = uuid(0xde1);
    let keys = SessionKeys::new(&sid, Settings::default().shards);
    started(&e, &sid, "count_up", 60_000).await;
    let mut pubsub = server.client().get_async_pubsub().await.unwrap();
    pubsub.subscribe(&keys.channel).await.unwrap();
    let r = run(&e, &cmd(&sid, Command::Delete)).await;
    assert_eq!(r.result, Ok(Reply::Deleted { existed: true }));
    use futures::StreamExt;
    let msg = tokio::time::timeout(Duration::from_secs(5), pubsub.on_message().next())
        .await
        .unwrap()
        .unwrap();
    let text: String = msg.get_payload().unwrap();
    match synckairos_core::audit::ChannelMessage::parse(&text) {
        Some(synckairos_core::audit::ChannelMessage::Deleted {
            session_id,
            version,
            ..
        }) => {
            assert_eq!((session_id.as_str(), version), (sid.as_str(), 3));
        }
        other => panic!("{other:?}"),
    }
    let (events, _) = audit_after(&mut c, &keys, "0-0").await;
    assert_eq!(events.last().unwrap().event_type, EventType::SessionDeleted);
    assert!(e.get(&sid).await.unwrap().is_none());
    let score: Option<i64> = redis::cmd("ZSCORE")
        .arg(&keys.deadlines)
        .arg(&sid)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(score, None);
}

#[tokio::test]
async fn only_the_active_participant_may_end_its_turn() {
    let server = RedisServer::start();
    let e = engine(&server, Settings::default()).await;
    let sid = uuid(0x7e_0001);
    started(&e, &sid, "per_participant", 60_000).await;
    let as_participant = |who: String| Request {
        actor: Some(who),
        only_if_active: true,
        ..cmd(&sid, switch())
    };
    let not_active = uuid(0xa001);
    let err = run(&e, &as_participant(not_active.clone()))
        .await
        .result
        .unwrap_err();
    assert_eq!(
        err,
        DomainError::NotYourTurn {
            participant_id: not_active.clone()
        }
    );
    assert_eq!((err.code(), err.http_status()), ("FORBIDDEN", 403));
    assert_eq!(
        e.get(&sid).await.unwrap().unwrap().version,
        2,
        "nothing changed"
    );
    // The active participant (ids are case-insensitive) may; then it is the other's turn.
    let r = run(&e, &as_participant(uuid(0xa000).to_uppercase())).await;
    assert_eq!(
        state(&r).active_participant_id.as_deref(),
        Some(not_active.as_str())
    );
    assert!(run(&e, &as_participant(not_active)).await.result.is_ok());
}
