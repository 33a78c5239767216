//! Shared set-up: a redis-server of the test's own, a fresh database, the
//! engine to make real audit entries, HTTP receivers on 127.0.0.1, and the
//! worker in-process.
#![allow(dead_code)]

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use synckairos_core::script::{CallOptions, Settings};
use synckairos_core::{Command as Cmd, Request};
use synckairos_engine::{fixtures, Engine};
use synckairos_testkit::{PgDatabase, RedisServer};
use synckairos_webhook_worker::metrics::Metrics;
use synckairos_webhook_worker::{config, Connections, WorkerConfig};

pub const SHARDS: u16 = 4;
/// A signing key of the tests (24 random bytes, base64).
pub const SECRET_A: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub const SECRET_B: &str = "whsec_c2Vjb25kLXJvdGF0ZWQta2V5LTMyLWJ5dGVz";
pub const ALL_EVENTS: &str =
    r#"["session_expired","session_completed","participant_switched","low_time_warning"]"#;

pub struct Stack {
    pub redis: RedisServer,
    pub db: PgDatabase,
    pub engine: Engine,
    pub pool: sqlx::PgPool,
}

pub async fn stack() -> Stack {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .try_init();
    }
    let redis = RedisServer::start();
    let db = PgDatabase::fresh();
    let engine = Engine::connect(&redis.url(), settings())
        .await
        .expect("engine");
    let pool = sqlx::PgPool::connect(db.url()).await.expect("postgres");
    synckairos_webhook_worker::queue::migrate(&pool)
        .await
        .expect("migrations");
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

pub fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

impl Stack {
    pub fn conns(&self) -> Connections {
        Connections::new(self.db.url(), &self.redis.url(), SHARDS)
    }

    /// Runs one command; returns the version it produced.
    pub async fn exec(&self, id: &str, c: Cmd) -> u64 {
        exec_on(&self.engine, id, c).await
    }

    /// Creates and starts session `n` (two participants, `bank_ms` each).
    pub async fn session(&self, n: u128, bank_ms: i64) -> String {
        let id = fixtures::uuid(0x5e55_0000 + n);
        let create = fixtures::create(&fixtures::body(&id, "per_participant", 2, bank_ms))
            .expect("valid body");
        self.engine
            .execute(&create, &CallOptions::default())
            .await
            .expect("create");
        self.exec(&id, Cmd::Start).await;
        id
    }

    /// `sessions` sessions, each started, switched `switches` times and
    /// completed: `switches + 1` webhook events each. Returns every
    /// (session, version) of those events.
    pub async fn play(&self, first: u128, sessions: usize, switches: usize) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        for i in 0..sessions {
            let id = self.session(first + i as u128, 600_000).await;
            for _ in 0..switches {
                let v = self.exec(&id, switch()).await;
                out.push((id.clone(), v));
            }
            let v = self.exec(&id, Cmd::Complete).await;
            out.push((id.clone(), v));
        }
        out
    }

    /// Appends an entry of type `t` for session `id` (its current state) to
    /// its shard's stream, with `extra` fields: what a script of the core
    /// writes (for types the core does not write yet).
    pub async fn xadd(&self, id: &str, t: &str, extra: &[(&str, String)]) -> String {
        let st = self.engine.get(id).await.unwrap().expect("a session");
        let mut conn = self.engine.connection();
        let shard = synckairos_core::keys::shard_of(id, SHARDS);
        let mut cmd = redis::cmd("XADD");
        cmd.arg(synckairos_core::keys::audit_stream(shard))
            .arg("*")
            .arg("type")
            .arg(t)
            .arg("sid")
            .arg(id)
            .arg("v")
            .arg(st.version)
            .arg("at")
            .arg(wall_ms());
        for (k, v) in extra {
            cmd.arg(*k).arg(v);
        }
        cmd.arg("snap").arg(synckairos_core::record::encode(&st));
        let entry: String = cmd.query_async(&mut conn).await.unwrap();
        format!("{shard}-{entry}")
    }

    /// Total entries in the shard streams.
    pub async fn stream_len(&self) -> u64 {
        let mut conn = self.engine.connection();
        let mut n = 0;
        for s in 0..SHARDS {
            let len: u64 = redis::cmd("XLEN")
                .arg(synckairos_core::keys::audit_stream(s))
                .query_async(&mut conn)
                .await
                .unwrap();
            n += len;
        }
        n
    }

    pub async fn queue_len(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM webhook_deliveries")
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    pub async fn dead_len(&self) -> u64 {
        let mut conn = self.engine.connection();
        redis::cmd("XLEN")
            .arg("sk:webhooks:dead")
            .query_async(&mut conn)
            .await
            .unwrap()
    }

    /// A worker running in-process (see [`Running`]).
    pub async fn worker(
        &self,
        name: &str,
        endpoints: &str,
        tweak: impl FnOnce(&mut WorkerConfig),
    ) -> Running {
        let mut cfg = test_config(name);
        tweak(&mut cfg);
        // The tests' receivers are local: the endpoints are read with the
        // guard off even where the worker then runs with it on (SSRF test).
        let eps = config::parse_endpoints(endpoints, true, &cfg).expect("endpoints");
        self.worker_with(cfg, eps).await
    }

    pub async fn worker_with(&self, cfg: WorkerConfig, eps: Vec<config::Endpoint>) -> Running {
        run_worker(&self.conns(), &cfg, eps).await
    }

    /// `webhook-worker <args>` on the test's redis-server, with extra
    /// environment: exit code, stdout, stderr.
    pub fn cli(&self, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
        worker_cli(
            self.db.url(),
            ("REDIS_URL", &self.redis.url()),
            SHARDS,
            args,
            env,
        )
    }
}

