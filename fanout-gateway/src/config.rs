//! Typed configuration from the environment.

use std::net::SocketAddr;
use std::time::Duration;
use synckairos_api::config::Vars;
use synckairos_api::ApiConfig;
use synckairos_engine::{RedisTarget, TargetError};

/// Everything the gateway is configured with.
#[derive(Debug)]
pub struct Config {
    /// Where Redis is, read by [`RedisTarget`] (the one declaration every
    /// native service shares): `REDIS_URL` (`redis://` or `rediss://` for
    /// Upstash's TLS endpoint; default `redis://127.0.0.1:6379/`) for one
    /// server, or a Redis Cluster by `REDIS_CLUSTER_URLS` (comma-separated
    /// seed URLs; it wins when both are set) or
    /// `REDIS_URL=redis+cluster://host1:port,host2:port`. URLs may hold a
    /// password, so the target shows only redacted.
    pub redis: RedisTarget,
    /// `LISTEN` (default `127.0.0.1:8788`; the binary binds it).
    pub listen: SocketAddr,
    /// `METRICS_LISTEN` (default [`DEFAULT_METRICS_LISTEN`]): the internal
    /// port that serves `/metrics` (and only it), kept off the public port.
    pub metrics_listen: SocketAddr,
    /// `LISTEN_BACKLOG` (default 4096): connections the kernel queues before
    /// they are accepted, for the burst after another instance restarts.
    pub listen_backlog: u32,
    /// What the HTTP core reads, the same variables as the edge worker:
    /// `AUTH_MODE`, `JWT_*`, `SHARDS`, `STATE_TTL_SECONDS`,
    /// `SWITCH_RATE_LIMIT`, `IDEMPOTENCY_TTL_SECONDS`,
    /// `CORS_ALLOWED_ORIGINS`, `IP_RATE_LIMIT`, `IP_RATE_PERIOD_SECONDS`.
    pub api: ApiConfig,
    /// `REST_API` (`on`, the default, or `off`): serve the whole REST API
    /// beside `/ws` on this port (the self-hosted shape), or only the
    /// WebSocket side (the edge shape, where the Worker serves REST).
    pub rest: bool,
    /// `MAX_CONNECTIONS` (default 20,000).
    pub max_connections: usize,
    /// `PING_INTERVAL_MS` (default 15,000): protocol pings; a client that
    /// has not answered the previous one when the next is due is dropped.
    pub ping_interval: Duration,
    /// `SEND_TIMEOUT_MS` (default 5,000): a client whose socket takes longer
    /// to accept one message is closed with 1013 ("reconnect").
    pub send_timeout: Duration,
    /// `MAX_CONTROL_QUEUE` (default 64): replies waiting for one client
    /// beyond which it is closed with 1013.
    pub max_control_queue: usize,
    /// `MESSAGES_PER_SECOND` (default 20; 0 = no limit): messages one
    /// socket may send in a second; past it, it is closed with 4029.
    pub messages_per_second: u64,
    /// `MAX_SESSIONS_PER_CONNECTION` (default 100).
    pub max_sessions_per_connection: usize,
    /// `EXPIRY=off` turns the expiry scheduler off (default on).
    pub expiry: bool,
    /// `SHUTDOWN_GRACE_MS` (default 5,000): how long shutdown waits for
    /// clients to take their 1012 close.
    pub shutdown_grace: Duration,
    /// `ALLOWED_ORIGINS`: `*` (default) or a comma-separated list; a browser
    /// upgrade from another `Origin` gets HTTP 403. Clients that send no
    /// `Origin` (native apps) are not affected.
    pub allowed_origins: Option<Vec<String>>,
    /// `CONNECTIONS_PER_IP_PER_SECOND` (default 20; 0 = no limit): new
    /// connections one client address may open per second; past it, 429.
    pub connections_per_ip_per_second: u64,
    /// `MAX_CONNECTIONS_PER_IP` (default 1,000; 0 = no cap): open
    /// WebSockets one client address may hold at once; past it, 429. Room
    /// for a classroom behind one NAT address, not for a flood of sockets.
    pub max_connections_per_ip: u64,
    /// `CLIENT_IP_HEADER`: a header the proxy in front sets to the client's
    /// address (`Fly-Client-IP` on Fly.io); unset, the peer address counts.
    pub client_ip_header: Option<String>,
}

