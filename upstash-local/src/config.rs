//! Typed configuration, read from the command line or the environment.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use synckairos_core::redact::{redact_url, REDACTED};

/// Default listen address: loopback only, since this is a development tool.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8079";
/// Default Redis to proxy to: a local `redis-server` on its standard port.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379/";
/// Default number of (multiplexed) Redis connections.
pub const DEFAULT_POOL_SIZE: usize = 4;
/// Default largest accepted request body, in bytes (10 MiB).
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 10 * 1024 * 1024;
/// Default time to wait for a Redis connection or reply, in ms.
pub const DEFAULT_REDIS_TIMEOUT_MS: u64 = 10_000;

/// Configuration of the upstash-local endpoint.
///
/// Every field can be given as a command-line flag or as the environment
/// variable named next to it. Only the token has no default: the endpoint
/// refuses to start without one, so a client that forgot to send its token
/// is caught in development exactly as it would be against Upstash.
///
/// Tests build a `Config` with [`Config::new`] and adjust the public fields.
#[derive(Clone, Parser)]
#[command(
    name = "upstash-local",
    version,
    about = "Development and test stand-in for Upstash's Redis REST API in front of a local \
             redis-server. NOT for production.",
    long_about = None
)]
pub struct Config {
    /// Address the HTTP endpoint listens on (used by the binary; the library's
    /// `run` takes an already bound listener).
    #[arg(long, env = "UPSTASH_LOCAL_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// Redis to forward commands to (`redis://[user:pass@]host:port/db`).
    #[arg(long, env = "UPSTASH_LOCAL_REDIS_URL", default_value = DEFAULT_REDIS_URL)]
    pub redis_url: String,

    /// Bearer token clients must send (`Authorization: Bearer <token>` or
    /// `?_token=<token>`). Required; there is no default.
    #[arg(long, env = "UPSTASH_LOCAL_TOKEN", hide_env_values = true, value_parser = non_empty)]
    pub token: String,

    /// Number of Redis connections. Each is multiplexed: requests are spread
    /// over them round-robin and pipelined on each, so a few are plenty.
    #[arg(long, env = "UPSTASH_LOCAL_POOL_SIZE", default_value_t = DEFAULT_POOL_SIZE,
          value_parser = clap::value_parser!(usize))]
    pub pool_size: usize,

    /// Largest accepted request body in bytes; larger ones get
    /// `400 {"error":"ERR max request size exceeded"}` as on Upstash.
    #[arg(long, env = "UPSTASH_LOCAL_MAX_REQUEST_BYTES", default_value_t = DEFAULT_MAX_REQUEST_BYTES)]
    pub max_request_bytes: usize,

    /// How long to wait for a Redis connection or reply, in ms.
    #[arg(long, env = "UPSTASH_LOCAL_REDIS_TIMEOUT_MS", default_value_t = DEFAULT_REDIS_TIMEOUT_MS)]
    pub redis_timeout_ms: u64,
}

fn non_empty(s: &str) -> Result<String, String> {
    if s.is_empty() {
        Err("the token must not be empty".to_string())
    } else {
        Ok(s.to_string())
    }
}

impl Config {
    /// A configuration with every default except the two values a test
    /// always chooses: the Redis URL and the token.
    pub fn new(redis_url: impl Into<String>, token: impl Into<String>) -> Self {
        Self {
            listen: DEFAULT_LISTEN
                .parse()
                .expect("DEFAULT_LISTEN is a valid address"),
            redis_url: redis_url.into(),
            token: token.into(),
            pool_size: DEFAULT_POOL_SIZE,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            redis_timeout_ms: DEFAULT_REDIS_TIMEOUT_MS,
        }
    }

    /// [`Config::redis_timeout_ms`] as a [`Duration`].
    pub fn redis_timeout(&self) -> Duration {
        Duration::from_millis(self.redis_timeout_ms)
    }

    /// Checks the values `run` relies on, with messages that say what to fix.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            !self.token.is_empty(),
            "UPSTASH_LOCAL_TOKEN (or --token) must not be empty: it is the bearer token clients send"
        );
        anyhow::ensure!(
            self.pool_size > 0,
            "UPSTASH_LOCAL_POOL_SIZE (or --pool-size) must be at least 1"
        );
        anyhow::ensure!(
            self.max_request_bytes > 0,
            "UPSTASH_LOCAL_MAX_REQUEST_BYTES (or --max-request-bytes) must be at least 1"
        );
        anyhow::ensure!(
            self.redis_timeout_ms > 0,
            "UPSTASH_LOCAL_REDIS_TIMEOUT_MS (or --redis-timeout-ms) must be at least 1"
        );
        Ok(())
    }
}

/// Debug output never shows the token.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("redis_url", &redact_url(&self.redis_url))
            .field("token", &REDACTED)
            .field("pool_size", &self.pool_size)
            .field("max_request_bytes", &self.max_request_bytes)
            .field("redis_timeout_ms", &self.redis_timeout_ms)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_token_and_password() {
        let config = Config::new("redis://u:secret@127.0.0.1:6379/0", "tok-123");
        let shown = format!("{config:?}");
        assert!(!shown.contains("tok-123"), "{shown}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("127.0.0.1:6379/0"), "{shown}");
    }

    #[test]
    fn token_is_required_and_defaults_apply() {
        let err = Config::try_parse_from(["upstash-local"]).err();
        // The environment of the test process may not set UPSTASH_LOCAL_TOKEN.
        if std::env::var_os("UPSTASH_LOCAL_TOKEN").is_none() {
            let err = err.expect("missing token must be an error");
            assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        }
        let config = Config::try_parse_from(["upstash-local", "--token", "t"]).unwrap();
        assert_eq!(config.token, "t");
        if std::env::var_os("UPSTASH_LOCAL_LISTEN").is_none() {
            assert_eq!(config.listen.to_string(), DEFAULT_LISTEN);
        }
        assert!(Config::try_parse_from(["upstash-local", "--token", ""]).is_err());
    }
}
