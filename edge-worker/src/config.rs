//! The Worker's configuration: `[vars]` of `wrangler.toml` and secrets set
//! with `wrangler secret put`, read into one typed struct.
//!
//! [`Config::from_lookup`] takes any name → value function, so the host tests
//! feed it a map and the Worker feeds it its `Env`.

use std::fmt;
use std::time::Duration;
use synckairos_auth::AuthConfig;
use synckairos_core::script::Settings;

/// The body encoding asked of Upstash.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Encoding {
    /// Strings as JSON strings (our records are UTF-8 text).
    #[default]
    Json,
    /// `Upstash-Encoding: base64`: every string base64, for binary values.
    Base64,
}

/// A value that must not reach logs: `Debug` prints `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

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

/// Which origins may call the API from a browser (`CORS_ALLOWED_ORIGINS`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// `*` (the default, API.md §1).
    #[default]
    Any,
    /// Only these (comma-separated in the var); the matching `Origin` is echoed.
    List(Vec<String>),
}

/// The general per-client-IP limit. Counted by Cloudflare's Rate Limiting
/// binding `IP_RATE_LIMITER` (declared in `wrangler.toml`, whose `simple`
/// limit and period these two vars must repeat: the binding answers only
/// allowed or not, and the worker needs the numbers for the 429's headers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpLimit {
    /// `IP_RATE_LIMIT`: requests per period (default 600; 0 = no general
    /// limit, even with the binding present).
    pub limit: u64,
    /// `IP_RATE_PERIOD_SECONDS`: 10 or 60 (the binding's choices; default 60).
    pub period_s: u64,
}

/// Everything the Worker is configured with.
#[derive(Debug)]
pub struct Config {
    /// The Upstash database.
    pub upstash: UpstashConfig,
    /// `AUTH_MODE` and the JWT keys (`JWT_SECRET`, `JWT_PUBLIC_KEY`, …), read
    /// by `synckairos-auth` so the worker and the gateway agree.
    pub auth: AuthConfig,
    /// `SHARDS`, `SWITCH_RATE_LIMIT`, `STATE_TTL_SECONDS`,
    /// `IDEMPOTENCY_TTL_SECONDS`: what every script call carries.
    pub settings: Settings,
    /// `CORS_ALLOWED_ORIGINS`.
    pub cors: AllowedOrigins,
    /// `IP_RATE_LIMIT`, `IP_RATE_PERIOD_SECONDS`.
    pub ip_limit: IpLimit,
}

/// A configuration the Worker cannot run with.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A required variable or secret is not set.
    #[error("{0} is not set")]
    Missing(&'static str),
    /// A variable has a value it cannot have.
    #[error("{name} is {value:?}: {expected}")]
    Invalid {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// What it should be.
        expected: &'static str,
    },
    /// `AUTH_MODE` or a JWT key is wrong.
    #[error(transparent)]
    Auth(#[from] synckairos_auth::ConfigError),
}

impl Config {
    /// Reads the configuration through `lookup` (name → value, `None` when
    /// unset or empty).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let required = |name: &'static str| get(name).ok_or(ConfigError::Missing(name));
        let defaults = Settings::default();

        let url = required("UPSTASH_REDIS_REST_URL")?;
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(invalid("UPSTASH_REDIS_REST_URL", url, "an http(s) URL"));
        }
        let upstash = UpstashConfig {
            url,
            token: Secret::new(required("UPSTASH_REDIS_REST_TOKEN")?),
            timeout: Duration::from_millis(number(&get, "UPSTASH_TIMEOUT_MS", 5000, 1, 60_000)?),
            encoding: match get("UPSTASH_ENCODING").as_deref() {
                None | Some("json") => Encoding::Json,
                Some("base64") => Encoding::Base64,
                Some(other) => return Err(invalid("UPSTASH_ENCODING", other, "json or base64")),
            },
        };
        let auth = AuthConfig::from_vars(&lookup)?;
        let settings = Settings {
            shards: number(&get, "SHARDS", defaults.shards.into(), 1, 1024)? as u16,
            switch_limit: number(
                &get,
                "SWITCH_RATE_LIMIT",
                defaults.switch_limit,
                0,
                1_000_000,
            )?,
            base_ttl_s: number(
                &get,
                "STATE_TTL_SECONDS",
                defaults.base_ttl_s,
                60,
                30 * 86_400,
            )?,
            idempotency_ttl_s: number(
                &get,
                "IDEMPOTENCY_TTL_SECONDS",
                defaults.idempotency_ttl_s,
                1,
                30 * 86_400,
            )?,
        };
        let cors = match get("CORS_ALLOWED_ORIGINS") {
            None => AllowedOrigins::Any,
            Some(v) if v.trim() == "*" => AllowedOrigins::Any,
            Some(v) => {
                let list: Vec<String> = v
                    .split(',')
                    .map(|o| o.trim().trim_end_matches('/').to_string())
                    .filter(|o| !o.is_empty())
                    .collect();
                if list.iter().any(|o| !o.contains("://")) {
                    return Err(invalid(
                        "CORS_ALLOWED_ORIGINS",
                        v,
                        "* or comma-separated origins like https://app.example",
                    ));
                }
                AllowedOrigins::List(list)
            }
        };
        let ip_limit = IpLimit {
            limit: number(&get, "IP_RATE_LIMIT", 600, 0, 1_000_000)?,
            period_s: match number(&get, "IP_RATE_PERIOD_SECONDS", 60, 10, 60)? {
                p @ (10 | 60) => p,
                other => {
                    return Err(invalid(
                        "IP_RATE_PERIOD_SECONDS",
                        other.to_string(),
                        "10 or 60 (the periods of the rate-limit binding)",
                    ))
                }
            },
        };
        Ok(Config {
            upstash,
            auth,
            settings,
            cors,
            ip_limit,
        })
    }
}

