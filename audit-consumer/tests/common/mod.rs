//! Shared set-up: a redis-server of the test's own, a fresh database, the
//! engine to make real events, and the consumer in-process or as a process.
#![allow(dead_code)]

use futures::stream::{self, StreamExt};
use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use synckairos_audit_consumer::{db, metrics::Metrics, Connections, Consumer, ConsumerConfig};
use synckairos_core::script::{CallOptions, Settings};
use synckairos_core::{Command as Cmd, Request};
use synckairos_engine::{fixtures, Engine};
use synckairos_testkit::{free_port, PgDatabase, RedisServer};

pub const SHARDS: u16 = 16;

pub struct Stack {
    pub redis: RedisServer,
    pub db: PgDatabase,
    pub engine: Engine,
    pub pool: sqlx::PgPool,
}

pub async fn stack() -> Stack {
    let redis = RedisServer::start();
    let db = PgDatabase::fresh();
    stack_on(redis, db).await
}

pub async fn stack_on(redis: RedisServer, db: PgDatabase) -> Stack {
    let engine = Engine::connect(&redis.url(), settings())
        .await
        .expect("engine");
    let pool = sqlx::PgPool::connect(db.url()).await.expect("postgres");
    db::migrate(&pool).await.expect("migrations");
    Stack {
        redis,
        db,
        engine,
        pool,
    }
}

pub fn settings() -> Settings {
    Settings {
        shards: SHARDS,
        switch_limit: 0,
        ..Default::default()
    }
}

impl Stack {
    /// The test's redis-server, as a [`synckairos_engine::RedisTarget`].
    pub fn target(&self) -> synckairos_engine::RedisTarget {
        synckairos_engine::RedisTarget::Single(self.redis.url())
    }

    pub fn conns(&self) -> Connections {
        Connections::new(self.db.url(), &self.redis.url(), SHARDS)
    }

    /// An in-process consumer.
    pub async fn consumer(&self, name: &str, cfg: ConsumerConfig) -> (Consumer, Arc<Metrics>) {
        let m = Arc::new(Metrics::new());
        let cfg = ConsumerConfig {
            consumer_name: Some(name.into()),
            ..cfg
        };
        let c = synckairos_audit_consumer::consumer(&self.conns(), cfg, m.clone())
            .await
            .expect("consumer");
        (c, m)
    }

    /// The consumer binary, with extra environment.
    pub fn spawn(&self, name: &str, env: &[(&str, &str)]) -> Proc {
        spawn_consumer(
            self.db.url(),
            ("REDIS_URL", &self.redis.url()),
            "info",
            name,
            env,
        )
    }

    pub async fn count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM sync_events")
            .fetch_one(&self.pool)
            .await
            .expect("count")
    }

    /// Waits until `sync_events` has `n` rows (fails after `within`).
    pub async fn wait_for(&self, n: i64, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let c = self.count().await;
            if c >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "only {c} of {n} events in PostgreSQL after {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every (session, version) in `sync_events`, and the row count.
    pub async fn stored(&self) -> (BTreeSet<(String, i64)>, i64) {
        stored_in(&self.pool).await
    }

    /// Asserts PostgreSQL holds exactly `expected`, each once, and that no
    /// shard stream has anything left unacknowledged.
    pub async fn assert_exactly(&self, expected: &BTreeSet<(String, i64)>) {
        let (got, n) = self.stored().await;
        assert_eq!(n as usize, got.len(), "an event is stored twice");
        let missing: Vec<_> = expected.difference(&got).take(5).collect();
        let extra: Vec<_> = got.difference(expected).take(5).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "missing {missing:?}, unexpected {extra:?} ({} stored, {} expected)",
            got.len(),
            expected.len()
        );
        let mut conn = self.redis.client().get_connection().expect("redis");
        for s in 0..SHARDS {
            let key = synckairos_core::keys::audit_stream(s);
            let len: u64 = redis::cmd("XLEN").arg(&key).query(&mut conn).expect("xlen");
            assert_eq!(len, 0, "shard {s} still has {len} entries");
        }
    }
}