/// A worker on `conns` running in-process, its ops and metrics on free
/// ports (see [`Running`]).
pub async fn run_worker(
    conns: &Connections,
    cfg: &WorkerConfig,
    eps: Vec<config::Endpoint>,
) -> Running {
    let metrics = Arc::new(Metrics::new(eps.iter().map(|e| e.id.as_str())));
    let w = synckairos_webhook_worker::worker(conns, cfg, eps, metrics.clone())
        .await
        .expect("worker");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mlistener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ops_port = listener.local_addr().unwrap().port();
    let metrics_port = mlistener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(async move {
        synckairos_webhook_worker::run(
            w,
            listener,
            mlistener,
            Duration::from_secs(5),
            async move {
                let _ = rx.await;
            },
        )
        .await
        .expect("run");
    });
    Running {
        handle,
        stop: Some(tx),
        metrics,
        ops_port,
        metrics_port,
    }
}

/// `webhook-worker <args>` on the database `db_url` and the Redis that
/// `redis` names (one variable, `REDIS_URL` or `REDIS_CLUSTER_URLS`, and its
/// value; `REDIS_URL` is only ever the one it sets) with `shards` shards,
/// with extra environment: exit code, stdout, stderr.
pub fn worker_cli(
    db_url: &str,
    redis: (&str, &str),
    shards: u16,
    args: &[&str],
    env: &[(&str, &str)],
) -> (i32, String, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_webhook-worker"));
    cmd.args(args)
        .env_remove("REDIS_URL")
        .env("DATABASE_URL", db_url)
        .env(redis.0, redis.1)
        .env("SHARDS", shards.to_string())
        .env("RUST_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("the webhook-worker binary");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs one command on `engine`; returns the version it produced.
pub async fn exec_on(engine: &Engine, id: &str, c: Cmd) -> u64 {
    let reply = engine
        .execute(&Request::new(id, c), &CallOptions::default())
        .await
        .expect("redis");
    match reply.result.expect("accepted") {
        synckairos_core::model::Reply::State { state, .. } => state.version,
        other => panic!("unexpected {other:?}"),
    }
}

/// A switch to the next participant.
pub fn switch() -> Cmd {
    Cmd::Switch {
        next_participant_id: None,
    }
}

/// The tests' settings: local targets allowed, a short retry schedule,
/// short timeouts and leases.
pub fn test_config(name: &str) -> WorkerConfig {
    WorkerConfig {
        consumer_name: Some(name.into()),
        allow_local: true,
        retry_schedule: "0,50ms,100ms,150ms,200ms,200ms,200ms,200ms,200ms,200ms".into(),
        timeout_ms: 400,
        lease_ms: 2_000,
        poll_ms: 200,
        block_ms: 2_000,
        claim_idle_ms: 2_000,
        // No audit consumer runs in most tests: trim regardless (bound.rs
        // runs with the default).
        trim_after_group: String::new(),
        ..Default::default()
    }
}

pub struct Running {
    pub handle: tokio::task::JoinHandle<()>,
    pub stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub metrics: Arc<Metrics>,
    pub ops_port: u16,
    pub metrics_port: u16,
}

impl Running {
    /// Stops gracefully and waits.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(20), &mut self.handle)
            .await
            .expect("the worker stops within 20 s")
            .expect("the worker task");
    }

    /// Kills it: the task is dropped wherever it is.
    pub async fn kill(self) {
        self.handle.abort();
        let _ = self.handle.await;
    }
}

/// One endpoint's JSON.
pub fn endpoint(id: &str, url: &str, secrets: &[&str], events: &str) -> String {
    let secrets: Vec<String> = secrets.iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        r#"{{"id":"{id}","url":"{url}","secrets":[{}],"events":{events}}}"#,
        secrets.join(",")
    )
}

/// How a receiver answers its `n`-th request (from 0).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    Ok,
    /// Answers 2xx after this long (within the worker's timeout).
    OkAfter(Duration),
    Status(u16),
    RetryAfter(u16, u64),
    /// Answers 200 after this long (past the worker's timeout).
    Slow(Duration),
    Redirect(String),
}

