//! `audit-consumer dlq list|replay` against entries the consumer really
//! dead-lettered: poison that stays poison, an entry that kept killing its
//! consumers (already stored by one of them), and one PostgreSQL refused
//! until the cause was fixed.

mod common;

use common::*;
use serde_json::Value;
use std::process::Command;
use synckairos_audit_consumer::ConsumerConfig;
use synckairos_core::keys;

fn cli(s: &Stack, args: &[&str]) -> (i32, Vec<Value>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_audit-consumer"))
        .args(args)
        .env("DATABASE_URL", s.db.url())
        .env("REDIS_URL", s.redis.url())
        .env("SHARDS", SHARDS.to_string())
        .env("RUST_LOG", "warn")
        .output()
        .expect("audit-consumer binary");
    let stdout = String::from_utf8(out.stdout).expect("UTF-8");
    let lines = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    (
        out.status.code().expect("an exit code"),
        lines,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn stored(s: &Stack, event_id: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM sync_events WHERE event_id = $1")
        .bind(event_id)
        .fetch_one(&s.pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_and_replayed_once_their_cause_is_fixed() {
    let s = stack().await;
    let good = play(&s.engine, 0xD_0000, 20, 2).await;
    let sid = good.iter().next().unwrap().0.clone();
    let shard = keys::shard_of(&sid, SHARDS);
    let stream = keys::audit_stream(shard);
    let snap = synckairos_core::record::encode(&s.engine.get(&sid).await.unwrap().unwrap());
    let mut conn = s.redis.client().get_connection().unwrap();
    let mut xadd = |fields: &[(&str, &str)]| -> String {
        redis::cmd("XADD")
            .arg(&stream)
            .arg("*")
            .arg(fields)
            .query(&mut conn)
            .unwrap()
    };
    // 1. Poison for good: its snapshot is no record.
    let poison = xadd(&[
        ("type", "session_paused"),
        ("sid", &sid),
        ("v", "90"),
        ("at", "1"),
        ("snap", "R1|garbage"),
    ]);
    // 2. A valid entry that kept killing whoever took it: delivered 10 times
    //    already, and one of those consumers had committed it before dying.
    let crasher = xadd(&[
        ("type", "session_paused"),
        ("sid", &sid),
        ("v", "91"),
        ("at", "1"),
        ("snap", &snap),
    ]);
    // 3. A valid entry PostgreSQL refuses until an operator fixes the cause
    //    (here a constraint that should not be there).
    let refused = xadd(&[
        ("type", "session_paused"),
        ("sid", &sid),
        ("v", "92"),
        ("at", "1"),
        ("actor", "blocked"),
        ("snap", &snap),
    ]);
    sqlx::query(
        "ALTER TABLE sync_events ADD CONSTRAINT not_blocked CHECK (actor IS DISTINCT FROM 'blocked')",
    )
    .execute(&s.pool)
    .await
    .unwrap();
    let mut group = s.redis.client().get_connection().unwrap();
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&stream)
        .arg("audit")
        .arg("0")
        .arg("MKSTREAM")
        .query(&mut group)
        .unwrap();
    let _: redis::Value = redis::cmd("XCLAIM")
        .arg(&stream)
        .arg("audit")
        .arg("ghost")
        .arg(0)
        .arg(&crasher)
        .arg("RETRYCOUNT")
        .arg(10)
        .arg("FORCE")
        .query(&mut group)
        .unwrap();
    let crasher_entry = synckairos_audit_consumer::event::Entry {
        shard,
        id: crasher.clone(),
        fields: s
            .redis
            .stream_entries(&stream)
            .into_iter()
            .find(|(id, _)| *id == crasher)
            .unwrap()
            .1
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes()))
            .collect(),
        deliveries: 10,
    };
    let row = synckairos_audit_consumer::event::decode(&crasher_entry).unwrap();
    let mut tx = s.pool.begin().await.unwrap();
    synckairos_audit_consumer::db::insert(&mut tx, &[row])
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let (mut c, _) = s
        .consumer(
            "solo",
            ConsumerConfig {
                claim_idle_ms: 0,
                ..Default::default()
            },
        )
        .await;
    drain(&mut c, &s, good.len() as i64 + 1).await;
    let crasher_id = format!("{shard}-{crasher}");
    let refused_id = format!("{shard}-{refused}");
    let poison_id = format!("{shard}-{poison}");
    assert_eq!(stored(&s, &refused_id).await, 0);

    // list: all three, with what an operator needs to judge them.
    let (code, listed, err) = cli(&s, &["dlq", "list"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(listed.len(), 3, "{listed:?}");
    let by_source = |src: &str| {
        listed
            .iter()
            .find(|d| d["source_id"] == src)
            .unwrap_or_else(|| panic!("no dead letter of {src}: {listed:?}"))
            .clone()
    };
    let (p, k, r) = (by_source(&poison), by_source(&crasher), by_source(&refused));
    assert!(
        p["reason"].as_str().unwrap().contains("not a record"),
        "{p}"
    );
    assert!(
        k["reason"].as_str().unwrap().contains("delivered 11 times"),
        "{k}"
    );
    assert_eq!(k["deliveries"], 11, "{k}");
    assert!(
        r["reason"]
            .as_str()
            .unwrap()
            .contains("refused by PostgreSQL"),
        "{r}"
    );
    for d in [&p, &k, &r] {
        assert_eq!(d["shard"], shard, "{d}");
        assert_eq!(d["sid"], sid.as_str(), "{d}");
        assert_eq!(d["type"], "session_paused", "{d}");
        assert_eq!(d["consumer"], "solo", "{d}");
    }
    assert_eq!(r["version"], "92");
    let (code, one, _) = cli(
        &s,
        &["dlq", "list", "--shard", &shard.to_string(), "--limit", "1"],
    );
    assert_eq!((code, one.len()), (0, 1), "{one:?}");
    let other = (shard + 1) % SHARDS;
    let (code, none, _) = cli(&s, &["dlq", "list", "--shard", &other.to_string()]);
    assert_eq!((code, none.len()), (0, 0));
    let (code, _, err) = cli(&s, &["dlq", "list", "--shard", "99"]);
    assert_eq!(code, 2);
    assert!(err.contains("BAD_SHARD"), "{err}");

    // replay before the fix: nothing changes, each says why.
    let (code, out, err) = cli(&s, &["dlq", "replay", "--all"]);
    assert_eq!(code, 2, "{out:?} {err}");
    assert!(err.contains("DLQ_NOT_REPLAYED"), "{err}");
    let result = |out: &[Value], id: &Value| {
        out.iter()
            .find(|o| &o["id"] == id)
            .unwrap_or_else(|| panic!("{id} not in {out:?}"))["result"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(result(&out, &p["id"]), "still_failing");
    assert_eq!(result(&out, &r["id"]), "still_failing");
    // The crasher was stored long ago: the replay is a no-op in PostgreSQL.
    assert_eq!(result(&out, &k["id"]), "already_stored");
    assert_eq!(stored(&s, &crasher_id).await, 1);

    // Fix the cause; replay the refused one by name.
    sqlx::query("ALTER TABLE sync_events DROP CONSTRAINT not_blocked")
        .execute(&s.pool)
        .await
        .unwrap();
    let (code, out, err) = cli(&s, &["dlq", "replay", r["id"].as_str().unwrap()]);
    assert_eq!(code, 0, "{out:?} {err}");
    assert_eq!(result(&out, &r["id"]), "stored");
    assert_eq!(
        stored(&s, &refused_id).await,
        1,
        "stored under its original event id"
    );
    let actor: Option<String> =
        sqlx::query_scalar("SELECT actor FROM sync_events WHERE event_id = $1")
            .bind(&refused_id)
            .fetch_one(&s.pool)
            .await
            .unwrap();
    assert_eq!(actor.as_deref(), Some("blocked"));

    // Replaying it again: it is gone from the dead letters, nothing doubles.
    let (code, out, _) = cli(&s, &["dlq", "replay", r["id"].as_str().unwrap()]);
    assert_eq!(code, 2);
    assert_eq!(result(&out, &r["id"]), "not_found");
    assert_eq!(stored(&s, &refused_id).await, 1);

    // Only the true poison is left, untouched, and it is never stored.
    let (_, left, _) = cli(&s, &["dlq", "list"]);
    assert_eq!(
        left,
        vec![p.clone()],
        "the still-failing dead letter is kept as it was"
    );
    assert_eq!(stored(&s, &poison_id).await, 0);
    let (code, _, err) = cli(&s, &["dlq", "replay", "nonsense"]);
    assert_eq!(code, 2);
    assert!(err.contains("BAD_DEAD_LETTER_ID"), "{err}");
}