pub use synckairos_api::config::ConfigError;

/// Where `/metrics` is served unless `METRICS_LISTEN` says otherwise: an
/// internal port, apart from the public one (the audit consumer's is 9092).
pub const DEFAULT_METRICS_LISTEN: &str = "0.0.0.0:9091";

fn address(
    name: &'static str,
    value: Option<String>,
    default: &str,
) -> Result<SocketAddr, ConfigError> {
    let v = value.unwrap_or_else(|| default.to_string());
    v.trim().parse().map_err(|_| ConfigError::Invalid {
        name,
        value: v,
        expected: "host:port",
    })
}

/// The Redis target of `REDIS_URL` and `REDIS_CLUSTER_URLS` (a local
/// server when neither is set); a refusal names the variable and shows the
/// URL redacted.
fn redis_target(
    redis_url: Option<String>,
    cluster_urls: Option<String>,
) -> Result<RedisTarget, ConfigError> {
    let redis_url = match (&redis_url, &cluster_urls) {
        (None, None) => Some("redis://127.0.0.1:6379/".to_string()),
        _ => redis_url,
    };
    RedisTarget::from_vars(redis_url.as_deref(), cluster_urls.as_deref()).map_err(|e| match e {
        TargetError::BadUrl { var, url, .. } => ConfigError::Invalid {
            name: var,
            value: url,
            expected:
                "a redis:// or rediss:// URL (a cluster: redis+cluster://host:port,host:port)",
        },
        TargetError::Empty { var } => ConfigError::Invalid {
            name: var,
            value: String::new(),
            expected: "a Redis URL",
        },
        TargetError::BadCluster { var, .. } => ConfigError::Invalid {
            name: var,
            value: "(redacted)".into(),
            expected: "seeds of one cluster: one scheme, one user and password",
        },
        TargetError::Missing => ConfigError::Missing("REDIS_URL"),
    })
}

