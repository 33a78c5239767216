//! Who watches which session on this gateway, and the one Redis subscriber
//! connection that feeds them.
//!
//! A session's channel is subscribed when its first local watcher arrives and
//! unsubscribed after the last leaves. One task owns the subscriber: it
//! reconciles subscriptions with the watcher map (so SUBSCRIBE/UNSUBSCRIBE of
//! one channel can never be reordered), hands every published snapshot to the
//! watchers' outboxes, and after a lost link reconnects with backoff,
//! resubscribes, and sends `STATE_SYNC` to the watchers of every session that
//! moved on meanwhile (snapshots read in one pipeline).
//!
//! The same connection carries the expiry scheduler's wake-ups
//! ([`WAKE_CHANNEL`]) while this gateway holds the expiry lease.
//!
//! **On a Redis Cluster** the subscriber is a plain connection to any one
//! node ([`Nodes`]): the scripts' classic `PUBLISH` is propagated by the
//! cluster bus to every node, primaries and replicas, so one node hears every
//! channel. (redis-rs's cluster connection has no Pub/Sub, and sharded
//! `SSUBSCRIBE` would need a link per slot owner.) When that node's link is
//! lost, the subscriber connects to the next node it knows — the seeds and
//! the nodes it learned from `CLUSTER NODES` at its last link — then
//! resubscribes and resyncs as after any reconnect. The resync's reads go
//! through the engine's connection, which routes each `GET` to its slot's
//! primary.

use crate::metrics::Metrics;
use crate::outbox::{Outbox, Pushed, Rendered, Snapshot};
use futures::StreamExt;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use synckairos_core::keys::{channel, SessionKeys, WAKE_CHANNEL};
use synckairos_core::redact::redact_url;
use synckairos_core::{record, SyncState};
use synckairos_engine::{RedisConnection, RedisTarget};
use tokio::sync::{mpsc, oneshot, watch};

/// A connection's id.
pub type ConnId = u64;

struct Watch {
    conns: HashMap<ConnId, Arc<Outbox>>,
    /// The newest version seen for the session (0: none yet).
    version: u64,
    /// The newest state seen, while nothing newer may have been missed:
    /// `RECONNECT` and `SUBSCRIBE` are served from it without a Redis read.
    latest: Option<Arc<Rendered>>,
}

/// The session → watchers map and the subscriber's control channel.
pub struct Hub {
    watches: Mutex<HashMap<String, Watch>>,
    control: mpsc::UnboundedSender<(String, Option<oneshot::Sender<()>>)>,
    /// Subscribed and caught up (for `/ready`).
    pub linked: AtomicBool,
    metrics: Arc<Metrics>,
    /// Whether the wake channel is wanted (this gateway holds the lease).
    wakes_wanted: AtomicBool,
    /// Wake-ups received and not yet taken: (shard, epoch ms, session).
    wakes: Mutex<Vec<(u16, i64, String)>>,
    /// Signalled on a wake-up and on every (re)link.
    pub wake: tokio::sync::Notify,
    /// +1 on every (re)link: wake-ups may have been missed before it.
    link_epoch: AtomicU64,
}

const CHANNEL_PREFIX: &str = "sk:ch:";

/// The nodes the subscriber may connect to: the one server, or a cluster's
/// seeds and the nodes learned from `CLUSTER NODES`, tried in turn.
pub struct Nodes {
    /// The seed URLs (one for a single server).
    seeds: Vec<String>,
    cluster: bool,
    /// URLs of the nodes learned at the last link (cluster only).
    learned: Vec<String>,
    /// The next candidate to try.
    next: usize,
}

impl Nodes {
    /// The candidates of `target`; fails when a URL is not one redis-rs can
    /// open.
    pub fn new(target: &RedisTarget) -> redis::RedisResult<Nodes> {
        let (seeds, cluster) = match target {
            RedisTarget::Single(url) => (vec![url.clone()], false),
            RedisTarget::Cluster(seeds) => (seeds.clone(), true),
        };
        for s in &seeds {
            redis::Client::open(s.as_str())?;
        }
        Ok(Nodes {
            seeds,
            cluster,
            learned: Vec::new(),
            next: 0,
        })
    }

