//! The stream consumers' Redis: one server or a Redis Cluster, as
//! [`RedisTarget`] declares it (`REDIS_URL`, `REDIS_CLUSTER_URLS` or a
//! `redis+cluster://` URL: the declaration every native service reads).
//!
//! - [`RedisConn`] carries every command but a blocking read. On one
//!   server it is a [`ConnectionManager`]; on a cluster the engine's
//!   [`RedisConnection`], which sends each command to the primary of its
//!   key's slot (`EVALSHA` by its first key, `XREADGROUP` by its streams, a
//!   keyless `PING` or `SCRIPT LOAD` to every node), follows `MOVED`, and
//!   rides out a failover by itself. A cluster refuses a command whose keys
//!   are in different slots, and redis-rs sends a pipeline whole to the node
//!   of its first key, so [`RedisConn::pipelined`] takes each command with
//!   its shard: one pipeline on one server, one pipeline per shard, sent
//!   concurrently, on a cluster.
//! - [`ReadConn`] is a blocking read's own connection: a blocked
//!   `XREADGROUP` holds its connection until it returns, so each read that
//!   may block has one. On one server it is a [`ConnectionManager`] without
//!   a response timeout; on a cluster a plain connection to the node that
//!   serves the read's slot, found by following `MOVED` from a seed (and
//!   found again the same way when that node goes away).

use anyhow::Context as _;
use redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection};
use redis::{
    Cmd, ConnectionAddr, ConnectionInfo, ErrorKind, IntoConnectionInfo, Pipeline, RedisError,
    RedisFuture, RedisResult, ServerErrorKind, Value,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use synckairos_core::redact::redact_url;
pub use synckairos_engine::{RedisConnection, RedisTarget, TargetError};

/// How long connecting to a node may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// `MOVED`/`ASK` redirections one blocking read follows before it fails.
const MAX_REDIRECTS: usize = 5;

/// A connection for every command but a blocking read (see the module
/// docs). Cheap to clone; it reconnects by itself.
#[derive(Clone)]
pub struct RedisConn {
    conn: Conn,
    target: Arc<RedisTarget>,
}

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(RedisConnection),
}

/// One server's connections: no response timeout (a settle of a large
/// batch, or a blocking read, may take a while), 3 s to connect.
fn manager_config() -> redis::aio::ConnectionManagerConfig {
    redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(None)
}

