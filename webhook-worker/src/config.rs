//! Typed configuration: the worker's settings (flags or environment) and the
//! endpoints (`WEBHOOK_ENDPOINTS`, JSON), validated at start.

use crate::guard;
use crate::sign::Secrets;
use clap::Args;
use serde::Deserialize;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

pub use synckairos_audit_consumer::Connections;

/// `LISTEN`'s default: `/health` and `/ready`.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8791";
/// `METRICS_LISTEN`'s default: `/metrics`, on an internal port of its own.
pub const DEFAULT_METRICS_LISTEN: &str = "0.0.0.0:9093";
/// The default retry schedule: the wait before each attempt, the first
/// included (Standard Webhooks' and Svix's).
pub const DEFAULT_SCHEDULE: &str = "0,5s,5m,30m,2h,5h,10h,10h";

/// The event types an endpoint can subscribe to (their wire names).
pub const EVENT_TYPES: [&str; 4] = [
    "session_expired",
    "session_completed",
    "participant_switched",
    "low_time_warning",
];

/// The worker's settings (`run`). `Debug` leaves out the endpoints' JSON
/// (it holds their secrets).
#[derive(Args, Clone)]
pub struct WorkerConfig {
    /// The consumer group of the webhook worker on the shard audit streams
    /// (its own: the audit consumer's group is not touched).
    #[arg(long, env = "WEBHOOK_GROUP", default_value = "webhooks")]
    pub group: String,
    /// This process's name in the group and on the leases it takes;
    /// defaults to the host name, which stays the same across restarts, so
    /// a restarted worker finds its own unacknowledged entries.
    #[arg(long, env = "CONSUMER_NAME")]
    pub consumer_name: Option<String>,
    /// The endpoints, a JSON array (see docs/API.md, "Webhooks").
    #[arg(long, env = "WEBHOOK_ENDPOINTS", hide_env_values = true)]
    pub endpoints: Option<String>,
    /// A file holding the endpoints' JSON array (instead of `WEBHOOK_ENDPOINTS`).
    #[arg(long, env = "WEBHOOK_ENDPOINTS_FILE")]
    pub endpoints_file: Option<std::path::PathBuf>,
    /// Development only: allows `http://` URLs and private, loopback and
    /// link-local addresses (the SSRF guard is off).
    #[arg(long, env = "WEBHOOK_ALLOW_LOCAL", default_value_t = false, action = clap::ArgAction::Set)]
    pub allow_local: bool,
    /// The wait before each attempt, comma-separated (`ms`, `s`, `m`, `h`;
    /// the first is the first attempt's, usually 0). Each wait after the
    /// first is drawn at random between half the value and the value. After
    /// the last attempt fails, the delivery is dead-lettered.
    #[arg(long, env = "WEBHOOK_RETRY_SCHEDULE", default_value = DEFAULT_SCHEDULE)]
    pub retry_schedule: String,
    /// One attempt's time limit (connect, send, answer), ms; an endpoint's
    /// `timeout_ms` overrides it.
    #[arg(long, env = "WEBHOOK_TIMEOUT_MS", default_value_t = 10_000)]
    pub timeout_ms: u64,
    /// Attempts in flight at once per endpoint; an endpoint's
    /// `max_in_flight` overrides it.
    #[arg(long, env = "WEBHOOK_MAX_IN_FLIGHT", default_value_t = 16)]
    pub max_in_flight: usize,
    /// How long a claimed delivery stays this process's, ms (past it, a
    /// crashed process's claims come back). Must exceed the timeout.
    #[arg(long, env = "WEBHOOK_LEASE_MS", default_value_t = 60_000)]
    pub lease_ms: u64,
    /// The longest a dispatcher sleeps before looking at the queue again,
    /// ms (it is woken at once by its own ingest and its own retries; this
    /// bounds how late it sees other processes' rows and expired leases).
    #[arg(long, env = "WEBHOOK_POLL_MS", default_value_t = 1_000)]
    pub poll_ms: u64,
    /// Whether this process reads the streams (ingest). Only one process of
    /// a deployment should: entries are shared out among a group's
    /// consumers, and two processes queue a session's events in the order
    /// their transactions commit, not in stream order. More processes can
    /// share the delivery work with `WEBHOOK_INGEST=false` (they dispatch
    /// from the shared queue, seeing new rows within `WEBHOOK_POLL_MS`).
    #[arg(long, env = "WEBHOOK_INGEST", default_value_t = true, action = clap::ArgAction::Set)]
    pub ingest: bool,
    /// Most stream entries read per batch.
    #[arg(long, env = "BATCH_SIZE", default_value_t = 200)]
    pub batch_size: usize,
    /// How long one read waits for new entries, ms (an idle worker's only
    /// Redis command: one per wait).
    #[arg(long, env = "BLOCK_MS", default_value_t = 10_000)]
    pub block_ms: u64,
    /// Entries pending this long on another consumer of the group are
    /// claimed, ms.
    #[arg(long, env = "CLAIM_IDLE_MS", default_value_t = 30_000)]
    pub claim_idle_ms: u64,
    /// Trim a shard stream only once this consumer group exists on it (the
    /// audit consumer's, `AUDIT_GROUP`): the trim keeps what every group
    /// that exists has not acknowledged, so before the audit consumer has
    /// made its group, a trim by this worker would drop entries it has not
    /// stored yet. Empty: trim regardless (a deployment without the audit
    /// consumer).
    #[arg(long, env = "WEBHOOK_TRIM_AFTER_GROUP", default_value = "audit")]
    pub trim_after_group: String,
    /// `/health` and `/ready`.
    #[arg(long, env = "LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// `/metrics`, on an internal port.
    #[arg(long, env = "METRICS_LISTEN", default_value = DEFAULT_METRICS_LISTEN)]
    pub metrics_listen: SocketAddr,
}

