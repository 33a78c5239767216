//! `RedisCluster`: it starts ready, reports its topology, and a killed
//! primary's replica takes over its slots.

use std::time::{Duration, Instant};

use synckairos_testkit::{RedisCluster, Role};

#[test]
fn starts_with_three_primaries_three_replicas_and_fails_over() {
    let cluster = RedisCluster::start();
    assert_eq!(cluster.seed_urls().len(), 6);

    let nodes = cluster.nodes();
    let primaries: Vec<_> = nodes.iter().filter(|n| n.role == Role::Primary).collect();
    let replicas: Vec<_> = nodes.iter().filter(|n| n.role == Role::Replica).collect();
    assert_eq!((primaries.len(), replicas.len()), (3, 3), "{nodes:?}");
    let covered: u32 = primaries
        .iter()
        .flat_map(|n| &n.slots)
        .map(|&(a, b)| u32::from(b - a) + 1)
        .sum();
    assert_eq!(covered, 16384);
    for r in &replicas {
        let of = r
            .primary_id
            .as_deref()
            .expect("a replica names its primary");
        assert!(primaries.iter().any(|p| p.id == of), "{nodes:?}");
    }

    // A key is served by the primary that owns its slot.
    let key = "sk:{3}:s:some-session";
    let slot = cluster.slot_of(key);
    let old = cluster.primary_of_key(key);
    let mut c = redis::Client::open(format!("redis://127.0.0.1:{old}/"))
        .unwrap()
        .get_connection()
        .unwrap();
    let _: () = redis::cmd("SET").arg(key).arg("v").query(&mut c).unwrap();

    // Its replica, the one that will be promoted.
    let old_id = &nodes.iter().find(|n| n.port == old).unwrap().id;
    let replica = replicas
        .iter()
        .find(|r| r.primary_id.as_deref() == Some(old_id))
        .unwrap()
        .port;
    // Let the write reach the replica before the kill.
    let _: i64 = redis::cmd("WAIT").arg(1).arg(2000).query(&mut c).unwrap();

    let t0 = Instant::now();
    cluster.kill(old);
    assert!(!cluster.live_ports().contains(&old));
    let new = cluster.wait_for_failover(slot, old, Duration::from_secs(30));
    eprintln!(
        "failover of slot {slot}: {old} -> {new} in {:?}",
        t0.elapsed()
    );
    assert_eq!(new, replica);
    assert_eq!(cluster.primary_of_key(key), replica);

    let mut c = redis::Client::open(format!("redis://127.0.0.1:{new}/"))
        .unwrap()
        .get_connection()
        .unwrap();
    let v: Option<String> = redis::cmd("GET").arg(key).query(&mut c).unwrap();
    assert_eq!(v.as_deref(), Some("v"));
}
