//! The Lua scripts, the arguments they take and the reply they give.
//!
//! Every command is one script: `lua/lib.lua` (shared) followed by the
//! command's own file, embedded at compile time. Callers send it with
//! `EVALSHA` (`EVAL` on `NOSCRIPT`): the native engine over TCP, the edge
//! worker over Upstash's REST API. KEYS and ARGV are documented at the top
//! of `lua/lib.lua`.

use crate::command::{Command, Request};
use crate::error::{Action, DomainError};
use crate::keys::SessionKeys;
use crate::model::Reply;
use crate::rate::RateInfo;
use crate::record;
use crate::types::Status;
use serde::Deserialize;
use std::sync::OnceLock;

/// One embedded command script.
#[derive(Debug)]
pub struct Script {
    /// The command name (`switch`, …).
    pub name: &'static str,
    /// The Lua source (library + command).
    pub source: &'static str,
    sha: OnceLock<String>,
}

impl Script {
    pub(crate) const fn new(name: &'static str, source: &'static str) -> Script {
        Script {
            name,
            source,
            sha: OnceLock::new(),
        }
    }

    /// The SHA1 hex digest `EVALSHA` needs.
    pub fn sha1(&self) -> &str {
        self.sha
            .get_or_init(|| sha1_smol::Sha1::from(self.source).digest().to_string())
    }
}

macro_rules! script {
    ($name:literal) => {
        Script::new(
            $name,
            concat!(
                include_str!("../lua/lib.lua"),
                include_str!(concat!("../lua/", $name, ".lua"))
            ),
        )
    };
}

static CREATE: Script = script!("create");
static START: Script = script!("start");
static SWITCH: Script = script!("switch");
static PAUSE: Script = script!("pause");
static RESUME: Script = script!("resume");
static COMPLETE: Script = script!("complete");
static CANCEL: Script = script!("cancel");
static EXPIRE: Script = script!("expire");
static DELETE: Script = script!("delete");

/// The operator's restore (`audit-consumer restore`): standalone, with its own
/// KEYS and ARGV (see `lua/restore.lua`).
pub static RESTORE: Script = Script::new("restore", include_str!("../lua/restore.lua"));

/// The expiry scheduler's lease, which also reads Redis `TIME`: standalone,
/// with its own KEYS and ARGV (see `lua/lease.lua`).
pub static LEASE: Script = Script::new("lease", include_str!("../lua/lease.lua"));

/// Every command script, for preloading with `SCRIPT LOAD`.
pub fn all() -> [&'static Script; 9] {
    [
        &CREATE, &START, &SWITCH, &PAUSE, &RESUME, &COMPLETE, &CANCEL, &EXPIRE, &DELETE,
    ]
}

/// The script of a command.
pub fn for_command(cmd: &Command) -> &'static Script {
    match cmd {
        Command::Create(_) => &CREATE,
        Command::Start => &START,
        Command::Switch { .. } => &SWITCH,
        Command::Pause => &PAUSE,
        Command::Resume => &RESUME,
        Command::Complete => &COMPLETE,
        Command::Cancel => &CANCEL,
        Command::Expire => &EXPIRE,
        Command::Delete => &DELETE,
    }
}

/// Per-deployment settings every script call carries.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Shards of the key space ([`crate::keys::DEFAULT_SHARDS`]).
    pub shards: u16,
    /// Switches per session per second; 0 = unlimited.
    pub switch_limit: u64,
    /// State TTL floor in seconds (a running session keeps `deadline + this`).
    pub base_ttl_s: u64,
    /// How long a first reply is kept for idempotent retries, in seconds.
    pub idempotency_ttl_s: u64,
    /// Stored first replies kept per session; past it the oldest goes.
    pub idempotency_keys: u32,
    /// `per_cycle` + `auto_advance`: turns in a row that may run out with no
    /// command before the session expires; 0 = never.
    pub max_idle_cycles: u32,
    /// A live session without a deadline expires this long after its last
    /// command, in seconds.
    pub idle_ttl_s: u64,
    /// How long a deleted session's id stays refused for `create`, in seconds.
    pub tombstone_ttl_s: u64,
    /// The low-time warning threshold a session gets when its `create` names
    /// none (`LOW_TIME_WARNING_MS`), ms; 0 = none.
    pub low_time_warning_ms: u64,
    /// How long a push device registration lives unless refreshed, in
    /// seconds (`DEVICE_TOKEN_TTL_SECONDS`; the devices script only).
    pub device_ttl_s: u64,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            shards: crate::keys::DEFAULT_SHARDS,
            switch_limit: crate::rate::DEFAULT_SWITCH_LIMIT,
            base_ttl_s: 3600,
            idempotency_ttl_s: 3600,
            idempotency_keys: 32,
            max_idle_cycles: 10,
            idle_ttl_s: 86_400,
            tombstone_ttl_s: 86_400,
            low_time_warning_ms: 0,
            device_ttl_s: crate::devices::DEFAULT_TOKEN_TTL_S,
        }
    }
}

