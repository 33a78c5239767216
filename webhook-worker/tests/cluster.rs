//! The webhook worker on a Redis Cluster (testkit's `RedisCluster`: 3
//! primaries, 3 replicas), declared with `REDIS_CLUSTER_URLS`: events of
//! every shard (so of all three primaries) are delivered once each, the
//! entries are acknowledged per slot and trimmed only once the audit
//! consumer's group exists there, deliveries whose endpoint is down end in
//! `sk:webhooks:dead` (one key, in its own slot), and `dlq list` and
//! `dlq replay` read and replay them there.

mod common;

use common::{
    delivered_ids, endpoint, exec_on, http_get, run_worker, switch, test_config, until, worker_cli,
    Answer, Receiver, Running, ALL_EVENTS, SECRET_A,
};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use synckairos_core::keys;
use synckairos_core::script::{CallOptions, Settings};
use synckairos_core::Command as Cmd;
use synckairos_engine::{fixtures, Engine, RedisTarget};
use synckairos_testkit::{ids_on_every_shard, PgDatabase, RedisCluster};
use synckairos_webhook_worker::{config, Connections};

const SHARDS: u16 = 16;

fn settings() -> Settings {
    Settings {
        shards: SHARDS,
        switch_limit: 0,
        ..Default::default()
    }
}

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
    let pool = sqlx::PgPool::connect(db.url()).await.expect("postgres");
    synckairos_webhook_worker::queue::migrate(&pool)
        .await
        .expect("migrations");
    Env {
        cluster,
        db,
        engine,
        pool,
    }
}

impl Env {
    /// A worker on the cluster, running in-process.
    async fn worker(&self, name: &str, endpoints: &str, schedule: &str) -> Running {
        let mut cfg = test_config(name);
        cfg.retry_schedule = schedule.into();
        // As deployed: trim only where the audit consumer's group exists.
        cfg.trim_after_group = "audit".into();
        let eps = config::parse_endpoints(endpoints, true, &cfg).expect("endpoints");
        let conns = Connections::cluster(self.db.url(), &self.cluster.seed_urls(), SHARDS);
        run_worker(&conns, &cfg, eps).await
    }

    /// `webhook-worker <args>` on the cluster (`REDIS_CLUSTER_URLS`).
    fn cli(&self, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
        worker_cli(
            self.db.url(),
            ("REDIS_CLUSTER_URLS", &self.cluster.seed_urls().join(",")),
            SHARDS,
            args,
            env,
        )
    }

    async fn xlen(&self, key: &str) -> u64 {
        let mut conn = self.engine.connection();
        redis::cmd("XLEN")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap()
    }

    /// Entries pending in the worker's group, over every shard.
    async fn pending(&self) -> u64 {
        let mut conn = self.engine.connection();
        let mut n = 0;
        for s in 0..SHARDS {
            let p: redis::streams::StreamPendingReply = redis::cmd("XPENDING")
                .arg(keys::audit_stream(s))
                .arg("webhooks")
                .query_async(&mut conn)
                .await
                .unwrap();
            n += p.count() as u64;
        }
        n
    }

    /// Creates `group` on every shard stream, at `from`.
    async fn create_group(&self, group: &str, from: &str) {
        let mut conn = self.engine.connection();
        for s in 0..SHARDS {
            let _: () = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(keys::audit_stream(s))
                .arg(group)
                .arg(from)
                .query_async(&mut conn)
                .await
                .unwrap();
        }
    }

