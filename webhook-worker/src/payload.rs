//! Audit stream entries → webhook events and their JSON bodies.
//!
//! Event types are matched by their wire names, so an entry type the core
//! adds later (`low_time_warning`) needs no change here, and one this
//! worker does not know is skipped, not an error.

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use synckairos_audit_consumer::event::Entry;
use synckairos_core::time::format_iso;
use synckairos_core::SyncState;

/// An entry that becomes webhook deliveries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookEvent {
    /// `<shard>-<stream entry id>`, as the audit trail names it.
    pub event_id: String,
    /// The shard.
    pub shard: u16,
    /// The stream entry id, `<ms>-<seq>`: the order within the shard.
    pub entry_id: String,
    /// The wire name.
    pub event_type: String,
    /// The session.
    pub session_id: String,
    /// The version (for `low_time_warning`, the session's current one).
    pub version: u64,
    /// When it happened (Redis time), epoch ms.
    pub at_ms: i64,
    /// The request body sent to every endpoint.
    pub body: String,
}

impl WebhookEvent {
    /// The `webhook-id`: the same on every attempt and replay.
    pub fn webhook_id(event_id: &str) -> String {
        format!("evt_{event_id}")
    }

    /// The stream entry id as two numbers (the queue's order).
    pub fn seq(&self) -> (i64, i64) {
        parse_seq(&self.entry_id)
    }
}

/// `<ms>-<seq>` as two numbers (0 where unreadable).
pub fn parse_seq(id: &str) -> (i64, i64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

/// What an entry is to the webhook worker.
#[derive(Debug)]
pub enum Decoded {
    /// A webhook event type.
    Event(Box<WebhookEvent>),
    /// Another known type, or none an endpoint could subscribe to (skipped).
    Skipped(String),
    /// Cannot be read (skipped and logged: the audit consumer dead-letters it).
    Malformed(String),
}

fn field<'a>(e: &'a Entry, name: &str) -> Option<&'a str> {
    e.fields
        .iter()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
}

/// Decodes an entry: only the webhook event types are read in full.
pub fn decode(e: &Entry) -> Decoded {
    let Some(t) = field(e, "type") else {
        return Decoded::Malformed("no type field".into());
    };
    if !crate::config::EVENT_TYPES.contains(&t) {
        return Decoded::Skipped(t.to_string());
    }
    match decode_event(e, t) {
        Ok(ev) => Decoded::Event(Box::new(ev)),
        Err(why) => Decoded::Malformed(why),
    }
}

fn decode_event(e: &Entry, t: &str) -> Result<WebhookEvent, String> {
    let get = |n: &str| field(e, n).ok_or_else(|| format!("missing field {n}"));
    let num = |n: &str| -> Result<i64, String> {
        get(n)?
            .parse::<i64>()
            .map_err(|_| format!("field {n} is not a number"))
    };
    let sid = get("sid")?;
    if sid.contains('\0') {
        // PostgreSQL refuses NUL in text: the batch would fail for good.
        return Err("the session id contains a NUL character".into());
    }
    let version = get("v")?
        .parse::<u64>()
        .map_err(|_| "field v is not a number".to_string())?;
    let at_ms = num("at")?;
    let state = synckairos_core::record::decode(get("snap")?)
        .map_err(|err| format!("snapshot is not a record: {err}"))?;
    if state.session_id != sid {
        return Err(format!(
            "snapshot is of session {}, the event of {sid}",
            state.session_id
        ));
    }
    let warning = match t {
        "low_time_warning" => Some(Warning {
            due_ms: num("due")?,
            threshold_ms: num("warn")?,
        }),
        _ => None,
    };
    let event_id = e.event_id();
    let body = body(&event_id, t, version, at_ms, &state, warning);
    Ok(WebhookEvent {
        event_id,
        shard: e.shard,
        entry_id: e.id.clone(),
        event_type: t.to_string(),
        session_id: sid.to_string(),
        version,
        at_ms,
        body,
    })
}

