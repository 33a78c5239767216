//! # synckairos-engine
//!
//! The native client of the SyncKairos engine: it runs each command of
//! [`synckairos_core`] as exactly one script call on Redis (`EVALSHA`, falling
//! back to `EVAL` when the server answers `NOSCRIPT`). The fan-out gateway
//! (expiry) and the audit consumer (restore) use it; the edge worker sends
//! the same scripts over Upstash's REST API.
#![deny(missing_docs)]

pub mod cluster;
pub mod fixtures;
pub mod target;

pub use target::{RedisTarget, TargetError};

use std::sync::Arc;

use redis::aio::ConnectionManager;
use redis::{Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, Value};
use synckairos_core::devices::{self, DeviceOp, DeviceReply};
use synckairos_core::keys::SessionKeys;
use synckairos_core::record;
use synckairos_core::script::{self, BadReply, Call, CallOptions, ScriptReply, Settings};
use synckairos_core::{DomainError, Request, SyncState};

/// What can go wrong below the domain (domain refusals are in [`ScriptReply::result`]).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Redis could not be reached or answered with an error.
    #[error("redis: {0}")]
    Redis(#[from] RedisError),
    /// A script replied with something the engine does not understand.
    #[error(transparent)]
    BadReply(#[from] BadReply),
    /// The Redis target (URL or cluster seeds) is not valid.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// A stored state could not be parsed.
    #[error("stored state of {session_id} is not valid: {source}")]
    BadState {
        /// The session.
        session_id: String,
        /// The parse error.
        source: record::BadRecord,
    },
}

/// How the engine's connection reconnects. A command that finds Redis gone
/// tries to reconnect twice (100 and 200 ms apart, each attempt given 1 s)
/// and then fails, so the caller gets its 503 within about 2 s. The library's
/// default (six retries, doubling from 100 ms) held each request about 9 s
/// while Redis was down, close to a client's whole timeout.
fn connection_config() -> redis::aio::ConnectionManagerConfig {
    redis::aio::ConnectionManagerConfig::new()
        .set_number_of_retries(2)
        .set_connection_timeout(Some(std::time::Duration::from_secs(1)))
}

/// The engine's connection to Redis: one server's [`ConnectionManager`], or a
/// Redis Cluster connection that routes each command to the primary of its
/// first key's slot (`EVALSHA`/`EVAL` by `KEYS[1]`, `GET` by its key) and a
/// keyless one (`TIME`, `PING`) to any node. Cheap to clone; it reconnects by
/// itself either way, and any `query_async` runs on it.
///
/// On a cluster every command is bounded ([`cluster::COMMAND_TIMEOUT`]) and
/// watched: after a run of commands without an answer the connection is
/// rebuilt, and every clone uses the new one (see [`cluster`]).
#[derive(Clone)]
pub struct RedisConnection(Conn);

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(Arc<cluster::Cluster>),
}

impl RedisConnection {
    /// Connects to `target`.
    pub async fn connect(target: &RedisTarget) -> Result<RedisConnection, EngineError> {
        Ok(RedisConnection(match target {
            RedisTarget::Single(url) => {
                let client = redis::Client::open(url.as_str())?;
                Conn::Single(ConnectionManager::new_with_config(client, connection_config()).await?)
            }
            RedisTarget::Cluster(seeds) => {
                Conn::Cluster(Arc::new(cluster::Cluster::connect(seeds).await?))
            }
        }))
    }

    /// Whether this is a cluster connection.
    pub fn is_cluster(&self) -> bool {
        matches!(self.0, Conn::Cluster(_))
    }

    /// How many times the watchdog has replaced the cluster connection
    /// (always 0 on one server).
    pub fn rebuilds(&self) -> u64 {
        match &self.0 {
            Conn::Single(_) => 0,
            Conn::Cluster(c) => c.rebuilds(),
        }
    }
}