    async fn queue_len(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM webhook_deliveries")
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    async fn create(&self, sid: &str) {
        let create = fixtures::create(&fixtures::body(sid, "per_participant", 2, 600_000))
            .expect("valid body");
        self.engine
            .execute(&create, &CallOptions::default())
            .await
            .expect("create")
            .result
            .expect("created");
    }

    async fn exec(&self, sid: &str, c: Cmd) -> u64 {
        exec_on(&self.engine, sid, c).await
    }
}

/// One session id on every shard (ids from `base`).
fn one_session_per_shard(base: u128) -> Vec<String> {
    ids_on_every_shard(
        SHARDS,
        1,
        |n| fixtures::uuid(base + n),
        |sid| keys::shard_of(sid, SHARDS),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shards_events_are_delivered_once_and_dead_letters_replay_on_a_cluster() {
    let e = env().await;
    let primaries = e
        .cluster
        .primaries_of_keys((0..SHARDS).map(keys::audit_stream));
    assert_eq!(primaries.len(), 3, "the shards are spread over 3 primaries");
    let dead_primary = e.cluster.primary_of_key("sk:webhooks:dead");
    assert!(primaries.contains(&dead_primary));

    let ok = Receiver::start(|_| Answer::Ok).await;
    let down = Receiver::start(|_| Answer::Status(503)).await;
    let eps = format!(
        "[{},{}]",
        endpoint("ok", &ok.url(), &[SECRET_A], ALL_EVENTS),
        endpoint("down", &down.url(), &[SECRET_A], ALL_EVENTS)
    );
    // Three attempts, then the dead letters.
    let w = e.worker("cl", &eps, "0,30ms,60ms").await;

    // Each session: two switches and a completion, 3 events; one session
    // per shard.
    let sessions = one_session_per_shard(0xC3_0000);
    let t = Instant::now();
    let mut events = BTreeSet::new();
    for sid in &sessions {
        e.create(sid).await;
        e.exec(sid, Cmd::Start).await;
        for _ in 0..2 {
            let v = e.exec(sid, switch()).await;
            events.insert((sid.clone(), v));
        }
        events.insert((sid.clone(), e.exec(sid, Cmd::Complete).await));
    }
    let first = events.len();
    ok.wait(Duration::from_secs(60), "every event delivered", |h| {
        delivered_ids(h).len() == first
    })
    .await;
    eprintln!(
        "{first} events of {} shards over 3 primaries delivered in {:?}",
        SHARDS,
        t.elapsed()
    );
    let hits = ok.hits();
    assert!(delivered_ids(&hits).values().all(|c| *c == 1), "each once");
    let got: BTreeSet<(String, u64)> = hits.iter().map(|h| (h.session(), h.version())).collect();
    assert_eq!(got, events);
    let shards: BTreeSet<u16> = hits
        .iter()
        .map(|h| {
            let id = h.webhook_id();
            id.trim_start_matches("evt_")
                .split('-')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert_eq!(shards.len(), SHARDS as usize, "events of every shard");

    // Acknowledged on every shard, and nothing trimmed: the audit
    // consumer's group does not exist yet (5 entries a shard: create,
    // start, 2 switches, complete).
    until(
        Duration::from_secs(30),
        "every entry acknowledged",
        || async { e.pending().await == 0 },
    )
    .await;
    for s in 0..SHARDS {
        assert_eq!(e.xlen(&keys::audit_stream(s)).await, 5, "shard {s}");
    }
    // The audit consumer's group appears (at the streams' ends): the next
    // acknowledgements trim every shard up to it. A new session per shard:
    // create, start and a switch (3 entries, 1 event).
    e.create_group("audit", "$").await;
    for sid in &one_session_per_shard(0xC4_0000) {
        e.create(sid).await;
        e.exec(sid, Cmd::Start).await;
        let v = e.exec(sid, switch()).await;
        events.insert((sid.clone(), v));
    }
    let n = events.len();
    ok.wait(Duration::from_secs(60), "every new event delivered", |h| {
        delivered_ids(h).len() == n
    })
    .await;
    until(
        Duration::from_secs(30),
        "every shard stream trimmed",
        || async {
            for s in 0..SHARDS {
                if e.xlen(&keys::audit_stream(s)).await != 3 {
                    return false;
                }
            }
            true
        },
    )
    .await;

    // The endpoint that is down: every delivery ends in the dead letters.
    until(
        Duration::from_secs(60),
        "every dead letter written",
        || async { e.xlen("sk:webhooks:dead").await == n as u64 },
    )
    .await;
    until(Duration::from_secs(30), "the queue empty", || async {
        e.queue_len().await == 0
    })
    .await;
    let ready = http_get(w.ops_port, "/ready").await;
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");

    // `dlq list` and `dlq replay` on the cluster.
    let (code, out, err) = e.cli(
        &["dlq", "list", "--endpoint", "down", "--limit", "1000"],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), n, "{out}");
    down.set(|_| Answer::Ok);
    let env = [
        ("WEBHOOK_ENDPOINTS", eps.as_str()),
        ("WEBHOOK_ALLOW_LOCAL", "true"),
    ];
    let (code, out, err) = e.cli(&["dlq", "replay", "--all", "--endpoint", "down"], &env);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.matches("\"queued\"").count(), n, "{out}");
    assert_eq!(e.xlen("sk:webhooks:dead").await, 0);
    down.wait(Duration::from_secs(60), "every replay delivered", |h| {
        delivered_ids(h).len() == n
    })
    .await;
    assert!(delivered_ids(&down.hits()).values().all(|c| *c == 1));
    w.shutdown().await;
}