/// Per-call options.
#[derive(Clone, Debug, Default)]
pub struct CallOptions {
    /// `Idempotency-Key` (already checked with [`crate::keys::valid_idempotency_key`]).
    pub idempotency_key: Option<String>,
    /// Tests only: use this time instead of Redis `TIME`.
    pub now_ms: Option<i64>,
}

/// A ready-to-send script invocation.
#[derive(Clone, Debug)]
pub struct Call {
    /// The script.
    pub script: &'static Script,
    /// KEYS (all in the session's hash slot).
    pub keys: Vec<String>,
    /// ARGV.
    pub args: Vec<String>,
}

/// Builds the invocation of `req`.
pub fn call(req: &Request, settings: &Settings, opts: &CallOptions) -> Call {
    let k = SessionKeys::new(&req.session_id, settings.shards);
    let keys = vec![
        k.state.clone(),
        k.deadlines.clone(),
        k.audit.clone(),
        k.idempotency.clone(),
        k.rate.clone(),
        k.tombstone.clone(),
        k.devices.clone(),
    ];
    let (payload, metadata) = match &req.command {
        Command::Create(spec) => (
            spec.as_ref()
                .clone()
                .with_low_time_default(settings.low_time_warning_ms)
                .to_script_json(),
            spec.metadata
                .as_ref()
                .map(|m| m.get().to_string())
                .unwrap_or_default(),
        ),
        Command::Switch {
            next_participant_id,
        } => (
            next_participant_id.clone().unwrap_or_default(),
            String::new(),
        ),
        _ => (String::new(), String::new()),
    };
    let args = vec![
        opts.now_ms.map(|n| n.to_string()).unwrap_or_default(),
        req.session_id.clone(),
        k.channel,
        req.expected_version
            .map(|v| v.to_string())
            .unwrap_or_default(),
        req.actor.clone().unwrap_or_default(),
        opts.idempotency_key.clone().unwrap_or_default(),
        settings.idempotency_ttl_s.max(1).to_string(),
        settings.base_ttl_s.max(1).to_string(),
        settings.switch_limit.to_string(),
        payload,
        metadata,
        if req.only_if_active { "1" } else { "" }.to_string(),
        settings.max_idle_cycles.to_string(),
        settings.idle_ttl_s.max(1).to_string(),
        settings.tombstone_ttl_s.max(1).to_string(),
        settings.idempotency_keys.max(1).to_string(),
        crate::keys::WAKE_CHANNEL.to_string(),
        k.shard.to_string(),
        req.lag_ms.map(|l| l.to_string()).unwrap_or_default(),
    ];
    Call {
        script: for_command(&req.command),
        keys,
        args,
    }
}

/// Why a Redis error text means the service is unavailable rather than
/// broken, as a reason safe to show a client; `None` for any other error
/// (a bug, answered 500). The command did not run in each case, and the
/// service comes back without a change of ours:
/// - Redis refusing a write for lack of memory (`maxmemory` with
///   `noeviction`) until memory is freed;
/// - Upstash's plan limits: requests per second, day or month, concurrent
///   connections, or the database's size, until the plan is raised or the
///   period ends.
pub fn unavailable_reason(redis_error: &str) -> Option<&'static str> {
    let e = redis_error.trim_start_matches('"');
    if e.starts_with("OOM") || e.contains("OOM command not allowed") {
        Some("redis out of memory")
    } else if e.contains("max requests limit exceeded")
        || e.contains("max daily request limit exceeded")
        || e.contains("max concurrent connections exceeded")
    {
        Some("redis request limit exceeded")
    } else if e.contains("DB capacity quota exceeded") {
        Some("redis capacity quota exceeded")
    } else {
        None
    }
}

/// A script's reply, typed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScriptReply {
    /// True when an idempotency key replayed the first reply.
    pub replayed: bool,
    /// Rate-limit header values (switch with a limit).
    pub rate: Option<RateInfo>,
    /// The outcome.
    pub result: Result<Reply, DomainError>,
    /// `expire` only: the shard's earliest scheduled session after the call.
    pub next_due: Option<Due>,
}

/// A scheduled session: the head of a shard's deadline ZSET.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Due {
    /// The session.
    pub session_id: String,
    /// Its wake time (epoch ms).
    pub at_ms: i64,
}

/// A reply the scripts never give (a bug or a foreign script).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unexpected script reply: {0}")]
pub struct BadReply(pub String);

#[derive(Deserialize)]
struct Header {
    replayed: bool,
    rate: Option<RateInfo>,
    kind: String,
    code: Option<String>,
    expired_participant_id: Option<String>,
    existed: Option<bool>,
    status: Option<Status>,
    deadline_ms: Option<i64>,
    action: Option<Action>,
    participant_id: Option<String>,
    expected_version: Option<u64>,
    actual_version: Option<u64>,
    retry_after_seconds: Option<u64>,
    next: Option<Due>,
}

