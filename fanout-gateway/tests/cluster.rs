//! The gateway on a Redis Cluster (testkit's `RedisCluster`: 3 primaries, 3
//! replicas), configured by `REDIS_CLUSTER_URLS`: two gateways fan out the
//! switches of sessions spread over all three primaries (made through the
//! engine and through the gateway's REST API); the one lease holder expires
//! sessions on every shard at their deadlines; a gateway carries on after
//! the primary its subscriber is linked to is killed.
//!
//! Run with `--nocapture` to see the lateness.

use futures::StreamExt;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use synckairos_core::keys::SessionKeys;
use synckairos_core::script::{CallOptions, Settings};
use synckairos_core::validate::validate_create;
use synckairos_core::{Command, Request};
use synckairos_engine::{Engine, RedisTarget};
use synckairos_fanout_gateway::{run, Config};
use synckairos_testkit::RedisCluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

fn settings() -> Settings {
    Settings {
        switch_limit: 0,
        ..Settings::default()
    }
}

struct Gateway {
    addr: std::net::SocketAddr,
    metrics: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Gateway {
    /// A gateway on the cluster whose seeds are `seeds` (the first is the
    /// node its subscriber links to first).
    async fn start(seeds: &[String]) -> Gateway {
        let seeds = seeds.join(",");
        let config = Config::from_lookup(|name| match name {
            "REDIS_CLUSTER_URLS" => Some(seeds.clone()),
            "AUTH_MODE" => Some("disabled".into()),
            "SWITCH_RATE_LIMIT" => Some("0".into()),
            "CONNECTIONS_PER_IP_PER_SECOND" => Some("0".into()),
            "IP_RATE_LIMIT" => Some("0".into()),
            _ => None,
        })
        .expect("config");
        assert!(config.redis.is_cluster());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let metrics = metrics_listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let done = tokio::spawn(run(listener, metrics_listener, config, async move {
            let _ = stopped.await;
        }));
        let gw = Gateway {
            addr,
            metrics,
            stop: Some(stop),
            done,
        };
        assert!(
            gw.wait_ready(Duration::from_secs(10)).await.is_some(),
            "the gateway did not become ready"
        );
        gw
    }

    /// How long until `/ready` says ready (`None`: not within `limit`).
    async fn wait_ready(&self, limit: Duration) -> Option<Duration> {
        let t = Instant::now();
        while t.elapsed() < limit {
            if let Ok(r) = http(self.addr, "GET", "/ready", None).await {
                if r.contains("\"ready\"") {
                    return Some(t.elapsed());
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        None
    }

    async fn connect(&self, sid: &str) -> Ws {
        let (mut ws, _) =
            tokio_tungstenite::connect_async(format!("ws://{}/ws?sessionId={sid}", self.addr))
                .await
                .expect("websocket connects");
        // Usually a STATE_SYNC; a STATE_UPDATE of the same state when the
        // cluster bus brought the create's publish to the subscriber's node
        // after the subscription (it is not ordered with the script's
        // reply), and the hub delivered it first.
        let first = version_at_least(&mut ws, 1, Duration::from_secs(5)).await;
        assert!(
            first["type"] == "STATE_SYNC" || first["type"] == "STATE_UPDATE",
            "{first}"
        );
        ws
    }

    /// A counter or gauge of `/metrics`.
    async fn metric(&self, name: &str) -> f64 {
        let text = http(self.metrics, "GET", "/metrics", None)
            .await
            .expect("/metrics");
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /metrics"))
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(10), self.done)
            .await
            .expect("the gateway stops")
            .unwrap()
            .unwrap();
    }
}

/// A plain HTTP/1.1 request (status line, headers and body).
async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> std::io::Result<String> {
    let mut s = TcpStream::connect(addr).await?;
    let body = body.unwrap_or("");
    s.write_all(
        format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
        .await
        .map_err(|_| std::io::Error::other("timeout"))??;
    Ok(out)
}

fn uuid(n: u64) -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    format!("{:08x}-0000-4000-8000-{:012x}", n, t & 0xffff_ffff_ffff)
}

/// One session on every shard (so on all three primaries), `tag` apart.
fn sessions_on_every_shard(tag: u64) -> Vec<String> {
    let shards = settings().shards;
    let mut by_shard = std::collections::BTreeMap::new();
    let mut n = 0;
    while by_shard.len() < shards as usize {
        n += 1;
        let sid = uuid((tag << 16) + n);
        by_shard
            .entry(SessionKeys::new(&sid, shards).shard)
            .or_insert(sid);
    }
    by_shard.into_values().collect()
}

fn primary_of(cluster: &RedisCluster, sid: &str) -> u16 {
    cluster.primary_of_key(&SessionKeys::new(sid, settings().shards).state)
}

async fn engine(cluster: &RedisCluster) -> Engine {
    Engine::connect_target(&RedisTarget::Cluster(cluster.seed_urls()), settings())
        .await
        .expect("engine on the cluster")
}

async fn create(e: &Engine, sid: &str, bank_ms: i64) {
    let body = json!({"session_id": sid, "sync_mode": "per_participant", "total_time_ms": bank_ms,
        "participants": [
            {"participant_id": uuid(0xa), "participant_index": 0, "total_time_ms": bank_ms},
            {"participant_id": uuid(0xb), "participant_index": 1, "total_time_ms": bank_ms}]});
    let spec = validate_create(&body).unwrap();
    exec(e, sid, Command::Create(Box::new(spec)))
        .await
        .expect("create");
}

/// One engine call; the new version, or the error (Redis or refusal).
async fn exec(e: &Engine, sid: &str, c: Command) -> Result<u64, String> {
    let r = e
        .execute(&Request::new(sid, c), &CallOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    match r.result {
        Ok(synckairos_core::model::Reply::State { state, .. }) => Ok(state.version),
        Ok(_) => Ok(0),
        Err(err) => Err(err.to_string()),
    }
}

fn switch() -> Command {
    Command::Switch {
        next_participant_id: None,
    }
}

/// Reads until a state message (`STATE_SYNC` or `STATE_UPDATE`) of at least
/// `version` arrives, within `limit`.
async fn version_at_least(ws: &mut Ws, version: u64, limit: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let m = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| panic!("no state of version >= {version} within {limit:?}"))
            .expect("the socket is open")
            .expect("a frame");
        if let Message::Text(t) = m {
            let v: Value = serde_json::from_str(&t).expect("JSON");
            if v["state"]["version"].as_u64().is_some_and(|x| x >= version) {
                return v;
            }
        }
    }
}

/// Reads until the session's state says `expired`; returns when.
async fn until_expired(ws: &mut Ws, limit: Duration) -> Instant {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let m = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| panic!("not expired within {limit:?}"))
            .expect("the socket is open")
            .expect("a frame");
        if let Message::Text(t) = m {
            let v: Value = serde_json::from_str(&t).expect("JSON");
            if v["state"]["status"] == "expired" {
                return Instant::now();
            }
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_fan_out_switches_on_every_primary() {
    let cluster = RedisCluster::start();
    let e = engine(&cluster).await;
    let seeds = cluster.seed_urls();
    let g1 = Gateway::start(&seeds).await;
    // The second links its subscriber to another node.
    let mut rotated = seeds.clone();
    rotated.rotate_left(1);
    let g2 = Gateway::start(&rotated).await;
    let sessions = sessions_on_every_shard(1);
    let primaries: BTreeSet<u16> = sessions.iter().map(|s| primary_of(&cluster, s)).collect();
    assert_eq!(
        primaries.len(),
        3,
        "the sessions are on all three primaries"
    );
    let mut sockets = Vec::new();
    for sid in &sessions {
        create(&e, sid, 600_000).await;
        exec(&e, sid, Command::Start).await.expect("start");
        sockets.push((g1.connect(sid).await, g2.connect(sid).await));
    }
    for round in 0..4 {
        for (i, sid) in sessions.iter().enumerate() {
            // Through the engine, or through either gateway's REST API.
            let version = match (round + i) % 3 {
                0 => exec(&e, sid, switch()).await.expect("switch"),
                k => {
                    let gw = if k == 1 { &g1 } else { &g2 };
                    let r = http(
                        gw.addr,
                        "POST",
                        &format!("/v1/sessions/{sid}/switch"),
                        Some("{}"),
                    )
                    .await
                    .expect("REST switch");
                    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
                    let body: Value =
                        serde_json::from_str(r.split("\r\n\r\n").nth(1).unwrap()).expect("JSON");
                    body["data"]["version"]
                        .as_u64()
                        .or_else(|| body["version"].as_u64())
                        .unwrap_or_else(|| panic!("no version in {body}"))
                }
            };
            let (a, b) = &mut sockets[i];
            for ws in [a, b] {
                let m = version_at_least(ws, version, Duration::from_secs(5)).await;
                assert_eq!(m["type"], "STATE_UPDATE", "{m}");
                assert_eq!(m["state"]["version"].as_u64(), Some(version), "{m}");
            }
        }
    }
    g1.stop().await;
    g2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_holder_expires_sessions_on_every_shard_at_their_deadlines() {
    let cluster = RedisCluster::start();
    let e = engine(&cluster).await;
    let seeds = cluster.seed_urls();
    let g1 = Gateway::start(&seeds).await;
    let mut rotated = seeds.clone();
    rotated.rotate_left(2);
    let g2 = Gateway::start(&rotated).await;
    // Two sessions per shard, their banks staggered 1.5 s to 3 s.
    let mut sessions: Vec<(String, i64)> = Vec::new();
    for tag in 0..2u64 {
        for (i, sid) in sessions_on_every_shard(10 + tag).into_iter().enumerate() {
            sessions.push((sid, 1_500 + (tag as i64 * 16 + i as i64) * 47));
        }
    }
    let mut watching = Vec::new();
    for (sid, bank) in &sessions {
        create(&e, sid, *bank).await;
        watching.push(g2.connect(sid).await);
    }
    let mut started = Vec::new();
    for (sid, _) in &sessions {
        started.push(Instant::now());
        exec(&e, sid, Command::Start).await.expect("start");
    }
    let mut lateness: Vec<f64> = Vec::new();
    for (i, ws) in watching.iter_mut().enumerate() {
        let at = until_expired(ws, Duration::from_secs(15)).await;
        let deadline = started[i] + Duration::from_millis(sessions[i].1 as u64);
        lateness.push(at.saturating_duration_since(deadline).as_secs_f64() * 1000.0);
    }
    lateness.sort_by(f64::total_cmp);
    let (p50, p99, max) = (
        percentile(&lateness, 0.5),
        percentile(&lateness, 0.99),
        lateness[lateness.len() - 1],
    );
    println!(
        "expiry on the cluster: {} sessions on {} shards, lateness p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms",
        sessions.len(),
        settings().shards
    );
    assert!(p99 < 1_000.0, "p99 lateness {p99} ms");
    // One lease holder applied them all.
    let leaders = (
        g1.metric("synckairos_gateway_expiry_leader").await,
        g2.metric("synckairos_gateway_expiry_leader").await,
    );
    let expired = (
        g1.metric("synckairos_gateway_expired_total").await,
        g2.metric("synckairos_gateway_expired_total").await,
    );
    assert_eq!(leaders.0 + leaders.1, 1.0, "one holder: {leaders:?}");
    let (holder, other) = if leaders.0 == 1.0 {
        (expired.0, expired.1)
    } else {
        (expired.1, expired.0)
    };
    assert_eq!(
        (holder, other),
        (sessions.len() as f64, 0.0),
        "the holder expired every session"
    );
    g1.stop().await;
    g2.stop().await;
}

/// A primary killed under a gateway, with a second engine switching sessions
/// on every primary: the replica is promoted, switches succeed again, every
/// client gets them, `/ready` comes back and sessions due after the kill
/// expire on time, all within [`RECOVERY`] of the kill. A failover under
/// this load can wedge redis-rs's cluster connection in a slot refresh
/// (DESIGN §7); the engine's watchdog then rebuilds it, which the run
/// prints (`rebuilds`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_carries_on_after_its_subscribers_primary_is_killed() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let cluster = RedisCluster::start();
    let e = engine(&cluster).await;
    // The subscriber links to the first seed: a primary.
    let sessions = sessions_on_every_shard(20);
    let victim = primary_of(&cluster, &sessions[0]);
    let mut seeds = vec![format!("redis://127.0.0.1:{victim}/")];
    seeds.extend(
        cluster
            .seed_urls()
            .into_iter()
            .filter(|s| !s.contains(&format!(":{victim}/"))),
    );
    let gw = Gateway::start(&seeds).await;
    let mut sockets = Vec::new();
    let mut versions = Vec::new();
    for sid in &sessions {
        create(&e, sid, 600_000).await;
        versions.push(exec(&e, sid, Command::Start).await.expect("start"));
        sockets.push(gw.connect(sid).await);
    }
    let subscribers = pubsub_clients(victim);
    assert!(
        subscribers > 0,
        "the gateway's subscriber is linked to {victim}"
    );
    let on_victim: Vec<usize> = (0..sessions.len())
        .filter(|&i| primary_of(&cluster, &sessions[i]) == victim)
        .collect();
    assert!(!on_victim.is_empty());
    // Sessions whose banks run out after the kill, on every shard.
    let expiring = sessions_on_every_shard(21);
    let mut expiring_ws = Vec::new();
    for sid in &expiring {
        create(&e, sid, 6_000).await;
        expiring_ws.push(gw.connect(sid).await);
    }
    for sid in &expiring {
        exec(&e, sid, Command::Start).await.expect("start");
    }
    let slot = cluster.slot_of(&SessionKeys::new(&sessions[on_victim[0]], 16).state);

    // Load through the test's engine across the kill: four callers switching
    // the sessions on every primary back to back. What they count is the
    // window as a client sees it.
    let stop_load = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = (0..4)
        .map(|k| {
            let (e, stop, sessions) = (e.clone(), Arc::clone(&stop_load), sessions.clone());
            tokio::spawn(async move {
                let mut seen = Load::default();
                let mut i = k;
                while !stop.load(Relaxed) {
                    let sid = &sessions[i % sessions.len()];
                    i += 1;
                    match exec(&e, sid, switch()).await {
                        Ok(_) => seen.ok += 1,
                        Err(_) => {
                            seen.failed += 1;
                            seen.last_failure = Some(Instant::now());
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
                seen
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let killed = Instant::now();
    // /ready, watched from the kill: when it went down and came back.
    let addr = gw.addr;
    let readiness = tokio::spawn(async move {
        let mut down = None;
        while killed.elapsed() < RECOVERY {
            let ok = http(addr, "GET", "/ready", None)
                .await
                .is_ok_and(|r| r.contains("\"ready\""));
            match (ok, down) {
                (false, None) => down = Some(killed.elapsed()),
                (true, Some(d)) => return (Some(d), killed.elapsed()),
                _ => {}
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        (down, killed.elapsed())
    });
    cluster.kill(victim);
    let promoted =
        tokio::task::block_in_place(|| cluster.wait_for_failover(slot, victim, RECOVERY));
    let failover = killed.elapsed();

    // Switches on every primary succeed again (the first tries may fail
    // until the replica is promoted), and reach every client (after a
    // resync, maybe).
    let mut switch_errors = 0;
    let mut first_error = None;
    for (i, sid) in sessions.iter().enumerate() {
        loop {
            match exec(&e, sid, switch()).await {
                Ok(v) => {
                    versions[i] = v;
                    break;
                }
                Err(err) => {
                    switch_errors += 1;
                    first_error.get_or_insert(err);
                    assert!(
                        killed.elapsed() < RECOVERY,
                        "switches still fail {RECOVERY:?} after the kill ({switch_errors} \
                         failed, the first with {first_error:?})"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    let switched = killed.elapsed();
    stop_load.store(true, Relaxed);
    let mut load_seen = Load::default();
    for task in load {
        let l = task.await.expect("a load task");
        load_seen.ok += l.ok;
        load_seen.failed += l.failed;
        load_seen.last_failure = load_seen.last_failure.max(l.last_failure);
    }
    let last_failure = load_seen
        .last_failure
        .map(|t| t.saturating_duration_since(killed));
    for (i, ws) in sockets.iter_mut().enumerate() {
        let left = RECOVERY.saturating_sub(killed.elapsed());
        version_at_least(ws, versions[i], left).await;
    }
    let updates = killed.elapsed();
    let (went_down, ready) = readiness.await.unwrap();
    assert!(
        gw.wait_ready(Duration::from_secs(5)).await.is_some() && ready < RECOVERY,
        "/ready did not recover within {RECOVERY:?} of the kill (went down {went_down:?})"
    );
    // Every expiring session (some on the killed primary's slots) expires.
    let mut last_expiry = Duration::ZERO;
    for ws in expiring_ws.iter_mut() {
        let left = RECOVERY.saturating_sub(killed.elapsed());
        let at = until_expired(ws, left).await;
        last_expiry = last_expiry.max(at - killed);
    }
    let resubscribed: usize = cluster.live_ports().into_iter().map(pubsub_clients).sum();
    let rebuilds = (
        e.connection().rebuilds(),
        gw.metric("synckairos_gateway_redis_rebuilds_total").await,
    );
    println!(
        "failover of {victim} (the subscriber's node) -> {promoted}: replica promoted after {failover:?}; \
         switches on every primary succeed {switched:?} after the kill ({switch_errors} failed before, \
         the first with {first_error:?}); every client updated {updates:?} after the kill; \
         /ready not ready from {went_down:?}, ready again {ready:?} after the kill; \
         the last of {} expiries (deadlines ~6 s after start) applied {last_expiry:?} after the kill; \
         load across the kill: {} switches ok, {} failed, the last failure {last_failure:?} after the kill; \
         cluster connection rebuilds: engine {}, gateway {}",
        expiring.len(),
        load_seen.ok,
        load_seen.failed,
        rebuilds.0,
        rebuilds.1,
    );
    assert!(resubscribed > 0, "the subscriber linked to another node");
    gw.stop().await;
}

/// What one load task saw.
#[derive(Default)]
struct Load {
    ok: u64,
    failed: u64,
    last_failure: Option<Instant>,
}

/// The bound on every step of the failover test, from the kill: generous
/// (alone it takes ~3 s; a wedged connection and its rebuild a few more).
const RECOVERY: Duration = Duration::from_secs(30);

/// Pub/Sub clients connected to the node on `port`.
fn pubsub_clients(port: u16) -> usize {
    let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{port}/")) else {
        return 0;
    };
    let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_secs(1)) else {
        return 0;
    };
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .arg("TYPE")
        .arg("pubsub")
        .query(&mut conn)
        .unwrap_or_default();
    list.lines().filter(|l| !l.trim().is_empty()).count()
}
