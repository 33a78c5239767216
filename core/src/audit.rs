//! The audit event appended to the shard stream by every accepted command, and
//! the message published on a session's channel.

use crate::types::SyncState;
use serde::{Deserialize, Serialize};

/// What happened.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    /// `create`
    SessionCreated,
    /// `start`
    SessionStarted,
    /// `switch`
    ParticipantSwitched,
    /// `pause`
    SessionPaused,
    /// `resume`
    SessionResumed,
    /// `complete`
    SessionCompleted,
    /// `cancel`
    SessionCancelled,
    /// The running clock ran out; the session is `expired`.
    SessionExpired,
    /// A `per_cycle` auto-advance session passed timed-out turns on.
    CycleExpired,
    /// `delete`
    SessionDeleted,
    /// Rebuilt from the audit trail after Redis lost it.
    SessionRestored,
    /// The running clock's time left reached the session's low-time warning
    /// threshold (once per turn). Not a transition: it carries the session's
    /// current version.
    LowTimeWarning,
}

impl EventType {
    /// All event types.
    pub const ALL: [EventType; 12] = [
        EventType::SessionCreated,
        EventType::SessionStarted,
        EventType::ParticipantSwitched,
        EventType::SessionPaused,
        EventType::SessionResumed,
        EventType::SessionCompleted,
        EventType::SessionCancelled,
        EventType::SessionExpired,
        EventType::CycleExpired,
        EventType::SessionDeleted,
        EventType::SessionRestored,
        EventType::LowTimeWarning,
    ];

    /// The wire name (`session_created`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::SessionCreated => "session_created",
            EventType::SessionStarted => "session_started",
            EventType::ParticipantSwitched => "participant_switched",
            EventType::SessionPaused => "session_paused",
            EventType::SessionResumed => "session_resumed",
            EventType::SessionCompleted => "session_completed",
            EventType::SessionCancelled => "session_cancelled",
            EventType::SessionExpired => "session_expired",
            EventType::CycleExpired => "cycle_expired",
            EventType::SessionDeleted => "session_deleted",
            EventType::SessionRestored => "session_restored",
            EventType::LowTimeWarning => "low_time_warning",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// One entry of a shard's audit stream.
///
/// Stream fields: `type`, `sid`, `v`, `at` (epoch ms), `actor` (only when
/// known), `lag` (`<claimed>,<credited>` ms, only for a switch of a session
/// that compensates lag), `due` and `warn` (only for `low_time_warning`: when
/// the time left reached the threshold, epoch ms, and the threshold, ms),
/// `snap` (the full snapshot after the transition as a
/// [`crate::record`]; for `session_deleted`, the last stored state).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEvent {
    /// What happened.
    pub event_type: EventType,
    /// The session.
    pub session_id: String,
    /// The version this event produced (the state's version; for a delete,
    /// the last version + 1).
    pub version: u64,
    /// Redis time of the command, epoch ms.
    pub at_ms: i64,
    /// The caller (JWT `sub`), when known.
    pub actor: Option<String>,
    /// A switch in a session that compensates lag: the lag the move claimed
    /// and the lag credited from the mover's quota (ms).
    pub lag: Option<(i64, i64)>,
    /// A `low_time_warning`: when the running clock's time left reached the
    /// threshold (epoch ms: the deadline minus the threshold, which is before
    /// the turn began when it began with less), and the threshold (ms).
    pub warning: Option<(i64, i64)>,
    /// The snapshot, as a [`crate::record`].
    pub snapshot: String,
}

/// Why a stream entry is not a valid audit event.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed audit entry: {0}")]
pub struct MalformedEvent(pub String);

impl AuditEvent {
    /// The stream fields, in the order the scripts write them.
    pub fn to_fields(&self) -> Vec<(&'static str, String)> {
        let mut f = vec![
            ("type", self.event_type.as_str().to_string()),
            ("sid", self.session_id.clone()),
            ("v", self.version.to_string()),
            ("at", self.at_ms.to_string()),
        ];
        if let Some(a) = &self.actor {
            f.push(("actor", a.clone()));
        }
        if let Some((claimed, credited)) = self.lag {
            f.push(("lag", format!("{claimed},{credited}")));
        }
        if let Some((due, threshold)) = self.warning {
            f.push(("due", due.to_string()));
            f.push(("warn", threshold.to_string()));
        }
        f.push(("snap", self.snapshot.clone()));
        f
    }

    /// Reads an event from stream fields (any order; unknown fields ignored).
    pub fn from_fields<'a>(
        fields: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<AuditEvent, MalformedEvent> {
        let (mut t, mut sid, mut v, mut at, mut actor, mut snap, mut lag) =
            (None, None, None, None, None, None, None);
        let (mut due, mut warn) = (None, None);
        for (k, val) in fields {
            match k {
                "type" => t = Some(val),
                "sid" => sid = Some(val),
                "v" => v = Some(val),
                "at" => at = Some(val),
                "actor" => actor = Some(val.to_string()),
                "snap" => snap = Some(val),
                "lag" => lag = Some(val),
                "due" => due = Some(val),
                "warn" => warn = Some(val),
                _ => {}
            }
        }
        let missing = |n: &str| MalformedEvent(format!("missing field {n}"));
        let t = t.ok_or_else(|| missing("type"))?;
        Ok(AuditEvent {
            event_type: EventType::parse(t)
                .ok_or_else(|| MalformedEvent(format!("unknown type {t:?}")))?,
            session_id: sid.ok_or_else(|| missing("sid"))?.to_string(),
            version: v
                .ok_or_else(|| missing("v"))?
                .parse()
                .map_err(|_| MalformedEvent("bad v".into()))?,
            at_ms: at
                .ok_or_else(|| missing("at"))?
                .parse()
                .map_err(|_| MalformedEvent("bad at".into()))?,
            actor,
            lag: match lag {
                None => None,
                Some(l) => {
                    let bad = || MalformedEvent("bad lag".into());
                    let (a, b) = l.split_once(',').ok_or_else(bad)?;
                    Some((a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?))
                }
            },
            warning: match (due, warn) {
                (None, None) => None,
                (Some(d), Some(w)) => {
                    let bad = || MalformedEvent("bad due or warn".into());
                    Some((d.parse().map_err(|_| bad())?, w.parse().map_err(|_| bad())?))
                }
                _ => return Err(MalformedEvent("due and warn go together".into())),
            },
            snapshot: snap.ok_or_else(|| missing("snap"))?.to_string(),
        })
    }

