//! Redis key, channel and stream names (docs/DESIGN.md §3.5).
//!
//! Every key of a session shares the hash tag `{<shard>}` with its shard's
//! stream and deadline set, so each script touches exactly one cluster slot.

/// Shards per deployment unless configured otherwise. Changing it moves sessions.
pub const DEFAULT_SHARDS: u16 = 16;

/// FNV-1a (32-bit) of the lower-cased session id, modulo `shards`.
///
/// ```
/// use synckairos_core::keys::shard_of;
/// let id = "0b7d7a2e-8c4f-4d3b-9a51-6c2e1f0d9b11";
/// assert_eq!(shard_of(id, 16), shard_of(&id.to_uppercase(), 16));
/// assert!(shard_of(id, 16) < 16);
/// ```
pub fn shard_of(session_id: &str, shards: u16) -> u16 {
    let mut h: u32 = 0x811c_9dc5;
    for b in session_id.bytes() {
        h ^= b.to_ascii_lowercase() as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    (h % shards.max(1) as u32) as u16
}

/// The audit stream of a shard: `sk:{<shard>}:audit`.
pub fn audit_stream(shard: u16) -> String {
    format!("sk:{{{shard}}}:audit")
}

/// The deadline ZSET of a shard: `sk:{<shard>}:deadlines` (member = session id,
/// score = deadline in epoch ms).
pub fn deadlines(shard: u16) -> String {
    format!("sk:{{{shard}}}:deadlines")
}

/// The dead-letter stream of a shard: `sk:{<shard>}:audit:dead`.
pub fn dead_letter_stream(shard: u16) -> String {
    format!("sk:{{{shard}}}:audit:dead")
}

/// The Pub/Sub channel on which a script that schedules a session earlier
/// than anything else in its shard announces `<shard>:<epoch ms>:<session_id>`,
/// waking the expiry scheduler.
pub const WAKE_CHANNEL: &str = "sk:wake";

/// The lease of the one gateway that runs the expiry scheduler
/// (value: the holder's instance id).
pub const EXPIRY_LEASE: &str = "sk:expiry:lease";

/// The push devices of a session: `sk:{<shard>}:dev:<session_id>`, a hash
/// (see [`crate::devices`]).
pub fn devices(shard: u16, session_id: &str) -> String {
    format!("sk:{{{shard}}}:dev:{session_id}")
}

/// The Pub/Sub channel of a session: `sk:ch:<session_id>`.
pub fn channel(session_id: &str) -> String {
    format!("sk:ch:{session_id}")
}

/// All names a command on one session needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionKeys {
    /// The shard of the session.
    pub shard: u16,
    /// `sk:{<shard>}:s:<session_id>`: the state JSON.
    pub state: String,
    /// The shard's deadline ZSET.
    pub deadlines: String,
    /// The shard's audit stream.
    pub audit: String,
    /// `sk:{<shard>}:rl:<session_id>`: the switch rate-limit window.
    pub rate: String,
    /// `sk:ch:<session_id>`.
    pub channel: String,
    /// `sk:{<shard>}:idem:<session_id>`: the HASH of stored first replies,
    /// by `Idempotency-Key`.
    pub idempotency: String,
    /// `sk:{<shard>}:deleted:<session_id>`: the tombstone a delete leaves.
    pub tombstone: String,
    /// `sk:{<shard>}:dev:<session_id>`: the session's push devices.
    pub devices: String,
}

impl SessionKeys {
    /// Names for `session_id` (already lower-cased) in a deployment of `shards`.
    pub fn new(session_id: &str, shards: u16) -> SessionKeys {
        let shard = shard_of(session_id, shards);
        SessionKeys {
            shard,
            state: format!("sk:{{{shard}}}:s:{session_id}"),
            deadlines: deadlines(shard),
            audit: audit_stream(shard),
            rate: format!("sk:{{{shard}}}:rl:{session_id}"),
            channel: channel(session_id),
            idempotency: format!("sk:{{{shard}}}:idem:{session_id}"),
            tombstone: format!("sk:{{{shard}}}:deleted:{session_id}"),
            devices: devices(shard, session_id),
        }
    }
}

/// Longest `Idempotency-Key`, in (visible ASCII) characters.
pub const IDEMPOTENCY_KEY_MAX_LEN: usize = 255;

/// Idempotency keys: 1..=[`IDEMPOTENCY_KEY_MAX_LEN`] visible ASCII
/// characters (`!`..`~`).
pub fn valid_idempotency_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= IDEMPOTENCY_KEY_MAX_LEN
        && key.bytes().all(|b| b.is_ascii_graphic())
}

/// The regular expression of an `Idempotency-Key` header as the server
/// takes it: a valid key, or empty (= none).
pub fn idempotency_key_pattern() -> String {
    format!("^[!-~]{{0,{IDEMPOTENCY_KEY_MAX_LEN}}}$")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_of_a_session_shares_one_hash_tag() {
        let k = SessionKeys::new("0b7d7a2e-8c4f-4d3b-9a51-6c2e1f0d9b11", 16);
        let tag = format!("{{{}}}", k.shard);
        for key in [
            &k.state,
            &k.deadlines,
            &k.audit,
            &k.rate,
            &k.idempotency,
            &k.tombstone,
            &k.devices,
        ] {
            assert!(key.contains(&tag), "{key}");
        }
        assert_eq!(k.channel, "sk:ch:0b7d7a2e-8c4f-4d3b-9a51-6c2e1f0d9b11");
    }

    #[test]
    fn shards_spread() {
        let mut seen = [0u32; 16];
        for i in 0..1600u32 {
            let id = format!("00000000-0000-4000-8000-{i:012x}");
            seen[shard_of(&id, 16) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50), "{seen:?}");
    }

    #[test]
    fn idempotency_keys() {
        assert!(valid_idempotency_key("abc-123"));
        assert!(!valid_idempotency_key(""));
        assert!(!valid_idempotency_key("a b"));
        assert!(!valid_idempotency_key(&"x".repeat(256)));
    }
}