    /// Every candidate: the learned nodes first (the current topology), then
    /// the seeds, without repeats.
    fn candidates(&self) -> Vec<String> {
        let mut all: Vec<String> = Vec::new();
        for u in self.learned.iter().chain(&self.seeds) {
            if !all.contains(u) {
                all.push(u.clone());
            }
        }
        all
    }

    /// The next node to try (round robin over the candidates).
    fn pick(&mut self) -> String {
        let all = self.candidates();
        let url = all[self.next % all.len()].clone();
        self.next = self.next.wrapping_add(1);
        url
    }

    /// Reads the topology from the node at `url` (cluster only): every node
    /// the cluster does not flag failed becomes a candidate, addressed with
    /// the seeds' scheme and credentials.
    async fn learn(&mut self, client: &redis::Client) {
        if !self.cluster {
            return;
        }
        let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
            return;
        };
        let Ok(text) = redis::cmd("CLUSTER")
            .arg("NODES")
            .query_async::<String>(&mut conn)
            .await
        else {
            return;
        };
        let learned: Vec<String> = cluster_node_addresses(&text)
            .into_iter()
            .map(|addr| with_address(&self.seeds[0], &addr))
            .collect();
        if !learned.is_empty() {
            self.learned = learned;
        }
    }
}

/// The `host:port` of every node in a `CLUSTER NODES` reply that is not
/// flagged failed, without address, or in handshake.
pub fn cluster_node_addresses(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let _id = f.next()?;
            let addr = f.next()?;
            let flags = f.next()?;
            if flags
                .split(',')
                .any(|fl| matches!(fl, "fail" | "fail?" | "noaddr" | "handshake"))
            {
                return None;
            }
            // ip:port@cport[,hostname]
            let host_port = addr.split(['@', ',']).next()?;
            let (host, port) = host_port.rsplit_once(':')?;
            (!host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0))
                .then(|| host_port.to_string())
        })
        .collect()
}