/// Parses a script reply for a request on `session_id`: a JSON header and,
/// for a state, the session's [`crate::record`].
pub fn parse_reply<S: AsRef<str>>(parts: &[S], session_id: &str) -> Result<ScriptReply, BadReply> {
    let text = |i: usize| parts.get(i).map(AsRef::as_ref);
    let bad = || {
        let all: Vec<&str> = parts.iter().map(AsRef::as_ref).collect();
        BadReply(format!("{all:?}"))
    };
    let w: Header = serde_json::from_str(text(0).ok_or_else(bad)?).map_err(|_| bad())?;
    let sid = || session_id.to_string();
    let result = match w.kind.as_str() {
        "state" => Ok(Reply::State {
            state: Box::new(
                record::decode(text(1).ok_or_else(bad)?).map_err(|e| BadReply(e.to_string()))?,
            ),
            expired_participant_id: w.expired_participant_id,
        }),
        "deleted" => Ok(Reply::Deleted {
            existed: w.existed.ok_or_else(bad)?,
        }),
        "not_due" => Ok(Reply::NotDue {
            status: w.status.ok_or_else(bad)?,
            deadline_ms: w.deadline_ms,
        }),
        "error" => Err(match w.code.as_deref().ok_or_else(bad)? {
            "SESSION_NOT_FOUND" => DomainError::SessionNotFound { session_id: sid() },
            "SESSION_EXISTS" => DomainError::SessionExists { session_id: sid() },
            "SESSION_DELETED" => DomainError::SessionDeleted { session_id: sid() },
            "INVALID_STATE_TRANSITION" => DomainError::InvalidTransition {
                session_id: sid(),
                action: w.action.ok_or_else(bad)?,
                status: w.status.ok_or_else(bad)?,
            },
            "PARTICIPANT_NOT_FOUND" => DomainError::ParticipantNotFound {
                participant_id: w.participant_id.ok_or_else(bad)?,
            },
            "CONFLICT" => DomainError::VersionConflict {
                expected_version: w.expected_version.ok_or_else(bad)?,
                actual_version: w.actual_version.ok_or_else(bad)?,
            },
            "RATE_LIMIT_EXCEEDED" => DomainError::RateLimited {
                retry_after_seconds: w.retry_after_seconds.ok_or_else(bad)?,
            },
            "NOT_YOUR_TURN" => DomainError::NotYourTurn {
                participant_id: w.participant_id.ok_or_else(bad)?,
            },
            "IDEMPOTENCY_KEY_REUSED" => DomainError::IdempotencyKeyReused,
            _ => return Err(bad()),
        }),
        _ => return Err(bad()),
    };
    Ok(ScriptReply {
        replayed: w.replayed,
        rate: w.rate,
        result,
        next_due: w.next,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_are_distinct_and_complete() {
        let shas: std::collections::BTreeSet<_> = all().iter().map(|s| s.sha1()).collect();
        assert_eq!(shas.len(), 9);
        for s in all() {
            assert!(s.source.contains("local function dispatch"));
            assert!(s
                .source
                .trim_end()
                .ends_with(&format!("return run('{}')", s.name)));
        }
    }

    #[test]
    fn malformed_replies_are_errors_not_panics() {
        let cases: [&[&str]; 6] = [
            &[],
            &[""],
            &["{}"],
            &[r#"{"replayed":false,"kind":"state"}"#],
            &[r#"{"replayed":false,"kind":"state"}"#, "R1|garbage"],
            &[r#"{"replayed":false,"kind":"error","code":"NOPE"}"#],
        ];
        for parts in cases {
            assert!(parse_reply(parts, "s").is_err(), "{parts:?}");
        }
        let r = parse_reply(
            &[r#"{"replayed":true,"rate":{"limit":10,"remaining":0,"reset_seconds":1},"kind":"error","code":"RATE_LIMIT_EXCEEDED","retry_after_seconds":1}"#],
            "s",
        )
        .unwrap();
        assert!(r.replayed);
        assert_eq!(
            r.result,
            Err(DomainError::RateLimited {
                retry_after_seconds: 1
            })
        );
    }

    #[test]
    fn memory_and_plan_limits_are_unavailable_other_errors_are_not() {
        for (text, reason) in [
            (
                "OOM command not allowed when used memory > 'maxmemory'.",
                "redis out of memory",
            ),
            ("\"OOM command not allowed", "redis out of memory"),
            (
                "ERR max requests limit exceeded. Limit: 10000, Usage: 10000.",
                "redis request limit exceeded",
            ),
            (
                "ERR max daily request limit exceeded",
                "redis request limit exceeded",
            ),
            (
                "ERR max concurrent connections exceeded",
                "redis request limit exceeded",
            ),
            (
                "ERR DB capacity quota exceeded",
                "redis capacity quota exceeded",
            ),
        ] {
            assert_eq!(unavailable_reason(text), Some(reason), "{text}");
        }
        for text in [
            "ERR something else",
            "WRONGTYPE Operation against a key",
            "NOSCRIPT No matching script",
            "",
        ] {
            assert_eq!(unavailable_reason(text), None, "{text}");
        }
    }
}
