//! The settings every transport of the REST API reads the same way: auth,
//! the script settings, CORS and the general per-client limit. The worker
//! reads them from its vars and secrets, the native server from its
//! environment, both through [`ApiConfig::from_lookup`], so one variable
//! means one thing everywhere.

use synckairos_auth::AuthConfig;
use synckairos_core::script::Settings;

/// Which origins may call the API from a browser (`CORS_ALLOWED_ORIGINS`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// `*` (the default, docs/API.md §1).
    #[default]
    Any,
    /// Only these (comma-separated in the var); the matching `Origin` is echoed.
    List(Vec<String>),
}

/// The general per-client limit. On the edge, Cloudflare's Rate Limiting
/// binding `IP_RATE_LIMITER` counts it (its `simple` limit and period in
/// `wrangler.toml` must repeat these two vars: the binding answers only
/// allowed or not, and the 429's headers need the numbers); the native
/// server counts it per instance, in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpLimit {
    /// `IP_RATE_LIMIT`: requests per period (default 600; 0 = no general limit).
    pub limit: u64,
    /// `IP_RATE_PERIOD_SECONDS`: 10 or 60 (the binding's choices; default 60).
    pub period_s: u64,
}

/// What the HTTP core is configured with.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// `AUTH_MODE` and the JWT keys (`JWT_SECRET`, `JWT_PUBLIC_KEY`, …).
    pub auth: AuthConfig,
    /// `SHARDS`, `SWITCH_RATE_LIMIT`, `STATE_TTL_SECONDS`,
    /// `IDEMPOTENCY_TTL_SECONDS`: what every script call carries.
    pub settings: Settings,
    /// `CORS_ALLOWED_ORIGINS`.
    pub cors: AllowedOrigins,
    /// `IP_RATE_LIMIT`, `IP_RATE_PERIOD_SECONDS`.
    pub ip_limit: IpLimit,
}

/// A configuration a service cannot run with.
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

/// A refusal of `value` for `name`.
pub fn invalid(
    name: &'static str,
    value: impl Into<String>,
    expected: &'static str,
) -> ConfigError {
    ConfigError::Invalid {
        name,
        value: value.into(),
        expected,
    }
}

/// Reads variables through a name → value function; empty counts as unset.
pub struct Vars<F>(pub F);

impl<F: Fn(&str) -> Option<String>> Vars<F> {
    /// The value of `name`, `None` when unset or blank.
    pub fn get(&self, name: &str) -> Option<String> {
        (self.0)(name).filter(|v| !v.trim().is_empty())
    }

    /// The value of `name`, or [`ConfigError::Missing`].
    pub fn required(&self, name: &'static str) -> Result<String, ConfigError> {
        self.get(name).ok_or(ConfigError::Missing(name))
    }

    /// An integer in `min..=max`, `default` when unset.
    pub fn number(
        &self,
        name: &'static str,
        default: u64,
        min: u64,
        max: u64,
    ) -> Result<u64, ConfigError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => match v.trim().parse::<u64>() {
                Ok(n) if (min..=max).contains(&n) => Ok(n),
                _ => Err(invalid(name, v, "an integer in its documented range")),
            },
        }
    }

    /// `on` or `off`, `default` when unset.
    pub fn switch(&self, name: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.get(name).as_deref().map(str::trim) {
            None => Ok(default),
            Some("on") => Ok(true),
            Some("off") => Ok(false),
            Some(v) => Err(invalid(name, v, "on or off")),
        }
    }

    /// The script settings every service must agree on: `SHARDS`,
    /// `SWITCH_RATE_LIMIT`, `STATE_TTL_SECONDS`, `IDEMPOTENCY_TTL_SECONDS`,
    /// `IDEMPOTENCY_KEYS_PER_SESSION`, `AUTO_ADVANCE_IDLE_CYCLES`,
    /// `SESSION_IDLE_TTL_SECONDS`, `TOMBSTONE_TTL_SECONDS`,
    /// `DEVICE_TOKEN_TTL_SECONDS`, and `LOW_TIME_WARNING_MS` (what `create`
    /// stores when a request names no threshold; the bounds of a session's own).
    pub fn settings(&self) -> Result<Settings, ConfigError> {
        let d = Settings::default();
        const DAY: u64 = 86_400;
        Ok(Settings {
            shards: self.number("SHARDS", d.shards.into(), 1, 1024)? as u16,
            switch_limit: self.number("SWITCH_RATE_LIMIT", d.switch_limit, 0, 1_000_000)?,
            base_ttl_s: self.number("STATE_TTL_SECONDS", d.base_ttl_s, 60, 30 * DAY)?,
            idempotency_ttl_s: self.number(
                "IDEMPOTENCY_TTL_SECONDS",
                d.idempotency_ttl_s,
                1,
                30 * DAY,
            )?,
            idempotency_keys: self.number(
                "IDEMPOTENCY_KEYS_PER_SESSION",
                d.idempotency_keys.into(),
                1,
                1024,
            )? as u32,
            max_idle_cycles: self.number(
                "AUTO_ADVANCE_IDLE_CYCLES",
                d.max_idle_cycles.into(),
                0,
                1_000_000,
            )? as u32,
            idle_ttl_s: self.number("SESSION_IDLE_TTL_SECONDS", d.idle_ttl_s, 60, 30 * DAY)?,
            tombstone_ttl_s: self.number(
                "TOMBSTONE_TTL_SECONDS",
                d.tombstone_ttl_s,
                1,
                30 * DAY,
            )?,
            low_time_warning_ms: {
                let b = &synckairos_core::validate::LOW_TIME_WARNING;
                self.number(
                    "LOW_TIME_WARNING_MS",
                    d.low_time_warning_ms,
                    b.min as u64,
                    b.max as u64,
                )?
            },
            device_ttl_s: self.number("DEVICE_TOKEN_TTL_SECONDS", d.device_ttl_s, 60, 365 * DAY)?,
        })
    }
}

