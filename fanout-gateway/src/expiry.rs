//! The expiry scheduler: applies the engine's `expire` command at each live
//! session's wake time (its clock's deadline, or its idle end), so a clock
//! that runs out is flagged, and an abandoned session ends, even if nobody
//! acts.
//!
//! **One scheduler per deployment, sleeping until the next deadline.** Every
//! gateway runs this task, but only the holder of a lease in Redis
//! ([`EXPIRY_LEASE`], [`LEASE_TTL`]) schedules; the others only renew their
//! bid. Each renewal also returns Redis `TIME`, which is the gateway's clock
//! sample, so an idle gateway sends one command per [`RENEW_EVERY`] and
//! nothing else. The holder knows each shard's earliest entry and sleeps
//! until the earliest of them:
//! - a script that schedules a session before its shard's earliest entry
//!   publishes a wake-up on [`synckairos_core::keys::WAKE_CHANNEL`], to
//!   which only the holder
//!   subscribes;
//! - the `expire` reply names the shard's next due session, so applying a
//!   deadline costs that one command;
//! - after taking the lease, and after the subscriber's link was lost (when
//!   wake-ups may have been missed), it reads every shard's earliest entry
//!   again (one `ZRANGE` per shard, sent together; retried until it
//!   succeeds).
//!
//! **On a Redis Cluster** every command here names one key, so the engine's
//! connection routes it to that slot's primary: the lease script to the
//! lease key's, each shard's `ZRANGE`/`ZRANGEBYSCORE` of its `deadlines` and
//! `expire` to the shard's. The expiry scan reads per slot owner: redis-rs's
//! cluster pipelines do not split by node (a pipeline across slots is
//! refused with CROSSSLOT), so there is no multi-shard pipeline. The clock
//! samples all come from the lease key's primary (see [`crate::clock`]).
//!
//! The `expire` script is idempotent and guarded by the stored state, so two
//! holders for a moment (a renewal that came too late) only cost a refused
//! call. When the holder dies, its lease runs out within [`LEASE_TTL`] and
//! the next renewal of another gateway takes it: a takeover within
//! `LEASE_TTL + RENEW_EVERY` ([`TAKEOVER_BOUND`]). A gateway that stops
//! (SIGTERM) releases the lease, so another takes it within `RENEW_EVERY`.

use crate::Shared;
use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use synckairos_core::keys::{deadlines, EXPIRY_LEASE};
use synckairos_core::model::Reply;
use synckairos_core::script::{CallOptions, Due, LEASE};
use synckairos_core::{Command, Request};

/// How long a lease lasts without renewal.
pub const LEASE_TTL: Duration = Duration::from_millis(3_000);
/// How often every gateway renews (the holder) or bids for (the others) the
/// lease; each is also a clock sample.
pub const RENEW_EVERY: Duration = Duration::from_millis(1_500);
/// The longest a dead holder's deadlines wait for another gateway.
pub const TAKEOVER_BOUND: Duration = Duration::from_millis(4_500);
/// The pause after Redis failed a round, so that an outage is not retried in
/// a tight loop.
const RETRY_AFTER: Duration = Duration::from_millis(500);
/// Due entries taken at once from a shard when several are due.
const BATCH: usize = 200;

/// What the holder knows: each shard's earliest scheduled session.
type Heads = HashMap<u16, Due>;

