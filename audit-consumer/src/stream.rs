//! The Redis side: consumer groups on the shard streams, reads, claims,
//! acknowledgements and the dead-letter stream.

use crate::event::Entry;
use redis::aio::ConnectionManager;
use redis::streams::{
    StreamAutoClaimReply, StreamId, StreamPendingCountReply, StreamRangeReply, StreamReadReply,
};
use redis::{RedisError, RedisResult, Value};
use std::collections::HashMap;
use synckairos_core::keys;

/// The shard streams of a deployment, and this consumer's place in the group.
#[derive(Clone)]
pub struct Streams {
    conn: ConnectionManager,
    /// The blocking read's own connection, so nothing else waits behind it.
    blocking: ConnectionManager,
    group: String,
    consumer: String,
    keys: Vec<String>,
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

impl Streams {
    /// The streams of `shards` shards, read as `consumer` of `group`.
    pub fn new(conn: ConnectionManager, shards: u16, group: &str, consumer: &str) -> Streams {
        Streams {
            blocking: conn.clone(),
            conn,
            group: group.into(),
            consumer: consumer.into(),
            keys: (0..shards).map(keys::audit_stream).collect(),
        }
    }

    /// The same streams with blocking reads on their own connection `conn`
    /// (otherwise they share the one every other command uses, which then
    /// waits behind a blocked read).
    pub fn with_blocking_connection(self, conn: ConnectionManager) -> Streams {
        Streams {
            blocking: conn,
            ..self
        }
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

    /// Creates the group on every shard stream (and the stream, `MKSTREAM`),
    /// starting from the stream's beginning; an existing group is kept. Also
    /// loads the consumer's scripts.
    pub async fn ensure_groups(&self) -> RedisResult<()> {
        self.load_scripts().await?;
        let mut conn = self.conn.clone();
        for key in &self.keys {
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

    fn shard_of_key(&self, key: &str) -> Option<u16> {
        self.keys.iter().position(|k| k == key).map(|i| i as u16)
    }

    /// One `XREADGROUP` of new entries (`>`) over every shard; `count` is per stream.
    pub async fn read(&self, count: usize, block_ms: Option<u64>) -> RedisResult<Vec<Entry>> {
        let from: Vec<(u16, String)> = (0..self.keys.len() as u16)
            .map(|s| (s, ">".into()))
            .collect();
        self.read_from(&from, count, block_ms).await
    }

    /// This consumer's own unacknowledged entries (what a previous run under
    /// the same name left), after `cursor` per shard (`0` to start), with
    /// their delivery counts.
    pub async fn read_own_pending(
        &self,
        cursor: &[(u16, String)],
        count: usize,
    ) -> RedisResult<Vec<Entry>> {
        let mut out = self.read_from(cursor, count, None).await?;
        self.attach_deliveries(&mut out).await?;
        Ok(out)
    }

    async fn read_from(
        &self,
        from: &[(u16, String)],
        count: usize,
        block_ms: Option<u64>,
    ) -> RedisResult<Vec<Entry>> {
        if from.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = match block_ms {
            Some(_) => self.blocking.clone(),
            None => self.conn.clone(),
        };
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
            cmd.arg(id);
        }
        let reply: Option<StreamReadReply> = cmd.query_async(&mut conn).await?;
        let mut out = Vec::new();
        for k in reply.map(|r| r.keys).unwrap_or_default() {
            let Some(shard) = self.shard_of_key(&k.key) else {
                continue;
            };
            for id in &k.ids {
                out.push(Entry {
                    shard,
                    id: id.id.clone(),
                    fields: fields(id),
                    deliveries: 1,
                });
            }
        }
        Ok(out)
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
    /// round trip, and all of it safe to repeat: a retried settle
    /// acknowledges nothing twice and writes no second dead letter
    /// ([`DEAD_LETTER`]). Returns the entries trimmed.
    pub async fn settle(
        &self,
        done: &[(u16, String)],
        dead: &[(&Entry, &str)],
    ) -> Result<u64, RedisError> {
        let mut by_shard: HashMap<u16, Vec<&str>> = HashMap::new();
        for (s, id) in done {
            by_shard.entry(*s).or_default().push(id);
        }
        let mut pipe = redis::pipe();
        for (shard, ids) in &by_shard {
            pipe.cmd("XACK")
                .arg(&self.keys[*shard as usize])
                .arg(&self.group)
                .arg(ids)
                .ignore();
        }
        for (e, why) in dead {
            by_shard.entry(e.shard).or_default();
            let mut x = redis::cmd("EVALSHA");
            x.arg(DEAD_LETTER.get_hash())
                .arg(2)
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
            pipe.add_command(x).ignore();
        }
        let mut shards: Vec<u16> = by_shard.into_keys().collect();
        shards.sort_unstable();
        for shard in &shards {
            pipe.cmd("EVALSHA")
                .arg(TRIM.get_hash())
                .arg(1)
                .arg(&self.keys[*shard as usize]);
        }
        let mut conn = self.conn.clone();
        let trimmed: Vec<u64> = match pipe.query_async(&mut conn).await {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                // Redis lost its scripts (a restart): load them, then repeat
                // the whole settle, which is safe to repeat.
                self.load_scripts().await?;
                pipe.query_async(&mut conn).await?
            }
            other => other?,
        };
        Ok(trimmed.iter().sum())
    }

    /// Loads the consumer's scripts into Redis's script cache.
    pub async fn load_scripts(&self) -> RedisResult<()> {
        let mut conn = self.conn.clone();
        for script in [&*TRIM, &*DEAD_LETTER] {
            script.load_async(&mut conn).await?;
        }
        Ok(())
    }

    /// Every shard stream's groups and positions: one `XINFO STREAM <key>
    /// FULL COUNT 1` per shard, in one round trip. For a shard whose group
    /// has nothing pending but entries left to read while an older entry
    /// is still kept for another group, one `XRANGE` finds the oldest
    /// unread entry.
    pub async fn info(&self) -> RedisResult<Vec<ShardInfo>> {
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        for key in &self.keys {
            pipe.cmd("XINFO")
                .arg("STREAM")
                .arg(key)
                .arg("FULL")
                .arg("COUNT")
                .arg(1);
        }
        let vals: Vec<Value> = pipe.query_async(&mut conn).await?;
        let mut out: Vec<ShardInfo> = vals.iter().map(parse_info).collect();
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

    /// `PING`.
    pub async fn ping(&self) -> RedisResult<()> {
        let mut conn = self.conn.clone();
        redis::cmd("PING").query_async::<String>(&mut conn).await?;
        Ok(())
    }
}

/// Trims a shard's audit stream up to what every consumer group has
/// acknowledged (`src/lua/trim.lua`): the streams' only bound.
pub static TRIM: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(include_str!("lua/trim.lua")));

/// Acknowledges one entry and writes its dead letter, together and once
/// (`src/lua/dead_letter.lua`).
pub static DEAD_LETTER: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(include_str!("lua/dead_letter.lua")));

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