/// `seed` with its `host:port` replaced by `addr` (scheme, credentials,
/// path and query kept).
pub fn with_address(seed: &str, addr: &str) -> String {
    let Some((scheme, rest)) = seed.split_once("://") else {
        return seed.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let userinfo = authority.rfind('@').map_or("", |at| &authority[..=at]);
    format!("{scheme}://{userinfo}{addr}{tail}")
}

impl Hub {
    /// The hub and the subscriber task to spawn (it stops when `stop` turns
    /// true).
    pub fn new(
        nodes: Nodes,
        conn: RedisConnection,
        shards: u16,
        metrics: Arc<Metrics>,
        stop: watch::Receiver<bool>,
    ) -> (Arc<Hub>, impl std::future::Future<Output = ()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let hub = Arc::new(Hub {
            watches: Mutex::new(HashMap::new()),
            control: tx,
            linked: AtomicBool::new(false),
            metrics,
            wakes_wanted: AtomicBool::new(false),
            wakes: Mutex::new(Vec::new()),
            wake: tokio::sync::Notify::new(),
            link_epoch: AtomicU64::new(0),
        });
        let task = subscriber(Arc::clone(&hub), nodes, conn, shards, rx, stop);
        (hub, task)
    }

    /// Adds a watcher; resolves once the channel is subscribed (or at once
    /// when the link is down: the resync after reconnecting covers it).
    pub async fn watch(&self, session_id: &str, conn: ConnId, outbox: Arc<Outbox>) {
        let first = {
            let mut w = self.watches.lock().expect("hub lock");
            let entry = w.entry(session_id.to_string()).or_insert_with(|| Watch {
                conns: HashMap::new(),
                version: 0,
                latest: None,
            });
            entry.conns.insert(conn, outbox);
            entry.conns.len() == 1
        };
        if first {
            self.metrics.watched_sessions.fetch_add(1, Relaxed);
        }
        let (ack, acked) = oneshot::channel();
        if self
            .control
            .send((session_id.to_string(), Some(ack)))
            .is_ok()
        {
            let _ = tokio::time::timeout(Duration::from_secs(5), acked).await;
        }
    }

    /// Removes a watcher (no-op if it was not one).
    pub fn unwatch(&self, session_id: &str, conn: ConnId) {
        let last = {
            let mut w = self.watches.lock().expect("hub lock");
            match w.get_mut(session_id) {
                Some(entry) => {
                    let removed = entry.conns.remove(&conn).is_some();
                    if removed && entry.conns.is_empty() {
                        w.remove(session_id);
                        true
                    } else {
                        false
                    }
                }
                None => false,
            }
        };
        if last {
            self.metrics.watched_sessions.fetch_sub(1, Relaxed);
            let _ = self.control.send((session_id.to_string(), None));
        }
    }

    /// Subscribes to the wake channel (`true`) or unsubscribes.
    pub fn want_wakes(&self, on: bool) {
        self.wakes_wanted.store(on, Relaxed);
        if !on {
            self.wakes.lock().expect("wakes lock").clear();
        }
        let _ = self.control.send((WAKE_CHANNEL.to_string(), None));
    }

    /// The wake-ups received since the last call.
    pub fn take_wakes(&self) -> Vec<(u16, i64, String)> {
        std::mem::take(&mut *self.wakes.lock().expect("wakes lock"))
    }

    /// Counts the subscriber's links: a change means wake-ups may have been
    /// missed while the link was down.
    pub fn link_epoch(&self) -> u64 {
        self.link_epoch.load(Relaxed)
    }

    fn woken(&self, payload: &str) {
        let mut parts = payload.splitn(3, ':');
        let parsed = (|| {
            let shard = parts.next()?.parse().ok()?;
            let at = parts.next()?.parse().ok()?;
            Some((shard, at, parts.next()?.to_string()))
        })();
        match parsed {
            Some(w) => {
                self.wakes.lock().expect("wakes lock").push(w);
                self.wake.notify_one();
            }
            None => tracing::warn!(payload, "unparseable wake-up skipped"),
        }
    }

    fn wanted(&self, session_id: &str) -> bool {
        if session_id == WAKE_CHANNEL {
            return self.wakes_wanted.load(Relaxed);
        }
        self.watches
            .lock()
            .expect("hub lock")
            .contains_key(session_id)
    }

    fn watched(&self) -> Vec<String> {
        self.watches
            .lock()
            .expect("hub lock")
            .keys()
            .cloned()
            .collect()
    }

    /// Hands `snap` to every watcher of `session_id` when it is newer than
    /// what the hub has seen (or, with `force`, at least as new).
    pub fn deliver(&self, session_id: &str, snap: Snapshot, force: bool) {
        let outboxes: Vec<Arc<Outbox>> = {
            let mut w = self.watches.lock().expect("hub lock");
            let Some(entry) = w.get_mut(session_id) else {
                return;
            };
            let v = snap.version();
            if v < entry.version || (v == entry.version && !force) {
                return;
            }
            entry.version = v;
            entry.latest = match &snap {
                Snapshot::State { state, .. } => Some(Arc::clone(state)),
                Snapshot::Deleted { .. } => None,
            };
            entry.conns.values().cloned().collect()
        };
        for o in outboxes {
            if o.push_snapshot(session_id, snap.clone()) == Pushed::Coalesced {
                self.metrics.coalesced.fetch_add(1, Relaxed);
            }
        }
    }

    /// Records a state read directly (a connect-time snapshot), so a resync
    /// does not repeat it and later syncs can be served from it.
    pub fn seen(&self, session_id: &str, state: &Arc<Rendered>) {
        if let Some(entry) = self.watches.lock().expect("hub lock").get_mut(session_id) {
            if state.version >= entry.version {
                entry.version = state.version;
                entry.latest = Some(Arc::clone(state));
            }
        }
    }

    /// The newest state of a watched session, when the hub can vouch for it:
    /// subscribed, and linked since it was seen (a lost link forgets every
    /// state until the resync reads them again).
    pub fn latest(&self, session_id: &str) -> Option<Arc<Rendered>> {
        if !self.linked.load(Relaxed) {
            return None;
        }
        let w = self.watches.lock().expect("hub lock");
        w.get(session_id)?.latest.clone()
    }

    /// Forgets every state (the link to Redis was lost: publishes may be
    /// missed until the resync).
    fn forget_states(&self) {
        for entry in self.watches.lock().expect("hub lock").values_mut() {
            entry.latest = None;
        }
    }

    fn version(&self, session_id: &str) -> u64 {
        self.watches
            .lock()
            .expect("hub lock")
            .get(session_id)
            .map_or(0, |e| e.version)
    }
}

/// A published message as a snapshot: a record, or the delete notice.
pub fn parse_message(payload: &str) -> Option<Snapshot> {
    if payload.starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(payload).ok()?;
        (v["type"] == "SESSION_DELETED").then(|| Snapshot::Deleted {
            version: v["version"].as_u64().unwrap_or(u64::MAX),
        })
    } else {
        let state: SyncState = record::decode(payload).ok()?;
        Some(Snapshot::State {
            state: Rendered::new(&state),
            sync: false,
        })
    }
}

