//! The audit consumer on a Redis Cluster (testkit's `RedisCluster`: 3
//! primaries, 3 replicas), declared the way every native service declares
//! it (`REDIS_CLUSTER_URLS`): every shard's entries land in PostgreSQL
//! exactly once, blocking reads on quiet shards never hold up a busy one,
//! dead letters, trims, `dlq list|replay` and `restore` work per shard's
//! slot, a primary that lost its scripts runs them by `EVAL`; and a primary killed under load is replaced by its replica while
//! the consumer carries on by itself, with the sessions' state in Redis and
//! their audit trail in PostgreSQL still in agreement.
//!
//! Run with `--nocapture` to see the latencies, the failover's timings and
//! the acknowledged commands it lost.

mod common;

use common::{settings, spawn_consumer, stored_in, switch, wait_ready, Proc, SHARDS};
use futures::stream::{self, StreamExt};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use synckairos_audit_consumer::db;
use synckairos_core::keys::{self, SessionKeys};
use synckairos_core::model::Reply;
use synckairos_core::record;
use synckairos_core::script::{CallOptions, ScriptReply};
use synckairos_core::{Command as Cmd, Request, SyncState};
use synckairos_engine::{fixtures, Engine, RedisTarget};
use synckairos_testkit::{
    command_calls_on, flush_scripts_on, ids_on_every_shard, PgDatabase, RedisCluster,
};

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A cluster, a fresh database, the engine on the cluster.
struct Env {
    cluster: RedisCluster,
    db: PgDatabase,
    engine: Engine,
    pool: sqlx::PgPool,
}

async fn env() -> Env {
    let cluster = RedisCluster::start();
    let db = PgDatabase::fresh();
    let engine = Engine::connect_target(&RedisTarget::Cluster(cluster.seed_urls()), settings())
        .await
        .expect("the engine on the cluster");
    assert!(engine.connection().is_cluster());
    let pool = sqlx::PgPool::connect(db.url()).await.expect("postgres");
    db::migrate(&pool).await.expect("migrations");
    Env {
        cluster,
        db,
        engine,
        pool,
    }
}

impl Env {
    fn seeds(&self) -> String {
        self.cluster.seed_urls().join(",")
    }

    /// The consumer binary on the cluster (`REDIS_CLUSTER_URLS`, no
    /// `REDIS_URL`), with extra environment.
    fn spawn(&self, name: &str, env: &[(&str, &str)]) -> Proc {
        spawn_consumer(
            self.db.url(),
            ("REDIS_CLUSTER_URLS", &self.seeds()),
            "warn",
            name,
            env,
        )
    }

    /// `audit-consumer <args>` on the cluster: exit code, stdout, stderr.
    fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_audit-consumer"))
            .args(args)
            .env_remove("REDIS_URL")
            .env("DATABASE_URL", self.db.url())
            .env("REDIS_CLUSTER_URLS", self.seeds())
            .env("SHARDS", SHARDS.to_string())
            .env("RUST_LOG", "warn")
            .output()
            .expect("audit-consumer binary");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// The primary serving `shard`'s slot.
    fn primary_of_shard(&self, shard: u16) -> u16 {
        self.cluster.primary_of_key(&keys::audit_stream(shard))
    }

    /// Every stored event id.
    async fn stored_ids(&self) -> BTreeSet<String> {
        sqlx::query_scalar::<_, String>("SELECT event_id FROM sync_events")
            .fetch_all(&self.pool)
            .await
            .expect("events")
            .into_iter()
            .collect()
    }

    /// Every (session, version) stored, and the row count.
    async fn stored(&self) -> (BTreeSet<(String, i64)>, i64) {
        stored_in(&self.pool).await
    }
}

/// `per_shard` session ids on every shard (ids from `base`).
fn sessions_on_every_shard(per_shard: usize, base: u128) -> Vec<String> {
    ids_on_every_shard(
        SHARDS,
        per_shard,
        |n| fixtures::uuid(base + n),
        |sid| keys::shard_of(sid, SHARDS),
    )
}

/// Runs one command; the new version.
async fn exec(engine: &Engine, req: &Request) -> u64 {
    let reply = engine
        .execute(req, &CallOptions::default())
        .await
        .expect("redis");
    match reply.result.expect("accepted") {
        Reply::State { state, .. } => state.version,
        other => panic!("unexpected {other:?}"),
    }
}

