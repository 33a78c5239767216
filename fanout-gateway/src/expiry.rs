//! The expiry scheduler: applies the engine's `expire` command at each
//! running session's deadline, so a clock that runs out is flagged even if
//! nobody acts.
//!
//! Every gateway watches every shard's deadline ZSET. That is what makes it
//! safe with any number of instances: the `expire` script is idempotent and
//! guarded by the stored deadline, so when two gateways race, one applies
//! the transition and the other gets a refusal; and when one gateway dies,
//! the others still see its sessions' deadlines. Each round is one pipeline
//! (the earliest due entries of every shard); between rounds it sleeps until
//! the earliest known deadline, at most `POLL`, so a deadline set less than
//! `POLL` ahead is the only one that can be flagged late by up to `POLL`.

use crate::Shared;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use synckairos_core::keys::deadlines;
use synckairos_core::model::Reply;
use synckairos_core::script::CallOptions;
use synckairos_core::{Command, Request};

/// The longest sleep between rounds.
pub const POLL: Duration = Duration::from_millis(20);
/// Due entries taken per shard and round.
const BATCH: usize = 200;

/// Runs until `shared.stop` turns true.
pub async fn run(shared: Arc<Shared>) {
    let mut stop = shared.stop.clone();
    let shards = shared.config.api.settings.shards;
    let keys: Vec<String> = (0..shards).map(deadlines).collect();
    loop {
        let now = shared.clock.now_ms();
        let mut conn = shared.engine.connection();
        let mut pipe = redis::pipe();
        for k in &keys {
            pipe.cmd("ZRANGEBYSCORE")
                .arg(k)
                .arg("-inf")
                .arg(now)
                .arg("WITHSCORES")
                .arg("LIMIT")
                .arg(0)
                .arg(BATCH);
        }
        for k in &keys {
            pipe.cmd("ZRANGE").arg(k).arg(0).arg(0).arg("WITHSCORES");
        }
        let rounds: Result<Vec<Vec<(String, f64)>>, _> = pipe.query_async(&mut conn).await;
        let mut sleep = POLL;
        match rounds {
            Ok(r) => {
                let (due, next) = r.split_at(keys.len());
                let jobs = due
                    .iter()
                    .flatten()
                    .map(|(sid, deadline)| expire(&shared, sid, *deadline as i64));
                futures::future::join_all(jobs).await;
                if let Some(earliest) = next.iter().flatten().map(|(_, d)| *d as i64).min() {
                    let wait = (earliest - shared.clock.now_ms()).max(0) as u64;
                    sleep = sleep.min(Duration::from_millis(wait));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "expiry scan failed");
                sleep = Duration::from_millis(500);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            _ = stop.changed() => return,
        }
    }
}

async fn expire(shared: &Shared, sid: &str, deadline: i64) {
    let req = Request::new(sid, Command::Expire);
    match shared.engine.execute(&req, &CallOptions::default()).await {
        Ok(reply) => {
            // A state reply is a transition (expired, or the turn passed on
            // for an auto-advancing per_cycle); the racing gateway gets a
            // refusal or NotDue instead.
            if let Ok(Reply::State { state, .. }) = &reply.result {
                shared.metrics.expired.fetch_add(1, Relaxed);
                shared
                    .metrics
                    .expiry_lag
                    .observe((shared.clock.now_ms() - deadline) as f64);
                tracing::info!(
                    session_id = sid,
                    deadline,
                    status = state.status.as_str(),
                    "deadline applied"
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, session_id = sid, "expire failed"),
    }
}
