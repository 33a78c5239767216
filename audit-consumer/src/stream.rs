//! The Redis side: consumer groups on the shard streams, reads, claims,
//! acknowledgements and the dead-letter stream.
//!
//! **Reads.** One `XREADGROUP` names only streams of one slot on a Redis
//! Cluster (each shard's keys share a hash tag, so each shard is its own
//! slot), while one server takes every shard in one. So the shards are read
//! in *lanes*: one lane of every shard on one server (one multi-stream
//! `XREADGROUP`, as ever), one lane per shard on a cluster. A read that does
//! not block sends one command on one lane; on several lanes, once a blocking
//! read has set the block time, it only makes sure each lane has its
//! blocking read in flight and takes what they brought (a read-ahead per
//! batch would otherwise cost one command per shard, most of them empty;
//! before any blocking read it sends one per lane). A read that may block
//! keeps one blocking `XREADGROUP` in flight per lane, each on its own
//! connection ([`crate::conn::ReadConn`]), and returns as soon as any of
//! them brings entries: a read blocked on a quiet shard never holds up
//! another shard's entries. A lane's read still in flight when the caller
//! returns stays in flight, and what it brings is returned by the next read;
//! entries are never dropped on the client side. A lane that fails (its node
//! gone) is tried again a second later while the others go on.

