//! Typed configuration, from flags or the environment.

use clap::Parser;
use std::net::SocketAddr;
use std::time::Duration;

/// `LISTEN`'s default: `/health` and `/ready`.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8793";
/// `METRICS_LISTEN`'s default: `/metrics`, on an internal port of its own.
pub const DEFAULT_METRICS_LISTEN: &str = "0.0.0.0:9094";
/// `ANALYTICS_SQL_URL`'s default; `{account}` is replaced by `CF_ACCOUNT_ID`.
pub const DEFAULT_SQL_URL: &str =
    "https://api.cloudflare.com/client/v4/accounts/{account}/analytics_engine/sql";

/// The SyncKairos edge exporter: the edge Worker's Workers Analytics Engine
/// data points, read through the SQL API, as Prometheus counters.
#[derive(Parser, Clone)]
#[command(version)]
pub struct Config {
    /// The Cloudflare account that owns the dataset.
    #[arg(long, env = "CF_ACCOUNT_ID")]
    pub account_id: String,
    /// An API token with only *Account Analytics: Read*.
    #[arg(long, env = "CF_API_TOKEN", hide_env_values = true)]
    pub api_token: String,
    /// The dataset the Worker writes (`wrangler.toml`'s
    /// `analytics_engine_datasets`).
    #[arg(long, env = "ANALYTICS_DATASET", default_value = "synckairos_edge")]
    pub dataset: String,
    /// The SQL API; `{account}` is replaced by `CF_ACCOUNT_ID`.
    #[arg(long, env = "ANALYTICS_SQL_URL", default_value = DEFAULT_SQL_URL)]
    pub sql_url: String,
    /// How often to query, s (fractions allowed). Each query covers the
    /// time since the last one counted.
    #[arg(long, env = "SCRAPE_INTERVAL_SECONDS", default_value_t = 60.0)]
    pub interval_seconds: f64,
    /// How far behind now the windows end, s: Analytics Engine's data
    /// arrives late, and a second is counted only once.
    #[arg(long, env = "LAG_SECONDS", default_value_t = 300)]
    pub lag_seconds: u64,
    /// The longest window one query covers, s. After failures, the next
    /// query starts where the last counted one ended, up to this far back;
    /// anything older is given up (and counted as skipped).
    #[arg(long, env = "MAX_WINDOW_SECONDS", default_value_t = 3600)]
    pub max_window_seconds: u64,
    /// How long one query may take, s.
    #[arg(long, env = "QUERY_TIMEOUT_SECONDS", default_value_t = 30)]
    pub query_timeout_seconds: u64,
    /// `/health` and `/ready` (the public ops port; `/metrics` is 404 here).
    #[arg(long, env = "LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// `/metrics`, on an internal port that is not exposed with `LISTEN`.
    #[arg(long, env = "METRICS_LISTEN", default_value = DEFAULT_METRICS_LISTEN)]
    pub metrics_listen: SocketAddr,
    /// The longest a shutdown takes, ms: the ops servers finish the
    /// requests in flight; a query in flight is abandoned (its window dies
    /// with the process's counters).
    #[arg(long, env = "SHUTDOWN_GRACE_MS", default_value_t = 5_000)]
    pub shutdown_grace_ms: u64,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("account_id", &self.account_id)
            .field("api_token", &"<redacted>")
            .field("dataset", &self.dataset)
            .field("sql_url", &self.sql_url)
            .field("interval_seconds", &self.interval_seconds)
            .field("lag_seconds", &self.lag_seconds)
            .field("max_window_seconds", &self.max_window_seconds)
            .field("query_timeout_seconds", &self.query_timeout_seconds)
            .field("listen", &self.listen)
            .field("metrics_listen", &self.metrics_listen)
            .field("shutdown_grace_ms", &self.shutdown_grace_ms)
            .finish()
    }
}

impl Config {
    /// The SQL API's address for this account.
    pub fn url(&self) -> String {
        self.sql_url.replace("{account}", &self.account_id)
    }

    /// The query interval.
    pub fn interval(&self) -> Duration {
        Duration::from_secs_f64(self.interval_seconds)
    }