impl std::fmt::Debug for WorkerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerConfig")
            .field("group", &self.group)
            .field("consumer_name", &self.consumer_name)
            .field(
                "endpoints",
                &self
                    .endpoints
                    .as_ref()
                    .map(|_| synckairos_core::redact::REDACTED),
            )
            .field("endpoints_file", &self.endpoints_file)
            .field("allow_local", &self.allow_local)
            .field("retry_schedule", &self.retry_schedule)
            .field("timeout_ms", &self.timeout_ms)
            .field("max_in_flight", &self.max_in_flight)
            .field("lease_ms", &self.lease_ms)
            .field("poll_ms", &self.poll_ms)
            .field("ingest", &self.ingest)
            .field("batch_size", &self.batch_size)
            .field("block_ms", &self.block_ms)
            .field("claim_idle_ms", &self.claim_idle_ms)
            .field("trim_after_group", &self.trim_after_group)
            .field("listen", &self.listen)
            .field("metrics_listen", &self.metrics_listen)
            .finish()
    }
}

impl Default for WorkerConfig {
    fn default() -> WorkerConfig {
        WorkerConfig {
            group: "webhooks".into(),
            consumer_name: None,
            endpoints: None,
            endpoints_file: None,
            allow_local: false,
            retry_schedule: DEFAULT_SCHEDULE.into(),
            timeout_ms: 10_000,
            max_in_flight: 16,
            lease_ms: 60_000,
            poll_ms: 1_000,
            ingest: true,
            batch_size: 200,
            block_ms: 10_000,
            claim_idle_ms: 30_000,
            trim_after_group: "audit".into(),
            listen: DEFAULT_LISTEN.parse().expect("a socket address"),
            metrics_listen: DEFAULT_METRICS_LISTEN.parse().expect("a socket address"),
        }
    }
}

impl WorkerConfig {
    /// The consumer name: the flag, else the host name.
    pub fn name(&self) -> String {
        self.consumer_name
            .clone()
            .unwrap_or_else(synckairos_audit_consumer::config::hostname)
    }

    /// The endpoints' JSON text: `WEBHOOK_ENDPOINTS`, else the file's.
    pub fn endpoints_json(&self) -> Result<String, String> {
        match (&self.endpoints, &self.endpoints_file) {
            (Some(_), Some(_)) => {
                Err("set WEBHOOK_ENDPOINTS or WEBHOOK_ENDPOINTS_FILE, not both".into())
            }
            (Some(j), None) => Ok(j.clone()),
            (None, Some(f)) => std::fs::read_to_string(f)
                .map_err(|e| format!("WEBHOOK_ENDPOINTS_FILE {}: {e}", f.display())),
            (None, None) => Ok("[]".into()),
        }
    }

    /// The endpoints, parsed and validated.
    pub fn load_endpoints(&self) -> Result<Vec<Endpoint>, String> {
        parse_endpoints(&self.endpoints_json()?, self.allow_local, self)
    }

    /// The retry schedule, parsed.
    pub fn schedule(&self) -> Result<Vec<Duration>, String> {
        parse_schedule(&self.retry_schedule)
    }

