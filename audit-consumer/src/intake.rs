//! The read side of a stream consumer, shared by the audit consumer and the
//! webhook worker's ingest: after a (re)start this consumer's own pending
//! entries first, then entries idle on a dead consumer claimed
//! (`XAUTOCLAIM`), then new entries, blocking only when there is nothing at
//! all to do. Entries wait in a queue (each held once) until a batch takes
//! them; what a consumer does with a batch is its own.
//!
//! It lives in this library next to [`crate::stream::Streams`], which every
//! consumer of the shard streams already depends on.

use crate::event::Entry;
use crate::stream::{ShardInfo, Streams};
use redis::RedisResult;
use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How an intake reads.
#[derive(Clone, Copy, Debug)]
pub struct IntakeConfig {
    /// Entries per batch (and per read).
    pub batch_size: usize,
    /// How long a blocking read waits.
    pub block_ms: u64,
    /// An entry pending this long on another consumer is claimed.
    pub claim_idle_ms: u64,
    /// How often claims are looked for.
    pub claim_every: Duration,
}

/// What an intake asks of its consumer when it looks for claims.
pub trait Claims: Sync {
    /// A reading of the shard streams at most `max_age` old (it tells which
    /// shards have entries pending in the group at all).
    fn shard_info(
        &self,
        streams: &Streams,
        max_age: Duration,
    ) -> impl Future<Output = RedisResult<Arc<Vec<ShardInfo>>>> + Send;
    /// `n` entries were claimed.
    fn claimed(&self, n: u64);
}

/// A consumer's queue of entries read and not yet taken into a batch.
pub struct Intake {
    streams: Streams,
    cfg: IntakeConfig,
    queue: VecDeque<Entry>,
    held: HashSet<(u16, String)>,
    /// Per shard, where the read of this consumer's own pending entries
    /// stands (empty once all are read).
    recovering: Vec<(u16, String)>,
    groups_ready: bool,
    /// Set when a reply said the group is missing (see [`Intake::group_lost`]).
    group_lost: bool,
    last_claim: Option<Instant>,
    /// Ends a blocking read early (shutdown).
    stop: Option<tokio::sync::watch::Receiver<bool>>,
}

impl Intake {
    /// An intake of `streams` (the group and consumer name are theirs).
    pub fn new(streams: Streams, cfg: IntakeConfig) -> Intake {
        Intake {
            streams,
            cfg,
            queue: VecDeque::new(),
            held: HashSet::new(),
            recovering: Vec::new(),
            groups_ready: false,
            group_lost: false,
            last_claim: None,
            stop: None,
        }
    }

    /// A blocking read ends as soon as `stop` turns true (the fill then
    /// returns with nothing).
    pub fn stop_on(&mut self, stop: tokio::sync::watch::Receiver<bool>) {
        self.stop = Some(stop);
    }

    /// The streams read.
    pub fn streams(&self) -> &Streams {
        &self.streams
    }

    /// Entries queued.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Whether the groups exist and this consumer's own pending entries are
    /// all read (so a plain read of new entries is the next read).
    pub fn caught_up(&self) -> bool {
        self.groups_ready && self.recovering.is_empty()
    }

    /// Whether, since the last call, a reply said the consumer group is
    /// missing (Redis lost its data; the group is created again).
    pub fn group_lost(&mut self) -> bool {
        std::mem::take(&mut self.group_lost)
    }

    /// Queues the entries not already held; returns how many.
    pub fn hold(&mut self, entries: Vec<Entry>) -> usize {
        let mut n = 0;
        for e in entries {
            if self.held.insert((e.shard, e.id.clone())) {
                self.queue.push_back(e);
                n += 1;
            }
        }
        n
    }

    /// The next batch's entries (at most the batch size), if any. They stay
    /// held until [`Intake::release`].
    pub fn take_batch(&mut self) -> Option<Vec<Entry>> {
        if self.queue.is_empty() {
            return None;
        }
        let n = self.queue.len().min(self.cfg.batch_size);
        Some(self.queue.drain(..n).collect())
    }

