//! The `push` consumer group on the shard audit streams: which entries
//! become pushes, to whom, and the loop that reads, sends, drops dead
//! tokens and acknowledges.
//!
//! Per batch: one pipelined `HGETALL` of the session's devices hash per
//! entry that pushes, the sends side by side, one pipelined `HDEL` of the
//! dead tokens, then one settle (`XACK` and the shared trim script). On a
//! Redis Cluster each of those is one pipeline per shard, sent together
//! (a devices hash shares its session's shard's slot). A push
//! is worth something only briefly: an entry older than the max age when it
//! is read sends nothing (`result="stale"`), and a send is retried at most
//! until the max age. Delivery is at most once per device per entry, except
//! after a crash between the send and the acknowledgement (then again).

use crate::config::PushConfig;
use crate::fcm::{FcmClient, Outcome, Push, PushKind};
use crate::metrics::{Metrics, SendResult};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use synckairos_audit_consumer::event::Entry;
use synckairos_audit_consumer::stream::Streams;
use synckairos_core::{devices, keys, record};
use tokio::time::Instant;

/// The stream entry type of a low-time warning (matched by its wire name).
pub const LOW_TIME_WARNING: &str = "low_time_warning";

/// Who an entry's push goes to, and what it says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The shard (the stream's, which is the session's).
    pub shard: u16,
    /// The session.
    pub session_id: String,
    /// The version the event produced.
    pub version: u64,
    /// The event's Redis time (epoch ms).
    pub at_ms: i64,
    /// The participant to notify: the active one in the event's snapshot.
    pub participant_id: String,
    /// "your turn" or "time running low".
    pub kind: PushKind,
}

fn field<'a>(entry: &'a Entry, name: &str) -> Option<&'a str> {
    entry
        .fields
        .iter()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
}