async fn subscriber(
    hub: Arc<Hub>,
    mut nodes: Nodes,
    conn: RedisConnection,
    shards: u16,
    mut control: mpsc::UnboundedReceiver<(String, Option<oneshot::Sender<()>>)>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(50);
    let mut first = true;
    loop {
        if *stop.borrow() {
            return;
        }
        let url = nodes.pick();
        let client = match redis::Client::open(url.as_str()) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, node = %redact_url(&url), "redis subscriber: not a Redis URL");
                continue;
            }
        };
        let pubsub = tokio::select! {
            p = tokio::time::timeout(Duration::from_secs(3), client.get_async_pubsub()) => {
                p.unwrap_or_else(|_| Err(redis::RedisError::from((redis::ErrorKind::Io, "connect timeout"))))
            }
            _ = stop.changed() => return,
        };
        let (mut sink, mut stream) = match pubsub {
            Ok(p) => p.split(),
            Err(e) => {
                tracing::warn!(error = %e, node = %redact_url(&url), backoff_ms = backoff.as_millis() as u64, "redis subscriber: cannot connect");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        let mut subscribed: HashSet<String> = HashSet::new();
        let watched = hub.watched();
        let mut ok = true;
        if hub.wakes_wanted.load(Relaxed) {
            ok = sink.subscribe(WAKE_CHANNEL).await.is_ok();
            if ok {
                subscribed.insert(WAKE_CHANNEL.to_string());
            }
        }
        for sid in watched.iter().filter(|_| ok) {
            if sink.subscribe(channel(sid)).await.is_err() {
                ok = false;
                break;
            }
            subscribed.insert(sid.clone());
        }
        if ok && !first {
            hub.metrics.redis_reconnects.fetch_add(1, Relaxed);
            ok = resync(&hub, &conn, shards, &watched).await;
        }
        if !ok {
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.changed() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
            continue;
        }
        nodes.learn(&client).await;
        first = false;
        backoff = Duration::from_millis(50);
        hub.linked.store(true, Relaxed);
        hub.link_epoch.fetch_add(1, Relaxed);
        hub.wake.notify_one();
        tracing::info!(sessions = watched.len(), node = %redact_url(&url), "redis subscriber linked");
        loop {
            tokio::select! {
                msg = stream.next() => {
                    let Some(msg) = msg else { break };
                    if msg.get_channel_name() == WAKE_CHANNEL {
                        if let Ok(payload) = msg.get_payload::<String>() {
                            hub.woken(&payload);
                        }
                        continue;
                    }
                    let Some(sid) = msg.get_channel_name().strip_prefix(CHANNEL_PREFIX) else { continue };
                    let Ok(payload) = msg.get_payload::<String>() else { continue };
                    match parse_message(&payload) {
                        Some(snap) => hub.deliver(sid, snap, false),
                        None => tracing::warn!(session_id = sid, "unparseable published message skipped"),
                    }
                }
                cmd = control.recv() => {
                    let Some((sid, ack)) = cmd else { return };
                    let want = hub.wanted(&sid);
                    let name = if sid == WAKE_CHANNEL { sid.clone() } else { channel(&sid) };
                    let result = match (want, subscribed.contains(&sid)) {
                        (true, false) => sink.subscribe(name).await.map(|()| { subscribed.insert(sid.clone()); }),
                        (false, true) => sink.unsubscribe(name).await.map(|()| { subscribed.remove(&sid); }),
                        _ => Ok(()),
                    };
                    if let Some(ack) = ack {
                        let _ = ack.send(());
                    }
                    if result.is_err() {
                        break;
                    }
                }
                _ = stop.changed() => return,
            }
        }
        hub.linked.store(false, Relaxed);
        hub.forget_states();
        tracing::warn!("redis subscriber lost its link; reconnecting");
    }
}