    /// Checks the values that would otherwise fail at run time.
    pub fn validate(&self) -> Result<(), String> {
        self.schedule()?;
        if self.group.is_empty() {
            return Err("WEBHOOK_GROUP must not be empty".into());
        }
        if self.batch_size == 0 || self.batch_size > 10_000 {
            return Err(format!(
                "BATCH_SIZE must be 1..=10000, got {}",
                self.batch_size
            ));
        }
        if self.block_ms == 0 {
            return Err("BLOCK_MS must be at least 1".into());
        }
        if self.timeout_ms == 0 {
            return Err("WEBHOOK_TIMEOUT_MS must be at least 1".into());
        }
        if self.max_in_flight == 0 || self.max_in_flight > 1024 {
            return Err(format!(
                "WEBHOOK_MAX_IN_FLIGHT must be 1..=1024, got {}",
                self.max_in_flight
            ));
        }
        if self.poll_ms == 0 || self.poll_ms > 60_000 {
            return Err("WEBHOOK_POLL_MS must be 1..=60000".into());
        }
        Ok(())
    }
}

/// One destination, validated.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// Its stable id (metrics label, queue key, dead letters).
    pub id: String,
    /// Where to POST.
    pub url: reqwest::Url,
    /// One or two signing keys (`Debug` shows none of them).
    pub secrets: Secrets,
    /// The event types it receives.
    pub events: HashSet<String>,
    /// One attempt's time limit.
    pub timeout: Duration,
    /// Attempts in flight at once.
    pub max_in_flight: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EndpointJson {
    id: String,
    url: String,
    secrets: Vec<String>,
    events: Vec<String>,
    #[serde(default)]
    timeout_ms: Option<u64>,
    #[serde(default)]
    max_in_flight: Option<usize>,
}