    /// The batch's entries are acknowledged: no longer held.
    pub fn release(&mut self, entries: &[Entry]) {
        for e in entries {
            self.held.remove(&(e.shard, e.id.clone()));
        }
    }

    /// Tops up the queue: first this consumer's own pending entries (once),
    /// then claims from idle consumers (every claim interval), then new
    /// entries, blocking only when there is nothing at all to do.
    pub async fn fill(&mut self, block: bool, claims: &impl Claims) -> RedisResult<()> {
        let want = self.cfg.batch_size;
        if !self.groups_ready {
            self.streams.ensure_groups().await?;
            self.groups_ready = true;
            let shards = self.streams.keys().len() as u16;
            self.recovering = (0..shards).map(|s| (s, "0".to_string())).collect();
        }
        if !self.recovering.is_empty() {
            // Reading history counts as a delivery: read only what the next
            // batch takes, so entries are not charged for waiting.
            if self.queue.len() >= want {
                return Ok(());
            }
            let mine = self
                .streams
                .read_own_pending(&self.recovering, want - self.queue.len())
                .await;
            let mine = self.no_group(mine)?;
            let mut next = Vec::new();
            for (shard, _) in &self.recovering {
                if let Some(last) = mine
                    .iter()
                    .filter(|e| e.shard == *shard)
                    .map(|e| &e.id)
                    .next_back()
                {
                    next.push((*shard, last.clone()));
                }
            }
            self.recovering = next;
            let n = self.hold(mine);
            if n > 0 {
                tracing::info!(
                    entries = n,
                    "taking up entries a previous run left unacknowledged"
                );
                return Ok(());
            }
        }
        // Claims are looked for every claim interval, and only on the shards
        // where the group has entries pending at all: a reading of the
        // streams at most that old tells, since an entry idle for the
        // threshold was already pending then.
        let every = self.cfg.claim_every;
        if self.last_claim.is_none_or(|t| t.elapsed() >= every) {
            self.last_claim = Some(Instant::now());
            let info = claims.shard_info(&self.streams, every).await?;
            let group = self.streams.group();
            let shards: Vec<u16> = info
                .iter()
                .enumerate()
                .filter(|(_, s)| s.group(group).is_some_and(|g| g.pel_count > 0))
                .map(|(i, _)| i as u16)
                .collect();
            if !shards.is_empty() {
                let (claimed, gone) = self
                    .streams
                    .claim(self.cfg.claim_idle_ms, want, &shards)
                    .await?;
                if !gone.is_empty() {
                    self.streams.settle(&gone, &[]).await?;
                }
                let n = self.hold(claimed);
                if n > 0 {
                    claims.claimed(n as u64);
                    tracing::info!(entries = n, "claimed entries idle on another consumer");
                }
            }
        }
        if self.queue.len() < want {
            let block = (block && self.queue.is_empty()).then_some(self.cfg.block_ms);
            let count = want - self.queue.len();
            let fresh = match (block, self.stop.as_mut()) {
                (Some(_), Some(stop)) => {
                    tokio::select! {
                        r = self.streams.read(count, block) => r,
                        _ = stop.wait_for(|s| *s) => return Ok(()),
                    }
                }
                _ => self.streams.read(count, block).await,
            };
            let fresh = self.no_group(fresh)?;
            self.hold(fresh);
        }
        Ok(())
    }

    /// A `NOGROUP` reply means Redis lost the group (a restart without
    /// persistence): create it again on the next fill.
    fn no_group(&mut self, r: RedisResult<Vec<Entry>>) -> RedisResult<Vec<Entry>> {
        match r {
            Err(e) if e.code() == Some("NOGROUP") => {
                tracing::warn!("consumer group missing; creating it again");
                self.groups_ready = false;
                self.group_lost = true;
                Ok(Vec::new())
            }
            other => other,
        }
    }
}
