//! The dead-letter streams (`sk:{<shard>}:audit:dead`): listing them, and
//! re-driving entries once the cause is fixed.
//!
//! A dead letter keeps the original entry's fields and adds `dl_reason`,
//! `dl_source_id` (the entry's id in the shard's audit stream),
//! `dl_deliveries` and `dl_consumer`. It is named `<shard>-<dead-letter id>`.
//!
//! **Replay stores directly.** A replayed entry is decoded and inserted into
//! PostgreSQL under its *original* event id, `<shard>-<dl_source_id>`, by the
//! same insert the consumer uses, in its own transaction. So a replay is
//! idempotent (`ON CONFLICT (event_id) DO NOTHING`: an entry a consumer had
//! stored before dying, or a replay run twice, is a no-op), and an older
//! version never overwrites a newer session row. Re-appending to the audit
//! stream would give it a new id, and so a second row. The dead letter is
//! deleted only after the transaction committed; one that still fails stays
//! where it is, untouched, and the replay reports why.
//!
//! On a Redis Cluster each shard's dead letters live in its slot, with its
//! audit stream: every command here names one key, and goes to that slot's
//! primary.

use crate::conn::RedisConn;
use crate::db;
use crate::event::{self, Entry};
use redis::streams::StreamRangeReply;
use serde_json::json;
use sqlx::PgPool;
use synckairos_core::keys;

/// The fields the consumer adds to a dead letter.
const DL_FIELDS: [&str; 4] = ["dl_reason", "dl_source_id", "dl_deliveries", "dl_consumer"];

/// One entry of a dead-letter stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// The shard.
    pub shard: u16,
    /// Its id in the shard's dead-letter stream.
    pub id: String,
    /// Every field, the consumer's `dl_*` included.
    pub fields: Vec<(String, Vec<u8>)>,
}

impl DeadLetter {
    /// `<shard>-<dead-letter id>`, what `dlq replay` takes.
    pub fn name(&self) -> String {
        format!("{}-{}", self.shard, self.id)
    }

    fn field(&self, name: &str) -> Option<String> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }

    /// The entry as it was in the audit stream.
    pub fn original(&self) -> Entry {
        Entry {
            shard: self.shard,
            id: self
                .field("dl_source_id")
                .unwrap_or_else(|| self.id.clone()),
            fields: self
                .fields
                .iter()
                .filter(|(k, _)| !DL_FIELDS.contains(&k.as_str()))
                .cloned()
                .collect(),
            deliveries: 1,
        }
    }

    /// One JSON object: the dead letter's name, shard, reason, deliveries
    /// and consumer, and the original event's id, type, session and version
    /// (as found; a poison entry may lack them).
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "id": self.name(),
            "shard": self.shard,
            "reason": self.field("dl_reason"),
            "deliveries": self.field("dl_deliveries").and_then(|d| d.parse::<u64>().ok()),
            "consumer": self.field("dl_consumer"),
            "source_id": self.field("dl_source_id"),
            "type": self.field("type"),
            "sid": self.field("sid"),
            "version": self.field("v"),
        })
    }
}

/// Why a name given to `dlq replay` is not one.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a dead letter's name (<shard>-<ms>-<seq>, as `dlq list` prints it)")]
pub struct BadName(pub String);

/// Parses `<shard>-<ms>-<seq>` for a deployment of `shards` shards.
pub fn parse_name(name: &str, shards: u16) -> Result<(u16, String), BadName> {
    let bad = || BadName(name.to_string());
    let (shard, id) = name.split_once('-').ok_or_else(bad)?;
    let shard: u16 = shard.parse().map_err(|_| bad())?;
    let (ms, seq) = id.split_once('-').ok_or_else(bad)?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if shard >= shards || !digits(ms) || !digits(seq) {
        return Err(bad());
    }
    Ok((shard, id.to_string()))
}

fn from_reply(shard: u16, reply: StreamRangeReply) -> Vec<DeadLetter> {
    reply
        .ids
        .iter()
        .map(|e| DeadLetter {
            shard,
            id: e.id.clone(),
            fields: crate::stream::fields(e),
        })
        .collect()
}