impl redis::aio::ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.0 {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => {
                let c = Arc::clone(c);
                Box::pin(async move {
                    c.run(|mut conn| async move { conn.req_packed_command(cmd).await })
                        .await
                })
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.0 {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => {
                let c = Arc::clone(c);
                Box::pin(async move {
                    c.run(|mut conn| async move {
                        conn.req_packed_commands(cmd, offset, count).await
                    })
                    .await
                })
            }
        }
    }

    fn get_db(&self) -> i64 {
        match &self.0 {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(_) => 0,
        }
    }
}

/// A handle to the engine; cheap to clone (one multiplexed connection, or
/// one cluster connection, that reconnects by itself and is rebuilt when it
/// stops answering).
#[derive(Clone)]
pub struct Engine {
    conn: RedisConnection,
    settings: Settings,
}

impl Engine {
    /// Connects to `redis_url` and loads every script (`SCRIPT LOAD`), so the
    /// first command is already a single `EVALSHA`. A
    /// `redis+cluster://host1:port,host2:port` URL connects to a Redis
    /// Cluster (see [`RedisTarget`]); any other URL to one server.
    pub async fn connect(redis_url: &str, settings: Settings) -> Result<Engine, EngineError> {
        let target = if redis_url.to_ascii_lowercase().contains("+cluster://") {
            RedisTarget::parse(redis_url)?
        } else {
            RedisTarget::Single(redis_url.to_string())
        };
        Engine::connect_target(&target, settings).await
    }

    /// Connects to `target` (one server or a cluster, e.g. from
    /// [`RedisTarget::from_env`]) and loads every script.
    ///
    /// On a cluster every node (replicas too, so a promoted one has them)
    /// is asked to load them; a node that cannot be reached then loads each
    /// script on its first `NOSCRIPT`, so one down node does not stop the
    /// service from starting.
    pub async fn connect_target(
        target: &RedisTarget,
        settings: Settings,
    ) -> Result<Engine, EngineError> {
        let conn = RedisConnection::connect(target).await?;
        let engine = Engine { conn, settings };
        match engine.load_scripts().await {
            Err(_) if engine.conn.is_cluster() => {}
            other => other?,
        }
        Ok(engine)
    }

    /// (Re)loads every script into the server's script cache (on a cluster,
    /// into every node's).
    pub async fn load_scripts(&self) -> Result<(), EngineError> {
        let mut conn = self.conn.clone();
        let sources = script::all().into_iter().chain([&devices::DEVICES]);
        if conn.is_cluster() {
            // One command each: a keyless pipeline would go to one node,
            // while `SCRIPT LOAD` alone is sent to all of them.
            for s in sources {
                let _: String = redis::cmd("SCRIPT")
                    .arg("LOAD")
                    .arg(s.source)
                    .query_async(&mut conn)
                    .await?;
            }
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for s in sources {
            pipe.cmd("SCRIPT").arg("LOAD").arg(s.source);
        }
        let _: Vec<String> = pipe.query_async(&mut conn).await?;
        Ok(())
    }

    /// The deployment settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The underlying connection (for callers that pipeline their own reads).
    /// On a cluster, a pipeline goes to the node of its first keyed command,
    /// so its keys must share a slot (one shard).
    pub fn connection(&self) -> RedisConnection {
        self.conn.clone()
    }

    /// Runs one command: one `EVALSHA` (plus one `EVAL` only if the server
    /// lost its script cache).
    pub async fn execute(
        &self,
        req: &Request,
        opts: &CallOptions,
    ) -> Result<ScriptReply, EngineError> {
        let call = script::call(req, &self.settings, opts);
        let parts = self.run(&call).await?;
        Ok(script::parse_reply(&parts, &req.session_id)?)
    }

    /// Registers or removes a push device: one call of the devices script
    /// (`now_ms` for tests only; `None` is Redis `TIME`).
    pub async fn devices(
        &self,
        op: &DeviceOp,
        now_ms: Option<i64>,
    ) -> Result<Result<DeviceReply, DomainError>, EngineError> {
        let call = devices::call(op, &self.settings, now_ms);
        let parts = self.run(&call).await?;
        Ok(devices::parse_reply(&parts, op.session_id())?)
    }

    /// Runs one script call: `EVALSHA`, and `EVAL` only if the server lost
    /// its script cache. The reply's strings. On a cluster both go to the
    /// primary of `KEYS[1]`'s slot (redis-rs routes `EVALSHA` and `EVAL` by
    /// their first key; every key of a call shares its hash tag), and the
    /// `NOSCRIPT` fallback works per node, each having its own cache.
    pub async fn run(&self, call: &Call) -> Result<Vec<String>, EngineError> {
        let mut conn = self.conn.clone();
        let parts: Vec<String> = match redis::cmd("EVALSHA")
            .arg(call.script.sha1())
            .arg(call.keys.len())
            .arg(&call.keys)
            .arg(&call.args)
            .query_async(&mut conn)
            .await
        {
            Err(e) if e.kind() == ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                redis::cmd("EVAL")
                    .arg(call.script.source)
                    .arg(call.keys.len())
                    .arg(&call.keys)
                    .arg(&call.args)
                    .query_async(&mut conn)
                    .await?
            }
            other => other?,
        };
        Ok(parts)
    }