/// One request a receiver got.
#[derive(Clone, Debug)]
pub struct Hit {
    pub at_ms: i64,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub answer: Answer,
}

impl Hit {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
    pub fn webhook_id(&self) -> String {
        self.headers["webhook-id"].to_str().unwrap().to_string()
    }
    pub fn session(&self) -> String {
        self.json()["data"]["session_id"]
            .as_str()
            .unwrap()
            .to_string()
    }
    pub fn version(&self) -> u64 {
        self.json()["data"]["version"].as_u64().unwrap()
    }
    /// Answered 2xx in time.
    pub fn delivered(&self) -> bool {
        matches!(self.answer, Answer::Ok | Answer::OkAfter(_))
    }
}

type Script = Arc<dyn Fn(usize) -> Answer + Send + Sync>;

/// An HTTP receiver on 127.0.0.1 that records every request.
#[derive(Clone)]
pub struct Receiver {
    pub port: u16,
    pub hits: Arc<Mutex<Vec<Hit>>>,
    script: Arc<Mutex<Script>>,
}

impl Receiver {
    pub async fn start(script: impl Fn(usize) -> Answer + Send + Sync + 'static) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let r = Receiver {
            port,
            hits: Arc::new(Mutex::new(Vec::new())),
            script: Arc::new(Mutex::new(Arc::new(script))),
        };
        let state = r.clone();
        let app = axum::Router::new()
            .fallback(
                |axum::extract::State(s): axum::extract::State<Receiver>,
                 headers: HeaderMap,
                 body: Bytes| async move { s.handle(headers, body).await },
            )
            .with_state(state);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        r
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    pub fn set(&self, script: impl Fn(usize) -> Answer + Send + Sync + 'static) {
        *self.script.lock().unwrap() = Arc::new(script);
    }

    async fn handle(&self, headers: HeaderMap, body: Bytes) -> Response {
        let at_ms = wall_ms();
        let (n, script) = {
            let hits = self.hits.lock().unwrap();
            (hits.len(), self.script.lock().unwrap().clone())
        };
        let answer = script(n);
        self.hits.lock().unwrap().push(Hit {
            at_ms,
            headers,
            body,
            answer: answer.clone(),
        });
        match answer {
            Answer::Ok => StatusCode::NO_CONTENT.into_response(),
            Answer::OkAfter(d) => {
                tokio::time::sleep(d).await;
                StatusCode::OK.into_response()
            }
            Answer::Status(s) => StatusCode::from_u16(s).unwrap().into_response(),
            Answer::RetryAfter(s, secs) => (
                StatusCode::from_u16(s).unwrap(),
                [("retry-after", secs.to_string())],
            )
                .into_response(),
            Answer::Slow(d) => {
                tokio::time::sleep(d).await;
                StatusCode::OK.into_response()
            }
            Answer::Redirect(to) => {
                (StatusCode::FOUND, [("location", to)], "moved").into_response()
            }
        }
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    /// Waits until `done(hits)` holds (fails after `within`).
    pub async fn wait(&self, within: Duration, what: &str, done: impl Fn(&[Hit]) -> bool) {
        let deadline = Instant::now() + within;
        loop {
            if done(&self.hits()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not after {within:?} ({} hits)",
                self.hits().len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The webhook-ids delivered (answered 2xx in time), with how many times.
pub fn delivered_ids(hits: &[Hit]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for h in hits.iter().filter(|h| h.delivered()) {
        *m.entry(h.webhook_id()).or_insert(0) += 1;
    }
    m
}

/// Every distinct webhook-id that arrived.
pub fn arrived_ids(hits: &[Hit]) -> BTreeSet<String> {
    hits.iter().map(Hit::webhook_id).collect()
}

/// Asserts that per session the versions arrive in order: a retry repeats
/// the version in flight, and none goes back once a later one arrived.
pub fn assert_in_order(hits: &[Hit]) {
    let mut last: BTreeMap<String, u64> = BTreeMap::new();
    for h in hits {
        let (s, v) = (h.session(), h.version());
        if let Some(prev) = last.get(&s) {
            assert!(
                v >= *prev,
                "session {s}: version {v} arrived after version {prev}"
            );
        }
        last.insert(s, v);
    }
}

/// Waits until `cond` holds.
pub async fn until<F, Fut>(within: Duration, what: &str, cond: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !cond().await {
        assert!(Instant::now() < deadline, "{what}: not after {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A plain HTTP GET on 127.0.0.1 (status line and body).
pub async fn http_get(port: u16, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// Percentile of sorted values.
pub fn pct(sorted: &[i64], p: f64) -> i64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Waits until a process serving `/ready` on `port` answers 200 (30 s at
/// most; `log` is shown on failure).
pub async fn wait_ready(port: u16, log: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let up = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
            && http_get(port, "/ready").await.starts_with("HTTP/1.1 200");
        if up {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not ready: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
