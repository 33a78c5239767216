//! The engine's Redis Cluster connection, and the watchdog that replaces it
//! when it stops answering.
//!
//! redis-rs's cluster connection runs every command through one background
//! task, which keeps the slot map and the node connections behind an async
//! read-write lock. A command takes the read half to find its node; a slot
//! refresh takes the write half, and while the refresh runs the task polls
//! nothing else. A command future that took its read permit just as the task
//! ran out of its cooperative-scheduling budget (tokio hands the permit over
//! first and yields after, so the future is pending with the permit held) is
//! then never polled again: if the next thing the task does is a refresh, as
//! it does when a primary is killed, the refresh waits for that permit
//! forever and every later command times out. Nothing inside the connection
//! recovers from it. A primary killed under load hits it on most runs of
//! the gateway's failover test, within half a second of the kill.
//!
//! So every command runs with a bound ([`COMMAND_TIMEOUT`]), and after
//! [`FAILURES_BEFORE_REBUILD`] commands in a row failed for want of an answer
//! (timed out, connection lost or refused, no connection for the slot) the
//! connection is rebuilt from the seeds in the background and swapped in for
//! every holder at once; the wedged one is dropped with its last command,
//! which stops its task. A command answered by Redis (a reply or an error
//! reply) ends the run. Rebuilds are at least [`REBUILD_INTERVAL`] apart, so
//! a cluster that is really down is not flooded with connection attempts;
//! each one is bounded by [`REBUILD_TIMEOUT`] and logged, and
//! [`RedisConnection::rebuilds`](crate::RedisConnection::rebuilds) counts
//! those that succeeded.
//!
//! A rebuild during an ordinary failover (a caller whose commands all go to
//! the dead primary's slots) is harmless: the new connection reads the
//! topology from the seeds like the old one would have.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{ErrorKind, RedisError, RedisResult};

/// How long one node has to answer one request (and to accept a
/// connection); also the bound redis-rs puts on a whole command, its
/// retries and redirections included.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);

/// The engine's own bound on one cluster command: past redis-rs's
/// [`RESPONSE_TIMEOUT`], so it only fires if that one does not.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// Commands in a row without an answer after which the connection is
/// rebuilt.
pub const FAILURES_BEFORE_REBUILD: u32 = 3;

/// The least time between two rebuilds (and from the first connection to a
/// rebuild).
pub const REBUILD_INTERVAL: Duration = Duration::from_secs(2);

/// The bound on one rebuild: connecting to the seeds and reading the
/// topology.
pub const REBUILD_TIMEOUT: Duration = Duration::from_secs(5);

/// What one command's result says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Redis answered (a reply, or an error reply such as `NOSCRIPT`).
    Answered,
    /// No answer: a timeout, a lost or refused connection, no connection
    /// for the slot.
    NoAnswer,
    /// Says nothing about the connection: a cluster error reply
    /// (`MOVED`, `TRYAGAIN`, `CLUSTERDOWN` while the cluster fails over), a
    /// reply that did not parse.
    Neutral,
}

impl Outcome {
    pub(crate) fn of<T>(result: &RedisResult<T>) -> Outcome {
        let Err(e) = result else {
            return Outcome::Answered;
        };
        if e.is_timeout()
            || e.is_io_error()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || e.kind() == ErrorKind::ClusterConnectionNotFound
        {
            Outcome::NoAnswer
        } else if e.is_cluster_error() {
            Outcome::Neutral
        } else if matches!(e.kind(), ErrorKind::Server(_)) {
            Outcome::Answered
        } else {
            Outcome::Neutral
        }
    }
}

/// The watchdog's bookkeeping, apart from the connection so its rule can be
/// tested alone.
#[derive(Debug)]
pub(crate) struct Watch {
    /// Which connection is current (0 the first; each rebuild adds one).
    generation: u64,
    /// Commands in a row on the current connection without an answer.
    failures: u32,
    /// When the current connection was made, or a rebuild last tried.
    since: Instant,
    /// A rebuild is under way.
    rebuilding: bool,
}

impl Watch {
    pub(crate) fn new(now: Instant) -> Watch {
        Watch {
            generation: 0,
            failures: 0,
            since: now,
            rebuilding: false,
        }
    }

    /// Records one command's outcome on connection `generation`; true when
    /// a rebuild should start now (the caller then starts it). Outcomes of
    /// commands sent on an older connection count for nothing.
    pub(crate) fn observe(&mut self, generation: u64, outcome: Outcome, now: Instant) -> bool {
        if generation != self.generation {
            return false;
        }
        match outcome {
            Outcome::Answered => self.failures = 0,
            Outcome::Neutral => {}
            Outcome::NoAnswer => self.failures = self.failures.saturating_add(1),
        }
        let due = self.failures >= FAILURES_BEFORE_REBUILD
            && !self.rebuilding
            && now.duration_since(self.since) >= REBUILD_INTERVAL;
        if due {
            self.rebuilding = true;
        }
        due
    }

