//! The bound on the audit streams: the consumer trims only what every
//! consumer group has acknowledged, and when Redis runs out of memory
//! (`noeviction`) commands are refused whole, nothing acknowledged is lost,
//! and draining frees the memory again.

mod common;

use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use synckairos_audit_consumer::metrics::ShardBacklog;
use synckairos_audit_consumer::stream::Streams;
use synckairos_audit_consumer::ConsumerConfig;
use synckairos_core::script::CallOptions;
use synckairos_core::{keys, Command as Cmd, Request};
use synckairos_engine::{fixtures, Engine, EngineError};
use synckairos_testkit::{PgDatabase, RedisServer};

fn xlen(s: &Stack, key: &str) -> u64 {
    let mut c = s.redis.client().get_connection().unwrap();
    redis::cmd("XLEN").arg(key).query(&mut c).unwrap()
}

fn total_len(s: &Stack) -> u64 {
    (0..SHARDS).map(|i| xlen(s, &keys::audit_stream(i))).sum()
}

/// Every (session, version) in the shard streams.
fn in_streams(s: &Stack) -> BTreeSet<(String, i64)> {
    let mut out = BTreeSet::new();
    for shard in 0..SHARDS {
        for (_, f) in s.redis.stream_entries(&keys::audit_stream(shard)) {
            let get = |k: &str| f.iter().find(|(n, _)| n == k).unwrap().1.clone();
            out.insert((get("sid"), get("v").parse().unwrap()));
        }
    }
    out
}

fn redis_info(s: &Stack, field: &str) -> u64 {
    let mut c = s.redis.client().get_connection().unwrap();
    let info: String = redis::cmd("INFO").arg("memory").query(&mut c).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in INFO memory"))
}

async fn run(engine: &Engine, req: Request) -> Result<i64, EngineError> {
    let reply = engine.execute(&req, &CallOptions::default()).await?;
    match reply.result.expect("accepted") {
        synckairos_core::model::Reply::State { state, .. } => Ok(state.version as i64),
        synckairos_core::model::Reply::Deleted { .. } => Ok(-1),
        other => panic!("unexpected {other:?}"),
    }
}

