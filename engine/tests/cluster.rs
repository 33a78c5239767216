//! The engine on a Redis Cluster (testkit's `RedisCluster`: 3 primaries, 3
//! replicas): every command kind on sessions spread over all shards (so all
//! three primaries) gives what the same commands give on one redis-server;
//! a primary that lost its script cache still runs them (`NOSCRIPT` →
//! `EVAL`); and a primary killed under load is replaced by its replica while
//! the engine carries on by itself, with state and audit still in agreement.
//!
//! Run with `--nocapture` to see the failover's window, errors and lost
//! acknowledged commands.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{body, cmd, create};
use synckairos_core::audit::AuditEvent;
use synckairos_core::devices::{DeviceOp, Platform, Registration};
use synckairos_core::keys::SessionKeys;
use synckairos_core::model::Reply;
use synckairos_core::record;
use synckairos_core::script::{CallOptions, ScriptReply, Settings};
use synckairos_core::{Command, Request, SyncState};
use synckairos_engine::fixtures::uuid;
use synckairos_engine::{Engine, RedisTarget};
use synckairos_testkit::{
    command_calls_on, flush_scripts_on, ids_on_every_shard, RedisCluster, RedisServer,
};

const T0: i64 = 1_795_455_546_123;

fn settings() -> Settings {
    Settings {
        switch_limit: 0,
        device_ttl_s: 3600,
        ..Settings::default()
    }
}

/// `n` sessions per shard, over all shards.
fn sessions_on_every_shard(per_shard: usize) -> Vec<String> {
    let shards = settings().shards;
    ids_on_every_shard(
        shards,
        per_shard,
        |n| uuid(0xc1_0000 + n),
        |sid| SessionKeys::new(sid, shards).shard,
    )
}

/// The ports of the primaries that serve `sessions`.
fn primaries_of(cluster: &RedisCluster, sessions: &[String]) -> BTreeSet<u16> {
    cluster.primaries_of_keys(
        sessions
            .iter()
            .map(|s| SessionKeys::new(s, settings().shards).state),
    )
}

