//! A switch through the whole local stack (HTTP into the worker under
//! workerd, upstash-local, Redis) reaches WebSocket clients on two gateways.

use synckairos_client::{Client, Watcher};
use synckairos_core::ws::ClientOut;
use synckairos_e2e::{token, uuid, Stack, Transport, JWT_SECRET};
use synckairos_fanout_gateway::{run, Config};

async fn gateway(stack: &Stack) -> (String, tokio::sync::oneshot::Sender<()>) {
    let url = stack.redis.url();
    let config = Config::from_lookup(|name| match name {
        "REDIS_URL" => Some(url.clone()),
        "AUTH_MODE" => Some("jwt".into()),
        "JWT_SECRET" => Some(JWT_SECRET.into()),
        // The edge shape: the worker serves REST, the gateway only /ws.
        "REST_API" => Some("off".into()),
        _ => None,
    })
    .expect("gateway config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let metrics_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(run(listener, metrics_listener, config, async move {
        let _ = stopped.await;
    }));
    (format!("ws://{addr}"), stop)
}

async fn next_version(w: &mut Watcher) -> u64 {
    loop {
        let m = tokio::time::timeout(std::time::Duration::from_secs(5), w.next())
            .await
            .expect("a message within 5 s")
            .expect("the socket stays open");
        if let ClientOut::StateUpdate { state, .. } | ClientOut::StateSync { state, .. } = m {
            return state.version;
        }
    }
}

#[tokio::test]
async fn a_switch_over_rest_reaches_clients_on_two_gateways() {
    let stack = Stack::start(Transport::Edge);
    let (g1, _s1) = gateway(&stack).await;
    let (g2, _s2) = gateway(&stack).await;
    let admin = token("admin", "ops", None);
    let api = Client::new(&stack.base, Some(admin));
    let (sid, p1, p2) = (uuid(), uuid(), uuid());
    let body = serde_json::json!({"session_id": sid, "sync_mode": "per_participant", "total_time_ms": 60000,
        "participants": [
            {"participant_id": p1, "participant_index": 0, "total_time_ms": 60000},
            {"participant_id": p2, "participant_index": 1, "total_time_ms": 60000}]});
    api.create(&body).await.expect("create");
    api.command(&sid, "start").await.expect("start");

    // A viewer on each gateway (retrying while a gateway finishes starting).
    let viewer = token("viewer", "v", Some(&sid));
    let mut watchers = Vec::new();
    for g in [&g1, &g2] {
        let mut w = None;
        for _ in 0..100 {
            if let Ok(c) = Watcher::connect(g, &sid, Some(&viewer)).await {
                w = Some(c);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let mut w = w.expect("the gateway accepts");
        assert_eq!(next_version(&mut w).await, 2, "STATE_SYNC on connect");
        watchers.push(w);
    }
    for expected in 3..=5 {
        let sw = api.switch(&sid, None).await.expect("switch");
        assert_eq!(sw.version, expected);
        for w in &mut watchers {
            assert_eq!(next_version(w).await, expected);
        }
    }
}