impl RedisConn {
    /// Connects to `target`. Errors name it with its passwords redacted.
    pub async fn connect(target: &RedisTarget) -> anyhow::Result<RedisConn> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let conn = match target {
            RedisTarget::Single(url) => {
                let shown = redact_url(url);
                let client = redis::Client::open(url.as_str())
                    .with_context(|| format!("REDIS_URL {shown} is not a Redis URL"))?;
                Conn::Single(
                    ConnectionManager::new_with_config(client, manager_config())
                        .await
                        .with_context(|| format!("connecting to Redis at {shown}"))?,
                )
            }
            RedisTarget::Cluster(_) => Conn::Cluster(
                RedisConnection::connect(target)
                    .await
                    .with_context(|| format!("connecting to the Redis Cluster at {target}"))?,
            ),
        };
        Ok(RedisConn {
            conn,
            target: Arc::new(target.clone()),
        })
    }

    /// Whether this is a cluster connection.
    pub fn is_cluster(&self) -> bool {
        matches!(self.conn, Conn::Cluster(_))
    }

    /// Where it connects.
    pub fn target(&self) -> &RedisTarget {
        &self.target
    }

    /// A new, not yet connected, connection for blocking reads on the same
    /// Redis.
    pub fn read_conn(&self) -> ReadConn {
        ReadConn::new(&self.target)
    }

    /// Runs `cmds`, each with the shard whose slot its keys are in: one
    /// pipeline on one server; on a cluster one pipeline per shard, all sent
    /// at once. The replies, in the order of `cmds`; an error reply (or a
    /// shard that cannot be reached) fails the whole call, so what is sent
    /// this way must be safe to send again.
    pub async fn pipelined(&self, cmds: &[(u16, Cmd)]) -> RedisResult<Vec<Value>> {
        if cmds.is_empty() {
            return Ok(Vec::new());
        }
        if !self.is_cluster() {
            let mut pipe = redis::pipe();
            for (_, c) in cmds {
                pipe.add_command(c.clone());
            }
            let mut conn = self.clone();
            return pipe.query_async(&mut conn).await;
        }
        let mut by_shard: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
        for (i, (shard, _)) in cmds.iter().enumerate() {
            by_shard.entry(*shard).or_default().push(i);
        }
        let sends = by_shard.into_values().map(|idx| {
            let mut pipe = redis::pipe();
            for &i in &idx {
                pipe.add_command(cmds[i].1.clone());
            }
            let mut conn = self.clone();
            async move {
                let r: RedisResult<Vec<Value>> = pipe.query_async(&mut conn).await;
                (idx, r)
            }
        });
        let mut out = vec![Value::Nil; cmds.len()];
        for (idx, r) in futures::future::join_all(sends).await {
            for (i, v) in idx.into_iter().zip(r?) {
                out[i] = v;
            }
        }
        Ok(out)
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.conn {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.conn {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match &self.conn {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// A blocking read's own connection (see the module docs). It connects on
/// its first query; after an error it connects again on the next.
pub struct ReadConn(Read);

enum Read {
    Single {
        url: String,
        conn: Option<ConnectionManager>,
    },
    Slot(SlotConn),
}

impl ReadConn {
    /// A connection to `target`, not connected yet.
    pub fn new(target: &RedisTarget) -> ReadConn {
        ReadConn(match target {
            RedisTarget::Single(url) => Read::Single {
                url: url.clone(),
                conn: None,
            },
            RedisTarget::Cluster(seeds) => Read::Slot(SlotConn {
                seeds: seeds.clone(),
                node: None,
            }),
        })
    }

    /// Sends `cmd` (whose keys share one slot) and waits for its reply, as
    /// long as that takes.
    pub async fn query(&mut self, cmd: &Cmd) -> RedisResult<Value> {
        match &mut self.0 {
            Read::Single { url, conn } => {
                let c = match conn {
                    Some(c) => c,
                    None => {
                        let client = redis::Client::open(url.as_str())?;
                        let m =
                            ConnectionManager::new_with_config(client, manager_config()).await?;
                        conn.insert(m)
                    }
                };
                cmd.query_async(c).await
            }
            Read::Slot(s) => s.query(cmd).await,
        }
    }

    /// Drops the connection (a read that did not answer in time): the next
    /// query connects again.
    pub fn reset(&mut self) {
        match &mut self.0 {
            Read::Single { conn, .. } => *conn = None,
            Read::Slot(s) => s.node = None,
        }
    }
}

/// A connection to the node that serves one slot of a cluster.
struct SlotConn {
    /// The cluster's seed URLs (one scheme, one set of credentials).
    seeds: Vec<String>,
    /// The node last found serving the slot (`host:port`) and a connection
    /// to it.
    node: Option<(String, MultiplexedConnection)>,
}

impl SlotConn {
    /// Sends `cmd` to the node that serves its slot: the one last found,
    /// else any seed that answers; a `MOVED` reply names the node to go to
    /// (and remember), an `ASK` reply the node to ask once. A connection
    /// that failed is dropped; if it was one kept from an earlier query (its
    /// node may have died since), the slot is looked for again at once.
    async fn query(&mut self, cmd: &Cmd) -> RedisResult<Value> {
        let mut redirects = 0;
        let mut kept = true;
        loop {
            let mut conn = match &self.node {
                Some((_, c)) => c.clone(),
                None => {
                    kept = false;
                    let (addr, c) = self.connect_any().await?;
                    self.node = Some((addr, c.clone()));
                    c
                }
            };
            let e = match cmd.query_async::<Value>(&mut conn).await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            let Some((to, _)) = e.redirect_node() else {
                if matches!(e.kind(), ErrorKind::Server(_)) {
                    return Err(e);
                }
                self.node = None;
                if kept {
                    continue;
                }
                return Err(e);
            };
            if redirects >= MAX_REDIRECTS {
                return Err(e);
            }
            redirects += 1;
            let to = to.to_string();
            if e.kind() == ErrorKind::Server(ServerErrorKind::Ask) {
                // The slot is moving: this key is asked for there, once.
                let mut c = self.open(&to).await?;
                let mut pipe = redis::pipe();
                pipe.cmd("ASKING").ignore().add_command(cmd.clone());
                let (v,): (Value,) = pipe.query_async(&mut c).await?;
                return Ok(v);
            }
            self.node = None;
            kept = false;
            let c = self.open(&to).await?;
            self.node = Some((to, c));
        }
    }

    /// A connection to the first seed that answers.
    async fn connect_any(&self) -> RedisResult<(String, MultiplexedConnection)> {
        let mut last = None;
        for seed in &self.seeds {
            let info = seed.as_str().into_connection_info()?;
            let addr = match info.addr() {
                ConnectionAddr::Tcp(h, p)
                | ConnectionAddr::TcpTls {
                    host: h, port: p, ..
                } => {
                    format!("{h}:{p}")
                }
                _ => seed.clone(),
            };
            match connect(info).await {
                Ok(c) => return Ok((addr, c)),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| RedisError::from((ErrorKind::Client, "no cluster seed"))))
    }

    /// A connection to the node at `addr` (`host:port`, as a redirection
    /// names it), with the seeds' scheme and credentials.
    async fn open(&self, addr: &str) -> RedisResult<MultiplexedConnection> {
        let bad = || RedisError::from((ErrorKind::Client, "bad node address", addr.to_string()));
        let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let seed = self.seeds.first().ok_or_else(bad)?;
        let info = seed.as_str().into_connection_info()?;
        let to = match info.addr().clone() {
            ConnectionAddr::TcpTls {
                insecure,
                tls_params,
                ..
            } => ConnectionAddr::TcpTls {
                host,
                port,
                insecure,
                tls_params,
            },
            _ => ConnectionAddr::Tcp(host, port),
        };
        connect(info.set_addr(to)).await
    }
}

/// A plain connection to one node, without a response timeout.
async fn connect(info: ConnectionInfo) -> RedisResult<MultiplexedConnection> {
    let cfg = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(None);
    redis::Client::open(info)?
        .get_multiplexed_async_connection_with_config(&cfg)
        .await
}
