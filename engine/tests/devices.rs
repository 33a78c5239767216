//! The devices script (`core/lua/devices.lua`) on a real redis-server:
//! registration and its refresh, expiry and pruning, the bounds, a token
//! moving between participants, removal, the session's delete, and that it
//! never touches the session's version, channel or audit stream.

mod common;

use common::{body, cmd, conn, create, state};
use synckairos_core::devices::{
    self, DeviceOp, DeviceReply, Platform, Registration, MAX_DEVICES_PER_PARTICIPANT,
};
use synckairos_core::keys::SessionKeys;
use synckairos_core::script::{CallOptions, Settings};
use synckairos_core::{Command, DomainError};
use synckairos_engine::fixtures::uuid;
use synckairos_engine::Engine;
use synckairos_testkit::RedisServer;

const T0: i64 = 1_795_455_546_123;

fn register(sid: &str, pid: &str, token: &str) -> DeviceOp {
    DeviceOp::Register {
        session_id: sid.into(),
        registration: Registration {
            participant_id: pid.into(),
            token: token.into(),
            platform: Platform::Android,
        },
    }
}

fn remove(sid: &str, token: &str, pid: Option<&str>) -> DeviceOp {
    DeviceOp::Remove {
        session_id: sid.into(),
        token: token.into(),
        participant_id: pid.map(str::to_string),
    }
}

async fn hash(c: &mut redis::aio::MultiplexedConnection, key: &str) -> Vec<(String, String)> {
    redis::cmd("HGETALL").arg(key).query_async(c).await.unwrap()
}

