//! Typed configuration, from flags or the environment.

use clap::Args;
use std::net::SocketAddr;
use std::time::Duration;

/// `LISTEN`'s default: `/health` and `/ready`.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8789";
/// `METRICS_LISTEN`'s default: `/metrics`, on an internal port of its own.
pub const DEFAULT_METRICS_LISTEN: &str = "0.0.0.0:9092";

/// Where the data lives (every subcommand). `Debug` shows the URLs redacted.
///
/// Redis is declared as every native service declares it
/// ([`RedisTarget`](crate::RedisTarget)): `REDIS_URL` for one server, or
/// `REDIS_CLUSTER_URLS` (or a `redis+cluster://h1:p,h2:p` `REDIS_URL`) for a
/// Redis Cluster; the cluster list wins when both are set.
#[derive(Args, Clone)]
pub struct Connections {
    /// PostgreSQL, e.g. `postgres://user:pass@host/db?sslmode=require`.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    /// One Redis server (`redis://`, or `rediss://` for Upstash's TLS
    /// endpoint), or a cluster's seeds as `redis+cluster://h1:p,h2:p`.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// A Redis Cluster's seed URLs, comma-separated
    /// (`redis://h1:6379,redis://h2:6379`); wins over `REDIS_URL`.
    #[arg(long, env = "REDIS_CLUSTER_URLS", hide_env_values = true)]
    pub redis_cluster_urls: Option<String>,
    /// Shards of the key space: the edge worker's value.
    #[arg(long, env = "SHARDS", default_value_t = synckairos_core::keys::DEFAULT_SHARDS)]
    pub shards: u16,
}

impl Connections {
    /// One server at `redis_url` (a `redis+cluster://` URL: a cluster).
    pub fn new(database_url: &str, redis_url: &str, shards: u16) -> Connections {
        Connections {
            database_url: database_url.into(),
            redis_url: Some(redis_url.into()),
            redis_cluster_urls: None,
            shards,
        }
    }

    /// The Redis Cluster of `seeds`.
    pub fn cluster(database_url: &str, seeds: &[String], shards: u16) -> Connections {
        Connections {
            database_url: database_url.into(),
            redis_url: None,
            redis_cluster_urls: Some(seeds.join(",")),
            shards,
        }
    }

    /// The Redis declared (an error names the variable, URLs redacted).
    pub fn target(&self) -> Result<crate::RedisTarget, synckairos_engine::TargetError> {
        crate::RedisTarget::from_vars(
            self.redis_url.as_deref(),
            self.redis_cluster_urls.as_deref(),
        )
    }
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use synckairos_core::redact::redact_url;
        let redis = match self.target() {
            Ok(t) => t.to_string(),
            Err(e) => e.to_string(),
        };
        f.debug_struct("Connections")
            .field("database_url", &redact_url(&self.database_url))
            .field("redis", &redis)
            .field("shards", &self.shards)
            .finish()
    }
}

/// The consumer's settings (`run`).
#[derive(Args, Clone, Debug)]
pub struct ConsumerConfig {
    /// The consumer group every consumer of a deployment joins.
    #[arg(long, env = "AUDIT_GROUP", default_value = "audit")]
    pub group: String,
    /// This consumer's name in the group; defaults to the host name, which
    /// stays the same across restarts, so a restarted consumer finds its own
    /// unacknowledged entries.
    #[arg(long, env = "CONSUMER_NAME")]
    pub consumer_name: Option<String>,
    /// Consumers in this process, side by side, each with its own
    /// PostgreSQL transaction in flight (the first is named `consumer_name`,
    /// the others `<name>-1`, `<name>-2`, …). PostgreSQL commits are most of
    /// a batch's time, so two keep both its cores busy.
    #[arg(long, env = "WORKERS", default_value_t = 2)]
    pub workers: usize,
    /// Most entries in one PostgreSQL transaction.
    #[arg(long, env = "BATCH_SIZE", default_value_t = 500)]
    pub batch_size: usize,
    /// How long one read waits for new entries, ms. A new entry ends the
    /// wait at once, and so does shutdown; what this sets is how often an
    /// idle consumer asks Redis again (each worker one command per wait).
    #[arg(long, env = "BLOCK_MS", default_value_t = 10_000)]
    pub block_ms: u64,
    /// Entries pending this long on another consumer are claimed (its work
    /// is presumed lost), ms.
    #[arg(long, env = "CLAIM_IDLE_MS", default_value_t = 30_000)]
    pub claim_idle_ms: u64,
    /// An entry delivered more than this many times goes to the dead-letter stream.
    #[arg(long, env = "MAX_DELIVERIES", default_value_t = 5)]
    pub max_deliveries: u64,
    /// First retry delay when PostgreSQL or Redis fails, ms (doubles up to the max).
    #[arg(long, env = "BACKOFF_MIN_MS", default_value_t = 100)]
    pub backoff_min_ms: u64,
    /// Longest retry delay, ms.
    #[arg(long, env = "BACKOFF_MAX_MS", default_value_t = 5_000)]
    pub backoff_max_ms: u64,
    /// `/health` and `/ready` (the public ops port; `/metrics` is 404 here).
    #[arg(long, env = "LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// `/metrics`, on an internal port that is not exposed with `LISTEN`.
    #[arg(long, env = "METRICS_LISTEN", default_value = DEFAULT_METRICS_LISTEN)]
    pub metrics_listen: SocketAddr,
}