/// Runs until `shared.stop` turns true.
pub async fn run(shared: Arc<Shared>) {
    let mut stop = shared.stop.clone();
    let instance = instance_id();
    let mut holder = false;
    let mut held_until = Instant::now();
    let mut heads: Heads = HashMap::new();
    let mut epoch = shared.hub.link_epoch();
    let mut next_renew = Instant::now();
    let mut failed = false;
    // A handful of quick clock samples first, for a good estimate at start.
    warm_up_clock(&shared).await;
    loop {
        if Instant::now() >= next_renew {
            let sent = Instant::now();
            match lease(&shared, &instance, true).await {
                Ok(held) => {
                    if held {
                        held_until = sent + LEASE_TTL;
                    }
                    if held && !holder {
                        tracing::info!(instance, "expiry lease taken: this gateway schedules");
                        shared.hub.want_wakes(true);
                        heads.clear();
                        // Forces the rescan below (and its retries).
                        epoch = u64::MAX;
                    }
                    if !held && holder {
                        tracing::info!(instance, "expiry lease lost");
                        shared.hub.want_wakes(false);
                        heads.clear();
                    }
                    holder = held;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "expiry lease renewal failed");
                    if holder && Instant::now() >= held_until {
                        shared.hub.want_wakes(false);
                        heads.clear();
                        holder = false;
                    }
                }
            }
            shared.metrics.expiry_leader.store(holder.into(), Relaxed);
            next_renew = sent + RENEW_EVERY;
        }
        if holder {
            let link = shared.hub.link_epoch();
            let mut rescan_failed = false;
            if link != epoch {
                // Wake-ups may have been missed while the link was down (or
                // the lease was just taken): read every shard's head; on a
                // failure, again after RETRY_AFTER.
                match rescan(&shared).await {
                    Some(h) => {
                        heads = h;
                        epoch = link;
                    }
                    None => rescan_failed = true,
                }
            }
            for (shard, at_ms, session_id) in shared.hub.take_wakes() {
                if heads.get(&shard).is_none_or(|d| at_ms < d.at_ms) {
                    heads.insert(shard, Due { session_id, at_ms });
                }
            }
            failed = !apply_due(&shared, &mut heads).await || rescan_failed;
        }
        let mut sleep = next_renew.saturating_duration_since(Instant::now());
        if holder {
            if let Some(earliest) = heads.values().map(|d| d.at_ms).min() {
                // At least 1 ms: when the estimate runs a little ahead of
                // Redis, a head can be due here and not yet there.
                let wait = (earliest - shared.clock.now_ms()).max(1) as u64;
                sleep = sleep.min(Duration::from_millis(wait));
            }
            if failed {
                sleep = sleep.max(RETRY_AFTER);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            _ = shared.hub.wake.notified(), if holder => {}
            _ = stop.changed() => {
                if holder {
                    let _ = lease(&shared, &instance, false).await;
                    tracing::info!(instance, "expiry lease released");
                }
                return;
            }
        }
    }
}