    /// A new connection replaced the current one.
    pub(crate) fn rebuilt(&mut self, now: Instant) {
        self.generation += 1;
        self.failures = 0;
        self.since = now;
        self.rebuilding = false;
    }

    /// A rebuild failed; the current connection stays, and the next rebuild
    /// waits [`REBUILD_INTERVAL`] from now.
    pub(crate) fn rebuild_failed(&mut self, now: Instant) {
        self.since = now;
        self.rebuilding = false;
    }
}

struct State {
    conn: ClusterConnection,
    watch: Watch,
}

/// A cluster connection shared by every clone of a
/// [`RedisConnection`](crate::RedisConnection), replaced as a whole when the
/// watchdog rebuilds it.
pub(crate) struct Cluster {
    client: ClusterClient,
    state: Mutex<State>,
    rebuilds: AtomicU64,
}

impl Cluster {
    /// Connects to the cluster that `seeds` belong to.
    pub(crate) async fn connect(seeds: &[String]) -> RedisResult<Cluster> {
        let client = client(seeds)?;
        let conn = client.get_async_connection().await?;
        Ok(Cluster {
            client,
            state: Mutex::new(State {
                conn,
                watch: Watch::new(Instant::now()),
            }),
            rebuilds: AtomicU64::new(0),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The lock is never held across an await or a call that can panic
        // midway; a poisoned one still holds a whole state.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Rebuilds that replaced the connection so far.
    pub(crate) fn rebuilds(&self) -> u64 {
        self.rebuilds.load(Relaxed)
    }

    /// Runs `command` on the current connection within [`COMMAND_TIMEOUT`],
    /// and gives its outcome to the watchdog.
    pub(crate) async fn run<T, F, Fut>(self: &Arc<Self>, command: F) -> RedisResult<T>
    where
        F: FnOnce(ClusterConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let (conn, generation) = {
            let s = self.state();
            (s.conn.clone(), s.watch.generation)
        };
        let result = tokio::time::timeout(COMMAND_TIMEOUT, command(conn))
            .await
            .unwrap_or_else(|_| {
                Err(RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no answer from the Redis Cluster in time",
                )))
            });
        let outcome = Outcome::of(&result);
        let rebuild = self
            .state()
            .watch
            .observe(generation, outcome, Instant::now());
        if rebuild {
            tokio::spawn(Arc::clone(self).rebuild());
        }
        result
    }

    /// Makes a new connection from the seeds and swaps it in; on failure
    /// keeps the current one.
    async fn rebuild(self: Arc<Self>) {
        let started = Instant::now();
        let failures = self.state().watch.failures;
        let fresh = tokio::time::timeout(REBUILD_TIMEOUT, self.client.get_async_connection()).await;
        let old = {
            let mut s = self.state();
            match fresh {
                Ok(Ok(conn)) => {
                    s.watch.rebuilt(Instant::now());
                    let generation = s.watch.generation;
                    let n = self.rebuilds.fetch_add(1, Relaxed) + 1;
                    tracing::warn!(
                        failures,
                        generation,
                        rebuilds = n,
                        took_ms = started.elapsed().as_millis() as u64,
                        "redis cluster connection rebuilt: {failures} commands in a row got no answer"
                    );
                    Some(std::mem::replace(&mut s.conn, conn))
                }
                Ok(Err(e)) => {
                    s.watch.rebuild_failed(Instant::now());
                    tracing::warn!(failures, error = %e, "redis cluster connection rebuild failed; keeping the current one");
                    None
                }
                Err(_) => {
                    s.watch.rebuild_failed(Instant::now());
                    tracing::warn!(
                        failures,
                        "redis cluster connection rebuild timed out after {REBUILD_TIMEOUT:?}; keeping the current one"
                    );
                    None
                }
            }
        };
        // The old connection's task stops when its last clone (this one, or
        // a command still running on it) is dropped.
        drop(old);
    }
}

/// The cluster client's settings. A command whose node is gone (a primary
/// killed, its replica not promoted yet) is retried up to 6 times, 100 ms to
/// 1 s apart, refreshing the slot map, within [`RESPONSE_TIMEOUT`] in all:
/// the caller gets its error within a second and retries, rather than
/// holding a request for the length of a failover. Each connection attempt
/// and each node's reply is given [`RESPONSE_TIMEOUT`] too, so a slot
/// refresh that asks a dead node moves on to the next.
///
/// A retry after a lost connection may run a script a second time if the
/// first run reached the old primary: at-least-once, like any client retry.
/// A command sent with its expected version or an `Idempotency-Key` is then
/// refused or answered as the first time; a script's writes stay atomic
/// either way.
fn client(seeds: &[String]) -> RedisResult<ClusterClient> {
    ClusterClient::builder(seeds.iter().map(String::as_str))
        .retries(6)
        .min_retry_wait(100)
        .max_retry_wait(1000)
        .connection_timeout(RESPONSE_TIMEOUT)
        .response_timeout(RESPONSE_TIMEOUT)
        .overall_response_timeout(Some(RESPONSE_TIMEOUT))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(kind: std::io::ErrorKind) -> RedisResult<()> {
        Err(RedisError::from(std::io::Error::from(kind)))
    }

    #[test]
    fn outcomes() {
        use std::io::ErrorKind as Io;
        assert_eq!(Outcome::of(&Ok(())), Outcome::Answered);
        for kind in [
            Io::TimedOut,
            Io::BrokenPipe,
            Io::ConnectionRefused,
            Io::ConnectionReset,
        ] {
            assert_eq!(Outcome::of(&io(kind)), Outcome::NoAnswer, "{kind:?}");
        }
        let not_found: RedisResult<()> =
            Err((ErrorKind::ClusterConnectionNotFound, "No connections found").into());
        assert_eq!(Outcome::of(&not_found), Outcome::NoAnswer);
        let reply = |text: &str| -> RedisResult<()> {
            Err(redis::parse_redis_value(text.as_bytes())
                .unwrap()
                .extract_error()
                .unwrap_err())
        };
        assert_eq!(
            Outcome::of(&reply("-NOSCRIPT No matching script\r\n")),
            Outcome::Answered
        );
        assert_eq!(Outcome::of(&reply("-ERR something\r\n")), Outcome::Answered);
        assert_eq!(
            Outcome::of(&reply("-CLUSTERDOWN The cluster is down\r\n")),
            Outcome::Neutral
        );
        assert_eq!(
            Outcome::of(&reply("-MOVED 3999 127.0.0.1:6381\r\n")),
            Outcome::Neutral
        );
    }

    #[test]
    fn a_run_of_failures_starts_one_rebuild() {
        let t0 = Instant::now();
        let later = t0 + REBUILD_INTERVAL;
        let mut w = Watch::new(t0);
        for _ in 1..FAILURES_BEFORE_REBUILD {
            assert!(!w.observe(0, Outcome::NoAnswer, later));
        }
        assert!(w.observe(0, Outcome::NoAnswer, later));
        // One at a time.
        assert!(!w.observe(0, Outcome::NoAnswer, later));
        w.rebuilt(later);
        assert_eq!(w.generation, 1);
        // Late failures of commands sent on the old connection do not count.
        for _ in 0..10 {
            assert!(!w.observe(0, Outcome::NoAnswer, later + REBUILD_INTERVAL));
        }
        assert_eq!(w.failures, 0);
    }

    #[test]
    fn an_answer_ends_the_run() {
        let t0 = Instant::now();
        let later = t0 + REBUILD_INTERVAL;
        let mut w = Watch::new(t0);
        for _ in 1..FAILURES_BEFORE_REBUILD {
            assert!(!w.observe(0, Outcome::NoAnswer, later));
        }
        assert!(!w.observe(0, Outcome::Answered, later));
        assert!(!w.observe(0, Outcome::NoAnswer, later));
        // Neither ends nor extends it.
        assert!(!w.observe(0, Outcome::Neutral, later));
        for _ in 2..FAILURES_BEFORE_REBUILD {
            assert!(!w.observe(0, Outcome::NoAnswer, later));
        }
        assert!(w.observe(0, Outcome::NoAnswer, later));
    }

    #[test]
    fn rebuilds_are_spaced() {
        let t0 = Instant::now();
        let mut w = Watch::new(t0);
        // Too soon after the first connection.
        for _ in 0..10 {
            assert!(!w.observe(0, Outcome::NoAnswer, t0 + REBUILD_INTERVAL / 2));
        }
        assert!(w.observe(0, Outcome::NoAnswer, t0 + REBUILD_INTERVAL));
        // A failed rebuild: the next waits the interval again.
        let failed_at = t0 + REBUILD_INTERVAL * 2;
        w.rebuild_failed(failed_at);
        assert!(!w.observe(0, Outcome::NoAnswer, failed_at + REBUILD_INTERVAL / 2));
        assert!(w.observe(0, Outcome::NoAnswer, failed_at + REBUILD_INTERVAL));
    }
}