impl ConsumerConfig {
    /// The consumer name: the flag, else the host name.
    pub fn name(&self) -> String {
        self.consumer_name.clone().unwrap_or_else(hostname)
    }

    /// The read block time.
    pub fn block(&self) -> Duration {
        Duration::from_millis(self.block_ms)
    }

    /// Checks the values that would otherwise fail at run time.
    pub fn validate(&self) -> Result<(), String> {
        if self.batch_size == 0 || self.batch_size > 10_000 {
            return Err(format!(
                "BATCH_SIZE must be 1..=10000, got {}",
                self.batch_size
            ));
        }
        if self.workers == 0 || self.workers > 64 {
            return Err(format!("WORKERS must be 1..=64, got {}", self.workers));
        }
        if self.block_ms == 0 {
            // BLOCK 0 is "forever" to Redis: claims would never run.
            return Err("BLOCK_MS must be at least 1".into());
        }
        if self.max_deliveries == 0 {
            return Err("MAX_DELIVERIES must be at least 1".into());
        }
        if self.group.is_empty() {
            return Err("AUDIT_GROUP must not be empty".into());
        }
        if self.backoff_min_ms == 0 || self.backoff_max_ms < self.backoff_min_ms {
            return Err("BACKOFF_MIN_MS must be > 0 and ≤ BACKOFF_MAX_MS".into());
        }
        Ok(())
    }
}

impl Default for ConsumerConfig {
    fn default() -> ConsumerConfig {
        ConsumerConfig {
            group: "audit".into(),
            consumer_name: None,
            workers: 2,
            batch_size: 500,
            block_ms: 10_000,
            claim_idle_ms: 30_000,
            max_deliveries: 5,
            backoff_min_ms: 100,
            backoff_max_ms: 5_000,
            listen: DEFAULT_LISTEN.parse().expect("a socket address"),
            metrics_listen: DEFAULT_METRICS_LISTEN.parse().expect("a socket address"),
        }
    }
}

/// The host name (`/proc/sys/kernel/hostname`, then `$HOSTNAME`).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "audit-consumer".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_values_are_refused_with_their_name() {
        let ok = ConsumerConfig::default();
        assert!(ok.validate().is_ok());
        let e = ConsumerConfig {
            batch_size: 0,
            ..ok.clone()
        }
        .validate()
        .unwrap_err();
        assert!(e.contains("BATCH_SIZE"), "{e}");
        let e = ConsumerConfig {
            max_deliveries: 0,
            ..ok.clone()
        }
        .validate()
        .unwrap_err();
        assert!(e.contains("MAX_DELIVERIES"), "{e}");
        let e = ConsumerConfig {
            backoff_min_ms: 10,
            backoff_max_ms: 5,
            ..ok
        }
        .validate()
        .unwrap_err();
        assert!(e.contains("BACKOFF"), "{e}");
        assert!(!hostname().is_empty());
    }

    #[test]
    fn redis_is_one_server_or_a_cluster_and_never_shows_a_password() {
        use crate::RedisTarget;
        let one = Connections::new("postgres://h/db", "redis://:hunter2@r:6379/", 16);
        assert_eq!(
            one.target(),
            Ok(RedisTarget::Single("redis://:hunter2@r:6379/".into()))
        );
        let seeds = [
            "redis://:hunter2@a:7000".to_string(),
            "redis://:hunter2@b:7001".into(),
        ];
        let cluster = Connections {
            redis_url: Some("redis://single:6379/".into()),
            ..Connections::cluster("postgres://h/db", &seeds, 16)
        };
        assert_eq!(cluster.target(), Ok(RedisTarget::Cluster(seeds.to_vec())));
        for c in [&one, &cluster] {
            let shown = format!("{c:?}");
            assert!(!shown.contains("hunter2"), "{shown}");
        }
        assert!(format!("{cluster:?}").contains("cluster[redis://:[redacted]@a:7000"));
        let none = Connections {
            redis_url: None,
            ..one
        };
        assert!(none
            .target()
            .unwrap_err()
            .to_string()
            .contains("REDIS_CLUSTER_URLS"));
    }
}