/// Creates and starts each session and switches it `switches` times;
/// every (session, version) produced.
async fn play(engine: &Engine, ids: &[String], switches: usize) -> BTreeSet<(String, i64)> {
    let per: Vec<Vec<(String, i64)>> = stream::iter(ids.iter().cloned())
        .map(|id| async move {
            let create = fixtures::create(&fixtures::body(&id, "per_participant", 2, 3_600_000))
                .expect("valid body");
            let mut reqs = vec![create, Request::new(&id, Cmd::Start)];
            reqs.extend((0..switches).map(|_| switch(&id)));
            let mut got = Vec::new();
            for r in &reqs {
                got.push((id.clone(), exec(engine, r).await as i64));
            }
            got
        })
        .buffer_unordered(8)
        .collect()
        .await;
    per.into_iter().flatten().collect()
}

/// Polls `check` every 100 ms until it holds; fails after `within`.
async fn until<F: Future<Output = bool>>(
    within: Duration,
    what: &str,
    mut check: impl FnMut() -> F,
) {
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every entry of a stream (id, fields), through a cluster connection, 200
/// at a time.
async fn entries(
    conn: &mut synckairos_engine::RedisConnection,
    key: &str,
) -> Vec<(String, HashMap<String, String>)> {
    let mut out = Vec::new();
    let mut from = "-".to_string();
    loop {
        let page: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg(key)
            .arg(&from)
            .arg("+")
            .arg("COUNT")
            .arg(200)
            .query_async(conn)
            .await
            .expect("XRANGE");
        let n = page.len();
        if let Some((last, _)) = page.last() {
            from = format!("({last}");
        }
        out.extend(
            page.into_iter()
                .map(|(id, f)| (id, f.into_iter().collect())),
        );
        if n < 200 {
            return out;
        }
    }
}

async fn xlen(conn: &mut synckairos_engine::RedisConnection, key: &str) -> u64 {
    redis::cmd("XLEN")
        .arg(key)
        .query_async(conn)
        .await
        .expect("XLEN")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shard_lands_once_with_dead_letters_trims_and_restore_per_slot() {
    let e = env().await;
    let sessions = sessions_on_every_shard(2, 0xC1_0000);
    let primaries = e
        .cluster
        .primaries_of_keys((0..SHARDS).map(keys::audit_stream));
    assert_eq!(primaries.len(), 3, "the shards are spread over 3 primaries");
    let mut expected = play(&e.engine, &sessions, 3).await;

    // Two entries that cannot be stored, on shards of different primaries:
    // poison (a snapshot that is no record), and one PostgreSQL refuses
    // until an operator drops a constraint that should not be there.
    let poison_shard = 0;
    let refused_shard = (1..SHARDS)
        .find(|&s| e.primary_of_shard(s) != e.primary_of_shard(poison_shard))
        .expect("a shard on another primary");
    let on = |shard: u16| {
        sessions
            .iter()
            .find(|s| keys::shard_of(s, SHARDS) == shard)
            .unwrap()
            .clone()
    };
    let mut conn = e.engine.connection();
    let xadd = |shard: u16, fields: Vec<(&'static str, String)>| {
        let mut conn = e.engine.connection();
        async move {
            let mut c = redis::cmd("XADD");
            c.arg(keys::audit_stream(shard)).arg("*");
            for (k, v) in &fields {
                c.arg(*k).arg(v);
            }
            c.query_async::<String>(&mut conn).await.expect("XADD")
        }
    };
    let poison_sid = on(poison_shard);
    let poison = xadd(
        poison_shard,
        vec![
            ("type", "session_paused".into()),
            ("sid", poison_sid.clone()),
            ("v", "90".into()),
            ("at", "1".into()),
            ("snap", "R1|garbage".into()),
        ],
    )
    .await;
    let refused_sid = on(refused_shard);
    let snap = record::encode(&e.engine.get(&refused_sid).await.unwrap().unwrap());
    let refused = xadd(
        refused_shard,
        vec![
            ("type", "session_paused".into()),
            ("sid", refused_sid.clone()),
            ("v", "91".into()),
            ("at", "1".into()),
            ("actor", "blocked".into()),
            ("snap", snap),
        ],
    )
    .await;
    sqlx::query(
        "ALTER TABLE sync_events ADD CONSTRAINT not_blocked CHECK (actor IS DISTINCT FROM 'blocked')",
    )
    .execute(&e.pool)
    .await
    .unwrap();

    // The binary, on the cluster, two workers, the default 10 s blocking
    // reads: every entry of every shard lands, once.
    let t = Instant::now();
    let mut p = e.spawn("cl", &[]);
    wait_ready(&p).await;
    until(Duration::from_secs(60), "every event stored", || async {
        e.stored().await.1 >= expected.len() as i64
    })
    .await;
    eprintln!(
        "{} events of {} sessions on {} shards over 3 primaries stored in {:?}",
        expected.len(),
        sessions.len(),
        SHARDS,
        t.elapsed()
    );
    // Acknowledged, dead-lettered and trimmed: every shard stream empty.
    until(
        Duration::from_secs(30),
        "every shard stream trimmed",
        || {
            let mut conn = e.engine.connection();
            async move {
                for s in 0..SHARDS {
                    if xlen(&mut conn, &keys::audit_stream(s)).await > 0 {
                        return false;
                    }
                }
                true
            }
        },
    )
    .await;
    let (got, n) = e.stored().await;
    assert_eq!(n as usize, got.len(), "an event is stored twice");
    assert_eq!(got, expected, "PostgreSQL holds exactly the events played");

    // Each dead letter is in its own shard's dead-letter stream.
    let dead = |shard: u16| keys::dead_letter_stream(shard);
    let pd = entries(&mut conn, &dead(poison_shard)).await;
    let rd = entries(&mut conn, &dead(refused_shard)).await;
    assert_eq!(pd.len(), 1, "{pd:?}");
    assert_eq!(rd.len(), 1, "{rd:?}");
    assert_eq!(pd[0].1["dl_source_id"], poison);
    assert_eq!(rd[0].1["dl_source_id"], refused);
    assert!(pd[0].1["dl_reason"].contains("not a record"), "{pd:?}");
    assert!(
        rd[0].1["dl_reason"].contains("refused by PostgreSQL"),
        "{rd:?}"
    );

    // `dlq list` finds both, on the cluster.
    let (code, out, err) = e.cli(&["dlq", "list"]);
    assert_eq!(code, 0, "{err}");
    let listed: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    let names: BTreeSet<String> = listed
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect();
    let poison_name = format!("{poison_shard}-{}", pd[0].0);
    let refused_name = format!("{refused_shard}-{}", rd[0].0);
    assert_eq!(
        names,
        BTreeSet::from([poison_name.clone(), refused_name.clone()]),
        "{out}"
    );
    // The cause fixed, `dlq replay --all` stores the refused one; the
    // poison stays.
    sqlx::query("ALTER TABLE sync_events DROP CONSTRAINT not_blocked")
        .execute(&e.pool)
        .await
        .unwrap();
    let (code, out, err) = e.cli(&["dlq", "replay", "--all"]);
    assert_eq!(code, 2, "the poison is not stored: {out} {err}");
    let results: BTreeMap<String, String> = out
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("JSON");
            (
                v["id"].as_str().unwrap().to_string(),
                v["result"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(results[&refused_name], "stored", "{out}");
    assert_eq!(results[&poison_name], "still_failing", "{out}");
    expected.insert((refused_sid.clone(), 91));
    assert_eq!(e.stored().await.0, expected);
    assert_eq!(xlen(&mut conn, &dead(refused_shard)).await, 0);
    assert_eq!(xlen(&mut conn, &dead(poison_shard)).await, 1);

    // One primary loses its script cache (a restart): the settles of its
    // shards fall back to EVAL there, and every other primary never does.
    let flushed = e.primary_of_shard(0);
    let evals: BTreeMap<u16, u64> = primaries
        .iter()
        .map(|&p| (p, command_calls_on(p, "eval")))
        .collect();
    flush_scripts_on(flushed);

    // With every worker waiting in a 10 s read, a new event on any shard is
    // stored at once: a read blocked on a quiet shard holds up no other.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut worst = Duration::ZERO;
    for shard in 0..SHARDS {
        let sid = on(shard);
        let t = Instant::now();
        let v = exec(&e.engine, &switch(&sid)).await as i64;
        until(Duration::from_secs(5), "a new event stored at once", || {
            let (pool, sid) = (&e.pool, &sid);
            async move {
                sqlx::query_scalar::<_, i64>(
                    "SELECT count(*) FROM sync_events WHERE session_id = $1 AND version = $2",
                )
                .bind(sid)
                .bind(v)
                .fetch_one(pool)
                .await
                .unwrap()
                    == 1
            }
        })
        .await;
        worst = worst.max(t.elapsed());
        expected.insert((sid, v));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("one new event per shard, each stored within {worst:?} (reads block 10 s)");
    assert!(
        command_calls_on(flushed, "eval") > evals[&flushed],
        "EVAL after NOSCRIPT"
    );
    for &p in primaries.iter().filter(|&&p| p != flushed) {
        assert_eq!(
            command_calls_on(p, "eval"),
            evals[&p],
            "primary {p} ran EVAL"
        );
    }

    // `restore` on the cluster: a session Redis lost comes back from its
    // audit trail, and its `session_restored` event is audited too.
    let lost = on(refused_shard + 1);
    let last = e.engine.get(&lost).await.unwrap().unwrap();
    let _: u64 = redis::cmd("DEL")
        .arg(SessionKeys::new(&lost, SHARDS).state)
        .query_async(&mut conn)
        .await
        .unwrap();
    let (code, out, err) = e.cli(&["restore", &lost]);
    assert_eq!(code, 0, "{out} {err}");
    assert!(
        out.starts_with(&format!("restored {lost} at version {}", last.version + 1)),
        "{out}"
    );
    let back = e.engine.get(&lost).await.unwrap().expect("restored");
    assert_eq!(back.version, last.version + 1);
    expected.insert((lost.clone(), back.version as i64));
    until(Duration::from_secs(10), "the restore audited", || async {
        e.stored().await.0 == expected
    })
    .await;

    assert!(p.term().success(), "SIGTERM is a clean exit");
}

/// What the load saw.
#[derive(Default)]
struct Seen {
    /// Per session: every acknowledged (version, state).
    acked: HashMap<String, Vec<(u64, SyncState)>>,
    /// Errors, with when they happened.
    errors: Vec<(Instant, String)>,
}

/// Whether the consumer's group has read everything in `shard`'s stream
/// and has nothing pending there.
async fn caught_up(conn: &mut synckairos_engine::RedisConnection, shard: u16) -> bool {
    let key = keys::audit_stream(shard);
    let v: redis::Value = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(&key)
        .query_async(conn)
        .await
        .expect("XINFO GROUPS");
    let redis::Value::Array(groups) = v else {
        panic!("XINFO GROUPS: {v:?}")
    };
    let mut audit = None;
    for g in groups {
        let fields: HashMap<String, redis::Value> = match g {
            redis::Value::Array(kv) => kv
                .chunks(2)
                .map(|c| (redis::from_redis_value_ref(&c[0]).unwrap(), c[1].clone()))
                .collect(),
            redis::Value::Map(kv) => kv
                .into_iter()
                .map(|(k, v)| (redis::from_redis_value_ref(&k).unwrap(), v))
                .collect(),
            other => panic!("a group: {other:?}"),
        };
        let name: String = redis::from_redis_value_ref(&fields["name"]).unwrap();
        if name == "audit" {
            let pending: u64 = redis::from_redis_value_ref(&fields["pending"]).unwrap();
            let delivered: String =
                redis::from_redis_value_ref(&fields["last-delivered-id"]).unwrap();
            audit = Some((pending, delivered));
        }
    }
    let Some((pending, delivered)) = audit else {
        return false;
    };
    let last: Vec<(String, Vec<(String, String)>)> = redis::cmd("XREVRANGE")
        .arg(&key)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(conn)
        .await
        .expect("XREVRANGE");
    pending == 0
        && last
            .first()
            .is_none_or(|(id, _)| synckairos_audit_consumer::stream::id_cmp(&delivered, id).is_ge())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_killed_under_load_the_consumer_carries_on_and_audit_agrees_with_state() {
    const TASKS: usize = 12;
    let e = env().await;
    let mut conn = e.engine.connection();
    // A second group that never reads keeps every entry in the streams
    // (the trim stops at the oldest group), so what survives the failover
    // can be read back at the end.
    for s in 0..SHARDS {
        let _: () = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(keys::audit_stream(s))
            .arg("witness")
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await
            .expect("XGROUP CREATE");
    }
    let sessions = sessions_on_every_shard(3, 0xC2_0000);
    play(&e.engine, &sessions, 0).await;

    // Claims after 2 s: an acknowledgement the failover lost leaves its
    // entry pending on the promoted replica, and it is claimed again.
    let mut p = e.spawn(
        "fo",
        &[
            ("CLAIM_IDLE_MS", "2000"),
            ("BLOCK_MS", "2000"),
            ("BACKOFF_MAX_MS", "1000"),
        ],
    );
    wait_ready(&p).await;

    // The primary to kill: the one serving shard 0's slot.
    let victim_slot = e.cluster.slot_of(&keys::audit_stream(0));
    let victim = e.primary_of_shard(0);
    let affected: BTreeSet<u16> = (0..SHARDS)
        .filter(|&s| e.primary_of_shard(s) == victim)
        .collect();
    let affected_sessions: BTreeSet<String> = sessions
        .iter()
        .filter(|s| affected.contains(&keys::shard_of(s, SHARDS)))
        .cloned()
        .collect();

    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let oks = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let mine: Vec<String> = sessions.iter().skip(t).step_by(TASKS).cloned().collect();
        let (engine, stop, seen, oks) = (e.engine.clone(), stop.clone(), seen.clone(), oks.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let sid = &mine[i % mine.len()];
                i += 1;
                let r = engine.execute(&switch(sid), &CallOptions::default()).await;
                let failed = {
                    let mut seen = seen.lock().unwrap();
                    match r {
                        Ok(ScriptReply {
                            result: Ok(Reply::State { state, .. }),
                            ..
                        }) => {
                            oks.fetch_add(1, Ordering::Relaxed);
                            seen.acked
                                .entry(sid.clone())
                                .or_default()
                                .push((state.version, *state));
                            false
                        }
                        Ok(other) => panic!("{sid}: unexpected reply {other:?}"),
                        Err(err) => {
                            seen.errors.push((Instant::now(), err.to_string()));
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

    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = oks.load(Ordering::Relaxed);
    assert!(before > 0, "no command succeeded before the kill");
    let (killed_at, killed_at_ms) = (Instant::now(), wall_ms());
    e.cluster.kill(victim);
    let promoted = tokio::task::block_in_place(|| {
        e.cluster
            .wait_for_failover(victim_slot, victim, Duration::from_secs(60))
    });
    let failed_over = killed_at.elapsed();
    // Load goes on, so every session moves well past anything lost.
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("a load task");
    }
    let seen = Arc::try_unwrap(seen).ok().unwrap().into_inner().unwrap();
    let total_ok = oks.load(Ordering::Relaxed);

    // Every entry that survives in the streams reaches PostgreSQL, and the
    // group ends with nothing pending or unread on any shard.
    let mut check =
        synckairos_engine::RedisConnection::connect(&RedisTarget::Cluster(e.cluster.seed_urls()))
            .await
            .expect("a connection to the cluster after the failover");
    let mut surviving: BTreeMap<String, (u16, String, HashMap<String, String>)> = BTreeMap::new();
    for s in 0..SHARDS {
        for (id, f) in entries(&mut check, &keys::audit_stream(s)).await {
            surviving.insert(format!("{s}-{id}"), (s, id, f));
        }
    }
    let drained_from = Instant::now();
    until(
        Duration::from_secs(120),
        "every surviving entry stored and the group caught up",
        || {
            let (e, surviving, mut check) = (&e, &surviving, check.clone());
            async move {
                let stored = e.stored_ids().await;
                if !surviving.keys().all(|id| stored.contains(id)) {
                    return false;
                }
                for s in 0..SHARDS {
                    if !caught_up(&mut check, s).await {
                        return false;
                    }
                }
                true
            }
        },
    )
    .await;
    let drained = drained_from.elapsed();
    wait_ready(&p).await;

    // How long the consumer took to store the first event a command made
    // after the kill on the killed primary's shards.
    let first_after: Option<f64> = sqlx::query_scalar(
        "SELECT (extract(epoch FROM min(recorded_at)) * 1000)::float8 FROM sync_events
         WHERE shard = ANY($1) AND occurred_at > to_timestamp($2::float8 / 1000.0)",
    )
    .bind(affected.iter().map(|s| *s as i16).collect::<Vec<_>>())
    .bind(killed_at_ms as f64)
    .fetch_one(&e.pool)
    .await
    .unwrap();
    let recovery_ms =
        first_after.expect("events after the kill on the affected shards") as i64 - killed_at_ms;

    // Stored events no longer in Redis: the consumer stored them from the
    // old primary before it died, and they did not reach the replica.
    let stored = e.stored_ids().await;
    let orphans: Vec<&String> = stored
        .iter()
        .filter(|id| !surviving.contains_key(*id))
        .collect();
    for id in &orphans {
        let shard: u16 = id.split('-').next().unwrap().parse().unwrap();
        assert!(
            affected.contains(&shard),
            "{id} was lost from a shard whose primary never died"
        );
    }

    // Acknowledged commands lost with the old primary: an acknowledged
    // version whose surviving audit entry is missing or holds another state.
    let mut by_version: HashMap<(String, u64), String> = HashMap::new();
    for (_, _, f) in surviving.values() {
        by_version.insert(
            (f["sid"].clone(), f["v"].parse().unwrap()),
            f["snap"].clone(),
        );
    }
    let mut lost = 0u64;
    let mut acked_on_victim = 0u64;
    for (sid, acks) in &seen.acked {
        for (v, st) in acks {
            let same = by_version
                .get(&(sid.clone(), *v))
                .is_some_and(|snap| record::decode(snap).ok().as_ref() == Some(st));
            if !same {
                lost += 1;
                assert!(
                    affected_sessions.contains(sid),
                    "{sid} lost v{v} but its primary never died"
                );
            }
        }
        if affected_sessions.contains(sid) {
            acked_on_victim += acks.len() as u64;
        }
    }

    // State and audit agree: for every session, the state in Redis is the
    // last event audited in PostgreSQL (its version, its record).
    let latest: Vec<(String, i64)> =
        sqlx::query_as("SELECT session_id, max(version) FROM sync_events GROUP BY session_id")
            .fetch_all(&e.pool)
            .await
            .unwrap();
    let latest: HashMap<String, i64> = latest.into_iter().collect();
    for sid in &sessions {
        let st = e.engine.get(sid).await.unwrap().expect("a stored session");
        assert_eq!(
            latest[sid], st.version as i64,
            "{sid}: the last audited version is not the state's"
        );
        let rec: String = sqlx::query_scalar(
            "SELECT record FROM sync_sessions WHERE session_id = $1 AND version = $2",
        )
        .bind(sid)
        .bind(st.version as i64)
        .fetch_one(&e.pool)
        .await
        .unwrap_or_else(|err| panic!("{sid}: no audited session row at v{}: {err}", st.version));
        assert_eq!(
            record::decode(&rec).unwrap(),
            st,
            "{sid}: the audited state is not the state in Redis"
        );
    }
    // Each surviving (session, version) once in the trail.
    let mut seen_versions: BTreeSet<(String, u64)> = BTreeSet::new();
    for (_, _, f) in surviving.values() {
        let key = (f["sid"].clone(), f["v"].parse::<u64>().unwrap());
        assert!(
            seen_versions.insert(key.clone()),
            "{key:?} twice in the streams"
        );
    }

    let errors_after = seen.errors.iter().filter(|(t, _)| *t >= killed_at).count();
    eprintln!(
        "failover: killed primary {victim} (slot {victim_slot}, shards {affected:?}); replica \
         {promoted} promoted and the cluster ok {failed_over:?} after the kill"
    );
    eprintln!(
        "failover: the consumer stored the first post-kill event of those shards {recovery_ms} ms \
         after the kill; every surviving entry stored and the group caught up {drained:?} after \
         the load stopped"
    );
    eprintln!(
        "failover: {total_ok} acknowledged switches ({before} before the kill), {} engine errors \
         ({errors_after} after the kill); {} entries survive in the streams, {} events stored",
        seen.errors.len(),
        surviving.len(),
        stored.len()
    );
    eprintln!(
        "failover: lost acknowledged commands: {lost} (of {acked_on_victim} acknowledged on the \
         killed primary's shards); {} events stored from the old primary that the replica never \
         got",
        orphans.len()
    );
    assert!(lost <= acked_on_victim);
    assert!(p.term().success(), "SIGTERM is a clean exit");
}
