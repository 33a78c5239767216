//! The Worker's configuration: `[vars]` of `wrangler.toml` and secrets set
//! with `wrangler secret put`, read into one typed struct.
//!
//! [`Config::from_lookup`] takes any name → value function, so the host tests
//! feed it a map and the Worker feeds it its `Env`.

use std::time::Duration;
pub use synckairos_api::config::ConfigError;
use synckairos_api::config::{invalid, Vars};
use synckairos_api::ApiConfig;

/// The body encoding asked of Upstash.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Encoding {
    /// Strings as JSON strings (our records are UTF-8 text).
    #[default]
    Json,
    /// `Upstash-Encoding: base64`: every string base64, for binary values.
    Base64,
}

/// A value that must not reach logs: `Debug` prints `[redacted]` (the one
/// declaration, shared with the native services).
pub use synckairos_core::redact::Secret;

/// Where the state lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstashConfig {
    /// `UPSTASH_REDIS_REST_URL` (secret or var).
    pub url: String,
    /// `UPSTASH_REDIS_REST_TOKEN` (secret).
    pub token: Secret,
    /// `UPSTASH_TIMEOUT_MS`: a call that takes longer is aborted (default 5000).
    pub timeout: Duration,
    /// `UPSTASH_ENCODING`: `json` (default) or `base64`.
    pub encoding: Encoding,
}

/// Everything the Worker is configured with.
#[derive(Debug)]
pub struct Config {
    /// The Upstash database.
    pub upstash: UpstashConfig,
    /// What the HTTP core reads the same way on every transport: auth
    /// (`AUTH_MODE`, `JWT_*`), the script settings, CORS and the general
    /// limit (`IP_RATE_LIMIT`, counted by the `IP_RATE_LIMITER` binding).
    pub api: ApiConfig,
}

impl Config {
    /// Reads the configuration through `lookup` (name → value, `None` when
    /// unset or empty).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let vars = Vars(&lookup);
        let url = vars.required("UPSTASH_REDIS_REST_URL")?;
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(invalid(
                "UPSTASH_REDIS_REST_URL",
                synckairos_core::redact::redact_url(&url),
                "an http(s) URL",
            ));
        }
        let upstash = UpstashConfig {
            url,
            token: Secret::new(vars.required("UPSTASH_REDIS_REST_TOKEN")?),
            timeout: Duration::from_millis(vars.number("UPSTASH_TIMEOUT_MS", 5000, 1, 60_000)?),
            encoding: match vars.get("UPSTASH_ENCODING").as_deref() {
                None | Some("json") => Encoding::Json,
                Some("base64") => Encoding::Base64,
                Some(other) => return Err(invalid("UPSTASH_ENCODING", other, "json or base64")),
            },
        };
        Ok(Config {
            upstash,
            api: ApiConfig::from_lookup(&lookup)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use synckairos_auth::AuthMode;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    const BASE: [(&str, &str); 3] = [
        ("UPSTASH_REDIS_REST_URL", "https://db.example"),
        ("UPSTASH_REDIS_REST_TOKEN", "tok"),
        ("AUTH_MODE", "disabled"),
    ];

    #[test]
    fn defaults() {
        let c = config(&BASE).unwrap();
        assert_eq!(c.upstash.timeout, Duration::from_millis(5000));
        assert_eq!(c.upstash.encoding, Encoding::Json);
        assert_eq!(c.api.auth.mode(), AuthMode::Disabled);
        assert_eq!(c.api.settings.shards, 16);
    }

    #[test]
    fn everything_set() {
        let mut pairs = BASE.to_vec();
        pairs.extend([
            ("AUTH_MODE", "jwt"),
            ("JWT_SECRET", "s3cret-s3cret-s3cret-s3cret-s3cret"),
            ("SHARDS", "32"),
            ("UPSTASH_TIMEOUT_MS", "250"),
            ("UPSTASH_ENCODING", "base64"),
        ]);
        let c = config(&pairs).unwrap();
        assert_eq!(c.api.auth.mode(), AuthMode::Jwt);
        assert_eq!(c.api.settings.shards, 32);
        assert_eq!(c.upstash.timeout, Duration::from_millis(250));
        assert_eq!(c.upstash.encoding, Encoding::Base64);
        let debug = format!("{c:?}");
        assert!(
            !debug.contains("s3cret-s3cret-s3cret-s3cret-s3cret"),
            "secrets stay out of Debug"
        );
        assert!(!debug.contains("tok\""), "the token stays out of Debug");
    }

    #[test]
    fn refusals() {
        assert!(matches!(
            config(&[]),
            Err(ConfigError::Missing("UPSTASH_REDIS_REST_URL"))
        ));
        assert!(matches!(
            config(&BASE[..1]),
            Err(ConfigError::Missing("UPSTASH_REDIS_REST_TOKEN"))
        ));
        for (name, value) in [
            ("UPSTASH_REDIS_REST_URL", "db.example"),
            ("UPSTASH_ENCODING", "hex"),
            ("SHARDS", "0"),
        ] {
            let mut bad = BASE.to_vec();
            bad.push((name, value));
            assert!(
                matches!(config(&bad), Err(ConfigError::Invalid { name: n, .. }) if n == name),
                "{name}={value}"
            );
        }
    }
}