fn invalid(name: &'static str, value: impl Into<String>, expected: &'static str) -> ConfigError {
    ConfigError::Invalid {
        name,
        value: value.into(),
        expected,
    }
}

fn number(
    get: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    match get(name) {
        None => Ok(default),
        Some(v) => match v.trim().parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(invalid(name, v, "an integer in its documented range")),
        },
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
        assert_eq!(c.auth.mode(), AuthMode::Disabled);
        assert_eq!(c.settings.shards, 16);
        assert_eq!(c.cors, AllowedOrigins::Any);
        assert_eq!(
            c.ip_limit,
            IpLimit {
                limit: 600,
                period_s: 60
            }
        );
    }

    #[test]
    fn everything_set() {
        let mut pairs = BASE.to_vec();
        pairs.extend([
            ("AUTH_MODE", "jwt"),
            ("JWT_SECRET", "s3cret"),
            ("SHARDS", "32"),
            ("SWITCH_RATE_LIMIT", "0"),
            ("UPSTASH_TIMEOUT_MS", "250"),
            ("UPSTASH_ENCODING", "base64"),
            (
                "CORS_ALLOWED_ORIGINS",
                "https://a.example/, https://b.example",
            ),
            ("IP_RATE_LIMIT", "50"),
            ("IP_RATE_PERIOD_SECONDS", "10"),
        ]);
        let c = config(&pairs).unwrap();
        assert_eq!(c.auth.mode(), AuthMode::Jwt);
        assert_eq!(c.settings.shards, 32);
        assert_eq!(c.settings.switch_limit, 0);
        assert_eq!(c.upstash.timeout, Duration::from_millis(250));
        assert_eq!(c.upstash.encoding, Encoding::Base64);
        assert_eq!(
            c.cors,
            AllowedOrigins::List(vec!["https://a.example".into(), "https://b.example".into()])
        );
        assert_eq!(
            c.ip_limit,
            IpLimit {
                limit: 50,
                period_s: 10
            }
        );
        assert!(
            !format!("{c:?}").contains("s3cret"),
            "secrets stay out of Debug"
        );
        assert!(
            !format!("{c:?}").contains("tok\""),
            "the token stays out of Debug"
        );
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
        let mut bad = BASE.to_vec();
        bad.push(("SHARDS", "0"));
        assert!(matches!(
            config(&bad),
            Err(ConfigError::Invalid { name: "SHARDS", .. })
        ));
        for (name, value) in [
            ("IP_RATE_PERIOD_SECONDS", "30"),
            ("IP_RATE_LIMIT", "-1"),
            ("CORS_ALLOWED_ORIGINS", "a.example"),
        ] {
            let mut bad = BASE.to_vec();
            bad.push((name, value));
            assert!(
                matches!(config(&bad), Err(ConfigError::Invalid { name: n, .. }) if n == name),
                "{name}={value}"
            );
        }
        let mut bad = BASE.to_vec();
        bad.push(("AUTH_MODE", "none"));
        assert!(matches!(config(&bad), Err(ConfigError::Auth(_))));
    }
}
