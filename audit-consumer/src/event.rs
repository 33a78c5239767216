//! Stream entries and the rows they become.

use synckairos_core::audit::AuditEvent;
use synckairos_core::SyncState;

/// One entry of a shard's audit stream, as delivered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The shard whose stream holds it.
    pub shard: u16,
    /// The stream entry id (`<ms>-<seq>`).
    pub id: String,
    /// The fields, as raw bytes (a poison entry need not be UTF-8).
    pub fields: Vec<(String, Vec<u8>)>,
    /// How many times the group has delivered it (1 for a fresh read).
    pub deliveries: u64,
}

impl Entry {
    /// `<shard>-<stream entry id>`: unique across shards and the same on every
    /// redelivery.
    pub fn event_id(&self) -> String {
        format!("{}-{}", self.shard, self.id)
    }
}

/// A decoded entry, ready for PostgreSQL.
#[derive(Clone, Debug)]
pub struct Row {
    /// `<shard>-<stream entry id>`.
    pub event_id: String,
    /// The shard.
    pub shard: u16,
    /// The event.
    pub event: AuditEvent,
    /// The snapshot, decoded.
    pub state: SyncState,
    /// The snapshot as API JSON.
    pub snapshot_json: String,
}

/// Why an entry can never be stored (it goes to the dead-letter stream).
pub type Poison = String;

/// Decodes an entry, or says why it is poison.
pub fn decode(entry: &Entry) -> Result<Row, Poison> {
    let mut fields = Vec::with_capacity(entry.fields.len());
    for (k, v) in &entry.fields {
        let v = std::str::from_utf8(v).map_err(|_| format!("field {k:?} is not UTF-8"))?;
        fields.push((k.as_str(), v));
    }
    let event = AuditEvent::from_fields(fields).map_err(|e| e.to_string())?;
    let state = event
        .state()
        .map_err(|e| format!("snapshot is not a record: {e}"))?;
    if state.session_id != event.session_id {
        return Err(format!(
            "snapshot is of session {}, the event of {}",
            state.session_id, event.session_id
        ));
    }
    if i64::try_from(event.version).is_err() {
        return Err(format!("version {} is out of range", event.version));
    }
    let snapshot_json = state.to_json();
    // PostgreSQL refuses NUL in text and \u0000 in jsonb: such an entry would
    // fail every batch it is in.
    let nul = |s: &str| s.contains('\0');
    if nul(&event.session_id)
        || event.actor.as_deref().is_some_and(nul)
        || nul(&snapshot_json)
        || snapshot_json.contains("\\u0000")
    {
        return Err("contains a NUL character, which PostgreSQL cannot store".into());
    }
    Ok(Row {
        event_id: entry.event_id(),
        shard: entry.shard,
        event,
        state,
        snapshot_json,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(fields: &[(&str, &[u8])]) -> Entry {
        Entry {
            shard: 3,
            id: "1700000000000-7".into(),
            fields: fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_vec()))
                .collect(),
            deliveries: 1,
        }
    }

    #[test]
    fn poison_is_named() {
        let e = entry(&[("type", b"session_started"), ("sid", &[0xff, 0xfe])]);
        assert!(decode(&e).unwrap_err().contains("not UTF-8"));
        let e = entry(&[
            ("type", b"session_started"),
            ("sid", b"x"),
            ("v", b"1"),
            ("at", b"1"),
        ]);
        assert!(decode(&e).unwrap_err().contains("missing field snap"));
        let e = entry(&[
            ("type", b"session_started"),
            ("sid", b"x"),
            ("v", b"1"),
            ("at", b"1"),
            ("snap", b"R1|x"),
        ]);
        assert!(decode(&e).unwrap_err().contains("not a record"));
        assert_eq!(e.event_id(), "3-1700000000000-7");
    }
}
