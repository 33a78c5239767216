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

use crate::metrics::Metrics;
use crate::outbox::{Outbox, Pushed, Rendered, Snapshot};
use futures::StreamExt;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use synckairos_core::keys::{channel, SessionKeys, WAKE_CHANNEL};
use synckairos_core::{record, SyncState};
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

impl Hub {
    /// The hub and the subscriber task to spawn (it stops when `stop` turns
    /// true).
    pub fn new(
        client: redis::Client,
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
        let task = subscriber(Arc::clone(&hub), client, shards, rx, stop);
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
    client: redis::Client,
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
        let pubsub = tokio::select! {
            p = client.get_async_pubsub() => p,
            _ = stop.changed() => return,
        };
        let (mut sink, mut stream) = match pubsub {
            Ok(p) => p.split(),
            Err(e) => {
                tracing::warn!(error = %e, backoff_ms = backoff.as_millis() as u64, "redis subscriber: cannot connect");
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
            ok = resync(&hub, &client, shards, &watched).await;
        }
        if !ok {
            continue;
        }
        first = false;
        backoff = Duration::from_millis(50);
        hub.linked.store(true, Relaxed);
        hub.link_epoch.fetch_add(1, Relaxed);
        hub.wake.notify_one();
        tracing::info!(sessions = watched.len(), "redis subscriber linked");
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
/// one `SESSION_DELETED`). One pipeline of GETs.
async fn resync(hub: &Hub, client: &redis::Client, shards: u16, sessions: &[String]) -> bool {
    if sessions.is_empty() {
        return true;
    }
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
        return false;
    };
    let mut pipe = redis::pipe();
    for sid in sessions {
        pipe.cmd("GET").arg(SessionKeys::new(sid, shards).state);
    }
    let Ok(values): Result<Vec<Option<String>>, _> = pipe.query_async(&mut conn).await else {
        return false;
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
