//! Test-support helpers for SyncKairos.
//!
//! Test binaries use this crate to run *real* services instead of mocks. The
//! main entry point is [`RedisServer`], which spawns a throw-away
//! `redis-server` process on a free loopback port, waits until it answers and
//! cleans up after itself when dropped; [`RedisCluster`] runs a Redis
//! Cluster of six of them (3 primaries, 3 replicas).
//!
//! Tests never skip: if a required binary is missing, or a service cannot be
//! started, the helpers panic with a loud, actionable message.
//!
//! Everything here uses `std::process` and blocking std networking, so it works
//! the same from plain `#[test]` functions and from `#[tokio::test]` ones.

#![deny(missing_docs)]

mod cluster;
pub mod monitor;
mod pg;
pub use cluster::{ids_on_every_shard, Node, RedisCluster, Role, NODE_TIMEOUT_MS};
pub use pg::{admin_url as pg_admin_url, query as pg_query, PgDatabase, PostgresServer};

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Name of the Redis server binary looked up on `PATH`.
const REDIS_BINARY: &str = "redis-server";
/// How long to wait for a freshly spawned server to answer `PING`.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Delay between two readiness probes.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// How many fresh ports [`RedisServer::start`] tries before giving up.
const MAX_PORT_ATTEMPTS: usize = 5;
/// How many times [`RedisServer::restart`] retries binding the same port.
const MAX_RESTART_ATTEMPTS: usize = 5;
/// Number of log lines included in startup-failure panic messages.
const LOG_TAIL_LINES: usize = 40;

/// Returns a TCP port on `127.0.0.1` that was free at the time of the call.
///
/// The port is found by binding a listener to port 0, reading the port the OS
/// assigned, and dropping the listener. Another process may grab the port in
/// between, so callers that spawn a server on it should be prepared to retry
/// (as [`RedisServer::start`] does).
///
/// # Panics
///
/// Panics if no loopback listener can be bound at all.
pub fn free_port() -> u16 {
    let listener =
        TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)).unwrap_or_else(|e| {
            panic!("synckairos-testkit: cannot bind 127.0.0.1:0 to find a free port: {e}")
        });
    listener
        .local_addr()
        .unwrap_or_else(|e| {
            panic!("synckairos-testkit: cannot read local address of probe listener: {e}")
        })
        .port()
}

/// Panics loudly unless an executable called `name` is found on `PATH`.
///
/// `name` may also be a path (containing `/`), in which case that file must
/// exist and be executable. Use this at the start of tests that need an
/// external tool so that a missing dependency fails the test with a clear
/// message instead of skipping it or failing obscurely later.
///
/// # Panics
///
/// Panics if the binary cannot be found.
pub fn require_binary(name: &str) {
    if find_binary(name).is_none() {
        panic!(
            "\n\n==========================================================\n\
             synckairos-testkit: required binary `{name}` not found on PATH.\n\
             Install it ({hint}) — tests never skip.\n\
             PATH={path}\n\
             ==========================================================\n",
            hint = install_hint(name),
            path = std::env::var("PATH").unwrap_or_default(),
        );
    }
}

/// Looks up `name` on `PATH` (or directly, if it contains a path separator).
fn find_binary(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return is_executable(&p).then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

#[cfg(unix)]
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(not(unix))]
fn is_executable(path: &Path) -> bool {
    path.is_file()
}

fn install_hint(name: &str) -> String {
    match name {
        "redis-server" | "redis-cli" => "apt-get install redis-server".to_string(),
        other => format!("e.g. apt-get install {other}"),
    }
}

/// Creates a fresh, uniquely named directory under [`std::env::temp_dir`].
fn fresh_temp_dir(prefix: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let base = std::env::temp_dir();
    let mut last_err = None;
    for _ in 0..16 {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = base.join(format!("{prefix}-{}-{n}-{nanos}", std::process::id()));
        match fs::create_dir(&dir) {
            Ok(()) => return dir,
            Err(e) => last_err = Some(e),
        }
    }
    panic!(
        "synckairos-testkit: cannot create a temp dir under {}: {}",
        base.display(),
        last_err.map(|e| e.to_string()).unwrap_or_default()
    );
}