/// Parses and validates the endpoints' JSON array. Errors name the endpoint
/// and the field, and never show a secret.
pub fn parse_endpoints(
    json: &str,
    allow_local: bool,
    defaults: &WorkerConfig,
) -> Result<Vec<Endpoint>, String> {
    let raw: Vec<EndpointJson> = serde_json::from_str(json).map_err(|e| {
        // serde's message quotes no values for these types, only positions.
        format!("WEBHOOK_ENDPOINTS is not a JSON array of endpoints: {e}")
    })?;
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, e) in raw.into_iter().enumerate() {
        let at = format!("endpoint #{i} ({:?})", e.id);
        let id_ok = !e.id.is_empty()
            && e.id.len() <= 64
            && e.id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !id_ok {
            return Err(format!(
                "{at}: id must be 1-64 characters of letters, digits, '-', '_' or '.'"
            ));
        }
        if !seen.insert(e.id.clone()) {
            return Err(format!("{at}: duplicate id"));
        }
        let url = reqwest::Url::parse(&e.url).map_err(|err| format!("{at}: bad url: {err}"))?;
        match url.scheme() {
            "https" => {}
            "http" if allow_local => {}
            "http" => {
                return Err(format!(
                    "{at}: url must be https (http only with WEBHOOK_ALLOW_LOCAL=true)"
                ))
            }
            s => return Err(format!("{at}: url scheme {s:?} is not https")),
        }
        if url.host().is_none() {
            return Err(format!("{at}: url has no host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!("{at}: url must not carry credentials"));
        }
        if !allow_local {
            if let Err(why) = guard::check_url(&url) {
                return Err(format!("{at}: {why}"));
            }
        }
        if e.secrets.is_empty() || e.secrets.len() > 2 {
            return Err(format!(
                "{at}: secrets must hold 1 or 2 keys (2 while rotating), got {}",
                e.secrets.len()
            ));
        }
        let secrets = Secrets::parse(&e.secrets).map_err(|why| format!("{at}: {why}"))?;
        if e.events.is_empty() {
            return Err(format!("{at}: events must not be empty"));
        }
        let mut events = HashSet::new();
        for t in &e.events {
            if !EVENT_TYPES.contains(&t.as_str()) {
                return Err(format!(
                    "{at}: unknown event type {t:?} (known: {})",
                    EVENT_TYPES.join(", ")
                ));
            }
            events.insert(t.clone());
        }
        let timeout_ms = e.timeout_ms.unwrap_or(defaults.timeout_ms);
        if timeout_ms == 0 || timeout_ms >= defaults.lease_ms {
            return Err(format!(
                "{at}: timeout_ms must be > 0 and below WEBHOOK_LEASE_MS ({})",
                defaults.lease_ms
            ));
        }
        let max_in_flight = e.max_in_flight.unwrap_or(defaults.max_in_flight);
        if max_in_flight == 0 || max_in_flight > 1024 {
            return Err(format!("{at}: max_in_flight must be 1..=1024"));
        }
        out.push(Endpoint {
            id: e.id,
            url,
            secrets,
            events,
            timeout: Duration::from_millis(timeout_ms),
            max_in_flight,
        });
    }
    Ok(out)
}

/// Parses `0,5s,5m,30m,2h` (`ms`, `s`, `m`, `h`; a bare number is ms).
pub fn parse_schedule(s: &str) -> Result<Vec<Duration>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim) {
        let (num, unit) = match part.find(|c: char| !c.is_ascii_digit()) {
            Some(i) => part.split_at(i),
            None => (part, "ms"),
        };
        let n: u64 = num
            .parse()
            .map_err(|_| format!("WEBHOOK_RETRY_SCHEDULE: {part:?} is not a duration"))?;
        let ms = match unit {
            "ms" => n,
            "s" => n * 1000,
            "m" => n * 60_000,
            "h" => n * 3_600_000,
            _ => {
                return Err(format!(
                    "WEBHOOK_RETRY_SCHEDULE: {part:?} has an unknown unit (ms, s, m, h)"
                ))
            }
        };
        out.push(Duration::from_millis(ms));
    }
    if out.is_empty() || out.len() > 50 {
        return Err("WEBHOOK_RETRY_SCHEDULE must list 1 to 50 waits".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn one(url: &str, events: &str, local: bool) -> Result<Vec<Endpoint>, String> {
        let j = format!(r#"[{{"id":"a","url":"{url}","secrets":["{KEY}"],"events":{events}}}]"#);
        parse_endpoints(&j, local, &WorkerConfig::default())
    }

    #[test]
    fn endpoints_are_validated_with_clear_errors() {
        let ok = one("https://example.com/hook", r#"["session_expired"]"#, false).unwrap();
        assert_eq!(ok[0].id, "a");
        let e = one("https://example.com/h", r#"["nope"]"#, false).unwrap_err();
        assert!(e.contains("unknown event type \"nope\""), "{e}");
        let e = one("http://example.com/h", r#"["session_expired"]"#, false).unwrap_err();
        assert!(e.contains("must be https"), "{e}");
        assert!(one("http://127.0.0.1:9/h", r#"["session_expired"]"#, true).is_ok());
        let e = one("https://10.1.2.3/h", r#"["session_expired"]"#, false).unwrap_err();
        assert!(e.contains("not a public address"), "{e}");
        let e = one("not a url", r#"["session_expired"]"#, false).unwrap_err();
        assert!(e.contains("bad url"), "{e}");
        let dup = format!(
            r#"[{{"id":"a","url":"https://x.example/","secrets":["{KEY}"],"events":["session_expired"]}},
                {{"id":"a","url":"https://y.example/","secrets":["{KEY}"],"events":["session_expired"]}}]"#
        );
        let e = parse_endpoints(&dup, false, &WorkerConfig::default()).unwrap_err();
        assert!(e.contains("duplicate id"), "{e}");
        let bad = r#"[{"id":"a","url":"https://x.example/","secrets":["whsec_%%%notbase64"],"events":["session_expired"]}]"#;
        let e = parse_endpoints(bad, false, &WorkerConfig::default()).unwrap_err();
        assert!(e.contains("secret #0"), "{e}");
        assert!(!e.contains("notbase64"), "a secret shows in {e}");
        let three = format!(
            r#"[{{"id":"a","url":"https://x.example/","secrets":["{KEY}","{KEY}","{KEY}"],"events":["session_expired"]}}]"#
        );
        assert!(parse_endpoints(&three, false, &WorkerConfig::default()).is_err());
        let dbg = format!("{:?}", ok[0]);
        assert!(!dbg.contains("MfKQ9r8"), "{dbg}");
        let cfg = WorkerConfig {
            endpoints: Some(format!(r#"[{{"secrets":["{KEY}"]}}]"#)),
            ..Default::default()
        };
        let dbg = format!("{cfg:?}");
        assert!(!dbg.contains("MfKQ9r8"), "{dbg}");
    }

    #[test]
    fn schedules_parse() {
        let s = parse_schedule(DEFAULT_SCHEDULE).unwrap();
        assert_eq!(s.len(), 8);
        assert_eq!(s[0], Duration::ZERO);
        assert_eq!(s[2], Duration::from_secs(300));
        assert_eq!(s[7], Duration::from_secs(36_000));
        assert_eq!(
            parse_schedule("0, 50ms,100").unwrap()[2],
            Duration::from_millis(100)
        );
        assert!(parse_schedule("1x").is_err());
        assert!(parse_schedule("").is_err());
    }
}