/// Without the scheduler (`EXPIRY=off`) the clock is still sampled, at the
/// same pace.
pub async fn clock_only(shared: Arc<Shared>) {
    let mut stop = shared.stop.clone();
    warm_up_clock(&shared).await;
    let mut conn = shared.engine.connection();
    loop {
        match shared.clock.sample(&mut conn).await {
            Ok(_) => publish_clock(&shared),
            Err(e) => tracing::warn!(error = %e, "clock sample failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(RENEW_EVERY) => {}
            _ = stop.changed() => return,
        }
    }
}

async fn warm_up_clock(shared: &Shared) {
    let mut conn = shared.engine.connection();
    for _ in 0..5 {
        if shared.clock.sample(&mut conn).await.is_ok() {
            publish_clock(shared);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn publish_clock(shared: &Shared) {
    if let Some((best, bound_us)) = shared.clock.best_with_bound() {
        let m = &shared.metrics;
        m.clock_offset_ms.store(best.offset_ms, Relaxed);
        m.clock_error_us.store(bound_us, Relaxed);
    }
}

/// This process's id in the lease (host, pid and a random part).
fn instance_id() -> String {
    let host = std::env::var("FLY_MACHINE_ID")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "gateway".into());
    use std::hash::{BuildHasher, Hasher};
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    format!("{host}:{}:{:08x}", std::process::id(), random as u32)
}

/// Takes or renews (`take`) or releases the lease; returns whether this
/// gateway holds it, and records the clock sample the reply carries.
async fn lease(shared: &Shared, instance: &str, take: bool) -> redis::RedisResult<bool> {
    let mut conn = shared.engine.connection();
    let t0 = crate::clock::local_ms();
    let started = Instant::now();
    let script = redis::Script::new(LEASE.source);
    let (held, s, us): (i64, i64, i64) = script
        .key(EXPIRY_LEASE)
        .arg(instance)
        .arg(LEASE_TTL.as_millis() as u64)
        .arg(if take { "1" } else { "0" })
        .invoke_async(&mut conn)
        .await?;
    shared.clock.record(t0, started, s * 1000 + us / 1000);
    publish_clock(shared);
    Ok(held == 1)
}

/// Every shard's earliest entry: one `ZRANGE` per shard, sent together
/// (on a cluster, each to its shard's primary).
async fn rescan(shared: &Shared) -> Option<Heads> {
    let shards = shared.config.api.settings.shards;
    let reads = (0..shards).map(|s| {
        let mut conn = shared.engine.connection();
        async move {
            let head: Vec<(String, f64)> = redis::cmd("ZRANGE")
                .arg(deadlines(s))
                .arg(0)
                .arg(0)
                .arg("WITHSCORES")
                .query_async(&mut conn)
                .await?;
            Ok::<_, redis::RedisError>(head.into_iter().next().map(|(session_id, at)| {
                (
                    s,
                    Due {
                        session_id,
                        at_ms: at as i64,
                    },
                )
            }))
        }
    });
    match futures::future::try_join_all(reads).await {
        Ok(heads) => Some(heads.into_iter().flatten().collect()),
        Err(e) => {
            tracing::warn!(error = %e, "expiry rescan failed");
            None
        }
    }
}

/// Applies every due head, shards in parallel; each shard's chain follows
/// the `expire` replies' next due session. False when Redis failed.
async fn apply_due(shared: &Shared, heads: &mut Heads) -> bool {
    let now = shared.clock.now_ms();
    let due: Vec<(u16, Due)> = heads
        .iter()
        .filter(|(_, d)| d.at_ms <= now)
        .map(|(s, d)| (*s, d.clone()))
        .collect();
    if due.is_empty() {
        return true;
    }
    let chains = due.into_iter().map(|(shard, head)| async move {
        let next = drain_shard(shared, shard, head).await;
        (shard, next)
    });
    let mut ok = true;
    for (shard, next) in futures::future::join_all(chains).await {
        match next {
            Ok(Some(d)) => {
                heads.insert(shard, d);
            }
            Ok(None) => {
                heads.remove(&shard);
            }
            // Keep the head: it is retried after RETRY_AFTER.
            Err(()) => ok = false,
        }
    }
    ok
}

/// Expires `head` and whatever else of `shard` is due; returns the shard's
/// next head (`Err` when Redis failed: the caller retries). Stops when a
/// round applied nothing (the estimate ran ahead of Redis: the caller waits).
async fn drain_shard(shared: &Shared, shard: u16, head: Due) -> Result<Option<Due>, ()> {
    let (applied, mut next) = expire(shared, &head).await?;
    if !applied {
        return Ok(next);
    }
    loop {
        let now = shared.clock.now_ms();
        match next {
            Some(d) if d.at_ms <= now => {}
            other => return Ok(other),
        }
        // Several due at once (a burst): take them together, in parallel,
        // then ask for the head.
        let mut conn = shared.engine.connection();
        let batch: Vec<(String, f64)> = redis::cmd("ZRANGEBYSCORE")
            .arg(deadlines(shard))
            .arg("-inf")
            .arg(now)
            .arg("WITHSCORES")
            .arg("LIMIT")
            .arg(0)
            .arg(BATCH)
            .query_async(&mut conn)
            .await
            .map_err(|e| tracing::warn!(error = %e, "expiry scan failed"))?;
        let jobs = batch.into_iter().map(|(session_id, at)| {
            let d = Due {
                session_id,
                at_ms: at as i64,
            };
            async move { expire(shared, &d).await }
        });
        let mut applied = false;
        for r in futures::future::join_all(jobs).await {
            applied |= r?.0;
        }
        let h: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(deadlines(shard))
            .arg(0)
            .arg(0)
            .arg("WITHSCORES")
            .query_async(&mut conn)
            .await
            .map_err(|e| tracing::warn!(error = %e, "expiry scan failed"))?;
        next = h.into_iter().next().map(|(session_id, at)| Due {
            session_id,
            at_ms: at as i64,
        });
        if !applied {
            return Ok(next);
        }
    }
}

/// One `expire`; returns whether it changed the session, and the shard's
/// next due session from its reply.
async fn expire(shared: &Shared, due: &Due) -> Result<(bool, Option<Due>), ()> {
    let req = Request::new(&due.session_id, Command::Expire);
    match shared.engine.execute(&req, &CallOptions::default()).await {
        Ok(reply) => {
            // A state reply is a transition (expired, or the turn passed on
            // for an auto-advancing per_cycle); a racing holder gets a
            // refusal or NotDue instead.
            let applied = matches!(&reply.result, Ok(Reply::State { .. }));
            if let Ok(Reply::State { state, .. }) = &reply.result {
                shared.metrics.expired.fetch_add(1, Relaxed);
                shared
                    .metrics
                    .expiry_lag
                    .observe((shared.clock.now_ms() - due.at_ms).max(0) as f64);
                tracing::info!(
                    session_id = due.session_id,
                    deadline = due.at_ms,
                    status = state.status.as_str(),
                    "deadline applied"
                );
            }
            Ok((applied, reply.next_due))
        }
        Err(e) => {
            tracing::warn!(error = %e, session_id = due.session_id, "expire failed");
            Err(())
        }
    }
}