/// Returns the last `n` lines of the file at `path` (or a note if unreadable).
fn log_tail(path: &Path, n: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            let start = lines.len().saturating_sub(n);
            if lines.is_empty() {
                "<log is empty>".to_string()
            } else {
                lines[start..].join("\n")
            }
        }
        Err(e) => format!("<cannot read log {}: {e}>", path.display()),
    }
}

/// Why a single spawn attempt did not produce a ready server.
enum SpawnFailure {
    /// The process exited before answering because the port was in use.
    AddrInUse(ExitStatus),
    /// The process exited before answering for another reason (bad args...).
    Exited(ExitStatus),
    /// The port answered, but it was another process, not ours.
    PortTaken,
    /// The process did not answer within [`STARTUP_TIMEOUT`].
    Timeout,
}

/// A throw-away `redis-server` process for tests.
///
/// The server listens on `127.0.0.1` on a free port, has persistence disabled
/// (`--save "" --appendonly no`), runs in a fresh temporary working directory
/// and writes its stdout/stderr to a log file in that directory.
///
/// Dropping the value kills the process (SIGKILL) and removes the directory.
///
/// ```no_run
/// let server = synckairos_testkit::RedisServer::start();
/// let mut con = server.client().get_connection().unwrap();
/// let pong: String = redis::cmd("PING").query(&mut con).unwrap();
/// assert_eq!(pong, "PONG");
/// ```
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    extra_args: Vec<String>,
    dir: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a `redis-server` on a free loopback port and waits until it
    /// answers `PING`.
    ///
    /// # Panics
    ///
    /// Panics with a loud message if `redis-server` is not on `PATH`, or if the
    /// server cannot be started within 10 seconds (the message includes the
    /// tail of the server log). Tests never skip.
    pub fn start() -> RedisServer {
        Self::start_with(&[])
    }

    /// Like [`RedisServer::start`], but appends `extra_args` to the
    /// `redis-server` command line (e.g. `&["--maxmemory", "10mb"]`).
    ///
    /// The same extra arguments are reused by [`RedisServer::restart`].
    ///
    /// # Panics
    ///
    /// Same conditions as [`RedisServer::start`].
    pub fn start_with(extra_args: &[&str]) -> RedisServer {
        require_redis();
        let dir = fresh_temp_dir("synckairos-redis");
        let log_path = dir.join("redis-server.log");
        let mut server = RedisServer {
            port: 0,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            dir,
            log_path,
            child: None,
        };

        let mut failures = Vec::new();
        for _ in 0..MAX_PORT_ATTEMPTS {
            server.port = free_port();
            match server.spawn_and_wait() {
                Ok(child) => {
                    server.child = Some(child);
                    return server;
                }
                Err(SpawnFailure::AddrInUse(status)) => {
                    failures.push(format!("port {}: address in use ({status})", server.port));
                }
                Err(SpawnFailure::Exited(status)) => {
                    server.startup_panic(&format!("exited during startup ({status})"));
                }
                Err(SpawnFailure::PortTaken) => {
                    failures.push(format!("port {}: taken by another process", server.port));
                }
                Err(SpawnFailure::Timeout) => {
                    server.startup_panic(&format!(
                        "did not answer PING on port {} within {:?}",
                        server.port, STARTUP_TIMEOUT
                    ));
                }
            }
        }
        server.startup_panic(&format!(
            "could not start after {MAX_PORT_ATTEMPTS} attempts: {}",
            failures.join("; ")
        ));
    }

    /// The TCP port the server listens on (on `127.0.0.1`).
    ///
    /// The port stays the same across [`RedisServer::kill`] and
    /// [`RedisServer::restart`].
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The connection URL, `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// A [`redis::Client`] for this server (no connection is made yet).
    ///
    /// # Panics
    ///
    /// Panics if the client cannot be constructed from [`RedisServer::url`]
    /// (which should never happen).
    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url())
            .unwrap_or_else(|e| panic!("synckairos-testkit: invalid redis url {}: {e}", self.url()))
    }

    /// The temporary working directory of the server (removed on drop).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file receiving the server's stdout and stderr.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The OS process id of the running server, or `None` after
    /// [`RedisServer::kill`].
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the server process is currently running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills the server with SIGKILL and waits for the process to exit.
    ///
    /// Connections to [`RedisServer::port`] fail afterwards until
    /// [`RedisServer::restart`] is called. Calling `kill` on an already killed
    /// server does nothing.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // kill() fails only if the process already exited; wait() reaps it.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the *same* port with the same arguments and
    /// waits until it answers `PING`. Kills the current process first if it is
    /// still running. Data does not survive (persistence is disabled).
    ///
    /// # Panics
    ///
    /// Panics if the server cannot be started again on the same port (e.g.
    /// another process took the port meanwhile) within a few attempts.
    pub fn restart(&mut self) {
        self.kill();
        let _ = writeln!(
            self.log_file(),
            "\n===== synckairos-testkit: restarting redis-server on port {} =====",
            self.port
        );
        let mut failures = Vec::new();
        for attempt in 0..MAX_RESTART_ATTEMPTS {
            if attempt > 0 {
                thread::sleep(Duration::from_millis(100 * attempt as u64));
            }
            match self.spawn_and_wait() {
                Ok(child) => {
                    self.child = Some(child);
                    return;
                }
                Err(SpawnFailure::AddrInUse(status)) => {
                    failures.push(format!("address in use ({status})"));
                }
                Err(SpawnFailure::Exited(status)) => {
                    self.startup_panic(&format!("exited during restart ({status})"));
                }
                Err(SpawnFailure::PortTaken) => {
                    failures.push("port taken by another process".to_string());
                }
                Err(SpawnFailure::Timeout) => {
                    self.startup_panic(&format!(
                        "did not answer PING on port {} within {:?} after restart",
                        self.port, STARTUP_TIMEOUT
                    ));
                }
            }
        }
        self.startup_panic(&format!(
            "could not restart on port {} after {MAX_RESTART_ATTEMPTS} attempts: {}",
            self.port,
            failures.join("; ")
        ));
    }

    /// Opens the log file for appending.
    fn log_file(&self) -> File {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap_or_else(|e| {
                panic!(
                    "synckairos-testkit: cannot open redis log file {}: {e}",
                    self.log_path.display()
                )
            })
    }

    /// Spawns `redis-server` on `self.port` and waits until it answers.
    fn spawn_and_wait(&self) -> Result<Child, SpawnFailure> {
        let log = self.log_file();
        let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
        let log_err = log.try_clone().unwrap_or_else(|e| {
            panic!("synckairos-testkit: cannot duplicate log file handle: {e}")
        });
        let mut cmd = Command::new(REDIS_BINARY);
        cmd.arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(["--protected-mode", "no"])
            .args(&self.extra_args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        let mut child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                require_redis();
                panic!(
                    "synckairos-testkit: {REDIS_BINARY} not found: install it \
                     (apt-get install redis-server) — tests never skip ({e})"
                );
            }
            Err(e) => panic!("synckairos-testkit: failed to spawn {REDIS_BINARY}: {e}"),
        };

        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    return Err(
                        if self.log_since(log_start).contains("Address already in use") {
                            SpawnFailure::AddrInUse(status)
                        } else {
                            SpawnFailure::Exited(status)
                        },
                    );
                }
                Ok(None) => {}
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("synckairos-testkit: cannot query {REDIS_BINARY} status: {e}");
                }
            }
            if ping(self.port) {
                // Make sure the answer came from *our* process and not from a
                // server that grabbed the port between free_port() and spawn.
                match server_pid(self.port) {
                    Some(pid) if pid == child.id() => return Ok(child),
                    Some(_) => {
                        let _ = child.kill();
                        let _ = child.wait();
                        return Err(SpawnFailure::PortTaken);
                    }
                    None => {} // not conclusive yet; poll again
                }
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(SpawnFailure::Timeout);
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// The part of the log written after byte offset `start`.
    fn log_since(&self, start: u64) -> String {
        let bytes = fs::read(&self.log_path).unwrap_or_default();
        let start = usize::try_from(start).unwrap_or(0).min(bytes.len());
        String::from_utf8_lossy(&bytes[start..]).into_owned()
    }

    /// Panics with `what` plus the tail of the server log.
    fn startup_panic(&self, what: &str) -> ! {
        panic!(
            "\n\n==========================================================\n\
             synckairos-testkit: redis-server {what}\n\
             command: {REDIS_BINARY} --port {port} --bind 127.0.0.1 --save \"\" \
             --appendonly no --dir {dir} --protected-mode no {extra}\n\
             ----- last {LOG_TAIL_LINES} lines of {log} -----\n{tail}\n\
             ==========================================================\n",
            port = self.port,
            dir = self.dir.display(),
            extra = self.extra_args.join(" "),
            log = self.log_path.display(),
            tail = log_tail(&self.log_path, LOG_TAIL_LINES),
        );
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn require_redis() {
    if find_binary(REDIS_BINARY).is_none() {
        panic!(
            "\n\n==========================================================\n\
             synckairos-testkit: redis-server not found on PATH: install it \
             (apt-get install redis-server) — tests never skip.\n\
             PATH={}\n\
             ==========================================================\n",
            std::env::var("PATH").unwrap_or_default()
        );
    }
}

/// Opens a short-lived loopback connection to `port` with tight timeouts.
fn probe_connection(port: u16) -> io::Result<TcpStream> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let stream = TcpStream::connect_timeout(&addr, Duration::from_millis(250))?;
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    stream.set_write_timeout(Some(Duration::from_millis(500)))?;
    Ok(stream)
}

/// Sends an inline `PING` and returns whether the reply was `+PONG`.
fn ping(port: u16) -> bool {
    let attempt = || -> io::Result<bool> {
        let mut stream = probe_connection(port)?;
        stream.write_all(b"PING\r\n")?;
        let mut buf = [0u8; 64];
        let mut len = 0;
        while len < 5 {
            let n = stream.read(&mut buf[len..])?;
            if n == 0 {
                break;
            }
            len += n;
        }
        Ok(buf[..len].starts_with(b"+PONG"))
    };
    attempt().unwrap_or(false)
}

/// Asks the server on `port` for its `process_id` via `INFO server`.
fn server_pid(port: u16) -> Option<u32> {
    let attempt = || -> io::Result<Option<u32>> {
        let mut stream = probe_connection(port)?;
        stream.write_all(b"INFO server\r\n")?;
        let mut buf = Vec::with_capacity(4096);
        let mut chunk = [0u8; 4096];
        // Reply is a bulk string: `$<len>\r\n<payload>\r\n`.
        loop {
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(header_end) = buf.windows(2).position(|w| w == b"\r\n") {
                let declared = std::str::from_utf8(&buf[1..header_end])
                    .ok()
                    .and_then(|s| s.parse::<usize>().ok());
                match declared {
                    Some(len) if buf.len() >= header_end + 2 + len => break,
                    Some(_) => {}
                    None => break, // not a bulk string (error reply?)
                }
            }
        }
        let text = String::from_utf8_lossy(&buf);
        Ok(text
            .lines()
            .find_map(|l| l.strip_prefix("process_id:"))
            .and_then(|v| v.trim().parse().ok()))
    };
    attempt().ok().flatten()
}

impl RedisServer {
    /// The entries of the stream `key` (`XRANGE key - +`): id and fields.
    ///
    /// # Panics
    ///
    /// Panics if the server does not answer.
    pub fn stream_entries(&self, key: &str) -> Vec<(String, Vec<(String, String)>)> {
        let mut c = self
            .client()
            .get_connection()
            .expect("a connection to the test redis-server");
        redis::cmd("XRANGE")
            .arg(key)
            .arg("-")
            .arg("+")
            .query(&mut c)
            .expect("XRANGE")
    }

    /// How many times `command` (lower case, e.g. `evalsha`) has run so far,
    /// from `INFO commandstats` (0 when never). Commands that scripts run
    /// count too.
    pub fn command_calls(&self, command: &str) -> u64 {
        command_calls_on(self.port, command)
    }
}

/// A plain connection to the redis-server (or cluster node) on
/// `127.0.0.1:port`.
///
/// # Panics
///
/// Panics if it does not answer.
pub fn connection_on(port: u16) -> redis::Connection {
    redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .and_then(|c| c.get_connection())
        .unwrap_or_else(|e| panic!("synckairos-testkit: no connection to 127.0.0.1:{port}: {e}"))
}

/// How many times `command` (lower case, e.g. `evalsha`) has run so far on
/// the redis-server (or cluster node) on `127.0.0.1:port`, from `INFO
/// commandstats` (0 when never). Commands that scripts run count too.
///
/// # Panics
///
/// Panics if the server does not answer.
pub fn command_calls_on(port: u16, command: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut connection_on(port))
        .expect("INFO commandstats");
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().expect("a call count"))
}

