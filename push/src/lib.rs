//! # synckairos-push
//!
//! Mobile push for SyncKairos: an FCM HTTP v1 client ([`fcm`]) and a
//! consumer group (`push`) on the shard audit streams ([`consumer`]) that
//! sends "your turn" to the participant a session's turn passed to
//! (`participant_switched`, `session_started`) and "time running low" to
//! the active participant (`low_time_warning`), on the devices the
//! participants registered (`POST /v1/sessions/:id/devices`; one hash per
//! session, read with `synckairos_core::devices`).
//!
//! Meant to run inside another native binary: [`run`] until a shutdown
//! future resolves, with [`Metrics`] for that binary's `/metrics`.
#![deny(missing_docs)]

pub mod config;
pub mod consumer;
pub mod fcm;
pub mod http;
pub mod metrics;

pub use config::{PushConfig, GROUP};
pub use consumer::Pusher;
pub use fcm::{FcmClient, ServiceAccount};
pub use metrics::Metrics;

use std::future::Future;
use std::sync::Arc;
use synckairos_audit_consumer::stream::Streams;
use synckairos_audit_consumer::RedisConn;

/// Builds the push sender of `cfg`: reads the service account, connects to
/// Redis (one server or a cluster: commands on one connection, each
/// blocking read on its own) and creates the `push` group on every shard
/// stream.
pub async fn pusher(cfg: PushConfig, metrics: Arc<Metrics>) -> anyhow::Result<Pusher> {
    let account = ServiceAccount::from_file(&cfg.service_account_file)?;
    let fcm = FcmClient::new(
        account,
        cfg.send_url.as_deref(),
        cfg.token_margin,
        metrics.clone(),
    )?;
    let conn = RedisConn::connect(&cfg.redis).await?;
    let streams = Streams::new(conn, cfg.shards, GROUP, &cfg.consumer);
    streams.ensure_groups().await?;
    Ok(Pusher::new(streams, Arc::new(fcm), cfg, metrics))
}

/// Runs the push sender of `cfg` until `shutdown` resolves (the batch in
/// hand is finished first).
pub async fn run(
    cfg: PushConfig,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    pusher(cfg, metrics).await?.run(shutdown).await
}
