//! The push consumer end to end: real sessions through the engine on a
//! test redis-server, devices registered through the devices script, the
//! consumer group on the shard audit streams, and the local FCM server.

mod common;

use common::{fcm_error, register, run, sent, Fake};
use std::sync::Arc;
use std::time::Duration;
use synckairos_core::devices;
use synckairos_core::keys::SessionKeys;
use synckairos_core::script::Settings;
use synckairos_core::{Command, Request};
use synckairos_engine::fixtures::{body, create, uuid};
use synckairos_engine::Engine;
use synckairos_push::metrics::SendResult;
use synckairos_push::{Metrics, PushConfig, Pusher};
use synckairos_testkit::RedisServer;

fn cfg(server: &RedisServer, fake: &Fake, name: &str) -> PushConfig {
    PushConfig {
        redis: synckairos_engine::RedisTarget::Single(server.url()),
        shards: Settings::default().shards,
        consumer: "push-test".into(),
        service_account_file: fake.account_file(name),
        send_url: Some(fake.send_url()),
        max_age: Duration::from_secs(60),
        batch: 100,
        block_ms: 100,
        claim_idle_ms: 30_000,
        token_margin: Duration::from_secs(300),
    }
}

fn command(sid: &str, c: Command) -> Request {
    Request::new(sid.to_string(), c)
}

/// Reads what the group has for this consumer and handles it.
async fn drain(p: &Pusher) {
    loop {
        let entries = p.streams().read(100, None).await.unwrap();
        if entries.is_empty() {
            return;
        }
        p.handle(&entries).await.unwrap();
    }
}

async fn xadd_low_time(
    c: &mut redis::aio::MultiplexedConnection,
    keys: &SessionKeys,
    sid: &str,
    at: i64,
) {
    let snap: String = redis::cmd("GET")
        .arg(&keys.state)
        .query_async(c)
        .await
        .unwrap();
    let version = synckairos_core::record::decode(&snap).unwrap().version;
    let _: String = redis::cmd("XADD")
        .arg(&keys.audit)
        .arg("*")
        .arg("type")
        .arg("low_time_warning")
        .arg("sid")
        .arg(sid)
        .arg("v")
        .arg(version)
        .arg("at")
        .arg(at)
        .arg("snap")
        .arg(&snap)
        .query_async(c)
        .await
        .unwrap();
}