    /// Decodes the snapshot.
    pub fn state(&self) -> Result<SyncState, crate::record::BadRecord> {
        crate::record::decode(&self.snapshot)
    }
}

/// What a session's channel carries: every mutation publishes the full new
/// snapshot as a [`crate::record`]; a delete publishes
/// `{"type":"SESSION_DELETED","session_id":…,"version":…,"server_time_ms":…}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChannelMessage {
    /// A new snapshot (the record text; [`crate::record::decode`] reads it).
    State(String),
    /// The session was deleted.
    Deleted {
        /// The session.
        session_id: String,
        /// Last version + 1.
        version: u64,
        /// Redis time of the delete.
        server_time_ms: i64,
    },
}

#[derive(Serialize, Deserialize)]
struct DeletedWire<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    session_id: String,
    version: u64,
    server_time_ms: i64,
}

const DELETED: &str = "SESSION_DELETED";

impl ChannelMessage {
    /// The text published on the channel.
    pub fn encode(&self) -> String {
        match self {
            ChannelMessage::State(s) => s.clone(),
            ChannelMessage::Deleted {
                session_id,
                version,
                server_time_ms,
            } => serde_json::to_string(&DeletedWire {
                kind: DELETED,
                session_id: session_id.clone(),
                version: *version,
                server_time_ms: *server_time_ms,
            })
            .expect("always serializes"),
        }
    }

    /// Classifies a published text. Snapshots start with the record tag.
    pub fn parse(text: &str) -> Option<ChannelMessage> {
        let b = text.as_bytes();
        if b.len() > 2 && b[0] == b'R' && b[1].is_ascii_digit() && b[2] == b'|' {
            return Some(ChannelMessage::State(text.to_string()));
        }
        let d: DeletedWire = serde_json::from_str(text).ok()?;
        (d.kind == DELETED).then_some(ChannelMessage::Deleted {
            session_id: d.session_id,
            version: d.version,
            server_time_ms: d.server_time_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip() {
        let e = AuditEvent {
            event_type: EventType::SessionPaused,
            session_id: "s".into(),
            version: 3,
            at_ms: 42,
            actor: Some("a".into()),
            lag: None,
            warning: None,
            snapshot: "{}".into(),
        };
        let f = e.to_fields();
        let back = AuditEvent::from_fields(f.iter().map(|(k, v)| (*k, v.as_str()))).unwrap();
        assert_eq!(back, e);
        let lagged = AuditEvent {
            lag: Some((250, 120)),
            ..e.clone()
        };
        let f = lagged.to_fields();
        assert!(f.contains(&("lag", "250,120".to_string())));
        let back = AuditEvent::from_fields(f.iter().map(|(k, v)| (*k, v.as_str()))).unwrap();
        assert_eq!(back, lagged);
        let warned = AuditEvent {
            event_type: EventType::LowTimeWarning,
            warning: Some((1_000, 30_000)),
            ..e.clone()
        };
        let f = warned.to_fields();
        assert!(f.contains(&("due", "1000".to_string())));
        assert!(f.contains(&("warn", "30000".to_string())));
        let back = AuditEvent::from_fields(f.iter().map(|(k, v)| (*k, v.as_str()))).unwrap();
        assert_eq!(back, warned);
        assert!(AuditEvent::from_fields([
            ("type", "session_paused"),
            ("sid", "s"),
            ("v", "1"),
            ("at", "1"),
            ("lag", "x"),
            ("snap", "")
        ])
        .is_err());
        assert!(AuditEvent::from_fields([("type", "nope")]).is_err());
    }

    #[test]
    fn channel_messages() {
        let d = ChannelMessage::Deleted {
            session_id: "s".into(),
            version: 4,
            server_time_ms: 9,
        };
        assert_eq!(
            d.encode(),
            r#"{"type":"SESSION_DELETED","session_id":"s","version":4,"server_time_ms":9}"#
        );
        assert_eq!(ChannelMessage::parse(&d.encode()), Some(d));
        assert!(matches!(
            ChannelMessage::parse("R1|x|per_cycle"),
            Some(ChannelMessage::State(_))
        ));
        assert!(matches!(
            ChannelMessage::parse(crate::record::TAG),
            None | Some(ChannelMessage::State(_))
        ));
        assert!(matches!(
            ChannelMessage::parse(&format!("{}|x", crate::record::TAG)),
            Some(ChannelMessage::State(_))
        ));
        assert_eq!(ChannelMessage::parse("nonsense"), None);
    }
}