impl ApiConfig {
    /// Reads the configuration through `lookup` (name → value, `None` when
    /// unset).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<ApiConfig, ConfigError> {
        let vars = Vars(&lookup);
        let auth = AuthConfig::from_vars(&lookup)?;
        let settings = vars.settings()?;
        let cors = match vars.get("CORS_ALLOWED_ORIGINS") {
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
            limit: vars.number("IP_RATE_LIMIT", 600, 0, 1_000_000)?,
            period_s: match vars.number("IP_RATE_PERIOD_SECONDS", 60, 10, 60)? {
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
        Ok(ApiConfig {
            auth,
            settings,
            cors,
            ip_limit,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use synckairos_auth::AuthMode;

    fn config(pairs: &[(&str, &str)]) -> Result<ApiConfig, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ApiConfig::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults() {
        let c = config(&[("AUTH_MODE", "disabled")]).unwrap();
        assert_eq!(c.auth.mode(), AuthMode::Disabled);
        assert_eq!(c.settings.shards, 16);
        assert_eq!(c.settings.device_ttl_s, 30 * 86_400);
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
        let c = config(&[
            ("AUTH_MODE", "jwt"),
            ("JWT_SECRET", "s3cret-s3cret-s3cret-s3cret-s3cret"),
            ("SHARDS", "32"),
            ("SWITCH_RATE_LIMIT", "0"),
            ("DEVICE_TOKEN_TTL_SECONDS", "3600"),
            (
                "CORS_ALLOWED_ORIGINS",
                "https://a.example/, https://b.example",
            ),
            ("IP_RATE_LIMIT", "50"),
            ("IP_RATE_PERIOD_SECONDS", "10"),
        ])
        .unwrap();
        assert_eq!(c.auth.mode(), AuthMode::Jwt);
        assert_eq!((c.settings.shards, c.settings.switch_limit), (32, 0));
        assert_eq!(c.settings.device_ttl_s, 3600);
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
            !format!("{c:?}").contains("s3cret-s3cret-s3cret-s3cret-s3cret"),
            "secrets stay out of Debug"
        );
    }

    #[test]
    fn refusals() {
        for (name, value) in [
            ("SHARDS", "0"),
            ("DEVICE_TOKEN_TTL_SECONDS", "59"),
            ("IP_RATE_PERIOD_SECONDS", "30"),
            ("IP_RATE_LIMIT", "-1"),
            ("CORS_ALLOWED_ORIGINS", "a.example"),
        ] {
            assert!(
                matches!(config(&[("AUTH_MODE", "disabled"), (name, value)]), Err(ConfigError::Invalid { name: n, .. }) if n == name),
                "{name}={value}"
            );
        }
        assert!(matches!(
            config(&[("AUTH_MODE", "none")]),
            Err(ConfigError::Auth(_))
        ));
        let vars = Vars(|n: &str| (n == "X").then(|| "maybe".to_string()));
        assert!(vars.switch("X", true).is_err());
        assert!(vars.switch("Y", true).unwrap());
    }
}