#[tokio::test]
async fn your_turn_low_time_and_dead_tokens() {
    let server = RedisServer::start();
    let fake = Fake::start(3600).await;
    let e = Engine::connect(&server.url(), Settings::default())
        .await
        .unwrap();
    let sid = uuid(0x9_0001);
    let (a, b) = (uuid(0xa000), uuid(0xa001));
    let keys = SessionKeys::new(&sid, Settings::default().shards);
    run(
        &e,
        create(&body(&sid, "per_participant", 2, 600_000)).unwrap(),
    )
    .await;
    register(&e, &sid, &a, "token-of-a").await;
    register(&e, &sid, &b, "token-of-b").await;
    // Another session's devices are never touched.
    let other = uuid(0x9_0002);
    run(
        &e,
        create(&body(&other, "per_participant", 2, 600_000)).unwrap(),
    )
    .await;
    register(&e, &other, &b, "token-of-b-elsewhere").await;

    let metrics = Arc::new(Metrics::new());
    let p = synckairos_push::pusher(cfg(&server, &fake, "e2e"), metrics.clone())
        .await
        .unwrap();
    // Creating sends nothing; starting is A's turn.
    drain(&p).await;
    assert!(sent(&fake).is_empty());
    run(&e, command(&sid, Command::Start)).await;
    drain(&p).await;
    assert_eq!(
        sent(&fake),
        [("token-of-a".into(), "your_turn".into(), "2".into())]
    );

    // A switch to B: exactly one push, to B's token.
    run(
        &e,
        command(
            &sid,
            Command::Switch {
                next_participant_id: None,
            },
        ),
    )
    .await;
    drain(&p).await;
    assert_eq!(
        sent(&fake)[1..],
        [("token-of-b".into(), "your_turn".into(), "3".into())]
    );

    // A low-time warning: "time running low" to the active participant (B).
    let mut c = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let now = e.redis_time_ms().await.unwrap();
    xadd_low_time(&mut c, &keys, &sid, now).await;
    drain(&p).await;
    assert_eq!(
        sent(&fake)[2..],
        [("token-of-b".into(), "low_time".into(), "3".into())]
    );
    // One that is older than the max age sends nothing.
    xadd_low_time(&mut c, &keys, &sid, now - 61_000).await;
    drain(&p).await;
    assert_eq!(sent(&fake).len(), 3);
    assert_eq!(metrics.sent_total(SendResult::Stale), 1);

    // A's token is dead: the switch back to A drops it from the hash.
    fake.reply_next(vec![(
        404,
        vec![],
        fcm_error(404, "NOT_FOUND", "UNREGISTERED"),
    )]);
    run(
        &e,
        command(
            &sid,
            Command::Switch {
                next_participant_id: None,
            },
        ),
    )
    .await;
    drain(&p).await;
    assert_eq!(
        sent(&fake)[3..],
        [("token-of-a".into(), "your_turn".into(), "4".into())]
    );
    let hash: Vec<(String, String)> = redis::cmd("HGETALL")
        .arg(&keys.devices)
        .query_async(&mut c)
        .await
        .unwrap();
    let left: Vec<String> = devices::parse(&hash, now)
        .into_iter()
        .map(|d| d.token)
        .collect();
    assert_eq!(left, ["token-of-b"]);
    assert_eq!(metrics.tokens_dropped_total(), 1);
    assert_eq!(metrics.sent_total(SendResult::Sent), 3);
    // Every entry of the group is acknowledged.
    let pending: redis::streams::StreamPendingReply = redis::cmd("XPENDING")
        .arg(&keys.audit)
        .arg("push")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(pending.count(), 0);
}

#[tokio::test]
async fn run_sends_until_shutdown_and_recovers_its_own_pending_entries() {
    let server = RedisServer::start();
    let fake = Fake::start(3600).await;
    let e = Engine::connect(&server.url(), Settings::default())
        .await
        .unwrap();
    let sid = uuid(0x9_0003);
    let b = uuid(0xa001);
    run(
        &e,
        create(&body(&sid, "per_participant", 2, 600_000)).unwrap(),
    )
    .await;
    register(&e, &sid, &b, "token-of-b").await;
    let metrics = Arc::new(Metrics::new());
    let config = cfg(&server, &fake, "run");

    // A read that was never handled (a crash) stays pending for this
    // consumer, and the next run sends it first.
    let p = synckairos_push::pusher(config.clone(), metrics.clone())
        .await
        .unwrap();
    run(&e, command(&sid, Command::Start)).await;
    run(
        &e,
        command(
            &sid,
            Command::Switch {
                next_participant_id: None,
            },
        ),
    )
    .await;
    let read = p.streams().read(100, None).await.unwrap();
    assert!(!read.is_empty());
    drop(p);
    assert!(sent(&fake).is_empty());

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(synckairos_push::run(config, metrics.clone(), async {
        let _ = stopped.await;
    }));
    let wait_for = |n: usize| {
        let fake = fake.clone();
        async move {
            for _ in 0..100 {
                if sent(&fake).len() >= n {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("{} pushes, wanted {n}", sent(&fake).len());
        }
    };
    wait_for(1).await;
    assert_eq!(
        sent(&fake),
        [("token-of-b".into(), "your_turn".into(), "3".into())]
    );
    // Live: the next switch (to A, who has no device) sends nothing, the
    // one after (to B) one push.
    for _ in 0..2 {
        run(
            &e,
            command(
                &sid,
                Command::Switch {
                    next_participant_id: None,
                },
            ),
        )
        .await;
    }
    wait_for(2).await;
    assert_eq!(
        sent(&fake)[1..],
        [("token-of-b".into(), "your_turn".into(), "5".into())]
    );
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("stops on shutdown")
        .unwrap()
        .unwrap();
    assert!(metrics
        .render()
        .contains("synckairos_push_sent_total{result=\"sent\"} 2\n"));
}