/// What a `low_time_warning` entry adds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Warning {
    /// When the warning was due (the deadline − the threshold), epoch ms.
    pub due_ms: i64,
    /// The threshold, ms.
    pub threshold_ms: i64,
}

#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    timestamp: String,
    data: Data<'a>,
}

#[derive(Serialize)]
struct Data<'a> {
    event_id: &'a str,
    session_id: &'a str,
    version: u64,
    occurred_at: String,
    /// The API JSON of the snapshot, verbatim (metadata keeps its order).
    state: &'a RawValue,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

/// The request body of an event: `{"type", "timestamp", "data": {event_id,
/// session_id, version, occurred_at, state, …}}`, with the type's own
/// fields in `data`:
///
/// - `participant_switched`: `active_participant_id` (whose turn it is now);
/// - `session_expired`: `expired_participant_id` (whose time ran out, when
///   known, else null);
/// - `low_time_warning`: `participant_id` (the active one), `remaining_ms`
///   (their time left at the event's time), `threshold_ms`, `due_at`.
pub fn body(
    event_id: &str,
    event_type: &str,
    version: u64,
    at_ms: i64,
    state: &SyncState,
    warning: Option<Warning>,
) -> String {
    let state_json =
        RawValue::from_string(state.to_json()).expect("the API JSON of a state is JSON");
    let mut extra = Map::new();
    let active = state.active_participant_id.clone();
    match event_type {
        "participant_switched" => {
            extra.insert("active_participant_id".into(), active.into());
        }
        "session_expired" => {
            let expired = state
                .participants
                .iter()
                .find(|p| p.has_expired)
                .map(|p| p.participant_id.clone())
                .or(active);
            extra.insert("expired_participant_id".into(), expired.into());
        }
        "low_time_warning" => {
            let remaining = synckairos_core::view::clocks(state, at_ms)
                .into_iter()
                .find(|c| Some(&c.participant_id) == state.active_participant_id.as_ref())
                .map(|c| c.remaining_ms);
            extra.insert("participant_id".into(), active.into());
            extra.insert("remaining_ms".into(), remaining.into());
            if let Some(w) = warning {
                extra.insert("threshold_ms".into(), w.threshold_ms.into());
                extra.insert("due_at".into(), format_iso(w.due_ms).into());
            }
        }
        _ => {}
    }
    let b = Body {
        kind: event_type,
        timestamp: format_iso(at_ms),
        data: Data {
            event_id,
            session_id: &state.session_id,
            version,
            occurred_at: format_iso(at_ms),
            state: &state_json,
            extra,
        },
    };
    serde_json::to_string(&b).expect("a body always serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use synckairos_core::model::{apply, Ctx};
    use synckairos_core::validate::validate_create;
    use synckairos_core::{Command, Request};

    fn started() -> SyncState {
        let body = serde_json::json!({"session_id": "00000000-0000-4000-8000-000000000001",
          "sync_mode": "per_participant", "total_time_ms": 60000, "participants": [
          {"participant_id": "00000000-0000-4000-8000-0000000000a1", "participant_index": 0, "total_time_ms": 60000},
          {"participant_id": "00000000-0000-4000-8000-0000000000a2", "participant_index": 1, "total_time_ms": 60000}],
          "metadata": {"z": 1, "a": 2}});
        let spec = validate_create(&body).unwrap();
        let id = spec.session_id.clone();
        let created = apply(
            None,
            None,
            &Request::new(&id, Command::Create(Box::new(spec))),
            &Ctx::at(1_000),
        )
        .state;
        apply(
            created.as_ref(),
            None,
            &Request::new(&id, Command::Start),
            &Ctx::at(2_000),
        )
        .state
        .unwrap()
    }

    fn entry(t: &str, st: &SyncState, extra: &[(&str, &str)]) -> Entry {
        let mut fields = vec![
            ("type".to_string(), t.as_bytes().to_vec()),
            ("sid".into(), st.session_id.as_bytes().to_vec()),
            ("v".into(), st.version.to_string().into_bytes()),
            ("at".into(), b"12000".to_vec()),
            (
                "snap".into(),
                synckairos_core::record::encode(st).into_bytes(),
            ),
        ];
        for (k, v) in extra {
            fields.push((k.to_string(), v.as_bytes().to_vec()));
        }
        Entry {
            shard: 3,
            id: "1700000000000-7".into(),
            fields,
            deliveries: 1,
        }
    }

    #[test]
    fn a_low_time_warning_body() {
        let st = started();
        let e = entry(
            "low_time_warning",
            &st,
            &[("due", "11990"), ("warn", "50000")],
        );
        let Decoded::Event(ev) = decode(&e) else {
            panic!("not an event")
        };
        assert_eq!(ev.event_id, "3-1700000000000-7");
        assert_eq!(
            WebhookEvent::webhook_id(&ev.event_id),
            "evt_3-1700000000000-7"
        );
        assert_eq!(ev.seq(), (1_700_000_000_000, 7));
        let v: Value = serde_json::from_str(&ev.body).unwrap();
        assert_eq!(v["type"], "low_time_warning");
        assert_eq!(v["timestamp"], "1970-01-01T00:00:12.000Z");
        let d = &v["data"];
        assert_eq!(d["event_id"], "3-1700000000000-7");
        assert_eq!(d["session_id"], st.session_id);
        assert_eq!(d["version"], 2);
        assert_eq!(d["occurred_at"], "1970-01-01T00:00:12.000Z");
        assert_eq!(d["participant_id"], "00000000-0000-4000-8000-0000000000a1");
        // Started at 2 s, 60 s bank, at 12 s: 50 s left.
        assert_eq!(d["remaining_ms"], 50_000);
        assert_eq!(d["threshold_ms"], 50_000);
        assert_eq!(d["due_at"], "1970-01-01T00:00:11.990Z");
        assert_eq!(d["state"]["status"], "running");
        // The state is the API JSON of the record, verbatim.
        assert!(ev.body.contains(&st.to_json()), "{}", ev.body);
    }

    #[test]
    fn type_specific_fields() {
        let st = started();
        let Decoded::Event(ev) = decode(&entry("participant_switched", &st, &[])) else {
            panic!()
        };
        let v: Value = serde_json::from_str(&ev.body).unwrap();
        assert_eq!(
            v["data"]["active_participant_id"],
            "00000000-0000-4000-8000-0000000000a1"
        );
        let mut exp = st.clone();
        exp.participants[1].has_expired = true;
        let Decoded::Event(ev) = decode(&entry("session_expired", &exp, &[])) else {
            panic!()
        };
        let v: Value = serde_json::from_str(&ev.body).unwrap();
        assert_eq!(
            v["data"]["expired_participant_id"],
            "00000000-0000-4000-8000-0000000000a2"
        );
        let Decoded::Event(ev) = decode(&entry("session_completed", &st, &[])) else {
            panic!()
        };
        let v: Value = serde_json::from_str(&ev.body).unwrap();
        assert_eq!(v["data"].as_object().unwrap().len(), 5);
    }

    #[test]
    fn other_and_unknown_types_are_skipped_and_bad_entries_named() {
        let st = started();
        assert!(matches!(
            decode(&entry("session_started", &st, &[])),
            Decoded::Skipped(t) if t == "session_started"
        ));
        assert!(matches!(
            decode(&entry("something_new", &st, &[])),
            Decoded::Skipped(_)
        ));
        let mut bad = entry("session_completed", &st, &[]);
        bad.fields.retain(|(k, _)| k != "snap");
        assert!(matches!(decode(&bad), Decoded::Malformed(w) if w.contains("snap")));
        let no_due = entry("low_time_warning", &st, &[("warn", "1")]);
        assert!(matches!(decode(&no_due), Decoded::Malformed(w) if w.contains("due")));
    }
}
