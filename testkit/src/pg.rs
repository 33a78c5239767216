//! PostgreSQL for tests: a fresh database per test on the shared server, or
//! a private server a test may stop and start.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The shared server's admin URL: `$SK_TEST_PG_ADMIN_URL`, else the local
/// server (trust auth, user `postgres`).
pub fn admin_url() -> String {
    std::env::var("SK_TEST_PG_ADMIN_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn psql(url: &str, sql: &str) -> Result<String, String> {
    crate::require_binary("psql");
    let out = Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-qAtc", sql])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("psql: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// Runs `sql` on `url` with `psql` and returns its unaligned output.
///
/// # Panics
///
/// Panics with psql's message if the statement fails.
pub fn query(url: &str, sql: &str) -> String {
    psql(url, sql).unwrap_or_else(|e| panic!("synckairos-testkit: psql {sql:?} on {url}: {e}"))
}

fn unique_name(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}_{}_{}_{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A database of its own for one test, dropped with it.
#[derive(Debug)]
pub struct PgDatabase {
    admin: String,
    name: String,
    url: String,
}

impl PgDatabase {
    /// Creates an empty database on the shared server ([`admin_url`]).
    ///
    /// # Panics
    ///
    /// Panics loudly when the server cannot be reached: tests never skip.
    pub fn fresh() -> PgDatabase {
        Self::fresh_on(&admin_url())
    }

    /// Creates an empty database on the server `admin` points at.
    pub fn fresh_on(admin: &str) -> PgDatabase {
        let name = unique_name("sk_test");
        if let Err(e) = psql(admin, &format!("CREATE DATABASE {name}")) {
            panic!(
                "\n\nsynckairos-testkit: cannot create a test database on {admin}: {e}\n\
                 PostgreSQL must be running (apt-get install postgresql; tests never skip).\n"
            );
        }
        let url = match admin.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{name}"),
            None => panic!("synckairos-testkit: admin url {admin} has no database part"),
        };
        PgDatabase {
            admin: admin.into(),
            name,
            url,
        }
    }

    /// The database's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Runs `sql` in this database (see [`query`]).
    pub fn query(&self, sql: &str) -> String {
        query(&self.url, sql)
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let _ = psql(
            &self.admin,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// A PostgreSQL server of its own (`initdb` in a temporary directory, a
/// free port), for tests that stop and start it. Runs as the `postgres`
/// user when the test runs as root (PostgreSQL refuses to run as root).
#[derive(Debug)]
pub struct PostgresServer {
    dir: PathBuf,
    port: u16,
    bin: PathBuf,
}

fn pg_bin() -> PathBuf {
    if let Ok(p) = std::env::var("SK_TEST_PG_BIN") {
        return PathBuf::from(p);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    found.retain(|p| p.join("initdb").exists());
    found.sort();
    found.pop().unwrap_or_else(|| {
        panic!("synckairos-testkit: no initdb under /usr/lib/postgresql/*/bin (apt-get install postgresql; tests never skip)")
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl PostgresServer {
    /// Initialises and starts a server, and waits until it accepts connections.
    ///
    /// # Panics
    ///
    /// Panics loudly (with the server log) when it cannot start.
    pub fn start() -> PostgresServer {
        let bin = pg_bin();
        let dir = std::env::temp_dir().join(unique_name("synckairos-pg"));
        std::fs::create_dir_all(&dir).expect("a temp dir");
        let s = PostgresServer {
            dir,
            port: crate::free_port(),
            bin,
        };
        if is_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&s.dir)
                .status()
                .map(|st| st.success())
                .unwrap_or(false);
            assert!(
                ok,
                "synckairos-testkit: cannot chown {} to postgres",
                s.dir.display()
            );
        }
        s.run(
            "initdb",
            &[
                "-D",
                &s.data(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        s.start_again();
        s
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let exe = self.bin.join(tool);
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let out = cmd
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("synckairos-testkit: {}: {e}", exe.display()));
        if !out.status.success() {
            panic!(
                "synckairos-testkit: {tool} {args:?} failed: {}{}\nlog:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(self.log()).unwrap_or_default()
            );
        }
    }

    fn log(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The admin URL (database `postgres`).
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The server's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stops the server (fast shutdown: open connections are closed).
    pub fn stop(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
    }

    /// Starts the stopped server again on the same port, waiting until it
    /// accepts connections.
    pub fn start_again(&self) {
        let opts = format!(
            "-c port={} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off",
            self.port,
            self.dir.display()
        );
        let log = self.log().display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-l",
                &log,
                "-o",
                &opts,
                "-w",
                "-t",
                "30",
                "start",
            ],
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while psql(&self.admin_url(), "SELECT 1").is_err() {
            assert!(
                Instant::now() < deadline,
                "synckairos-testkit: postgres on {} did not accept connections",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        let exe = self.bin.join("pg_ctl");
        let data = self.data();
        let args = ["-D", data.as_str(), "-m", "immediate", "stop"];
        let _ = if is_root() {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&exe)
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
        } else {
            Command::new(&exe)
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
        };
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