impl Config {
    /// Reads the configuration through `lookup` (name → value).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let vars = Vars(&lookup);
        let get = |name: &str| vars.get(name);
        let num = |name: &'static str, default: u64, min: u64, max: u64| {
            vars.number(name, default, min, max)
        };
        let redis = redis_target(get("REDIS_URL"), get("REDIS_CLUSTER_URLS"))?;
        let listen = address("LISTEN", get("LISTEN"), "127.0.0.1:8788")?;
        let metrics_listen = address(
            "METRICS_LISTEN",
            get("METRICS_LISTEN"),
            DEFAULT_METRICS_LISTEN,
        )?;
        if metrics_listen.port() != 0 && metrics_listen.port() == listen.port() {
            return Err(ConfigError::Invalid {
                name: "METRICS_LISTEN",
                value: metrics_listen.to_string(),
                expected: "a port other than LISTEN's (/metrics stays off the public port)",
            });
        }
        let expiry = vars.switch("EXPIRY", true)?;
        Ok(Config {
            redis,
            listen,
            metrics_listen,
            listen_backlog: num("LISTEN_BACKLOG", 4096, 1, 65_535)? as u32,
            api: ApiConfig::from_lookup(&lookup)?,
            rest: vars.switch("REST_API", true)?,
            max_connections: num("MAX_CONNECTIONS", 20_000, 1, 10_000_000)? as usize,
            ping_interval: Duration::from_millis(num("PING_INTERVAL_MS", 15_000, 50, 600_000)?),
            send_timeout: Duration::from_millis(num("SEND_TIMEOUT_MS", 5_000, 10, 600_000)?),
            max_control_queue: num("MAX_CONTROL_QUEUE", 64, 1, 100_000)? as usize,
            messages_per_second: num("MESSAGES_PER_SECOND", 20, 0, 1_000_000)?,
            max_sessions_per_connection: num("MAX_SESSIONS_PER_CONNECTION", 100, 1, 10_000)?
                as usize,
            expiry,
            shutdown_grace: Duration::from_millis(num("SHUTDOWN_GRACE_MS", 5_000, 0, 600_000)?),
            allowed_origins: match get("ALLOWED_ORIGINS") {
                None => None,
                Some(v) if v.trim() == "*" => None,
                Some(v) => Some(
                    v.split(',')
                        .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
                        .filter(|o| !o.is_empty())
                        .collect(),
                ),
            },
            connections_per_ip_per_second: num("CONNECTIONS_PER_IP_PER_SECOND", 20, 0, 1_000_000)?,
            max_connections_per_ip: num("MAX_CONNECTIONS_PER_IP", 1000, 0, 10_000_000)?,
            client_ip_header: get("CLIENT_IP_HEADER").map(|h| h.trim().to_ascii_lowercase()),
        })
    }

    /// Reads the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_lookup(|name| std::env::var(name).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_lookup(|name| {
            pairs
                .iter()
                .chain(&[("AUTH_MODE", "disabled")])
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn metrics_listen_is_an_internal_port_of_its_own() {
        let c = config(&[]).unwrap();
        assert_eq!(c.metrics_listen, DEFAULT_METRICS_LISTEN.parse().unwrap());
        assert_ne!(c.metrics_listen.port(), c.listen.port());
        let c = config(&[("METRICS_LISTEN", "127.0.0.1:9500")]).unwrap();
        assert_eq!(c.metrics_listen, "127.0.0.1:9500".parse().unwrap());
        for bad in ["9091", "nowhere:9091"] {
            assert!(
                matches!(
                    config(&[("METRICS_LISTEN", bad)]),
                    Err(ConfigError::Invalid {
                        name: "METRICS_LISTEN",
                        ..
                    })
                ),
                "{bad}"
            );
        }
        // The public port cannot double as the metrics port.
        assert!(matches!(
            config(&[
                ("LISTEN", "0.0.0.0:8788"),
                ("METRICS_LISTEN", "127.0.0.1:8788")
            ]),
            Err(ConfigError::Invalid {
                name: "METRICS_LISTEN",
                ..
            })
        ));
    }

    #[test]
    fn debug_and_refusals_never_show_the_redis_password() {
        let c = config(&[
            (
                "REDIS_URL",
                "redis://user:hunter2-hunter2@cache.internal:6379/0",
            ),
            ("JWT_SECRET", "jwt-secret-jwt-secret-jwt-secret-xyz"),
            ("AUTH_MODE", "jwt"),
        ])
        .unwrap();
        assert_eq!(
            c.redis,
            RedisTarget::Single("redis://user:hunter2-hunter2@cache.internal:6379/0".into())
        );
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2-hunter2"), "{shown}");
        assert!(!shown.contains("jwt-secret-jwt-secret"), "{shown}");
        assert!(shown.contains("cache.internal:6379"), "{shown}");
        let e = config(&[(
            "REDIS_URL",
            "http://user:hunter2-hunter2@cache.internal:6379/",
        )])
        .unwrap_err()
        .to_string();
        assert!(
            !e.contains("hunter2-hunter2") && e.contains("cache.internal:6379"),
            "{e}"
        );
    }

    #[test]
    fn the_redis_target_is_one_server_or_a_cluster() {
        assert_eq!(
            config(&[]).unwrap().redis,
            RedisTarget::Single("redis://127.0.0.1:6379/".into())
        );
        let cluster = RedisTarget::Cluster(vec!["redis://a:7000".into(), "redis://b:7001".into()]);
        assert_eq!(
            config(&[("REDIS_URL", "redis+cluster://a:7000,b:7001")])
                .unwrap()
                .redis,
            cluster
        );
        assert_eq!(
            config(&[
                ("REDIS_URL", "redis://single:6379/"),
                ("REDIS_CLUSTER_URLS", "redis://a:7000,redis://b:7001"),
            ])
            .unwrap()
            .redis,
            cluster
        );
        let e = config(&[("REDIS_CLUSTER_URLS", "redis://:pw-pw-pw@a:1/3")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("REDIS_CLUSTER_URLS") && !e.contains("pw-pw-pw"),
            "{e}"
        );
    }
}