/// After a reconnect: every watched session whose stored version is newer
/// than the newest this gateway delivered gets a `STATE_SYNC` (and a deleted
/// one `SESSION_DELETED`). The GETs go out together over the engine's
/// connection (multiplexed; on a cluster each to its slot's primary).
async fn resync(hub: &Hub, conn: &RedisConnection, shards: u16, sessions: &[String]) -> bool {
    if sessions.is_empty() {
        return true;
    }
    let reads = sessions.iter().map(|sid| {
        let mut conn = conn.clone();
        let key = SessionKeys::new(sid, shards).state;
        async move {
            redis::cmd("GET")
                .arg(key)
                .query_async::<Option<String>>(&mut conn)
                .await
        }
    });
    // Bounded: on a cluster a read of a dead primary's slot is retried by
    // the engine's connection until a replica is promoted; past this the
    // subscriber tries again (another node, after its backoff).
    let values = match tokio::time::timeout(
        Duration::from_secs(10),
        futures::future::try_join_all(reads),
    )
    .await
    {
        Ok(Ok(values)) => values,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "redis subscriber: resync failed");
            return false;
        }
        Err(_) => {
            tracing::warn!("redis subscriber: resync timed out");
            return false;
        }
    };
    for (sid, value) in sessions.iter().zip(values) {
        let known = hub.version(sid);
        match value.and_then(|r| record::decode(&r).ok()) {
            Some(state) if state.version > known => hub.deliver(
                sid,
                Snapshot::State {
                    state: Rendered::new(&state),
                    sync: true,
                },
                false,
            ),
            None if known > 0 => hub.deliver(sid, Snapshot::Deleted { version: known + 1 }, false),
            _ => {}
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_subscriber_learns_live_nodes_with_the_seeds_credentials() {
        let text = "\
a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:7001@17001,node-b master - 0 0 2 connected 5461-10922
c3 127.0.0.1:7002@17002 master,fail - 0 0 3 connected
d4 :0@0 slave,noaddr a1 0 0 1 disconnected
e5 10.0.0.5:7004@17004 slave,fail? b2 0 0 2 connected
f6 10.0.0.6:7005@17005 slave b2 0 0 2 connected
";
        assert_eq!(
            cluster_node_addresses(text),
            ["127.0.0.1:7000", "127.0.0.1:7001", "10.0.0.6:7005"]
        );
        assert_eq!(
            with_address("rediss://u:pw@seed:6379/0?x=1", "10.0.0.6:7005"),
            "rediss://u:pw@10.0.0.6:7005/0?x=1"
        );
        assert_eq!(with_address("redis://seed:6379", "h:1"), "redis://h:1");
        let mut nodes = Nodes::new(&RedisTarget::Cluster(vec![
            "redis://a:1/".into(),
            "redis://b:2/".into(),
        ]))
        .unwrap();
        nodes.learned = vec!["redis://c:3/".into(), "redis://a:1/".into()];
        let picked: Vec<String> = (0..4).map(|_| nodes.pick()).collect();
        assert_eq!(
            picked,
            [
                "redis://c:3/",
                "redis://a:1/",
                "redis://b:2/",
                "redis://c:3/"
            ]
        );
    }
}