use crate::conn::{ReadConn, RedisConn};
use crate::event::Entry;
use redis::streams::{
    StreamAutoClaimReply, StreamId, StreamPendingCountReply, StreamRangeReply, StreamReadReply,
};
use redis::{Cmd, RedisError, RedisResult, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use synckairos_core::keys;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// A lane whose read failed is read again after this long.
const LANE_RETRY: Duration = Duration::from_secs(1);
/// A blocking read that has not answered this long after its block time
/// is given up (its connection dropped and made again).
const READ_GRACE: Duration = Duration::from_secs(10);

/// The shard streams of a deployment, and this consumer's place in the group.
#[derive(Clone)]
pub struct Streams {
    conn: RedisConn,
    group: String,
    consumer: String,
    keys: Arc<Vec<String>>,
    /// The shards of each lane (one `XREADGROUP` each).
    lanes: Arc<Vec<Vec<u16>>>,
    /// The blocking reads in flight, and entries read and not yet returned.
    reads: Arc<Reads>,
}

/// The fields of a stream entry, as raw bytes.
pub fn fields(id: &StreamId) -> Vec<(String, Vec<u8>)> {
    id.map
        .iter()
        .map(|(k, v)| {
            let bytes = match v {
                Value::BulkString(b) => b.clone(),
                Value::SimpleString(s) => s.clone().into_bytes(),
                Value::Int(i) => i.to_string().into_bytes(),
                other => format!("{other:?}").into_bytes(),
            };
            (k.clone(), bytes)
        })
        .collect()
}

/// The entries of an `XREADGROUP` reply, with their shards.
fn entries_of(keys: &[String], reply: Option<StreamReadReply>) -> Vec<Entry> {
    let mut out = Vec::new();
    for k in reply.map(|r| r.keys).unwrap_or_default() {
        let Some(shard) = keys.iter().position(|key| *key == k.key) else {
            continue;
        };
        for id in &k.ids {
            out.push(Entry {
                shard: shard as u16,
                id: id.id.clone(),
                fields: fields(id),
                deliveries: 1,
            });
        }
    }
    out
}

/// What every lane's blocking read shares.
struct Reads {
    /// Entries a read brought that no caller has had yet (a read that
    /// returned an error beside them).
    ready: Mutex<Vec<Entry>>,
    /// The lanes' blocking reads; held by the one read waiting on them.
    lanes: tokio::sync::Mutex<Lanes>,
    /// The block time of the last blocking read, ms (0: none yet), which a
    /// non-blocking read on several lanes re-arms the lanes with.
    block_ms: std::sync::atomic::AtomicU64,
}

struct Lanes {
    state: Vec<Lane>,
    tx: mpsc::UnboundedSender<Done>,
    rx: mpsc::UnboundedReceiver<Done>,
    /// The reads in flight (aborted when the streams are dropped).
    tasks: JoinSet<()>,
}

#[derive(Default)]
struct Lane {
    /// Its connection, while no read is in flight on it.
    conn: Option<ReadConn>,
    busy: bool,
    /// After a failure: not read again before this.
    retry_at: Option<Instant>,
}

/// A lane's blocking read, done.
struct Done {
    lane: usize,
    conn: ReadConn,
    result: RedisResult<Vec<Entry>>,
}

impl Lanes {
    fn finish(&mut self, d: Done, got: &mut Vec<Entry>, errors: &mut Vec<RedisError>) {
        let lane = &mut self.state[d.lane];
        lane.busy = false;
        lane.conn = Some(d.conn);
        match d.result {
            Ok(entries) => {
                lane.retry_at = None;
                got.extend(entries);
            }
            Err(e) => {
                lane.retry_at = Some(Instant::now() + LANE_RETRY);
                errors.push(e);
            }
        }
        while self.tasks.try_join_next().is_some() {}
    }

    /// Takes every read that is done.
    fn drain(&mut self, got: &mut Vec<Entry>, errors: &mut Vec<RedisError>) {
        while let Ok(d) = self.rx.try_recv() {
            self.finish(d, got, errors);
        }
    }
}

impl Reads {
    fn stash(&self, entries: Vec<Entry>) {
        if !entries.is_empty() {
            self.ready.lock().expect("reads lock").extend(entries);
        }
    }

    fn take_ready(&self) -> Vec<Entry> {
        std::mem::take(&mut *self.ready.lock().expect("reads lock"))
    }

    /// A `>` read's answer from what its lanes gave: the entries, even when
    /// a lane failed (logged; the lane is tried again), unless no lane gave
    /// any (then the error). A missing group (`NOGROUP`: Redis lost the
    /// data) is always answered, so the group is made again at once; the
    /// entries read beside it wait for the next read.
    fn answer(&self, got: Vec<Entry>, mut errors: Vec<RedisError>) -> RedisResult<Vec<Entry>> {
        if let Some(i) = errors.iter().position(|e| e.code() == Some("NOGROUP")) {
            self.stash(got);
            return Err(errors.swap_remove(i));
        }
        let Some(e) = errors.into_iter().next() else {
            return Ok(got);
        };
        if got.is_empty() {
            return Err(e);
        }
        tracing::warn!(error = %e, entries = got.len(),
            "reading a shard's stream failed; the other shards' entries are taken");
        Ok(got)
    }
}

impl Streams {
    /// The streams of `shards` shards on `conn`'s Redis, read as `consumer`
    /// of `group`: in one lane on one server, one lane per shard on a
    /// cluster.
    pub fn new(conn: RedisConn, shards: u16, group: &str, consumer: &str) -> Streams {
        let lanes: Vec<Vec<u16>> = if conn.is_cluster() {
            (0..shards).map(|s| vec![s]).collect()
        } else {
            vec![(0..shards).collect()]
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let state = lanes.iter().map(|_| Lane::default()).collect();
        Streams {
            conn,
            group: group.into(),
            consumer: consumer.into(),
            keys: Arc::new((0..shards).map(keys::audit_stream).collect()),
            lanes: Arc::new(lanes),
            reads: Arc::new(Reads {
                ready: Mutex::new(Vec::new()),
                lanes: tokio::sync::Mutex::new(Lanes {
                    state,
                    tx,
                    rx,
                    tasks: JoinSet::new(),
                }),
                block_ms: std::sync::atomic::AtomicU64::new(0),
            }),
        }
    }

    /// The connection every command but a blocking read goes through.
    pub fn conn(&self) -> &RedisConn {
        &self.conn
    }

    /// The consumer group.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// This consumer's name.
    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    /// The stream keys, by shard.
    pub fn keys(&self) -> &[String] {
        &self.keys
    }

    /// How many `XREADGROUP`s one read of every shard takes: 1 on one
    /// server, one per shard on a cluster.
    pub fn lanes(&self) -> usize {
        self.lanes.len()
    }

    /// Creates the group on every shard stream (and the stream, `MKSTREAM`),
    /// starting from the stream's beginning; an existing group is kept. Also
    /// loads the consumer's scripts (on a cluster into every node that
    /// answers: one that does not runs them by `EVAL` on first use).
    pub async fn ensure_groups(&self) -> RedisResult<()> {
        match self.load_scripts().await {
            Err(_) if self.conn.is_cluster() => {}
            other => other?,
        }
        let mut conn = self.conn.clone();
        for key in self.keys.iter() {
            let r: RedisResult<()> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(key)
                .arg(&self.group)
                .arg("0")
                .arg("MKSTREAM")
                .query_async(&mut conn)
                .await;
            match r {
                Err(e) if e.code() == Some("BUSYGROUP") => {}
                // Out of memory, Redis refuses XGROUP CREATE before looking:
                // a group that exists is all a (re)starting consumer needs,
                // and draining is what frees the memory.
                Err(e) if e.code() == Some("OOM") && self.has_group(key).await? => {}
                other => other?,
            }
        }
        Ok(())
    }

    /// Whether the stream `key` has this consumer's group.
    async fn has_group(&self, key: &str) -> RedisResult<bool> {
        let mut conn = self.conn.clone();
        let groups: Value = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(key)
            .query_async(&mut conn)
            .await?;
        Ok(match &groups {
            Value::Array(gs) => gs
                .iter()
                .any(|g| text(lookup(g, "name")).as_deref() == Some(self.group.as_str())),
            _ => false,
        })
    }

    /// One `XREADGROUP` of the streams of `from` (one lane's), from each
    /// one's id.
    fn xreadgroup(&self, from: &[(u16, &str)], count: usize, block_ms: Option<u64>) -> Cmd {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.group)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(count.max(1));
        if let Some(ms) = block_ms {
            cmd.arg("BLOCK").arg(ms);
        }
        cmd.arg("STREAMS");
        for (shard, _) in from {
            cmd.arg(&self.keys[*shard as usize]);
        }
        for (_, id) in from {
            cmd.arg(*id);
        }
        cmd
    }

    /// New entries (`>`) of every shard; `count` is per stream. Without a
    /// block time one `XREADGROUP` per lane, sent together; with one, up to
    /// `block_ms` for the first lane that brings entries (see the module
    /// docs). Also returns what earlier reads brought and no caller took.
    pub async fn read(&self, count: usize, block_ms: Option<u64>) -> RedisResult<Vec<Entry>> {
        let (got, errors) = match block_ms {
            Some(ms) => self.read_blocking(count, ms).await,
            None => {
                let mut got = self.reads.take_ready();
                let mut errors = Vec::new();
                let block_ms = self
                    .reads
                    .block_ms
                    .load(std::sync::atomic::Ordering::Relaxed);
                if let Ok(mut lanes) = self.reads.lanes.try_lock() {
                    lanes.drain(&mut got, &mut errors);
                    // Several lanes (a cluster): a read-ahead does not send
                    // one XREADGROUP per shard each time (16 commands a
                    // batch, most of them empty); it makes sure every lane
                    // has its blocking read in flight and takes what they
                    // brought. Each shard then costs a read only when it
                    // has entries.
                    if self.lanes.len() > 1 && block_ms > 0 {
                        self.arm(&mut lanes, count, block_ms);
                        return self.reads.answer(got, errors);
                    }
                }
                let from: Vec<(u16, String)> = (0..self.keys.len() as u16)
                    .map(|s| (s, ">".into()))
                    .collect();
                for r in self.read_now(&from, count).await {
                    match r {
                        Ok(entries) => got.extend(entries),
                        Err(e) => errors.push(e),
                    }
                }
                (got, errors)
            }
        };
        self.reads.answer(got, errors)
    }

    /// This consumer's own unacknowledged entries (what a previous run under
    /// the same name left), after `cursor` per shard (`0` to start), with
    /// their delivery counts. Any shard's failure fails the whole read.
    pub async fn read_own_pending(
        &self,
        cursor: &[(u16, String)],
        count: usize,
    ) -> RedisResult<Vec<Entry>> {
        let mut out = Vec::new();
        for r in self.read_now(cursor, count).await {
            out.extend(r?);
        }
        self.attach_deliveries(&mut out).await?;
        Ok(out)
    }

    /// One non-blocking `XREADGROUP` per lane of the shards in `from`, from
    /// each one's id, sent together. One result per lane.
    async fn read_now(&self, from: &[(u16, String)], count: usize) -> Vec<RedisResult<Vec<Entry>>> {
        let mut by_lane: BTreeMap<usize, Vec<(u16, &str)>> = BTreeMap::new();
        for (shard, id) in from {
            let lane = self
                .lanes
                .iter()
                .position(|l| l.contains(shard))
                .unwrap_or(0);
            by_lane.entry(lane).or_default().push((*shard, id.as_str()));
        }
        let reads = by_lane.into_values().map(|f| {
            let cmd = self.xreadgroup(&f, count, None);
            let mut conn = self.conn.clone();
            let keys = self.keys.clone();
            async move {
                let r: Option<StreamReadReply> = cmd.query_async(&mut conn).await?;
                Ok(entries_of(&keys, r))
            }
        });
        futures::future::join_all(reads).await
    }

    /// Starts a blocking read (`block_ms`) on every lane that has none in
    /// flight and is not waiting out a failure; returns when the first such
    /// wait ends (far in the future when none).
    fn arm(&self, lanes: &mut Lanes, count: usize, block_ms: u64) -> Instant {
        let now = Instant::now();
        let mut wake = now + Duration::from_secs(3600);
        for i in 0..lanes.state.len() {
            let lane = &mut lanes.state[i];
            if lane.busy {
                continue;
            }
            if let Some(t) = lane.retry_at.filter(|t| *t > now) {
                wake = wake.min(t);
                continue;
            }
            lane.busy = true;
            let mut conn = lane.conn.take().unwrap_or_else(|| self.conn.read_conn());
            let from: Vec<(u16, &str)> = self.lanes[i].iter().map(|s| (*s, ">")).collect();
            let cmd = self.xreadgroup(&from, count, Some(block_ms));
            let (keys, tx) = (self.keys.clone(), lanes.tx.clone());
            let limit = Duration::from_millis(block_ms) + READ_GRACE;
            lanes.tasks.spawn(async move {
                let result = match tokio::time::timeout(limit, conn.query(&cmd)).await {
                    Ok(r) => r.and_then(|v| {
                        let reply: Option<StreamReadReply> = redis::from_redis_value(v)?;
                        Ok(entries_of(&keys, reply))
                    }),
                    Err(_) => {
                        conn.reset();
                        Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "a blocking read did not answer",
                        )
                        .into())
                    }
                };
                let _ = tx.send(Done {
                    lane: i,
                    conn,
                    result,
                });
            });
        }
        wake
    }

    /// New entries of every lane, waiting up to `block_ms` for the first
    /// lane that brings any: a blocking read is started on every lane that
    /// has none in flight (and did not fail within the last second), and
    /// what any of them brings ends the wait. Reads still in flight then
    /// stay in flight. Also what earlier reads brought.
    async fn read_blocking(&self, count: usize, block_ms: u64) -> (Vec<Entry>, Vec<RedisError>) {
        let mut lanes = self.reads.lanes.lock().await;
        let deadline = Instant::now() + Duration::from_millis(block_ms);
        let mut got = self.reads.take_ready();
        let mut errors = Vec::new();
        lanes.drain(&mut got, &mut errors);
        self.reads
            .block_ms
            .store(block_ms, std::sync::atomic::Ordering::Relaxed);
        while got.is_empty() && errors.is_empty() {
            let wake = self.arm(&mut lanes, count, block_ms).min(deadline);
            match tokio::time::timeout_at(wake, lanes.rx.recv()).await {
                Ok(Some(d)) => {
                    lanes.finish(d, &mut got, &mut errors);
                    lanes.drain(&mut got, &mut errors);
                }
                Ok(None) => break,
                Err(_) if Instant::now() >= deadline => break,
                Err(_) => {}
            }
        }
        (got, errors)
    }

    /// `XAUTOCLAIM` on `shards`: entries idle on any consumer for at
    /// least `idle_ms` become this consumer's. Also returns the ids that are
    /// pending but gone from the stream, to be acknowledged.
    pub async fn claim(
        &self,
        idle_ms: u64,
        count: usize,
        shards: &[u16],
    ) -> RedisResult<(Vec<Entry>, Vec<(u16, String)>)> {
        let mut conn = self.conn.clone();
        let (mut out, mut gone) = (Vec::new(), Vec::new());
        for &shard in shards {
            let key = &self.keys[shard as usize];
            let r: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
                .arg(key)
                .arg(&self.group)
                .arg(&self.consumer)
                .arg(idle_ms)
                .arg("0-0")
                .arg("COUNT")
                .arg(count.max(1))
                .query_async(&mut conn)
                .await?;
            for id in &r.claimed {
                out.push(Entry {
                    shard,
                    id: id.id.clone(),
                    fields: fields(id),
                    deliveries: 1,
                });
            }
            gone.extend(r.deleted_ids.into_iter().map(|id| (shard, id)));
        }
        self.attach_deliveries(&mut out).await?;
        Ok((out, gone))
    }

    /// Sets each entry's delivery count from `XPENDING` (this consumer's).
    async fn attach_deliveries(&self, entries: &mut [Entry]) -> RedisResult<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        let mut counts: HashMap<(u16, String), u64> = HashMap::new();
        let mut shards: Vec<u16> = entries.iter().map(|e| e.shard).collect();
        shards.sort_unstable();
        shards.dedup();
        for shard in shards {
            let n = entries.iter().filter(|e| e.shard == shard).count();
            let first = entries.iter().filter(|e| e.shard == shard).map(|e| &e.id);
            let lo = first.clone().min_by(|a, b| id_cmp(a, b)).cloned();
            let hi = first.max_by(|a, b| id_cmp(a, b)).cloned();
            let (Some(lo), Some(hi)) = (lo, hi) else {
                continue;
            };
            let reply: StreamPendingCountReply = redis::cmd("XPENDING")
                .arg(&self.keys[shard as usize])
                .arg(&self.group)
                .arg(&lo)
                .arg(&hi)
                .arg(n.max(1) * 2 + 100)
                .arg(&self.consumer)
                .query_async(&mut conn)
                .await?;
            for p in reply.ids {
                counts.insert((shard, p.id), p.times_delivered as u64);
            }
        }
        for e in entries.iter_mut() {
            if let Some(n) = counts.get(&(e.shard, e.id.clone())) {
                e.deliveries = *n;
            }
        }
        Ok(())
    }

    /// After the batch committed: acknowledges every entry of the batch,
    /// moves `dead` entries (with their reasons) to the shard's dead-letter
    /// stream, then trims each shard touched ([`TRIM`]). All of it in one
    /// round trip (on a cluster one per shard, sent together), and all of it
    /// safe to repeat: a retried settle acknowledges nothing twice and
    /// writes no second dead letter ([`DEAD_LETTER`]). Returns the entries
    /// trimmed.
    pub async fn settle(
        &self,
        done: &[(u16, String)],
        dead: &[(&Entry, &str)],
    ) -> Result<u64, RedisError> {
        match self.settle_with(done, dead, false).await {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                // A node lost its scripts (a restart, or a promoted replica
                // that never had them): repeat the whole settle, which is
                // safe to repeat, with the sources (`EVAL` caches them there).
                self.settle_with(done, dead, true).await
            }
            other => other,
        }
    }

    async fn settle_with(
        &self,
        done: &[(u16, String)],
        dead: &[(&Entry, &str)],
        eval: bool,
    ) -> Result<u64, RedisError> {
        let mut by_shard: BTreeMap<u16, Vec<&str>> = BTreeMap::new();
        for (s, id) in done {
            by_shard.entry(*s).or_default().push(id);
        }
        let mut cmds: Vec<(u16, Cmd)> = Vec::new();
        for (shard, ids) in &by_shard {
            if ids.is_empty() {
                continue;
            }
            let mut x = redis::cmd("XACK");
            x.arg(&self.keys[*shard as usize]).arg(&self.group).arg(ids);
            cmds.push((*shard, x));
        }
        for (e, why) in dead {
            by_shard.entry(e.shard).or_default();
            let mut x = script_call(&DEAD_LETTER, DEAD_LETTER_LUA, eval);
            x.arg(2)
                .arg(&self.keys[e.shard as usize])
                .arg(keys::dead_letter_stream(e.shard))
                .arg(&self.group)
                .arg(&e.id);
            for (k, v) in &e.fields {
                x.arg(k).arg(v);
            }
            x.arg("dl_reason")
                .arg(why)
                .arg("dl_source_id")
                .arg(&e.id)
                .arg("dl_deliveries")
                .arg(e.deliveries)
                .arg("dl_consumer")
                .arg(&self.consumer);
            cmds.push((e.shard, x));
        }
        let first_trim = cmds.len();
        for shard in by_shard.keys() {
            let mut x = script_call(&TRIM, TRIM_LUA, eval);
            x.arg(1).arg(&self.keys[*shard as usize]);
            cmds.push((*shard, x));
        }
        let replies = self.conn.pipelined(&cmds).await?;
        let mut trimmed = 0;
        for v in &replies[first_trim..] {
            trimmed += redis::from_redis_value_ref::<u64>(v)?;
        }
        Ok(trimmed)
    }

    /// Loads the consumer's scripts into Redis's script cache (on a
    /// cluster, into every node's).
    pub async fn load_scripts(&self) -> RedisResult<()> {
        let mut conn = self.conn.clone();
        for script in [&*TRIM, &*DEAD_LETTER] {
            script.load_async(&mut conn).await?;
        }
        Ok(())
    }

    /// Every shard stream's groups and positions: one `XINFO STREAM <key>
    /// FULL COUNT 1` per shard, in one round trip (on a cluster, one per
    /// shard, sent together). For a shard whose group has nothing pending
    /// but entries left to read while an older entry is still kept for
    /// another group, one `XRANGE` finds the oldest unread entry.
    pub async fn info(&self) -> RedisResult<Vec<ShardInfo>> {
        let cmds: Vec<(u16, Cmd)> = self
            .keys
            .iter()
            .enumerate()
            .map(|(shard, key)| {
                let mut x = redis::cmd("XINFO");
                x.arg("STREAM").arg(key).arg("FULL").arg("COUNT").arg(1);
                (shard as u16, x)
            })
            .collect();
        let vals = self.conn.pipelined(&cmds).await?;
        let mut out: Vec<ShardInfo> = vals.iter().map(parse_info).collect();
        let mut conn = self.conn.clone();
        for (shard, info) in out.iter_mut().enumerate() {
            let Some(g) = info.group(&self.group) else {
                continue;
            };
            let behind = g.pel_count == 0 && g.lag != Some(0) && info.length > 0;
            let first_is_unread = info
                .first_entry
                .as_deref()
                .is_some_and(|f| id_cmp(f, &g.last_delivered).is_gt());
            if behind && !first_is_unread {
                let after = format!("({}", g.last_delivered);
                let r: StreamRangeReply = redis::cmd("XRANGE")
                    .arg(&self.keys[shard])
                    .arg(after)
                    .arg("+")
                    .arg("COUNT")
                    .arg(1)
                    .query_async(&mut conn)
                    .await?;
                info.oldest_unread = r.ids.first().map(|e| e.id.clone());
            } else if behind {
                info.oldest_unread = info.first_entry.clone();
            }
        }
        Ok(out)
    }

    /// `PING` (on a cluster, every primary).
    pub async fn ping(&self) -> RedisResult<()> {
        let mut conn = self.conn.clone();
        redis::cmd("PING").query_async::<String>(&mut conn).await?;
        Ok(())
    }
}

