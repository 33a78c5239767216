//! The real local stack for end-to-end tests: a `redis-server` on a free port,
//! `upstash-local` in front of it, and the built edge worker under `workerd`
//! (`scripts/workerd.sh`), started per test on free ports and stopped when
//! the [`Stack`] drops. A missing tool or a stack that does not come up fails
//! the test loudly; nothing skips.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};
use synckairos_testkit::{free_port, RedisServer};

/// The JWT secret of the test stack.
pub const JWT_SECRET: &str = "e2e-secret";
/// The Upstash REST token of the test stack.
pub const REST_TOKEN: &str = "e2e-token";
/// Switches per session per second in the test stack.
pub const SWITCH_LIMIT: u64 = 5;

/// A running stack; dropping it stops workerd, upstash-local and Redis.
pub struct Stack {
    /// The worker's base URL.
    pub base: String,
    /// The Redis behind it.
    pub redis: RedisServer,
    workerd: Child,
    stop_rest: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = self.workerd.kill();
        let _ = self.workerd.wait();
        if let Some(stop) = self.stop_rest.take() {
            let _ = stop.send(());
        }
    }
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
    /// Builds the worker (once per test binary; a no-op when up to date) and
    /// starts a stack.
    pub fn start() -> Stack {
        Stack::start_with(&[])
    }

    /// [`Stack::start`] with the worker's vars and secrets `env` set over
    /// the defaults (a value of `""` unsets one).
    pub fn start_with(env: &[(&str, &str)]) -> Stack {
        static BUILD: Once = Once::new();
        BUILD.call_once(|| run("scripts/worker-build.sh", &[]));
        let redis = RedisServer::start();
        let rest_port = free_port();
        let mut config = synckairos_upstash_local::Config::new(redis.url(), REST_TOKEN.to_string());
        config.listen = format!("127.0.0.1:{rest_port}").parse().expect("address");
        let (stop_rest, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().expect("runtime");
            rt.block_on(async move {
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
            .env("AUTH_MODE", "jwt")
            .env("JWT_SECRET", JWT_SECRET)
            .env("SWITCH_RATE_LIMIT", SWITCH_LIMIT.to_string())
            .env("IP_RATE_LIMIT", "100000")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("workerd starts");
        let mut stack = Stack {
            base: format!("http://127.0.0.1:{port}"),
            redis,
            workerd,
            stop_rest: Some(stop_rest),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !matches!(http_ok(&format!("{}/health", stack.base)), Ok(true)) {
            if let Ok(Some(status)) = stack.workerd.try_wait() {
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