fn is_oom(e: &EngineError) -> bool {
    e.to_string().contains("OOM")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_another_group_has_not_acknowledged_are_never_trimmed() {
    let s = stack().await;
    // A second group (say, webhooks) that has read nothing yet.
    let mut conn = s.redis.client().get_connection().unwrap();
    for shard in 0..SHARDS {
        let _: () = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(keys::audit_stream(shard))
            .arg("webhooks")
            .arg("0")
            .arg("MKSTREAM")
            .query(&mut conn)
            .unwrap();
    }
    let first = play(&s.engine, 0xC_0000, 40, 2).await;
    let (mut c, m) = s.consumer("solo", ConsumerConfig::default()).await;
    drain(&mut c, &s, first.len() as i64).await;
    assert_eq!(
        total_len(&s),
        first.len() as u64,
        "the audit group acknowledged all, the webhooks group nothing: all kept"
    );
    assert_eq!(m.trimmed.load(std::sync::atomic::Ordering::Relaxed), 0);

    // The webhooks group reads and acknowledges everything of one shard,
    // and reads (without acknowledging) everything of another.
    let (done_shard, held_shard) = {
        let mut by: BTreeMap<u16, u64> = BTreeMap::new();
        for (sid, _) in &first {
            *by.entry(keys::shard_of(sid, SHARDS)).or_default() += 1;
        }
        let mut it = by.keys();
        (*it.next().unwrap(), *it.next().unwrap())
    };
    let webhooks = Streams::new(
        synckairos_audit_consumer::redis(&s.redis.url())
            .await
            .unwrap(),
        SHARDS,
        "webhooks",
        "hook-1",
    );
    let read = webhooks.read(10_000, None).await.unwrap();
    let acked: Vec<(u16, String)> = read
        .iter()
        .filter(|e| e.shard == done_shard)
        .map(|e| (e.shard, e.id.clone()))
        .collect();
    let mut ack = s.redis.client().get_connection().unwrap();
    for (shard, id) in &acked {
        let _: u64 = redis::cmd("XACK")
            .arg(keys::audit_stream(*shard))
            .arg("webhooks")
            .arg(id)
            .query(&mut ack)
            .unwrap();
    }
    // Trimming happens after the audit group's acknowledgements, not on a
    // timer: one more event on each of the two shards, drained.
    let more: BTreeSet<(String, i64)> = {
        let mut more: BTreeSet<(String, i64)> = BTreeSet::new();
        let mut i = 0u128;
        while more
            .iter()
            .map(|(sid, _): &(String, i64)| keys::shard_of(sid, SHARDS))
            .collect::<BTreeSet<_>>()
            != BTreeSet::from([done_shard, held_shard])
        {
            let sid = fixtures::uuid(0xC_1000 + i);
            i += 1;
            let shard = keys::shard_of(&sid, SHARDS);
            if (shard == done_shard || shard == held_shard)
                && !more.iter().any(|(x, _)| keys::shard_of(x, SHARDS) == shard)
            {
                let body = fixtures::body(&sid, "per_participant", 2, 600_000);
                let v = run(&s.engine, fixtures::create(&body).unwrap())
                    .await
                    .unwrap();
                more.insert((sid, v));
            }
        }
        more
    };
    drain(&mut c, &s, (first.len() + more.len()) as i64).await;
    assert_eq!(
        xlen(&s, &keys::audit_stream(done_shard)),
        1,
        "shard {done_shard}: what both groups acknowledged is trimmed; the new entry waits for the webhooks group"
    );
    let held = read.iter().filter(|e| e.shard == held_shard).count() as u64;
    assert_eq!(
        xlen(&s, &keys::audit_stream(held_shard)),
        held + 1,
        "shard {held_shard}: entries pending on the webhooks group are kept"
    );
    let all: BTreeSet<_> = first.union(&more).cloned().collect();
    let (stored, n) = s.stored().await;
    assert_eq!((stored, n as usize), (all.clone(), all.len()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_memory_refuses_whole_commands_loses_nothing_acknowledged_and_drains_free() {
    const MAXMEMORY: u64 = 3 * 1024 * 1024;
    let redis = RedisServer::start_with(&[
        "--maxmemory",
        &MAXMEMORY.to_string(),
        "--maxmemory-policy",
        "noeviction",
    ]);
    let s = stack_on(redis, PgDatabase::fresh()).await;
    // The deployment's consumer ran once (its group exists) and is stopped.
    {
        let (mut c, _) = s.consumer("audit-0", ConsumerConfig::default()).await;
        c.step(false).await.expect("a first step");
    }

    let sessions: Vec<String> = (0..20).map(|i| fixtures::uuid(0xE_0000 + i)).collect();
    let mut acked: BTreeSet<(String, i64)> = BTreeSet::new();
    for sid in &sessions {
        let body = fixtures::body(sid, "per_participant", 2, 600_000);
        acked.insert((
            sid.clone(),
            run(&s.engine, fixtures::create(&body).unwrap())
                .await
                .unwrap(),
        ));
        acked.insert((
            sid.clone(),
            run(&s.engine, Request::new(sid, Cmd::Start)).await.unwrap(),
        ));
    }
    // Switch round the sessions until Redis refuses: the streams grow, the
    // states do not.
    let refusal = 'fill: loop {
        for sid in &sessions {
            match run(&s.engine, switch(sid)).await {
                Ok(v) => {
                    acked.insert((sid.clone(), v));
                }
                Err(e) => break 'fill e,
            }
        }
        assert!(acked.len() < 200_000, "Redis never refused a write");
    };
    assert!(is_oom(&refusal), "refused for memory: {refusal}");
    assert!(redis_info(&s, "used_memory") > MAXMEMORY);
    // It stays refused: switches and creates alike, each one whole.
    for sid in sessions.iter().take(5) {
        let e = run(&s.engine, switch(sid)).await.unwrap_err();
        assert!(is_oom(&e), "{e}");
    }
    let newcomer = fixtures::uuid(0xE_1000);
    let body = fixtures::body(&newcomer, "per_participant", 2, 600_000);
    let e = run(&s.engine, fixtures::create(&body).unwrap())
        .await
        .unwrap_err();
    assert!(is_oom(&e), "{e}");
    assert!(
        s.engine.get(&newcomer).await.unwrap().is_none(),
        "a refused create leaves nothing"
    );
    // A delete still goes through (its first write frees memory, and Redis
    // never stops a script midway), with its audit event.
    let gone = sessions[0].clone();
    let version_before = s.engine.get(&gone).await.unwrap().unwrap().version as i64;
    assert_eq!(
        run(&s.engine, Request::new(&gone, Cmd::Delete))
            .await
            .unwrap(),
        -1
    );
    acked.insert((gone.clone(), version_before + 1));

    // Nothing acknowledged is missing from the streams, nothing refused
    // left an entry, and every state is at its last acknowledged version.
    assert_eq!(
        in_streams(&s),
        acked,
        "the streams hold exactly the acknowledged commands"
    );
    for sid in &sessions[1..] {
        let last = acked
            .iter()
            .filter(|(x, _)| x == sid)
            .map(|(_, v)| *v)
            .max()
            .unwrap();
        let st = s.engine.get(sid).await.unwrap().unwrap();
        assert_eq!(st.version as i64, last, "{sid}: state and stream agree");
    }

    // What an operator sees first: the backlog gauges (what the consumer's
    // /metrics reports once it runs) hold every entry, hours before memory
    // runs out in a real deployment.
    let probe = Streams::new(
        synckairos_audit_consumer::redis(&s.redis.url())
            .await
            .unwrap(),
        SHARDS,
        "audit",
        "probe",
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let backlog: Vec<ShardBacklog> = probe
        .info()
        .await
        .unwrap()
        .iter()
        .map(|i| ShardBacklog::of(i, "audit", now))
        .collect();
    assert_eq!(
        backlog.iter().map(|b| b.unacked).sum::<u64>(),
        acked.len() as u64,
        "stream_unacked counts every entry waiting: {backlog:?}"
    );
    assert!(backlog.iter().any(|b| b.lag_seconds > 0.0), "{backlog:?}");

    // The consumer starts: everything drains into PostgreSQL, trimming
    // frees the memory, and writes succeed again.
    let p = s.spawn("audit-0", &[]);
    s.wait_for(acked.len() as i64, Duration::from_secs(60))
        .await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while total_len(&s) > 0 {
        assert!(
            Instant::now() < deadline,
            "{} entries left untrimmed",
            total_len(&s)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let used = redis_info(&s, "used_memory");
    assert!(
        used < MAXMEMORY,
        "trimming freed memory: used_memory {used}"
    );
    let v = run(&s.engine, switch(&sessions[1]))
        .await
        .expect("writes succeed again");
    acked.insert((sessions[1].clone(), v));
    s.wait_for(acked.len() as i64, Duration::from_secs(5)).await;
    assert!(p.metric("synckairos_audit_trimmed_total").await >= (acked.len() - 1) as f64);
    let deadline = Instant::now() + Duration::from_secs(5);
    while total_len(&s) > 0 {
        assert!(Instant::now() < deadline, "the last entry is trimmed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.assert_exactly(&acked).await;
}