/// A call of `script`: `EVALSHA <sha>`, or with `eval` `EVAL <source>`;
/// the caller adds the key count, keys and arguments.
fn script_call(script: &redis::Script, source: &str, eval: bool) -> Cmd {
    let mut x = redis::cmd(if eval { "EVAL" } else { "EVALSHA" });
    if eval {
        x.arg(source);
    } else {
        x.arg(script.get_hash());
    }
    x
}

const TRIM_LUA: &str = include_str!("lua/trim.lua");
const DEAD_LETTER_LUA: &str = include_str!("lua/dead_letter.lua");

/// Trims a shard's audit stream up to what every consumer group has
/// acknowledged (`src/lua/trim.lua`): the streams' only bound.
pub static TRIM: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(TRIM_LUA));

/// Acknowledges one entry and writes its dead letter, together and once
/// (`src/lua/dead_letter.lua`).
pub static DEAD_LETTER: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(DEAD_LETTER_LUA));

/// The Redis time (epoch ms) in a stream id `<ms>-<seq>`.
pub fn id_ms(id: &str) -> Option<i64> {
    id.split('-').next()?.parse().ok()
}

/// Orders stream ids numerically (`<ms>-<seq>`).
pub fn id_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let parse = |s: &str| {
        let (ms, seq) = s.split_once('-').unwrap_or((s, "0"));
        (
            ms.parse::<u64>().unwrap_or(0),
            seq.parse::<u64>().unwrap_or(0),
        )
    };
    parse(a).cmp(&parse(b))
}

