//! Commands on a session, and the validated create specification.

use crate::control::{LagCompensation, TimeControl};
use crate::types::{CycleExpiry, Metadata, SyncMode};
use serde::{Deserialize, Serialize};

/// A participant as validated from the create body.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ParticipantSpec {
    /// Lower-case UUID, unique in the session.
    pub participant_id: String,
    /// Non-negative position.
    pub participant_index: i64,
    /// Initial bank, 1000..=86_400_000 ms.
    pub total_time_ms: i64,
    /// Lower-case UUID of the team (`per_group`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<String>,
    /// **[ext]** This participant's own time control (`per_participant` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_control: Option<TimeControl>,
}

/// A create body that passed every rule of docs/API.md §3. Ids are lower-cased and
/// participants sorted by `participant_index` (stable).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct CreateSpec {
    /// Lower-case UUID.
    pub session_id: String,
    /// Clock semantics.
    pub sync_mode: SyncMode,
    /// 1..=1000 participants, sorted by index.
    pub participants: Vec<ParticipantSpec>,
    /// Session-wide time, 1000..=86_400_000 ms.
    pub total_time_ms: i64,
    /// Per-turn time (required for `per_cycle`).
    #[serde(default)]
    pub time_per_cycle_ms: Option<i64>,
    /// Fischer increment, 0..=60_000 ms.
    #[serde(default)]
    pub increment_ms: i64,
    /// Stopwatch cap, 1000..=86_400_000 ms.
    #[serde(default)]
    pub max_time_ms: Option<i64>,
    /// Client data, ≤ 16 KiB of compact JSON. Sent to the scripts as its own
    /// argument so that it stays byte-identical.
    #[serde(skip)]
    pub metadata: Option<Metadata>,
    /// `per_cycle` only.
    #[serde(default)]
    pub cycle_expiry: Option<CycleExpiry>,
    /// **[ext]** The session's time control (`per_participant` and
    /// `per_group`); `None` is Fischer with `increment_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_control: Option<TimeControl>,
    /// **[ext]** Lag compensation, opted in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_compensation: Option<LagCompensation>,
    /// **[ext]** The low-time warning threshold, ms (`Some(0)`: none for this
    /// session). `None` here means the deployment's `LOW_TIME_WARNING_MS`,
    /// which the transport fills in before the script runs
    /// ([`CreateSpec::with_low_time_default`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub low_time_warning_ms: Option<i64>,
}

impl CreateSpec {
    /// The spec with the deployment's low-time warning threshold
    /// (`LOW_TIME_WARNING_MS`, 0 = none) where the request gave none. The
    /// stored session keeps the threshold it was created with.
    pub fn with_low_time_default(mut self, default_ms: u64) -> CreateSpec {
        if self.low_time_warning_ms.is_none() && default_ms > 0 {
            self.low_time_warning_ms = Some(default_ms as i64);
        }
        self
    }

    /// JSON for the create script (everything but `metadata`).
    pub fn to_script_json(&self) -> String {
        let mut v = serde_json::to_value(self).expect("CreateSpec always serializes");
        // The scripts keep controls in their compact record form
        // (core/src/record.rs) and never parse the JSON shape of one.
        let compact = |c: &Option<TimeControl>| {
            c.as_ref()
                .map_or(serde_json::Value::Null, |c| c.to_compact().into())
        };
        v["tc"] = compact(&self.time_control);
        v["lag"] = self
            .lag_compensation
            .map_or(serde_json::Value::Null, |l| l.to_compact().into());
        if let Some(ps) = v["participants"].as_array_mut() {
            for (p, spec) in ps.iter_mut().zip(&self.participants) {
                p["tc"] = compact(&spec.time_control);
            }
        }
        v.to_string()
    }
}

/// What a caller asks of a session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Create the session (`pending`, version 1).
    Create(Box<CreateSpec>),
    /// `pending → running`.
    Start,
    /// End the running turn and pass it on (to the named participant, if any).
    Switch {
        /// Explicit next participant.
        next_participant_id: Option<String>,
    },
    /// `running → paused`, charging the running turn.
    Pause,
    /// `paused → running`.
    Resume,
    /// `pending|running|paused → completed`, charging the running turn.
    Complete,
    /// `pending|running|paused → cancelled`, charging the running turn.
    Cancel,
    /// Apply expiry if the deadline has passed; otherwise nothing.
    Expire,
    /// Remove the session (idempotent).
    Delete,
}

impl Command {
    /// The script / command name (`create`, `start`, …).
    pub fn name(&self) -> &'static str {
        match self {
            Command::Create(_) => "create",
            Command::Start => "start",
            Command::Switch { .. } => "switch",
            Command::Pause => "pause",
            Command::Resume => "resume",
            Command::Complete => "complete",
            Command::Cancel => "cancel",
            Command::Expire => "expire",
            Command::Delete => "delete",
        }
    }
}

/// A command with the options every mutation accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The session (lower-case UUID).
    pub session_id: String,
    /// What to do.
    pub command: Command,
    /// `If-Match` / `expected_version`: refuse with `CONFLICT` unless equal.
    pub expected_version: Option<u64>,
    /// Who asks (JWT `sub`), recorded in the audit event.
    pub actor: Option<String>,
    /// Refuse with `FORBIDDEN` unless `actor` is the active participant (a
    /// `participant` token may only end its own turn). Checked inside the
    /// script, so it costs no extra round trip.
    pub only_if_active: bool,
    /// `switch`: the client's estimate of this move's network lag (ms),
    /// credited from the mover's quota when the session compensates lag.
    pub lag_ms: Option<i64>,
}

impl Request {
    /// A request with no expected version and no actor.
    pub fn new(session_id: impl Into<String>, command: Command) -> Request {
        Request {
            session_id: session_id.into(),
            command,
            expected_version: None,
            actor: None,
            only_if_active: false,
            lag_ms: None,
        }
    }
}
