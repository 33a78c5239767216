//! The dead-letter stream `sk:webhooks:dead`: deliveries whose last attempt
//! failed. Each entry keeps what a replay needs: `endpoint`, `event_id`,
//! `session_id`, `type`, `payload`, `seq` (the stream entry id, for order),
//! `at` (the event's time), `attempts`, `last_error`, `last_status`.
//!
//! A replay puts the delivery back in the queue (attempts from 0, the same
//! event id and so the same `webhook-id`) and then deletes the dead letter.
//! Queuing is idempotent (`ON CONFLICT DO NOTHING`), so a replay interrupted
//! between the two, or run twice, queues nothing twice.
//!
//! The stream is one key, not a shard's: on a Redis Cluster it lives in its
//! own slot (whichever primary serves `sk:webhooks:dead`), and every
//! command here goes there.

use crate::queue::{self, Delivery};
use redis::streams::StreamRangeReply;
use serde_json::json;
use sqlx::PgPool;
use synckairos_audit_consumer::RedisConn;

/// The dead-letter stream.
pub const DEAD_STREAM: &str = "sk:webhooks:dead";

/// Appends a dead letter for `d` after `attempts` attempts.
pub async fn add(
    conn: &RedisConn,
    d: &Delivery,
    attempts: usize,
    error: &str,
    status: Option<u16>,
) -> redis::RedisResult<String> {
    let mut conn = conn.clone();
    redis::cmd("XADD")
        .arg(DEAD_STREAM)
        .arg("*")
        .arg("endpoint")
        .arg(&d.endpoint_id)
        .arg("event_id")
        .arg(&d.event_id)
        .arg("session_id")
        .arg(&d.session_id)
        .arg("type")
        .arg(&d.event_type)
        .arg("seq")
        .arg(&d.seq)
        .arg("at")
        .arg(d.occurred_at_ms)
        .arg("attempts")
        .arg(attempts)
        .arg("last_error")
        .arg(error)
        .arg("last_status")
        .arg(status.map(|s| s.to_string()).unwrap_or_default())
        .arg("payload")
        .arg(&d.payload)
        .query_async(&mut conn)
        .await
}

/// One dead letter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// Its id in the dead-letter stream (what `dlq replay` takes).
    pub id: String,
    /// Its fields.
    pub fields: Vec<(String, String)>,
}

impl DeadLetter {
    /// A field's value (empty when absent).
    pub fn field(&self, name: &str) -> &str {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }

    /// One JSON object: every field but the payload, which is parsed.
    pub fn to_json(&self) -> serde_json::Value {
        let payload: serde_json::Value =
            serde_json::from_str(self.field("payload")).unwrap_or(serde_json::Value::Null);
        json!({
            "id": self.id,
            "endpoint": self.field("endpoint"),
            "event_id": self.field("event_id"),
            "webhook_id": crate::payload::WebhookEvent::webhook_id(self.field("event_id")),
            "session_id": self.field("session_id"),
            "type": self.field("type"),
            "attempts": self.field("attempts").parse::<u64>().ok(),
            "last_error": self.field("last_error"),
            "last_status": self.field("last_status").parse::<u16>().ok(),
            "payload": payload,
        })
    }
}

fn from_reply(reply: StreamRangeReply) -> Vec<DeadLetter> {
    reply
        .ids
        .iter()
        .map(|e| DeadLetter {
            id: e.id.clone(),
            fields: synckairos_audit_consumer::stream::fields(e)
                .into_iter()
                .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
                .collect(),
        })
        .collect()
}

/// Dead letters, oldest first, of `endpoint` (or all), at most `limit`.
pub async fn list(
    conn: &RedisConn,
    endpoint: Option<&str>,
    limit: usize,
) -> redis::RedisResult<Vec<DeadLetter>> {
    let mut conn = conn.clone();
    let mut out = Vec::new();
    let mut from = "-".to_string();
    while out.len() < limit {
        let page: StreamRangeReply = redis::cmd("XRANGE")
            .arg(DEAD_STREAM)
            .arg(&from)
            .arg("+")
            .arg("COUNT")
            .arg(500)
            .query_async(&mut conn)
            .await?;
        let n = page.ids.len();
        let Some(last) = page.ids.last().map(|e| e.id.clone()) else {
            break;
        };
        for d in from_reply(page) {
            if out.len() < limit && endpoint.is_none_or(|e| d.field("endpoint") == e) {
                out.push(d);
            }
        }
        if n < 500 {
            break;
        }
        from = format!("({last}");
    }
    Ok(out)
}

/// Reads one dead letter by id.
pub async fn get(conn: &RedisConn, id: &str) -> redis::RedisResult<Option<DeadLetter>> {
    let mut conn = conn.clone();
    let reply: StreamRangeReply = redis::cmd("XRANGE")
        .arg(DEAD_STREAM)
        .arg(id)
        .arg(id)
        .query_async(&mut conn)
        .await?;
    Ok(from_reply(reply).into_iter().next())
}

/// Entries of the dead-letter stream.
pub async fn count(conn: &RedisConn) -> redis::RedisResult<u64> {
    let mut conn = conn.clone();
    redis::cmd("XLEN")
        .arg(DEAD_STREAM)
        .query_async(&mut conn)
        .await
}

/// What replaying one dead letter did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Replayed {
    /// Queued again; removed from the dead letters.
    Queued,
    /// That endpoint already had that event queued; removed.
    AlreadyQueued,
    /// Its endpoint is not configured: left in the dead letters.
    UnknownEndpoint,
    /// No dead letter of that id.
    NotFound,
}

impl Replayed {
    /// The stable code printed for it.
    pub fn code(&self) -> &'static str {
        match self {
            Replayed::Queued => "queued",
            Replayed::AlreadyQueued => "already_queued",
            Replayed::UnknownEndpoint => "unknown_endpoint",
            Replayed::NotFound => "not_found",
        }
    }
}

/// Why a replay stopped (PostgreSQL or Redis; the dead letter in hand
/// stays). The audit consumer's.
pub use synckairos_audit_consumer::dlq::ReplayError;

/// Queues a dead letter's delivery again, then deletes the dead letter.
/// `endpoints`: the configured endpoint ids (a dead letter of another one
/// stays where it is).
pub async fn replay(
    conn: &RedisConn,
    pool: &PgPool,
    dead: &DeadLetter,
    endpoints: &[String],
) -> Result<Replayed, ReplayError> {
    let endpoint = dead.field("endpoint");
    if !endpoints.iter().any(|e| e == endpoint) {
        return Ok(Replayed::UnknownEndpoint);
    }
    let added = queue::requeue(
        pool,
        endpoint,
        dead.field("event_id"),
        dead.field("session_id"),
        dead.field("type"),
        dead.field("seq"),
        dead.field("payload"),
        dead.field("at").parse().unwrap_or(0),
    )
    .await?;
    let mut conn = conn.clone();
    redis::cmd("XDEL")
        .arg(DEAD_STREAM)
        .arg(&dead.id)
        .query_async::<u64>(&mut conn)
        .await?;
    Ok(if added {
        Replayed::Queued
    } else {
        Replayed::AlreadyQueued
    })
}

/// Whether `id` looks like a stream id (`<ms>-<seq>`).
pub fn valid_id(id: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    id.split_once('-')
        .is_some_and(|(a, b)| digits(a) && digits(b))
}
