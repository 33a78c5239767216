//! The real local stack for end-to-end tests, in either shape
//! ([`Transport`]): a `redis-server` on a free port, then either
//! `upstash-local` in front of it and the built edge worker under `workerd`
//! (`scripts/workerd.sh`), or the native server (the gateway with
//! `REST_API=on`). Each is started per test on free ports and stopped when
//! the [`Stack`] drops. A missing tool or a stack that does not come up fails
//! the test loudly; nothing skips.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};
use synckairos_testkit::{free_port, RedisServer};

/// The JWT secret of the test stack.
pub const JWT_SECRET: &str = "e2e-secret-e2e-secret-e2e-secret-e2e";
/// The Upstash REST token of the test stack.
pub const REST_TOKEN: &str = "e2e-token";
/// Switches per session per second in the test stack.
pub const SWITCH_LIMIT: u64 = 5;

/// Which server answers the REST API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// The edge worker under workerd, over upstash-local.
    Edge,
    /// The native server: the gateway with `REST_API=on`, REST and `/ws` on
    /// one port.
    Native,
}

/// A running stack; dropping it stops the server(s) and Redis.
pub struct Stack {
    /// The server's base URL (REST; on the native server `/ws` too).
    pub base: String,
    /// The native server's internal `/metrics` URL (`METRICS_LISTEN`);
    /// `None` on the edge, whose Worker has no `/metrics`.
    pub metrics: Option<String>,
    /// The Redis behind it.
    pub redis: RedisServer,
    /// The shape.
    pub transport: Transport,
    workerd: Option<Child>,
    /// Stops upstash-local (edge) or the native server.
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Stack {
    fn drop(&mut self) {
        if let Some(w) = &mut self.workerd {
            let _ = w.kill();
            let _ = w.wait();
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Runs `serve` on a runtime of its own, on a thread of its own, until the
/// returned sender fires (or drops).
fn in_background<F, Fut>(serve: F) -> tokio::sync::oneshot::Sender<()>
where
    F: FnOnce(tokio::sync::oneshot::Receiver<()>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        tokio::runtime::Runtime::new()
            .expect("runtime")
            .block_on(serve(stopped));
    });
    stop
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(script: &str, args: &[&str]) {
    let status = Command::new("bash")
        .arg(repo().join(script))
        .args(args)
        .current_dir(repo())
        .status()
        .unwrap_or_else(|e| panic!("cannot run {script}: {e}"));
    assert!(
        status.success(),
        "{script} failed ({status}): the end-to-end tests need the worker built"
    );
}

fn wait_for(url: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(true) = http_ok(url) {
            return;
        }
        assert!(Instant::now() < deadline, "{what} did not come up at {url}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether a plain GET of `url` answers 200 (used before any runtime exists).
fn http_ok(url: &str) -> std::io::Result<bool> {
    use std::io::{Read, Write};
    let rest = url.trim_start_matches("http://");
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut s = std::net::TcpStream::connect(host)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(
        s,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    Ok(buf.starts_with("HTTP/1.1 200"))
}

impl Stack {
    /// A stack of `transport` with the test defaults.
    pub fn start(transport: Transport) -> Stack {
        Stack::start_with(transport, &[])
    }

    /// [`Stack::start`] with the server's variables `env` set over the
    /// defaults (a value of `""` unsets one). Both shapes read the same
    /// names.
    pub fn start_with(transport: Transport, env: &[(&str, &str)]) -> Stack {
        // TLS is rustls; when another crate of the same build enables reqwest's
        // rustls without a crypto provider, the client needs the process default.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let redis = RedisServer::start();
        let switch_limit = SWITCH_LIMIT.to_string();
        let mut vars: Vec<(String, String)> = [
            ("AUTH_MODE", "jwt"),
            ("JWT_SECRET", JWT_SECRET),
            ("SWITCH_RATE_LIMIT", switch_limit.as_str()),
            ("IP_RATE_LIMIT", "100000"),
        ]
        .iter()
        .chain(env)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        match transport {
            Transport::Edge => Stack::edge(redis, vars),
            Transport::Native => {
                vars.insert(0, ("REDIS_URL".into(), redis.url()));
                // The edge reads the client's address from CF-Connecting-IP;
                // the same tests drive the native server with it.
                vars.insert(1, ("CLIENT_IP_HEADER".into(), "CF-Connecting-IP".into()));
                vars.insert(2, ("CONNECTIONS_PER_IP_PER_SECOND".into(), "0".into()));
                Stack::native(redis, vars)
            }
        }
    }

    fn native(redis: RedisServer, vars: Vec<(String, String)>) -> Stack {
        // The last setting of a name wins, as in a shell environment.
        let lookup = move |name: &str| {
            vars.iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let config = synckairos_fanout_gateway::Config::from_lookup(lookup)
            .expect("the native server's config");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        let port = listener.local_addr().expect("address").port();
        listener.set_nonblocking(true).expect("non-blocking");
        let metrics_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        let metrics_port = metrics_listener.local_addr().expect("address").port();
        metrics_listener
            .set_nonblocking(true)
            .expect("non-blocking");
        let stop = in_background(move |stopped| async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let metrics_listener =
                tokio::net::TcpListener::from_std(metrics_listener).expect("listener");
            let shutdown = async move {
                let _ = stopped.await;
            };
            synckairos_fanout_gateway::run(listener, metrics_listener, config, shutdown)
                .await
                .expect("the native server runs");
        });
        let stack = Stack {
            base: format!("http://127.0.0.1:{port}"),
            metrics: Some(format!("http://127.0.0.1:{metrics_port}/metrics")),
            redis,
            transport: Transport::Native,
            workerd: None,
            stop: Some(stop),
        };
        wait_for(&format!("{}/ready", stack.base), "the native server");
        stack
    }

    fn edge(redis: RedisServer, vars: Vec<(String, String)>) -> Stack {
        static BUILD: Once = Once::new();
        BUILD.call_once(|| run("scripts/worker-build.sh", &[]));
        let rest_port = free_port();
        let mut config = synckairos_upstash_local::Config::new(redis.url(), REST_TOKEN.to_string());
        config.listen = format!("127.0.0.1:{rest_port}").parse().expect("address");
        let stop = in_background(move |stopped| async move {
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .expect("upstash-local listens");
            let shutdown = async move {
                let _ = stopped.await;
            };
            synckairos_upstash_local::run(listener, config, shutdown)
                .await
                .expect("upstash-local runs");
        });
        wait_for(
            &format!("http://127.0.0.1:{rest_port}/health"),
            "upstash-local",
        );
        let port = free_port();
        let log = std::fs::File::create(redis.dir().join("workerd.log")).expect("log file");
        let workerd = Command::new("bash")
            .arg(repo().join("scripts/workerd.sh"))
            .args(["--port", &port.to_string()])
            .current_dir(repo())
            .env(
                "UPSTASH_REDIS_REST_URL",
                format!("http://127.0.0.1:{rest_port}"),
            )
            .env("UPSTASH_REDIS_REST_TOKEN", REST_TOKEN)
            .envs(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("workerd starts");
        let mut stack = Stack {
            base: format!("http://127.0.0.1:{port}"),
            metrics: None,
            redis,
            transport: Transport::Edge,
            workerd: Some(workerd),
            stop: Some(stop),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !matches!(http_ok(&format!("{}/health", stack.base)), Ok(true)) {
            if let Some(Ok(Some(status))) = stack.workerd.as_mut().map(Child::try_wait) {
                let log = std::fs::read_to_string(stack.redis.dir().join("workerd.log"));
                panic!("workerd exited ({status}): {}", log.unwrap_or_default());
            }
            assert!(Instant::now() < deadline, "the edge worker did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        stack
    }
}

/// A signed token for `role` (and `sid`), valid for an hour.
pub fn token(role: &str, sub: &str, sid: Option<&str>) -> String {
    synckairos_testkit::jwt(JWT_SECRET, role, sub, sid)
}

/// A fresh UUID for this run.
pub fn uuid() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64;
    format!(
        "{:08x}-{:04x}-4000-8000-{:012x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed) & 0xffff,
        nanos & 0xffff_ffff_ffff
    )
}
