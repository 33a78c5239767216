//! The push sender on a Redis Cluster (testkit's `RedisCluster`: 3
//! primaries, 3 replicas): sessions on every shard (so all three
//! primaries), their devices' hashes read and a dead token dropped per
//! shard's slot, every entry acknowledged, and a shutdown while every
//! shard's blocking read waits.

mod common;

use common::{fcm_error, register, run, sent, Fake};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use synckairos_core::devices;
use synckairos_core::keys::{self, SessionKeys};
use synckairos_core::script::Settings;
use synckairos_core::{Command, Request};
use synckairos_engine::fixtures::{body, create, uuid};
use synckairos_engine::{Engine, RedisTarget};
use synckairos_push::metrics::SendResult;
use synckairos_push::{Metrics, PushConfig};
use synckairos_testkit::{ids_on_every_shard, RedisCluster};

fn switch(sid: &str) -> Request {
    Request::new(
        sid.to_string(),
        Command::Switch {
            next_participant_id: None,
        },
    )
}

async fn wait_for(fake: &Fake, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while sent(fake).len() < n {
        assert!(
            Instant::now() < deadline,
            "{} pushes after 30 s, wanted {n}",
            sent(fake).len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_from_every_shard_and_a_dead_token_dropped_on_a_cluster() {
    let cluster = RedisCluster::start();
    let fake = Fake::start(3600).await;
    let settings = Settings::default();
    let shards = settings.shards;
    let e = Engine::connect_target(&RedisTarget::Cluster(cluster.seed_urls()), settings)
        .await
        .unwrap();
    let sessions = ids_on_every_shard(
        shards,
        1,
        |n| uuid(0x9_1000 + n),
        |sid| keys::shard_of(sid, shards),
    );
    let primaries =
        cluster.primaries_of_keys(sessions.iter().map(|s| SessionKeys::new(s, shards).devices));
    assert_eq!(
        primaries.len(),
        3,
        "the sessions are spread over 3 primaries"
    );
    let (a, b) = (uuid(0xa000), uuid(0xa001));
    for sid in &sessions {
        run(
            &e,
            create(&body(sid, "per_participant", 2, 600_000)).unwrap(),
        )
        .await;
        register(&e, sid, &a, &format!("a-{sid}")).await;
        register(&e, sid, &b, &format!("b-{sid}")).await;
    }

    let metrics = Arc::new(Metrics::new());
    let cfg = PushConfig {
        redis: RedisTarget::Cluster(cluster.seed_urls()),
        shards,
        consumer: "push-cluster".into(),
        service_account_file: fake.account_file("cluster"),
        send_url: Some(fake.send_url()),
        max_age: Duration::from_secs(60),
        batch: 100,
        block_ms: 5_000,
        claim_idle_ms: 30_000,
        token_margin: Duration::from_secs(300),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(synckairos_push::run(cfg, metrics.clone(), async {
        let _ = stopped.await;
    }));
    // Every shard's read blocks now; a start on any shard is A's turn.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t = Instant::now();
    for sid in &sessions {
        run(&e, Request::new(sid.clone(), Command::Start)).await;
    }
    wait_for(&fake, sessions.len()).await;
    eprintln!(
        "{} pushes from {shards} shards over 3 primaries sent in {:?}",
        sessions.len(),
        t.elapsed()
    );
    let want: BTreeSet<(String, String, String)> = sessions
        .iter()
        .map(|s| (format!("a-{s}"), "your_turn".to_string(), "2".to_string()))
        .collect();
    assert_eq!(sent(&fake).into_iter().collect::<BTreeSet<_>>(), want);

    // B's token on one session is dead: its hash, in that session's slot,
    // loses it.
    let dead = &sessions[sessions.len() / 2];
    fake.reply_next(vec![(
        404,
        vec![],
        fcm_error(404, "NOT_FOUND", "UNREGISTERED"),
    )]);
    run(&e, switch(dead)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while metrics.tokens_dropped_total() < 1 {
        assert!(Instant::now() < deadline, "the dead token is not dropped");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut conn = e.connection();
    let hash: Vec<(String, String)> = redis::cmd("HGETALL")
        .arg(SessionKeys::new(dead, shards).devices)
        .query_async(&mut conn)
        .await
        .unwrap();
    let now = e.redis_time_ms().await.unwrap();
    let left: Vec<String> = devices::parse(&hash, now)
        .into_iter()
        .map(|d| d.token)
        .collect();
    assert_eq!(left, [format!("a-{dead}")]);

    // The other sessions switch to B: one push each.
    let before = sent(&fake).len();
    for sid in sessions.iter().filter(|s| *s != dead) {
        run(&e, switch(sid)).await;
    }
    wait_for(&fake, before + sessions.len() - 1).await;
    let to_b: BTreeSet<(String, String, String)> = sent(&fake)[before..].iter().cloned().collect();
    let want: BTreeSet<(String, String, String)> = sessions
        .iter()
        .filter(|s| *s != dead)
        .map(|s| (format!("b-{s}"), "your_turn".to_string(), "3".to_string()))
        .collect();
    assert_eq!(to_b, want);
    assert_eq!(
        metrics.sent_total(SendResult::Sent) as usize,
        2 * sessions.len() - 1
    );

    // Every entry of every shard acknowledged.
    let deadline = Instant::now() + Duration::from_secs(30);
    'wait: loop {
        for s in 0..shards {
            let pending: redis::streams::StreamPendingReply = redis::cmd("XPENDING")
                .arg(keys::audit_stream(s))
                .arg("push")
                .query_async(&mut conn)
                .await
                .unwrap();
            if pending.count() > 0 {
                assert!(Instant::now() < deadline, "shard {s} has entries pending");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue 'wait;
            }
        }
        break;
    }

    // Shutdown while every shard's read waits: at once.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t = Instant::now();
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("stops on shutdown")
        .unwrap()
        .unwrap();
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
}