#[tokio::test]
async fn register_refresh_bound_move_remove_and_delete() {
    let server = RedisServer::start();
    let settings = Settings {
        device_ttl_s: 3600,
        ..Settings::default()
    };
    let e = Engine::connect(&server.url(), settings).await.unwrap();
    let mut c = conn(&server).await;
    let sid = uuid(0xde_0001);
    let (a, b) = (uuid(0xa000), uuid(0xa001));
    let keys = SessionKeys::new(&sid, Settings::default().shards);
    assert_eq!(
        keys.devices,
        synckairos_core::keys::devices(keys.shard, &sid)
    );

    // No session: 404, nothing written.
    assert_eq!(
        e.devices(&register(&sid, &a, "t1"), Some(T0))
            .await
            .unwrap(),
        Err(DomainError::SessionNotFound {
            session_id: sid.clone()
        })
    );
    state(
        &e.execute(
            &create(&body(&sid, "per_participant", 2, 60_000)),
            &CallOptions::default(),
        )
        .await
        .unwrap(),
    );
    let audit_len = |c: &mut redis::aio::MultiplexedConnection| {
        let key = keys.audit.clone();
        let mut c = c.clone();
        async move {
            redis::cmd("XLEN")
                .arg(key)
                .query_async::<u64>(&mut c)
                .await
                .unwrap()
        }
    };
    let events = audit_len(&mut c).await;

    // A stranger is refused.
    let stranger = uuid(0xbad);
    assert_eq!(
        e.devices(&register(&sid, &stranger, "t1"), Some(T0))
            .await
            .unwrap(),
        Err(DomainError::ParticipantNotFound {
            participant_id: stranger
        })
    );
    // New, then refreshed.
    assert_eq!(
        e.devices(&register(&sid, &a, "t1"), Some(T0))
            .await
            .unwrap(),
        Ok(DeviceReply::Registered {
            created: true,
            expires_at_ms: T0 + 3_600_000
        })
    );
    assert_eq!(
        e.devices(&register(&sid, &a, "t1"), Some(T0 + 10))
            .await
            .unwrap(),
        Ok(DeviceReply::Registered {
            created: false,
            expires_at_ms: T0 + 10 + 3_600_000
        })
    );
    let h = hash(&mut c, &keys.devices).await;
    assert_eq!(
        h,
        [(
            format!("{a}\nt1"),
            format!("android|{}|{}", T0 + 10 + 3_600_000, T0 + 10)
        )]
    );
    // The hash expires with its longest-lived token.
    let pttl: i64 = redis::cmd("PTTL")
        .arg(&keys.devices)
        .query_async(&mut c)
        .await
        .unwrap();
    assert!((3_590_000..=3_600_000).contains(&pttl), "{pttl}");

    // The bound per participant: the oldest goes.
    for i in 2..=(MAX_DEVICES_PER_PARTICIPANT + 1) {
        e.devices(
            &register(&sid, &a, &format!("t{i}")),
            Some(T0 + 100 * i as i64),
        )
        .await
        .unwrap()
        .unwrap();
    }
    let live = devices::of_participant(&hash(&mut c, &keys.devices).await, &a, T0 + 1000);
    let tokens: Vec<&str> = live.iter().map(|d| d.token.as_str()).collect();
    assert_eq!(tokens, ["t2", "t3", "t4", "t5", "t6"]);

    // A token registered by another participant moves to it.
    e.devices(&register(&sid, &b, "t6"), Some(T0 + 2000))
        .await
        .unwrap()
        .unwrap();
    let all = devices::parse(&hash(&mut c, &keys.devices).await, T0 + 2000);
    assert_eq!(
        all.iter()
            .filter(|d| d.token == "t6")
            .map(|d| d.participant_id.as_str())
            .collect::<Vec<_>>(),
        [b.as_str()]
    );

    // Removal: only one's own as a participant; anyone's without a filter;
    // absent is no error.
    assert_eq!(
        e.devices(&remove(&sid, "t6", Some(&a)), Some(T0 + 3000))
            .await
            .unwrap(),
        Ok(DeviceReply::Removed { existed: false })
    );
    assert_eq!(
        e.devices(&remove(&sid, "t6", None), Some(T0 + 3000))
            .await
            .unwrap(),
        Ok(DeviceReply::Removed { existed: true })
    );
    assert_eq!(
        e.devices(&remove(&sid, "t5", Some(&a)), Some(T0 + 3000))
            .await
            .unwrap(),
        Ok(DeviceReply::Removed { existed: true })
    );
    assert_eq!(
        devices::parse(&hash(&mut c, &keys.devices).await, T0 + 3000).len(),
        3
    );

    // Expired entries are ignored by readers and pruned by the next write.
    let later = T0 + 3_600_000 + 1000;
    assert!(devices::parse(&hash(&mut c, &keys.devices).await, later).is_empty());
    e.devices(&register(&sid, &b, "fresh"), Some(later))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        hash(&mut c, &keys.devices)
            .await
            .into_iter()
            .map(|(f, _)| f)
            .collect::<Vec<_>>(),
        [format!("{b}\nfresh")]
    );

    // Nothing of this versioned, published or audited the session.
    assert_eq!(audit_len(&mut c).await, events);
    assert_eq!(e.get(&sid).await.unwrap().unwrap().version, 1);

    // The session's delete takes its devices along.
    e.execute(&cmd(&sid, Command::Delete), &CallOptions::default())
        .await
        .unwrap();
    let exists: i64 = redis::cmd("EXISTS")
        .arg(&keys.devices)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(exists, 0);
}

#[tokio::test]
async fn redis_time_is_the_clock() {
    let server = RedisServer::start();
    let e = Engine::connect(&server.url(), Settings::default())
        .await
        .unwrap();
    let sid = uuid(0xde_0002);
    state(
        &e.execute(
            &create(&body(&sid, "global", 1, 60_000)),
            &CallOptions::default(),
        )
        .await
        .unwrap(),
    );
    let before = e.redis_time_ms().await.unwrap();
    let reply = e
        .devices(&register(&sid, &uuid(0xa000), "tok"), None)
        .await
        .unwrap();
    let after = e.redis_time_ms().await.unwrap();
    let Ok(DeviceReply::Registered {
        created: true,
        expires_at_ms,
    }) = reply
    else {
        panic!("{reply:?}")
    };
    let ttl = devices::DEFAULT_TOKEN_TTL_S as i64 * 1000;
    assert!((before + ttl..=after + ttl).contains(&expires_at_ms));
}