/// One consumer group's place on a shard stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupInfo {
    /// The group's name.
    pub name: String,
    /// The last entry delivered to any of its consumers.
    pub last_delivered: String,
    /// Entries not yet delivered to the group (`None`: Redis cannot tell).
    pub lag: Option<u64>,
    /// Entries delivered and not yet acknowledged.
    pub pel_count: u64,
    /// The oldest of those.
    pub oldest_pending: Option<String>,
}

/// A shard stream, from one `XINFO STREAM <key> FULL COUNT 1`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardInfo {
    /// Entries in the stream.
    pub length: u64,
    /// Its first entry's id.
    pub first_entry: Option<String>,
    /// Every consumer group.
    pub groups: Vec<GroupInfo>,
    /// The oldest entry this consumer's group has not read yet, when it
    /// has nothing pending (see [`Streams::info`]).
    pub oldest_unread: Option<String>,
}

impl ShardInfo {
    /// The group named `name`.
    pub fn group(&self, name: &str) -> Option<&GroupInfo> {
        self.groups.iter().find(|g| g.name == name)
    }
}

/// The value of `name` in a RESP2 flat key/value array (or a RESP3 map).
fn lookup<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    match v {
        Value::Array(items) => items.chunks(2).find_map(|kv| match kv {
            [k, v] if redis::from_redis_value_ref::<String>(k).ok()? == name => Some(v),
            _ => None,
        }),
        Value::Map(pairs) => pairs.iter().find_map(|(k, v)| {
            (redis::from_redis_value_ref::<String>(k).ok()? == name).then_some(v)
        }),
        _ => None,
    }
}

