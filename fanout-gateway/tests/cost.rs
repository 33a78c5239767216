//! What the gateway costs in Redis commands, and who runs expiry: gateway
//! processes (the real binary) against an own redis-server, every command
//! they send counted with MONITOR (client-issued only, as a per-command bill
//! counts them: one EVALSHA is one command).

use std::process::{Child, Command as Process, Stdio};
use std::time::{Duration, Instant};
use synckairos_core::keys::SessionKeys;
use synckairos_core::script::{CallOptions, Settings};
use synckairos_core::validate::validate_create;
use synckairos_core::{record, Command, Request, Status};
use synckairos_engine::Engine;
use synckairos_testkit::{free_port, RedisServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A gateway process; killed when dropped.
struct Gateway {
    child: Child,
    port: u16,
    metrics_port: u16,
}

impl Gateway {
    async fn start(redis: &RedisServer) -> Gateway {
        let (port, metrics_port) = (free_port(), free_port());
        let child = Process::new(env!("CARGO_BIN_EXE_fanout-gateway"))
            .env("REDIS_URL", redis.url())
            .env("LISTEN", format!("127.0.0.1:{port}"))
            .env("METRICS_LISTEN", format!("127.0.0.1:{metrics_port}"))
            .env("AUTH_MODE", "disabled")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the gateway binary starts");
        let gw = Gateway {
            child,
            port,
            metrics_port,
        };
        for _ in 0..400 {
            if gw
                .get("/ready")
                .await
                .is_ok_and(|r| r.contains("\"ready\""))
            {
                return gw;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the gateway did not become ready");
    }

    async fn get(&self, path: &str) -> std::io::Result<String> {
        let port = if path == "/metrics" {
            self.metrics_port
        } else {
            self.port
        };
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        Ok(out)
    }

    /// One value of the Prometheus exposition.
    async fn metric(&self, name: &str) -> f64 {
        let text = self.get("/metrics").await.expect("metrics");
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} not in /metrics"))
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Probes and scrapes as a deployment would while `window` passes:
/// `/ready` every 10 s and `/metrics` every 15 s on every gateway.
async fn operate(gateways: &[&Gateway], window: Duration) {
    let start = Instant::now();
    let mut tick = 0u64;
    while start.elapsed() < window {
        for g in gateways {
            if tick.is_multiple_of(10) {
                assert!(g.get("/ready").await.unwrap().contains("\"ready\""));
            }
            if tick.is_multiple_of(15) {
                g.get("/metrics").await.unwrap();
            }
        }
        tick += 1;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn engine(redis: &RedisServer) -> Engine {
    Engine::connect(
        &redis.url(),
        Settings {
            switch_limit: 0,
            ..Settings::default()
        },
    )
    .await
    .expect("engine")
}

fn uuid(n: u64) -> String {
    format!("00000000-0000-4000-8000-{n:012x}")
}

async fn started(e: &Engine, sid: &str, bank_ms: i64) {
    let body = serde_json::json!({"session_id": sid, "sync_mode": "per_participant",
        "total_time_ms": bank_ms, "participants": [
        {"participant_id": uuid(0xa1), "participant_index": 0, "total_time_ms": bank_ms},
        {"participant_id": uuid(0xa2), "participant_index": 1, "total_time_ms": bank_ms}]});
    let spec = validate_create(&body).expect("valid");
    for c in [Command::Create(Box::new(spec)), Command::Start] {
        let r = e
            .execute(&Request::new(sid, c), &CallOptions::default())
            .await
            .expect("execute");
        assert!(r.result.is_ok(), "{r:?}");
    }
}

/// Waits until the session is expired in Redis (at most 10 s).
async fn await_expired(redis: &RedisServer, sid: &str) {
    let k = SessionKeys::new(sid, Settings::default().shards);
    let mut c = redis
        .client()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let start = Instant::now();
    loop {
        let raw: String = redis::cmd("GET")
            .arg(&k.state)
            .query_async(&mut c)
            .await
            .unwrap();
        if record::decode(&raw).unwrap().status == Status::Expired {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "nobody expired {sid}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_gateways_cost_at_most_one_redis_command_per_second_each() {
    let redis = RedisServer::start();
    let g1 = Gateway::start(&redis).await;
    let g2 = Gateway::start(&redis).await;
    // Past start-up (script loads, the first clock samples, the lease).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let monitor = redis.monitor();
    let window = Duration::from_secs(60);
    operate(&[&g1, &g2], window).await;
    let counts = monitor.counts();
    eprintln!("two idle gateways, 60 s: {counts}");
    assert!(
        counts.total <= 2 * window.as_secs(),
        "over budget (1 command/s per idle gateway): {counts}"
    );
    let leaders = g1.metric("synckairos_gateway_expiry_leader").await
        + g2.metric("synckairos_gateway_expiry_leader").await;
    assert_eq!(leaders, 1.0, "exactly one gateway schedules");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_thousand_running_sessions_the_cost_follows_the_deadlines() {
    let redis = RedisServer::start();
    let e = engine(&redis).await;
    let g1 = Gateway::start(&redis).await;
    let g2 = Gateway::start(&redis).await;
    // 1,000 running sessions whose deadlines fall 20 to 60 s from now,
    // 25 a second, nobody acting.
    let ids: Vec<String> = (0..1000).map(|i| uuid(0x5e55_0000 + i)).collect();
    let jobs = ids.iter().enumerate().map(|(i, sid)| {
        let e = e.clone();
        async move { started(&e, sid, 20_000 + 40 * i as i64).await }
    });
    futures::future::join_all(jobs).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let monitor = redis.monitor();
    let expired_before = g1.metric("synckairos_gateway_expired_total").await
        + g2.metric("synckairos_gateway_expired_total").await;
    let window = Duration::from_secs(40);
    operate(&[&g1, &g2], window).await;
    let counts = monitor.counts();
    let expired = g1.metric("synckairos_gateway_expired_total").await
        + g2.metric("synckairos_gateway_expired_total").await
        - expired_before;
    eprintln!(
        "1,000 running sessions, two gateways, {} s, {expired} deadlines: {counts}",
        window.as_secs()
    );
    assert!(expired >= 400.0, "deadlines were reached: {expired}");
    // Each gateway's 1 command/s, plus one per deadline reached.
    let budget = 2 * window.as_secs() + expired as u64;
    assert!(
        counts.total <= budget,
        "over budget ({budget}: 1/s per gateway + 1 per deadline): {counts}"
    );
    // Every deadline was applied on time: p99 lateness ≤ 50 ms.
    for g in [&g1, &g2] {
        let total = g
            .metric("synckairos_gateway_expiry_lag_seconds_count")
            .await;
        if total == 0.0 {
            continue;
        }
        let on_time = g
            .metric("synckairos_gateway_expiry_lag_seconds_bucket{le=\"0.05\"}")
            .await;
        assert!(
            on_time / total >= 0.99,
            "expiry p99 over 50 ms: {on_time} of {total} within 50 ms"
        );
    }
    // And no session is overdue in Redis: every deadline passed is applied.
    let mut c = redis
        .client()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let (s, us): (i64, i64) = redis::cmd("TIME").query_async(&mut c).await.unwrap();
    let now = s * 1000 + us / 1000;
    let mut expired_in_redis = 0;
    for sid in &ids {
        let k = SessionKeys::new(sid, Settings::default().shards);
        let raw: String = redis::cmd("GET")
            .arg(&k.state)
            .query_async(&mut c)
            .await
            .unwrap();
        let st = record::decode(&raw).unwrap();
        match st.status {
            Status::Expired => expired_in_redis += 1,
            _ => {
                let d = st.expires_at.expect("running with a deadline").ms();
                assert!(d > now - 200, "{sid} overdue by {} ms", now - d);
            }
        }
    }
    assert!(expired_in_redis as f64 >= expired + expired_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_scheduling_gateway_dies_another_takes_over_within_the_bound() {
    let redis = RedisServer::start();
    let e = engine(&redis).await;
    let mut gateways = [Gateway::start(&redis).await, Gateway::start(&redis).await];
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut leader = None;
    for (i, g) in gateways.iter().enumerate() {
        if g.metric("synckairos_gateway_expiry_leader").await == 1.0 {
            assert!(leader.is_none(), "two leaders");
            leader = Some(i);
        }
    }
    let leader = leader.expect("one gateway schedules");
    let survivor = 1 - leader;
    // kill -9: no release of the lease; it has to run out.
    gateways[leader].kill();
    let killed = Instant::now();
    let sid = uuid(0xdead_0001);
    started(&e, &sid, 1_000).await;
    await_expired(&redis, &sid).await;
    let took = killed.elapsed();
    eprintln!("takeover: the deadline was applied {took:?} after the kill");
    // The bound the scheduler states (lease TTL + one renewal period), and
    // a little for this machine.
    let bound = synckairos_fanout_gateway::expiry::TAKEOVER_BOUND + Duration::from_millis(500);
    assert!(took <= bound, "took {took:?}, bound {bound:?}");
    assert_eq!(
        gateways[survivor]
            .metric("synckairos_gateway_expiry_leader")
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_gateway_hands_the_lease_over_at_once() {
    let redis = RedisServer::start();
    let e = engine(&redis).await;
    let mut gateways = [Gateway::start(&redis).await, Gateway::start(&redis).await];
    tokio::time::sleep(Duration::from_secs(2)).await;
    let leader = if gateways[0].metric("synckairos_gateway_expiry_leader").await == 1.0 {
        0
    } else {
        1
    };
    // SIGTERM: the holder releases the lease on its way out.
    let pid = gateways[leader].child.id().to_string();
    Process::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    let stopped = Instant::now();
    let _ = gateways[leader].child.wait();
    let sid = uuid(0xdead_0002);
    started(&e, &sid, 1_000).await;
    await_expired(&redis, &sid).await;
    let took = stopped.elapsed();
    eprintln!("handover after SIGTERM: {took:?}");
    assert!(
        took <= synckairos_fanout_gateway::expiry::RENEW_EVERY + Duration::from_millis(1_500),
        "{took:?}"
    );
}
