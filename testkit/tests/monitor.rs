//! `Monitor` against a real `redis-server`: client commands count, the
//! commands a script runs do not.

use synckairos_testkit::monitor::Monitor;
use synckairos_testkit::RedisServer;

#[test]
fn counts_client_commands_not_script_internals() {
    let server = RedisServer::start();
    let monitor = Monitor::start(&server);
    let mut con = server.client().get_connection().expect("connect");
    // Whatever the client library sends on connect is not part of this test.
    monitor.reset();
    assert_eq!(monitor.counts().total, 0, "{}", monitor.counts());

    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query(&mut con)
        .expect("SET");
    let counts = monitor.counts();
    assert_eq!(counts.total, 1, "{counts}");
    assert_eq!(counts.of("set"), 1, "{counts}");
    assert_eq!(counts.by_addr.len(), 1, "{counts}");

    // One EVAL running three commands is one command.
    let n: i64 = redis::cmd("EVAL")
        .arg("redis.call('SET', KEYS[1], 'a'); redis.call('INCR', KEYS[2]); return redis.call('INCR', KEYS[2])")
        .arg(2)
        .arg("x")
        .arg("n")
        .query(&mut con)
        .expect("EVAL");
    assert_eq!(n, 2);
    let counts = monitor.counts();
    assert_eq!(counts.total, 2, "{counts}");
    assert_eq!(counts.of("eval"), 1, "{counts}");
    assert_eq!(
        counts.of("incr"),
        0,
        "the script's INCRs are not client commands: {counts}"
    );
    assert_eq!(
        counts.of("set"),
        1,
        "only the client's SET counts: {counts}"
    );
    assert_eq!(
        counts.of("echo"),
        0,
        "the monitor's own markers are not counted: {counts}"
    );

    monitor.reset();
    let _: Option<String> = redis::cmd("GET").arg("k").query(&mut con).expect("GET");
    let counts = monitor.counts();
    assert_eq!(counts.total, 1, "{counts}");
    assert_eq!(counts.of("get"), 1, "{counts}");
    assert!(counts.to_string().contains("get"), "{counts}");
}

#[test]
fn a_second_client_is_counted_apart() {
    let server = RedisServer::start();
    let monitor = server.monitor();
    let mut a = server.client().get_connection().expect("connect a");
    let mut b = server.client().get_connection().expect("connect b");
    monitor.reset();
    for _ in 0..3 {
        let _: String = redis::cmd("PING").query(&mut a).expect("PING");
    }
    let _: String = redis::cmd("PING").query(&mut b).expect("PING");
    let counts = monitor.counts();
    assert_eq!(counts.total, 4, "{counts}");
    let mut per_client: Vec<u64> = counts.by_addr.values().map(|m| m["ping"]).collect();
    per_client.sort();
    assert_eq!(per_client, vec![1, 3], "{counts}");
}

#[test]
fn evalsha_is_counted_per_script() {
    let server = RedisServer::start();
    let mut con = server.client().get_connection().expect("connect");
    let one = redis::Script::new("return 1");
    let two = redis::Script::new("return 2");
    let _: i64 = one.invoke(&mut con).expect("load one");
    let _: i64 = two.invoke(&mut con).expect("load two");
    let monitor = server.monitor();
    for _ in 0..3 {
        let _: i64 = one.invoke(&mut con).expect("one");
    }
    let _: i64 = two.invoke(&mut con).expect("two");
    let counts = monitor.counts();
    assert_eq!(counts.of("evalsha"), 4, "{counts}");
    assert_eq!(counts.evalsha_of(one.get_hash()), 3, "{counts}");
    assert_eq!(
        counts.evalsha_of(&two.get_hash().to_uppercase()),
        1,
        "{counts}"
    );
    assert_eq!(counts.evalsha_of("0000"), 0, "{counts}");
}
