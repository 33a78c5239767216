//! The push sender's settings, read from the environment (or any name →
//! value function) the way every SyncKairos service reads its own.

use std::path::PathBuf;
use std::time::Duration;
use synckairos_audit_consumer::RedisTarget;

/// What the push sender runs with.
#[derive(Clone, Debug)]
pub struct PushConfig {
    /// `REDIS_URL` (one server, or `redis+cluster://h1:p,h2:p`) or
    /// `REDIS_CLUSTER_URLS` (a cluster's seeds; wins when both are set), as
    /// every native service reads them ([`RedisTarget`]); a local server
    /// when neither is set.
    pub redis: RedisTarget,
    /// `SHARDS` (the deployment's; default 16).
    pub shards: u16,
    /// `PUSH_CONSUMER_NAME`: this consumer's name in the `push` group
    /// (default `push-<HOSTNAME>`; stable across restarts, so a restart finds
    /// its own unacknowledged entries).
    pub consumer: String,
    /// `FCM_SERVICE_ACCOUNT_FILE`: the service account key file.
    pub service_account_file: PathBuf,
    /// `FCM_SEND_URL` (default [`crate::fcm::DEFAULT_SEND_URL`]).
    pub send_url: Option<String>,
    /// `PUSH_MAX_AGE_SECONDS` (default 60): a push older than this (since its
    /// event) is not sent, nor retried past it; also its Android TTL.
    pub max_age: Duration,
    /// `PUSH_BATCH_SIZE` (default 100): entries read per shard per batch.
    pub batch: usize,
    /// `PUSH_BLOCK_MS` (default 10,000): how long one idle read blocks.
    pub block_ms: u64,
    /// `PUSH_CLAIM_IDLE_MS` (default 30,000): entries idle this long on
    /// another (dead) consumer are claimed.
    pub claim_idle_ms: u64,
    /// Access tokens are refreshed this long before they expire (5 min).
    pub token_margin: Duration,
}

/// The consumer group of the push sender on the shard audit streams.
pub const GROUP: &str = "push";

impl PushConfig {
    /// Reads the settings through `lookup` (name → value; blank is unset).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<PushConfig> {
        let get = |n: &str| lookup(n).filter(|v| !v.trim().is_empty());
        let number = |n: &str, default: u64, min: u64, max: u64| -> anyhow::Result<u64> {
            match get(n) {
                None => Ok(default),
                Some(v) => match v.trim().parse::<u64>() {
                    Ok(x) if (min..=max).contains(&x) => Ok(x),
                    _ => anyhow::bail!("{n} is {v:?}: an integer in {min}..={max}"),
                },
            }
        };
        Ok(PushConfig {
            redis: {
                let cluster = get("REDIS_CLUSTER_URLS");
                let url = get("REDIS_URL")
                    .or_else(|| cluster.is_none().then(|| "redis://127.0.0.1:6379".into()));
                RedisTarget::from_vars(url.as_deref(), cluster.as_deref())?
            },
            shards: number(
                "SHARDS",
                synckairos_core::keys::DEFAULT_SHARDS.into(),
                1,
                1024,
            )? as u16,
            consumer: get("PUSH_CONSUMER_NAME").unwrap_or_else(|| {
                format!("push-{}", get("HOSTNAME").unwrap_or_else(|| "local".into()))
            }),
            service_account_file: get("FCM_SERVICE_ACCOUNT_FILE")
                .map(PathBuf::from)
                .ok_or_else(|| anyhow::anyhow!("FCM_SERVICE_ACCOUNT_FILE is not set"))?,
            send_url: get("FCM_SEND_URL"),
            max_age: Duration::from_secs(number("PUSH_MAX_AGE_SECONDS", 60, 1, 3600)?),
            batch: number("PUSH_BATCH_SIZE", 100, 1, 10_000)? as usize,
            block_ms: number("PUSH_BLOCK_MS", 10_000, 1, 60_000)?,
            claim_idle_ms: number("PUSH_CLAIM_IDLE_MS", 30_000, 1000, 3_600_000)?,
            token_margin: Duration::from_secs(300),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_refusals() {
        let c = PushConfig::from_lookup(|n| {
            (n == "FCM_SERVICE_ACCOUNT_FILE").then(|| "/sa.json".to_string())
        })
        .unwrap();
        assert_eq!(c.max_age, Duration::from_secs(60));
        assert_eq!((c.shards, c.batch), (16, 100));
        assert_eq!(
            c.redis,
            RedisTarget::Single("redis://127.0.0.1:6379".into())
        );
        let c = PushConfig::from_lookup(|n| match n {
            "FCM_SERVICE_ACCOUNT_FILE" => Some("/sa.json".into()),
            "REDIS_URL" => Some("redis://single:6379".into()),
            "REDIS_CLUSTER_URLS" => Some("redis://a:7000,redis://b:7001".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(
            c.redis,
            RedisTarget::Cluster(vec!["redis://a:7000".into(), "redis://b:7001".into()])
        );
        let e = PushConfig::from_lookup(|n| match n {
            "FCM_SERVICE_ACCOUNT_FILE" => Some("/sa.json".into()),
            "REDIS_URL" => Some("http://:hunter2@h:1".into()),
            _ => None,
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("REDIS_URL") && !e.contains("hunter2"), "{e}");
        assert!(PushConfig::from_lookup(|_| None).is_err());
        assert!(PushConfig::from_lookup(|n| match n {
            "FCM_SERVICE_ACCOUNT_FILE" => Some("/sa.json".into()),
            "PUSH_MAX_AGE_SECONDS" => Some("0".into()),
            _ => None,
        })
        .is_err());
    }
}