/// Empties the script cache of the redis-server (or cluster node) on
/// `127.0.0.1:port` (`SCRIPT FLUSH`), as a restart would.
///
/// # Panics
///
/// Panics if the server does not answer.
pub fn flush_scripts_on(port: u16) {
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query(&mut connection_on(port))
        .expect("SCRIPT FLUSH");
}

/// An HS256 token signed with `secret` for `role` and `sub` (and `sid`),
/// valid for an hour: the claims the edge worker and the gateway read.
pub fn jwt(secret: &str, role: &str, sub: &str, sid: Option<&str>) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 3600;
    let mut claims = serde_json::json!({"sub": sub, "role": role, "exp": exp});
    if let Some(sid) = sid {
        claims["sid"] = serde_json::json!(sid);
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("signing a test token")
}

/// Runs `cmd` until it exits, which it must do within `limit` and with a
/// failure (a binary that refuses to start); returns what it printed,
/// stdout then stderr.
pub fn run_to_failure(cmd: &mut Command, limit: Duration) -> String {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?} does not start: {e}"));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{cmd:?} did not give up within {limit:?}");
        }
        thread::sleep(Duration::from_millis(50));
    };
    let mut out = String::new();
    for pipe in [
        child.stdout.take().map(|p| Box::new(p) as Box<dyn Read>),
        child.stderr.take().map(|p| Box::new(p) as Box<dyn Read>),
    ]
    .into_iter()
    .flatten()
    {
        let mut pipe = pipe;
        pipe.read_to_string(&mut out).expect("read the output");
    }
    assert!(!status.success(), "{out}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_port_is_bindable() {
        let port = free_port();
        assert_ne!(port, 0);
        TcpListener::bind(("127.0.0.1", port)).expect("port returned by free_port is bindable");
    }

    #[test]
    fn require_binary_finds_sh() {
        require_binary("sh");
    }

    #[test]
    #[should_panic(expected = "not found on PATH")]
    fn require_binary_panics_on_missing() {
        require_binary("definitely-not-a-real-binary-synckairos");
    }

    #[test]
    fn temp_dirs_are_unique() {
        let a = fresh_temp_dir("synckairos-testkit-unit");
        let b = fresh_temp_dir("synckairos-testkit-unit");
        assert_ne!(a, b);
        assert!(a.is_dir() && b.is_dir());
        fs::remove_dir_all(a).unwrap();
        fs::remove_dir_all(b).unwrap();
    }

    #[test]
    fn log_tail_returns_last_lines() {
        let dir = fresh_temp_dir("synckairos-testkit-unit");
        let path = dir.join("log");
        fs::write(&path, "1\n2\n3\n4\n").unwrap();
        assert_eq!(log_tail(&path, 2), "3\n4");
        fs::remove_dir_all(dir).unwrap();
    }
}