/// The push an audit stream entry asks for, if any: `participant_switched`
/// and `session_started` are "your turn" for the participant now active,
/// `low_time_warning` is "time running low" for the active participant.
/// Anything else, or an entry without an active participant, is none.
pub fn target(entry: &Entry) -> Option<Target> {
    let kind = match field(entry, "type")? {
        "participant_switched" | "session_started" => PushKind::YourTurn,
        LOW_TIME_WARNING => PushKind::LowTime,
        _ => return None,
    };
    let state = record::decode(field(entry, "snap")?).ok()?;
    Some(Target {
        shard: entry.shard,
        session_id: field(entry, "sid")?.to_string(),
        version: field(entry, "v")?.parse().ok()?,
        at_ms: field(entry, "at")?.parse().ok()?,
        participant_id: state.active_participant_id?,
        kind,
    })
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The push sender: one consumer of the `push` group.
pub struct Pusher {
    streams: Streams,
    fcm: Arc<FcmClient>,
    cfg: PushConfig,
    metrics: Arc<Metrics>,
}

impl Pusher {
    /// A sender reading `streams` (of the `push` group; the devices hashes
    /// through their connection), sending through `fcm`.
    pub fn new(
        streams: Streams,
        fcm: Arc<FcmClient>,
        cfg: PushConfig,
        metrics: Arc<Metrics>,
    ) -> Pusher {
        Pusher {
            streams,
            fcm,
            cfg,
            metrics,
        }
    }

    /// The streams it reads.
    pub fn streams(&self) -> &Streams {
        &self.streams
    }

    /// Handles one batch of entries: sends what they ask for, drops dead
    /// tokens, acknowledges every entry and trims. Returns the pushes sent.
    pub async fn handle(&self, entries: &[Entry]) -> anyhow::Result<usize> {
        let max_age_ms = self.cfg.max_age.as_millis() as i64;
        let now = now_ms();
        let mut fresh = Vec::new();
        for t in entries.iter().filter_map(target) {
            if now - t.at_ms > max_age_ms {
                self.metrics.sent(SendResult::Stale);
            } else {
                fresh.push(t);
            }
        }
        let conn = self.streams.conn();
        let reads: Vec<(u16, redis::Cmd)> = fresh
            .iter()
            .map(|t| {
                let mut x = redis::cmd("HGETALL");
                x.arg(keys::devices(t.shard, &t.session_id));
                (t.shard, x)
            })
            .collect();
        let hashes = conn
            .pipelined(&reads)
            .await?
            .into_iter()
            .map(redis::from_redis_value::<Vec<(String, String)>>)
            .collect::<Result<Vec<_>, _>>()?;
        let ttl_s = self.cfg.max_age.as_secs().max(1);
        let mut sends = Vec::new();
        for (t, hash) in fresh.iter().zip(&hashes) {
            let age = Duration::from_millis((now - t.at_ms).max(0) as u64);
            let deadline = Instant::now() + self.cfg.max_age.saturating_sub(age);
            for d in devices::of_participant(hash, &t.participant_id, t.at_ms) {
                let push = Push {
                    token: d.token.clone(),
                    kind: t.kind,
                    session_id: t.session_id.clone(),
                    version: t.version,
                };
                let fcm = self.fcm.clone();
                let key = keys::devices(t.shard, &t.session_id);
                let shard = t.shard;
                sends.push(async move {
                    let outcome = fcm.send(&push, ttl_s, deadline).await;
                    (shard, key, d, outcome)
                });
            }
        }
        let outcomes = futures::future::join_all(sends).await;
        let mut dead: Vec<(u16, redis::Cmd)> = Vec::new();
        let mut sent = 0;
        for (shard, key, device, outcome) in &outcomes {
            match outcome {
                Outcome::Sent => sent += 1,
                Outcome::Unregistered => {
                    let mut x = redis::cmd("HDEL");
                    x.arg(key).arg(device.field());
                    dead.push((*shard, x));
                }
                Outcome::Failed(why) => tracing::warn!(
                    participant_id = %device.participant_id,
                    platform = device.platform.as_str(),
                    reason = %why,
                    "push not delivered"
                ),
            }
        }
        if !dead.is_empty() {
            conn.pipelined(&dead).await?;
            self.metrics.tokens_dropped(dead.len() as u64);
        }
        let done: Vec<(u16, String)> = entries.iter().map(|e| (e.shard, e.id.clone())).collect();
        if !done.is_empty() {
            self.streams.settle(&done, &[]).await?;
        }
        Ok(sent)
    }

    /// What this consumer left unacknowledged in an earlier run: handled
    /// first, from each shard's start of its pending list.
    pub async fn recover(&self) -> anyhow::Result<()> {
        let start: Vec<(u16, String)> = (0..self.streams.keys().len() as u16)
            .map(|s| (s, "0".to_string()))
            .collect();
        loop {
            let entries = self
                .streams
                .read_own_pending(&start, self.cfg.batch)
                .await?;
            if entries.is_empty() {
                return Ok(());
            }
            self.handle(&entries).await?;
        }
    }

    /// Entries idle on another (dead) consumer past the claim time become
    /// this one's, and are handled (stale ones send nothing).
    pub async fn claim(&self) -> anyhow::Result<()> {
        let shards: Vec<u16> = (0..self.streams.keys().len() as u16).collect();
        let (entries, gone) = self
            .streams
            .claim(self.cfg.claim_idle_ms, self.cfg.batch, &shards)
            .await?;
        if !gone.is_empty() {
            self.streams.settle(&gone, &[]).await?;
        }
        if !entries.is_empty() {
            self.handle(&entries).await?;
        }
        Ok(())
    }

    /// Reads and handles batches until `shutdown` resolves (a batch being
    /// sent is finished first); a failure is logged and retried after a
    /// second (what was read and not acknowledged stays pending, for
    /// [`Pusher::recover`]).
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
        tokio::pin!(shutdown);
        tracing::info!(
            consumer = self.streams.consumer(),
            shards = self.streams.keys().len(),
            "push sender started"
        );
        if let Err(e) = self.recover().await {
            tracing::error!(error = %e, "push: recovering own pending entries failed");
        }
        let claim_every = Duration::from_millis(self.cfg.claim_idle_ms);
        let mut last_claim = Instant::now();
        loop {
            if last_claim.elapsed() >= claim_every {
                last_claim = Instant::now();
                if let Err(e) = self.claim().await {
                    tracing::error!(error = %e, "push: claiming idle entries failed");
                }
            }
            // Shutdown interrupts only the (blocking) read, never a batch
            // being sent: what was read is sent and acknowledged first.
            let read = tokio::select! {
                biased;
                _ = &mut shutdown => break,
                r = self.streams.read(self.cfg.batch, Some(self.cfg.block_ms)) => r,
            };
            let done = match read {
                Ok(entries) => self.handle(&entries).await.map(drop),
                Err(e) => Err(e.into()),
            };
            if let Err(e) = done {
                tracing::error!(error = %e, "push: batch failed; retrying");
                tokio::select! {
                    biased;
                    _ = &mut shutdown => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
        tracing::info!("push sender stopped");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: &str, snap: &str) -> Entry {
        Entry {
            shard: 3,
            id: "1-0".into(),
            fields: [
                ("type", kind),
                ("sid", "s"),
                ("v", "4"),
                ("at", "1000"),
                ("snap", snap),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect(),
            deliveries: 1,
        }
    }

    #[test]
    fn which_entries_push() {
        let body = serde_json::json!({"session_id": "0b7d7a2e-8c4f-4d3b-9a51-6c2e1f0d9b11",
            "sync_mode": "per_participant", "total_time_ms": 60000,
            "participants": [{"participant_id": "0b7d7a2e-8c4f-4d3b-9a51-6c2e1f0d9b12",
                "participant_index": 0, "total_time_ms": 60000}]});
        let spec = synckairos_core::validate::validate_create(&body).unwrap();
        let pending = synckairos_core::model::initial_state(&spec, 1000);
        let mut running = pending.clone();
        running.active_participant_id = Some("0b7d7a2e-8c4f-4d3b-9a51-6c2e1f0d9b12".into());
        let run = record::encode(&running);
        let t = target(&entry("participant_switched", &run)).unwrap();
        assert_eq!(
            (t.kind, t.version, t.at_ms, t.shard),
            (PushKind::YourTurn, 4, 1000, 3)
        );
        assert_eq!(t.participant_id, "0b7d7a2e-8c4f-4d3b-9a51-6c2e1f0d9b12");
        assert_eq!(
            target(&entry(LOW_TIME_WARNING, &run)).unwrap().kind,
            PushKind::LowTime
        );
        assert_eq!(
            target(&entry("session_started", &run)).unwrap().kind,
            PushKind::YourTurn
        );
        assert!(target(&entry("session_paused", &run)).is_none());
        // Nobody active: nobody to tell.
        assert!(target(&entry("participant_switched", &record::encode(&pending))).is_none());
        assert!(target(&entry("participant_switched", "garbage")).is_none());
    }
}