/// The dead letters of `shard` (or of every shard), oldest first per shard,
/// at most `limit` in all.
pub async fn list(
    conn: &RedisConn,
    shards: u16,
    shard: Option<u16>,
    limit: usize,
) -> redis::RedisResult<Vec<DeadLetter>> {
    let mut conn = conn.clone();
    let mut out = Vec::new();
    for s in shard.map_or(0..shards, |s| s..s + 1) {
        if out.len() >= limit {
            break;
        }
        let reply: StreamRangeReply = redis::cmd("XRANGE")
            .arg(keys::dead_letter_stream(s))
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(limit - out.len())
            .query_async(&mut conn)
            .await?;
        out.extend(from_reply(s, reply));
    }
    Ok(out)
}

/// Reads one dead letter by name.
pub async fn get(conn: &RedisConn, shard: u16, id: &str) -> redis::RedisResult<Option<DeadLetter>> {
    let mut conn = conn.clone();
    let reply: StreamRangeReply = redis::cmd("XRANGE")
        .arg(keys::dead_letter_stream(shard))
        .arg(id)
        .arg(id)
        .query_async(&mut conn)
        .await?;
    Ok(from_reply(shard, reply).into_iter().next())
}

/// What replaying one dead letter did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Replayed {
    /// Stored in PostgreSQL now; removed from the dead letters.
    Stored,
    /// PostgreSQL already had it (same event id); removed from the dead letters.
    AlreadyStored,
    /// Still cannot be stored, for this reason; left in the dead letters.
    StillFailing(String),
    /// No dead letter of that name.
    NotFound,
}

impl Replayed {
    /// The stable code printed for it.
    pub fn code(&self) -> &'static str {
        match self {
            Replayed::Stored => "stored",
            Replayed::AlreadyStored => "already_stored",
            Replayed::StillFailing(_) => "still_failing",
            Replayed::NotFound => "not_found",
        }
    }
}

/// Why a replay stopped: PostgreSQL or Redis is out of reach (the dead
/// letter in hand stays where it is).
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// PostgreSQL failed (not because of the data).
    #[error("postgres: {0}")]
    Postgres(#[from] sqlx::Error),
    /// Redis failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// Re-drives one dead letter: stores its original entry in PostgreSQL under
/// its original event id, then deletes the dead letter.
pub async fn replay(
    conn: &RedisConn,
    pool: &PgPool,
    dead: &DeadLetter,
) -> Result<Replayed, ReplayError> {
    let row = match event::decode(&dead.original()) {
        Ok(row) => row,
        Err(why) => return Ok(Replayed::StillFailing(why)),
    };
    let stored = async {
        let mut tx = pool.begin().await?;
        let n = db::insert(&mut tx, std::slice::from_ref(&row)).await?;
        tx.commit().await?;
        Ok::<_, sqlx::Error>(n)
    }
    .await;
    let outcome = match stored {
        Ok(n) if n.events == 1 => Replayed::Stored,
        Ok(_) => Replayed::AlreadyStored,
        Err(e) if db::is_data_error(&e) => {
            return Ok(Replayed::StillFailing(format!(
                "refused by PostgreSQL: {e}"
            )))
        }
        Err(e) => return Err(e.into()),
    };
    let mut conn = conn.clone();
    redis::cmd("XDEL")
        .arg(keys::dead_letter_stream(dead.shard))
        .arg(&dead.id)
        .query_async::<u64>(&mut conn)
        .await?;
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_shard_and_id() {
        assert_eq!(
            parse_name("3-1700000000000-7", 16).unwrap(),
            (3, "1700000000000-7".to_string())
        );
        for bad in ["16-1-0", "x-1-0", "3-1", "3-1-x", "3--0", ""] {
            assert!(parse_name(bad, 16).is_err(), "{bad}");
        }
        let d = DeadLetter {
            shard: 2,
            id: "5-1".into(),
            fields: vec![
                ("type".into(), b"session_paused".to_vec()),
                ("dl_reason".into(), b"why".to_vec()),
                ("dl_source_id".into(), b"4-0".into()),
            ],
        };
        let o = d.original();
        assert_eq!((o.shard, o.id.as_str()), (2, "4-0"));
        assert_eq!(
            o.fields,
            vec![("type".to_string(), b"session_paused".to_vec())]
        );
        assert_eq!(d.to_json()["id"], "2-5-1");
        assert_eq!(d.to_json()["reason"], "why");
    }
}