/// The consumer binary (`run`) on the database `db_url` and the Redis that
/// `redis` (one variable, e.g. `REDIS_URL` or `REDIS_CLUSTER_URLS`, and its
/// value) names, logging at `rust_log`, with extra environment. `REDIS_URL`
/// is only ever the one `redis` sets.
pub fn spawn_consumer(
    db_url: &str,
    redis: (&str, &str),
    rust_log: &str,
    name: &str,
    env: &[(&str, &str)],
) -> Proc {
    let (port, metrics_port) = (free_port(), free_port());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_audit-consumer"));
    cmd.arg("run")
        .env_remove("REDIS_URL")
        .env("DATABASE_URL", db_url)
        .env(redis.0, redis.1)
        .env("SHARDS", SHARDS.to_string())
        .env("CONSUMER_NAME", name)
        .env("LISTEN", format!("127.0.0.1:{port}"))
        .env("METRICS_LISTEN", format!("127.0.0.1:{metrics_port}"))
        .env("RUST_LOG", rust_log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    Proc {
        child: cmd.spawn().expect("audit-consumer binary"),
        port,
        metrics_port,
    }
}

/// Every (session, version) in `sync_events`, and the row count.
pub async fn stored_in(pool: &sqlx::PgPool) -> (BTreeSet<(String, i64)>, i64) {
    let rows: Vec<(String, i64)> = sqlx::query_as("SELECT session_id, version FROM sync_events")
        .fetch_all(pool)
        .await
        .expect("events");
    let n = rows.len() as i64;
    (rows.into_iter().collect(), n)
}

/// A switch to the next participant.
pub fn switch(sid: &str) -> Request {
    Request::new(
        sid,
        Cmd::Switch {
            next_participant_id: None,
        },
    )
}

pub struct Proc {
    pub child: Child,
    /// `/health` and `/ready`.
    pub port: u16,
    /// `/metrics`.
    pub metrics_port: u16,
}

impl Proc {
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn term(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().expect("wait")
    }

    pub async fn metric(&self, name: &str) -> f64 {
        let body = http_get(self.metrics_port, "/metrics").await;
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no metric {name} in:\n{body}"))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Waits until the process answers `/ready` with 200.
pub async fn wait_ready(p: &Proc) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = http_get(p.port, "/ready").await;
        if r.starts_with("HTTP/1.1 200") {
            return;
        }
        assert!(Instant::now() < deadline, "not ready in 30 s: {r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A plain HTTP GET on 127.0.0.1 (status line and body).
pub async fn http_get(port: u16, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            if s.write_all(req.as_bytes()).await.is_ok() {
                let mut out = String::new();
                if s.read_to_string(&mut out).await.is_ok() && !out.is_empty() {
                    return out;
                }
            }
        }
        assert!(Instant::now() < deadline, "no HTTP answer on {port}{path}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs `sessions` sessions through create, start and `switches` switches
/// (concurrently), and returns every (session, version) they produced.
pub async fn play(
    engine: &Engine,
    first: u128,
    sessions: usize,
    switches: usize,
) -> BTreeSet<(String, i64)> {
    let ids: Vec<String> = (0..sessions)
        .map(|i| fixtures::uuid(first + i as u128))
        .collect();
    let per: Vec<BTreeSet<(String, i64)>> = stream::iter(ids)
        .map(|id| async move {
            let mut got = BTreeSet::new();
            let create = fixtures::create(&fixtures::body(&id, "per_participant", 2, 600_000))
                .expect("valid body");
            let mut reqs = vec![create, Request::new(&id, Cmd::Start)];
            for _ in 0..switches {
                reqs.push(switch(&id));
            }
            for r in reqs {
                let reply = engine
                    .execute(&r, &CallOptions::default())
                    .await
                    .expect("redis");
                match reply.result.expect("accepted") {
                    synckairos_core::model::Reply::State { state, .. } => {
                        got.insert((id.clone(), state.version as i64));
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            got
        })
        .buffer_unordered(32)
        .collect()
        .await;
    per.into_iter().flatten().collect()
}

/// Steps an in-process consumer until `stack` holds `n` events and a step
/// finds nothing left (dead letters and acknowledgements included).
pub async fn drain(c: &mut Consumer, stack: &Stack, n: i64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while stack.count().await < n {
        c.step(false).await.expect("step");
        assert!(Instant::now() < deadline, "not drained in 60 s");
    }
    while c.step(false).await.expect("step").batch > 0 {
        assert!(Instant::now() < deadline, "not idle in 60 s");
    }
}