    /// Reads a session's stored state (one `GET` of its record).
    pub async fn get(&self, session_id: &str) -> Result<Option<SyncState>, EngineError> {
        let keys = SessionKeys::new(session_id, self.settings.shards);
        let mut conn = self.conn.clone();
        let raw: Option<String> = redis::cmd("GET")
            .arg(&keys.state)
            .query_async(&mut conn)
            .await?;
        raw.map(|r| {
            record::decode(&r).map_err(|source| EngineError::BadState {
                session_id: session_id.to_string(),
                source,
            })
        })
        .transpose()
    }

    /// Writes back a session rebuilt from the audit trail (see
    /// [`synckairos_core::restore`]) with its `session_restored` audit event,
    /// in one script call, unless Redis still has the session. Returns the
    /// state written, or `None` when the session exists.
    pub async fn restore(
        &self,
        last: &SyncState,
        last_version: u64,
        actor: Option<&str>,
    ) -> Result<Option<SyncState>, EngineError> {
        let now = self.redis_time_ms().await?;
        let st = synckairos_core::restore::restored_state(last, last_version, now);
        let k = SessionKeys::new(&st.session_id, self.settings.shards);
        // redis::Script sends EVALSHA and falls back to EVAL on NOSCRIPT.
        let script = redis::Script::new(script::RESTORE.source);
        let mut conn = self.conn.clone();
        let mut invocation = script.prepare_invoke();
        invocation
            .key(&k.state)
            .key(&k.deadlines)
            .key(&k.audit)
            .arg(&st.session_id)
            .arg(&k.channel)
            .arg(record::encode(&st))
            .arg(st.version)
            .arg(now)
            .arg(self.settings.base_ttl_s.max(1))
            .arg(actor.unwrap_or(""))
            .arg(
                synckairos_core::view::wake_at(&st, self.settings.idle_ttl_s as i64 * 1000)
                    .unwrap_or(now),
            )
            .arg(synckairos_core::keys::WAKE_CHANNEL)
            .arg(k.shard);
        let reply: Vec<String> = invocation.invoke_async(&mut conn).await?;
        match reply.first().map(String::as_str) {
            Some("restored") => Ok(Some(st)),
            Some("exists") => Ok(None),
            _ => Err(EngineError::BadReply(BadReply(format!("{reply:?}")))),
        }
    }

    /// Redis `TIME` in epoch milliseconds.
    pub async fn redis_time_ms(&self) -> Result<i64, EngineError> {
        let mut conn = self.conn.clone();
        let (s, us): (i64, i64) = redis::cmd("TIME").query_async(&mut conn).await?;
        Ok(s * 1000 + us / 1000)
    }
}
