//! The gateway binary never shows a credential of `REDIS_URL` (a password or
//! a token in the user's place), neither in its start-up errors nor in its
//! log lines or `/ready` body while Redis is away, yet names the host and
//! port it could not reach.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use synckairos_testkit::{free_port, RedisServer};

const PASSWORD: &str = "Pa55-w0rd-never-shown";

fn gateway(redis_url: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fanout-gateway"));
    cmd.env_clear()
        .env("REDIS_URL", redis_url)
        .env("AUTH_MODE", "disabled")
        .env("LISTEN", "127.0.0.1:0")
        .env("METRICS_LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null());
    cmd
}

/// Runs the binary to its exit (it must fail within 20 s) and returns what
/// it printed, stdout and stderr.
fn failed_start(redis_url: &str) -> String {
    synckairos_testkit::run_to_failure(&mut gateway(redis_url), Duration::from_secs(20))
}

#[test]
fn start_up_errors_name_the_host_but_never_the_password() {
    let closed = free_port();
    for (url, says) in [
        // Unreachable: nothing listens on the port.
        (
            format!("redis://user:{PASSWORD}@127.0.0.1:{closed}/"),
            format!("connecting to Redis at redis://user:[redacted]@127.0.0.1:{closed}/"),
        ),
        // A token in the user's place (no colon).
        (
            format!("rediss://{PASSWORD}@127.0.0.1:{closed}"),
            format!("rediss://[redacted]@127.0.0.1:{closed}"),
        ),
        // Not a Redis URL at all.
        (
            format!("http://user:{PASSWORD}@cache.internal:6379/"),
            "REDIS_URL is \"http://user:[redacted]@cache.internal:6379/\"".to_string(),
        ),
    ] {
        let out = failed_start(&url);
        assert!(!out.contains(PASSWORD), "{url}: the password leaked: {out}");
        assert!(out.contains(&says), "{url}: expected {says:?} in {out}");
    }
}

fn get(port: u16, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connects");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn runtime_errors_and_ready_never_show_the_password() {
    // A user of its own with a password (the default user stays open for
    // the test kit's own PING).
    let password = format!(">{PASSWORD}");
    let mut redis =
        RedisServer::start_with(&["--user", "gateway", "on", &password, "~*", "&*", "+@all"]);
    let url = format!("redis://gateway:{PASSWORD}@127.0.0.1:{}/", redis.port());
    let (port, metrics) = (free_port(), free_port());
    let log = redis.dir().join("gateway.log");
    let file = std::fs::File::create(&log).unwrap();
    let mut child = gateway(&url)
        .env("LISTEN", format!("127.0.0.1:{port}"))
        .env("METRICS_LISTEN", format!("127.0.0.1:{metrics}"))
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .expect("the gateway binary starts");
    let ready = |want: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let r = std::net::TcpStream::connect(("127.0.0.1", port))
                .map(|_| get(port, "/ready"))
                .unwrap_or_default();
            if r.contains(want) {
                return r;
            }
            assert!(Instant::now() < deadline, "no {want} from /ready: {r}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    ready("\"ready\"");
    // Redis goes away: /ready says so, and the subscriber, the clock and
    // the expiry scheduler log their failures while they retry.
    redis.kill();
    let body = ready("not_ready");
    let deadline = Instant::now() + Duration::from_secs(20);
    let logged = loop {
        let text = std::fs::read_to_string(&log).unwrap();
        if text.contains("cannot connect") || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = child.kill();
    let _ = child.wait();
    let logged = logged + &std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("cannot connect"), "{logged}");
    for text in [&body, &logged] {
        assert!(!text.contains(PASSWORD), "the password leaked: {text}");
    }
}