    /// The first window's length, s: one interval, at least a second.
    pub fn first_window_seconds(&self) -> u64 {
        (self.interval_seconds.round() as u64).max(1)
    }

    /// Checks the values that would otherwise fail at run time, or go into
    /// the SQL text unquoted.
    pub fn validate(&self) -> Result<(), String> {
        let ident = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        };
        if !ident(&self.dataset) || self.dataset.as_bytes()[0].is_ascii_digit() {
            return Err(format!(
                "ANALYTICS_DATASET must be a dataset name (letters, digits, _), got {:?}",
                self.dataset
            ));
        }
        if self.account_id.is_empty()
            || self.account_id.len() > 64
            || !self.account_id.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err("CF_ACCOUNT_ID must be the account's id (letters and digits)".into());
        }
        if self.api_token.is_empty() || !self.api_token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("CF_API_TOKEN must be a token (no spaces or control characters)".into());
        }
        let url = self.url();
        match reqwest::Url::parse(&url) {
            Ok(u) if matches!(u.scheme(), "https" | "http") && u.host().is_some() => {}
            _ => {
                return Err(format!(
                    "ANALYTICS_SQL_URL must be an http(s) URL, got {url:?}"
                ))
            }
        }
        if !(self.interval_seconds.is_finite() && (0.05..=3600.0).contains(&self.interval_seconds))
        {
            return Err(format!(
                "SCRAPE_INTERVAL_SECONDS must be 0.05..=3600, got {}",
                self.interval_seconds
            ));
        }
        if (self.max_window_seconds as f64) < self.interval_seconds.max(1.0) {
            return Err("MAX_WINDOW_SECONDS must be at least SCRAPE_INTERVAL_SECONDS".into());
        }
        if self.query_timeout_seconds == 0 {
            return Err("QUERY_TIMEOUT_SECONDS must be at least 1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &[&str]) -> Config {
        let mut argv = vec![
            "edge-exporter",
            "--account-id",
            "0123abcd",
            "--api-token",
            "tok_en-1",
        ];
        argv.extend_from_slice(args);
        Config::try_parse_from(argv).unwrap()
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = config(&[]);
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.dataset, "synckairos_edge");
        assert_eq!(
            c.url(),
            "https://api.cloudflare.com/client/v4/accounts/0123abcd/analytics_engine/sql"
        );
        assert_eq!(c.interval(), Duration::from_secs(60));
        assert_eq!(c.lag_seconds, 300);
        assert_eq!(c.max_window_seconds, 3600);
        assert_eq!(c.first_window_seconds(), 60);
        assert!(!format!("{c:?}").contains("tok_en-1"));
    }

    #[test]
    fn fractional_intervals_are_accepted() {
        let c = config(&["--interval-seconds", "0.25"]);
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.interval(), Duration::from_millis(250));
        assert_eq!(c.first_window_seconds(), 1);
    }

    #[test]
    fn what_would_go_into_the_sql_or_the_header_is_checked() {
        let base = config(&[]);
        type Change = fn(&mut Config);
        let cases: [(Change, &str); 8] = [
            (|c| c.dataset = "x; DROP".into(), "ANALYTICS_DATASET"),
            (|c| c.dataset = "1abc".into(), "ANALYTICS_DATASET"),
            (|c| c.account_id = "a/b".into(), "CF_ACCOUNT_ID"),
            (|c| c.api_token = "a b".into(), "CF_API_TOKEN"),
            (
                |c| c.sql_url = "ftp://x/{account}".into(),
                "ANALYTICS_SQL_URL",
            ),
            (|c| c.interval_seconds = 0.0, "SCRAPE_INTERVAL_SECONDS"),
            (|c| c.interval_seconds = f64::NAN, "SCRAPE_INTERVAL_SECONDS"),
            (|c| c.max_window_seconds = 10, "MAX_WINDOW_SECONDS"),
        ];
        for (change, what) in cases {
            let mut c = base.clone();
            change(&mut c);
            let e = c.validate().unwrap_err();
            assert!(e.contains(what), "{c:?}: {e}");
        }
    }
}