fn text(v: Option<&Value>) -> Option<String> {
    v.and_then(|v| redis::from_redis_value_ref::<String>(v).ok())
}

fn number(v: Option<&Value>) -> Option<u64> {
    v.and_then(|v| redis::from_redis_value_ref::<u64>(v).ok())
}

/// The first element's first element: the id of `[[id, ...], ...]`.
fn first_id(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::Array(items) => match items.first()? {
            Value::Array(inner) => text(inner.first()),
            _ => None,
        },
        _ => None,
    }
}

fn parse_info(v: &Value) -> ShardInfo {
    let groups = match lookup(v, "groups") {
        Some(Value::Array(gs)) => gs
            .iter()
            .map(|g| GroupInfo {
                name: text(lookup(g, "name")).unwrap_or_default(),
                last_delivered: text(lookup(g, "last-delivered-id"))
                    .unwrap_or_else(|| "0-0".into()),
                lag: number(lookup(g, "lag")),
                pel_count: number(lookup(g, "pel-count")).unwrap_or(0),
                oldest_pending: first_id(lookup(g, "pending")),
            })
            .collect(),
        _ => Vec::new(),
    };
    ShardInfo {
        length: number(lookup(v, "length")).unwrap_or(0),
        first_entry: first_id(lookup(v, "entries")),
        groups,
        oldest_unread: None,
    }
}
