//! Integration tests for `RedisServer` against a real `redis-server`.

use synckairos_testkit::{free_port, require_binary, RedisServer};

fn set(server: &RedisServer, key: &str, value: &str) {
    let mut con = server.client().get_connection().expect("connect");
    let ok: String = redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query(&mut con)
        .expect("SET");
    assert_eq!(ok, "OK");
}

fn get(server: &RedisServer, key: &str) -> Option<String> {
    let mut con = server.client().get_connection().expect("connect");
    redis::cmd("GET").arg(key).query(&mut con).expect("GET")
}

fn ping(server: &RedisServer) -> redis::RedisResult<String> {
    let mut con = server.client().get_connection()?;
    redis::cmd("PING").query(&mut con)
}

#[test]
fn start_set_get_kill_restart() {
    require_binary("redis-server");
    let mut server = RedisServer::start();
    let port = server.port();
    assert_ne!(port, 0);
    assert_eq!(server.url(), format!("redis://127.0.0.1:{port}/"));
    assert!(server.is_running());
    assert!(server.dir().is_dir());

    set(&server, "greeting", "hello");
    assert_eq!(get(&server, "greeting").as_deref(), Some("hello"));
    assert_eq!(ping(&server).expect("PING"), "PONG");

    server.kill();
    assert!(!server.is_running());
    assert!(server.pid().is_none());
    assert!(
        server.client().get_connection().is_err(),
        "connection must fail after kill()"
    );
    // Killing twice is a no-op.
    server.kill();

    server.restart();
    assert_eq!(server.port(), port, "restart must reuse the same port");
    assert!(server.is_running());
    assert_eq!(ping(&server).expect("PING after restart"), "PONG");
    set(&server, "after", "restart");
    assert_eq!(get(&server, "after").as_deref(), Some("restart"));

    // restart() on a running server replaces the process.
    let old_pid = server.pid();
    server.restart();
    assert_ne!(server.pid(), old_pid);
    assert_eq!(ping(&server).expect("PING after second restart"), "PONG");
}

#[test]
fn two_servers_at_once() {
    let a = RedisServer::start();
    let b = RedisServer::start();
    assert_ne!(a.port(), b.port());
    assert_ne!(a.dir(), b.dir());

    set(&a, "k", "from-a");
    set(&b, "k", "from-b");
    assert_eq!(get(&a, "k").as_deref(), Some("from-a"));
    assert_eq!(get(&b, "k").as_deref(), Some("from-b"));
}

#[test]
fn start_with_extra_args_survive_restart() {
    let mut server = RedisServer::start_with(&["--maxmemory", "12mb"]);
    let check = |server: &RedisServer| {
        let mut con = server.client().get_connection().expect("connect");
        let cfg: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("maxmemory")
            .query(&mut con)
            .expect("CONFIG GET");
        assert_eq!(
            cfg,
            vec!["maxmemory".to_string(), (12 * 1024 * 1024).to_string()]
        );
    };
    check(&server);
    server.restart();
    check(&server);
}

#[test]
fn drop_kills_process_and_removes_dir() {
    let server = RedisServer::start();
    let port = server.port();
    let dir = server.dir().to_path_buf();
    assert!(server.log_path().starts_with(&dir));
    drop(server);
    assert!(!dir.exists(), "temp dir must be removed on drop");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "server must be gone after drop"
    );
}

#[test]
fn free_port_returns_distinct_usable_ports() {
    let p = free_port();
    assert_ne!(p, 0);
    std::net::TcpListener::bind(("127.0.0.1", p)).expect("bind free port");
}

#[test]
fn many_servers_in_parallel() {
    let handles: Vec<_> = (0..6)
        .map(|i| {
            std::thread::spawn(move || {
                let server = RedisServer::start();
                set(&server, "i", &i.to_string());
                assert_eq!(get(&server, "i"), Some(i.to_string()));
                server
            })
        })
        .collect();
    // Keep every server alive until all ports are collected.
    let servers: Vec<RedisServer> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let mut ports: Vec<u16> = servers.iter().map(RedisServer::port).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 6);
}