/// Every audit event of one shard's stream (through the engine's own
/// connection, so on a cluster it is routed by the stream's key).
async fn audit(engine: &Engine, shard: u16) -> Vec<AuditEvent> {
    let key = synckairos_core::keys::audit_stream(shard);
    let mut conn = engine.connection();
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(&key)
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .expect("XRANGE");
    entries
        .iter()
        .map(|(_, f)| {
            AuditEvent::from_fields(f.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .expect("valid audit entry")
        })
        .collect()
}

/// The commands one session goes through: every command kind, some refused.
fn script(sid: &str, variant: usize) -> Vec<(i64, Request)> {
    let b = body(sid, "per_participant", 3, 60_000);
    let mut steps = vec![(T0, create(&b)), (T0 + 10, cmd(sid, Command::Start))];
    let switch = |v: Option<u64>| Request {
        expected_version: v,
        ..cmd(
            sid,
            Command::Switch {
                next_participant_id: None,
            },
        )
    };
    steps.push((T0 + 1_000, switch(Some(2))));
    steps.push((T0 + 1_500, cmd(sid, Command::Pause)));
    steps.push((T0 + 2_000, cmd(sid, Command::Resume)));
    steps.push((T0 + 2_500, switch(Some(99)))); // a version conflict
    steps.push((T0 + 3_000, switch(None)));
    match variant % 3 {
        0 => steps.push((T0 + 4_000, cmd(sid, Command::Complete))),
        1 => {
            // The running clock's deadline passes; expire applies it.
            steps.push((T0 + 200_000, cmd(sid, Command::Expire)));
            steps.push((T0 + 200_100, cmd(sid, Command::Cancel)));
        }
        _ => steps.push((T0 + 4_000, cmd(sid, Command::Cancel))),
    }
    steps.push((T0 + 5_000, cmd(sid, Command::Delete)));
    steps.push((T0 + 5_100, cmd(sid, Command::Start))); // not found
    steps
}

fn device(sid: &str, register: bool) -> DeviceOp {
    if register {
        DeviceOp::Register {
            session_id: sid.into(),
            registration: Registration {
                participant_id: uuid(0xa000),
                token: format!("token-{sid}"),
                platform: Platform::Android,
            },
        }
    } else {
        DeviceOp::Remove {
            session_id: sid.into(),
            token: format!("token-{sid}"),
            participant_id: None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_kind_matches_a_single_server() {
    let cluster = RedisCluster::start();
    let server = RedisServer::start();
    let single = Engine::connect(&server.url(), settings()).await.unwrap();
    // The one-URL form of the seeds.
    let hosts: Vec<String> = cluster
        .ports()
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect();
    let url = format!("redis+cluster://{}", hosts.join(","));
    let clustered = Engine::connect(&url, settings()).await.unwrap();
    assert!(clustered.connection().is_cluster());

    let sessions = sessions_on_every_shard(2);
    assert_eq!(primaries_of(&cluster, &sessions).len(), 3);

    let mut commands = 0;
    let mut last_states = Vec::new();
    for (i, sid) in sessions.iter().enumerate() {
        let mut last_state = None;
        for (n, (now, req)) in script(sid, i).into_iter().enumerate() {
            let opts = CallOptions {
                now_ms: Some(now),
                ..CallOptions::default()
            };
            let want = single.execute(&req, &opts).await.unwrap();
            let got = clustered.execute(&req, &opts).await.unwrap();
            assert_eq!(got, want, "{sid} step {n} ({})", req.command.name());
            commands += 1;
            let stored = clustered.get(sid).await.unwrap();
            assert_eq!(stored, single.get(sid).await.unwrap(), "{sid} step {n}");
            if let Some(st) = stored {
                last_state = Some(st);
            }
            if n == 2 {
                for register in [true, false] {
                    let op = device(sid, register);
                    let want = single.devices(&op, Some(now + 1)).await.unwrap();
                    let got = clustered.devices(&op, Some(now + 1)).await.unwrap();
                    assert_eq!(got, want, "{sid} devices");
                    commands += 1;
                }
            }
        }
        last_states.push(last_state.expect("a stored state"));
    }

    // Restore each deleted session from its last state, after all the
    // commands above (a restore's deadline entry is on each server's own
    // TIME, and `expire` replies name the shard's next deadline): refused on
    // both while the tombstone stands, or written on both.
    for last in &last_states {
        let sid = &last.session_id;
        let want = single
            .restore(last, last.version, Some("ops"))
            .await
            .unwrap();
        let got = clustered
            .restore(last, last.version, Some("ops"))
            .await
            .unwrap();
        assert_eq!(got.is_some(), want.is_some(), "{sid} restore");
        if let Some(st) = got {
            assert_eq!(clustered.get(sid).await.unwrap(), Some(st));
        }
        commands += 1;
    }

    // The audit streams hold the same events, shard by shard.
    for shard in 0..settings().shards {
        let (a, b) = (audit(&clustered, shard).await, audit(&single, shard).await);
        let strip = |v: Vec<AuditEvent>| -> Vec<AuditEvent> {
            // Restore events carry each server's own TIME.
            v.into_iter()
                .filter(|e| e.event_type != synckairos_core::audit::EventType::SessionRestored)
                .collect()
        };
        assert_eq!(strip(a), strip(b), "shard {shard}");
    }

    // A keyless command goes to any node.
    let now = clustered.redis_time_ms().await.unwrap();
    let local = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!((now - local).abs() < 5_000, "{now} vs {local}");
    eprintln!(
        "{commands} commands on {} sessions over {} shards and 3 primaries: same as one server",
        sessions.len(),
        settings().shards
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_without_its_scripts_falls_back_to_eval() {
    let cluster = RedisCluster::start();
    let engine = Engine::connect_target(&RedisTarget::Cluster(cluster.seed_urls()), settings())
        .await
        .unwrap();
    let sessions = sessions_on_every_shard(1);
    for sid in &sessions {
        let b = body(sid, "per_participant", 2, 60_000);
        engine
            .execute(&create(&b), &CallOptions::default())
            .await
            .unwrap()
            .result
            .unwrap();
    }
    // Every script was loaded on every primary: no EVAL so far.
    let primaries = primaries_of(&cluster, &sessions);
    for &p in &primaries {
        assert_eq!(command_calls_on(p, "eval"), 0, "primary {p}");
    }

    let flushed = *primaries.iter().next().unwrap();
    flush_scripts_on(flushed);

    let on_flushed: Vec<&String> = sessions
        .iter()
        .filter(|s| {
            cluster.primary_of_key(&SessionKeys::new(s, settings().shards).state) == flushed
        })
        .collect();
    assert!(!on_flushed.is_empty());
    for sid in &sessions {
        let r: ScriptReply = engine
            .execute(&cmd(sid, Command::Start), &CallOptions::default())
            .await
            .unwrap();
        assert!(matches!(r.result, Ok(Reply::State { .. })), "{sid}: {r:?}");
        assert_eq!(engine.get(sid).await.unwrap().unwrap().version, 2);
    }
    // The flushed primary ran EVAL (once: it caches the script again); the
    // others never did.
    assert_eq!(command_calls_on(flushed, "eval"), 1);
    for &p in primaries.iter().filter(|&&p| p != flushed) {
        assert_eq!(command_calls_on(p, "eval"), 0, "primary {p}");
    }
}

/// What the load tasks saw.
#[derive(Default)]
struct Seen {
    /// Per session: every acknowledged (version, state).
    acked: HashMap<String, Vec<(u64, SyncState, Instant)>>,
    /// Error times and messages.
    errors: Vec<(Instant, String)>,
    /// Successes' (sent, answered) times, per session.
    ok_at: HashMap<String, Vec<(Instant, Instant)>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_under_load_keeps_state_and_audit_in_agreement() {
    const TASKS: usize = 12;
    let cluster = RedisCluster::start();
    let engine = Engine::connect_target(&RedisTarget::Cluster(cluster.seed_urls()), settings())
        .await
        .unwrap();
    let sessions = sessions_on_every_shard(3);
    assert_eq!(primaries_of(&cluster, &sessions).len(), 3);
    for sid in &sessions {
        let b = body(sid, "per_participant", 4, 3_600_000);
        for req in [create(&b), cmd(sid, Command::Start)] {
            engine
                .execute(&req, &CallOptions::default())
                .await
                .unwrap()
                .result
                .unwrap();
        }
    }

    // The primary to kill: the one serving shard 0's slot.
    let shards = settings().shards;
    let victim_key = SessionKeys::new(&sessions[0], shards).state;
    let victim_slot = cluster.slot_of(&victim_key);
    let victim = cluster.primary_of_key(&victim_key);
    let affected: BTreeSet<String> = sessions
        .iter()
        .filter(|s| cluster.primary_of_key(&SessionKeys::new(s, shards).state) == victim)
        .cloned()
        .collect();

    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let oks = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let mine: Vec<String> = sessions.iter().skip(t).step_by(TASKS).cloned().collect();
        let (engine, stop, seen, oks) = (engine.clone(), stop.clone(), seen.clone(), oks.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let sid = &mine[i % mine.len()];
                i += 1;
                let req = cmd(
                    sid,
                    Command::Switch {
                        next_participant_id: None,
                    },
                );
                let sent = Instant::now();
                let r = engine.execute(&req, &CallOptions::default()).await;
                let at = Instant::now();
                let failed = {
                    let mut seen = seen.lock().unwrap();
                    match r {
                        Ok(ScriptReply {
                            result: Ok(Reply::State { state, .. }),
                            ..
                        }) => {
                            oks.fetch_add(1, Ordering::Relaxed);
                            seen.acked.entry(sid.clone()).or_default().push((
                                state.version,
                                *state,
                                at,
                            ));
                            seen.ok_at.entry(sid.clone()).or_default().push((sent, at));
                            false
                        }
                        Ok(other) => panic!("{sid}: unexpected reply {other:?}"),
                        Err(e) => {
                            seen.errors.push((at, e.to_string()));
                            true
                        }
                    }
                };
                if failed {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }));
    }

    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = oks.load(Ordering::Relaxed);
    assert!(before > 0, "no command succeeded before the kill");
    let killed_at = Instant::now();
    cluster.kill(victim);
    let promoted = tokio::task::block_in_place(|| {
        cluster.wait_for_failover(victim_slot, victim, Duration::from_secs(30))
    });
    let failed_over = killed_at.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("a load task");
    }
    let seen = Arc::try_unwrap(seen).ok().unwrap().into_inner().unwrap();

    // The engine carried on by itself: every affected session succeeded
    // again with a command sent after the kill. The window: from the kill to
    // the first such success; the gap: the longest time without an answer
    // on the affected sessions around the kill, as their clients saw it.
    let mut first_after: Option<Instant> = None;
    let mut answers: Vec<Instant> = Vec::new();
    for sid in &affected {
        let times = seen
            .ok_at
            .get(sid)
            .expect("successes on an affected session");
        let after = times.iter().find(|t| t.0 > killed_at).map(|t| t.1);
        let after = after.unwrap_or_else(|| panic!("{sid} never succeeded after the kill"));
        first_after = Some(first_after.map_or(after, |f| f.min(after)));
        answers.extend(times.iter().map(|t| t.1));
    }
    answers.sort();
    let gap = answers
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    let window = first_after.unwrap() - killed_at;
    let errors_after_kill = seen.errors.iter().filter(|(t, _)| *t >= killed_at).count();
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for (_, e) in &seen.errors {
        let short: String = e.chars().take(60).collect();
        *kinds.entry(short).or_default() += 1;
    }

    // (a) Acknowledged commands lost with the old primary: a session stored
    // below the highest version acknowledged to a client, or an acknowledged
    // version whose audit event holds another state (lost, then the version
    // was given to a later switch on the promoted replica).
    let mut stored: HashMap<String, u64> = HashMap::new();
    for sid in &sessions {
        let st = engine.get(sid).await.unwrap().expect("a stored session");
        stored.insert(sid.clone(), st.version);
    }
    let mut events: HashMap<String, Vec<AuditEvent>> = HashMap::new();
    for shard in 0..shards {
        for e in audit(&engine, shard).await {
            events.entry(e.session_id.clone()).or_default().push(e);
        }
    }
    let mut lost_below = 0u64;
    let mut lost_replaced = 0u64;
    let mut acked_before_kill_on_victim = 0u64;
    for (sid, acks) in &seen.acked {
        let max = acks.iter().map(|a| a.0).max().unwrap_or(0);
        let have = stored[sid];
        if have < max {
            lost_below += acks.iter().filter(|a| a.0 > have).count() as u64;
        }
        let by_version: HashMap<u64, &AuditEvent> = events
            .get(sid)
            .map(|v| v.iter().map(|e| (e.version, e)).collect())
            .unwrap_or_default();
        for (v, st, _) in acks {
            let same = by_version
                .get(v)
                .is_some_and(|e| record::decode(&e.snapshot).ok().as_ref() == Some(st));
            if !same {
                lost_replaced += 1;
                assert!(
                    affected.contains(sid),
                    "{sid} lost v{v} but its primary never died"
                );
            }
        }
        if affected.contains(sid) {
            acked_before_kill_on_victim += acks.iter().filter(|a| a.2 <= killed_at).count() as u64;
        }
    }
    let total_ok = oks.load(Ordering::Relaxed);
    eprintln!(
        "failover: killed primary {victim} (slot {victim_slot}, {} of {} sessions); replica \
         {promoted} promoted and cluster ok after {failed_over:?}; first success of a \
         command sent after the kill on its sessions {window:?} after it; longest gap \
         without an answer on them {gap:?}",
        affected.len(),
        sessions.len(),
    );
    eprintln!(
        "failover: {total_ok} acknowledged switches ({before} before the kill), {} errors \
         ({errors_after_kill} after the kill): {kinds:?}",
        seen.errors.len()
    );
    eprintln!(
        "failover: lost acknowledged commands: {lost_below} below the stored version, \
         {lost_replaced} acknowledged versions whose audit event holds another state \
         (of {acked_before_kill_on_victim} acknowledged on the killed primary); \
         cluster connection rebuilds: {}",
        engine.connection().rebuilds()
    );
    assert!(lost_below <= acked_before_kill_on_victim);
    assert!(lost_replaced <= acked_before_kill_on_victim);

    // (b) State and audit agree: a script's writes are kept or lost together.
    for sid in &sessions {
        let evs = events.get(sid).expect("audit events");
        let versions: Vec<u64> = evs.iter().map(|e| e.version).collect();
        assert!(
            versions.windows(2).all(|w| w[0] < w[1]),
            "{sid}: audit versions not increasing: {versions:?}"
        );
        assert_eq!(
            *versions.last().unwrap(),
            stored[sid],
            "{sid}: the last audit event is not the stored version"
        );
        let st = engine.get(sid).await.unwrap().unwrap();
        let last = record::decode(&evs.last().unwrap().snapshot).unwrap();
        assert_eq!(
            last, st,
            "{sid}: the last audit snapshot is not the stored state"
        );
    }
}
