//! The session state exactly as it travels on the wire (docs/API.md §2).
//!
//! Field order here is the JSON key order; the Lua encoder writes the same
//! order, so a snapshot from Redis and one from the Rust model are equal
//! byte for byte.

use crate::control::{LagCompensation, TimeControl};
use crate::time::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::fmt;

/// How the clock of a session runs (docs/DESIGN.md §4).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum SyncMode {
    /// Chess clock: each participant has a bank; Fischer increment on switch.
    PerParticipant,
    /// Every turn gets a fresh `time_per_cycle_ms`.
    PerCycle,
    /// Team clock: one bank per group.
    PerGroup,
    /// One session-wide countdown; switching only rotates the turn.
    Global,
    /// Stopwatch counting up, optionally capped by `max_time_ms`.
    CountUp,
}

impl SyncMode {
    /// All modes, in the order the API lists them.
    pub const ALL: [SyncMode; 5] = [
        SyncMode::PerParticipant,
        SyncMode::PerCycle,
        SyncMode::PerGroup,
        SyncMode::Global,
        SyncMode::CountUp,
    ];

    /// The wire name (`per_participant`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            SyncMode::PerParticipant => "per_participant",
            SyncMode::PerCycle => "per_cycle",
            SyncMode::PerGroup => "per_group",
            SyncMode::Global => "global",
            SyncMode::CountUp => "count_up",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<SyncMode> {
        SyncMode::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

/// Lifecycle status of a session.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Created, not started.
    Pending,
    /// A clock is running.
    Running,
    /// Stopped for now; `resume` continues it.
    Paused,
    /// Time ran out (terminal).
    Expired,
    /// Finished normally (terminal).
    Completed,
    /// Abandoned (terminal).
    Cancelled,
}

impl Status {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Expired => "expired",
            Status::Completed => "completed",
            Status::Cancelled => "cancelled",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Status> {
        [
            Status::Pending,
            Status::Running,
            Status::Paused,
            Status::Expired,
            Status::Completed,
            Status::Cancelled,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }

    /// True for `expired`, `completed` and `cancelled`.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Status::Expired | Status::Completed | Status::Cancelled
        )
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// **[ext]** What happens when a `per_cycle` turn runs out of time.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum CycleExpiry {
    /// The session expires (the default).
    #[default]
    Expire,
    /// The turn passes to the next participant and the session keeps running.
    AutoAdvance,
}

impl CycleExpiry {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            CycleExpiry::Expire => "expire",
            CycleExpiry::AutoAdvance => "auto_advance",
        }
    }
}

/// **[ext]** Why an `expired` session ended.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ExpiryReason {
    /// A participant's (or the session's) time ran out.
    TimeRanOut,
    /// `per_cycle` with `auto_advance`: the configured number of turns in a row
    /// ran out with no command (`AUTO_ADVANCE_IDLE_CYCLES`).
    IdleCycles,
    /// No deadline and no command for `SESSION_IDLE_TTL_SECONDS`
    /// (a pending or paused session, or an uncapped `count_up`).
    IdleTimeout,
}

impl ExpiryReason {
    /// Every reason.
    pub const ALL: [ExpiryReason; 3] = [
        ExpiryReason::TimeRanOut,
        ExpiryReason::IdleCycles,
        ExpiryReason::IdleTimeout,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ExpiryReason::TimeRanOut => "time_ran_out",
            ExpiryReason::IdleCycles => "idle_cycles",
            ExpiryReason::IdleTimeout => "idle_timeout",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<ExpiryReason> {
        ExpiryReason::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// One participant of a session.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct Participant {
    /// Lower-case UUID.
    pub participant_id: String,
    /// Position given at creation; participants are kept sorted by it.
    pub participant_index: i64,
    /// The participant's bank at the last checkpoint (same as `time_remaining_ms`).
    pub total_time_ms: i64,
    /// Time this participant's turns have used so far (checkpointed).
    pub time_used_ms: i64,
    /// The bank at the last checkpoint; live value for the active participant is
    /// `time_remaining_ms - (server_now - cycle_started_at)`.
    pub time_remaining_ms: i64,
    /// Completed turns.
    pub cycle_count: i64,
    /// Whether it is this participant's turn.
    pub is_active: bool,
    /// Whether this participant's time ran out.
    pub has_expired: bool,
    /// Team, for `per_group` (omitted when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<String>,
    /// **[ext]** This participant's own time control, overriding the
    /// session's (omitted when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_control: Option<TimeControl>,
    /// **[ext]** Byo-yomi: periods left at the last checkpoint (omitted for
    /// other controls).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub periods_left: Option<u32>,
    /// **[ext]** Canadian: moves left in the block (once blocks began);
    /// stages: moves left in the stage (omitted for other controls).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moves_left: Option<u32>,
    /// **[ext]** Stages: the current stage, from 0 (omitted for other controls).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<u32>,
    /// **[ext]** Canadian: main time is over and blocks began; the bank is
    /// then the block's time (omitted when false).
    #[serde(default, skip_serializing_if = "is_false")]
    pub overtime: bool,
    /// **[ext]** A paused turn: what it already spent that its control
    /// remembers (the delay waited or run, the time used of the running
    /// byo-yomi period), so the resumed turn goes on where it stopped
    /// (omitted when 0).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub turn_ms: i64,
    /// **[ext]** Lag compensation: the quota left (omitted unless the session
    /// compensates lag).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_quota_ms: Option<i64>,
}

/// **[ext]** Free-form client data kept verbatim (a JSON object ≤ 16 KiB).
#[derive(Clone, Debug)]
pub struct Metadata(pub Box<RawValue>);

impl Metadata {
    /// The compact JSON text.
    pub fn get(&self) -> &str {
        self.0.get()
    }
}

impl PartialEq for Metadata {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}
impl Eq for Metadata {}

impl Serialize for Metadata {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl JsonSchema for Metadata {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Metadata".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "object",
            "description": "Client data kept verbatim (at most 16 KiB of compact JSON)."
        })
    }
}

impl<'de> Deserialize<'de> for Metadata {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Box::<RawValue>::deserialize(d).map(Metadata)
    }
}

/// The full state of a session: what Redis stores, what is published and
/// what every REST reply carries.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct SyncState {
    /// Lower-case UUID.
    pub session_id: String,
    /// How the clock runs.
    pub sync_mode: SyncMode,
    /// Lifecycle status.
    pub status: Status,
    /// 1 at create, +1 per mutation.
    pub version: u64,
    /// Sorted by `participant_index` (stable).
    pub participants: Vec<Participant>,
    /// Whose turn it is, if anyone's.
    pub active_participant_id: Option<String>,
    /// The session-wide time (the bank of `global` mode).
    pub total_time_ms: i64,
    /// Time per turn (`per_cycle`).
    pub time_per_cycle_ms: Option<i64>,
    /// When the running turn started (null unless running).
    pub cycle_started_at: Option<Timestamp>,
    /// When the session was started.
    pub session_started_at: Option<Timestamp>,
    /// When the session reached a terminal status.
    pub session_completed_at: Option<Timestamp>,
    /// Fischer increment added to the bank on switch.
    pub increment_ms: i64,
    /// Cap of a `count_up` stopwatch (omitted when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_time_ms: Option<i64>,
    /// Creation time.
    pub created_at: Timestamp,
    /// Time of the last mutation.
    pub updated_at: Timestamp,
    /// **[ext]** Client data, kept verbatim (omitted when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
    /// **[ext]** Redis time when this snapshot was produced.
    pub server_time_ms: i64,
    /// **[ext]** When the running clock runs out if nobody acts.
    pub expires_at: Option<Timestamp>,
    /// **[ext]** `per_cycle` only: what a timed-out turn does (omitted when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cycle_expiry: Option<CycleExpiry>,
    /// **[ext]** `per_cycle` with `auto_advance`: turns in a row that ran out
    /// with no command (omitted when 0).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub idle_cycles: i64,
    /// **[ext]** Why an `expired` session ended (omitted otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry_reason: Option<ExpiryReason>,
    /// **[ext]** The session's time control (omitted when unset: Fischer
    /// with `increment_ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_control: Option<TimeControl>,
    /// **[ext]** Lag compensation, when the session opted in (omitted otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_compensation: Option<LagCompensation>,
    /// **[ext]** The low-time warning threshold (ms): a `low_time_warning`
    /// event fires once per turn when the running clock's time left reaches
    /// it (omitted when off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub low_time_warning_ms: Option<i64>,
    /// **[ext]** Whether the running turn's low-time warning has fired
    /// (omitted when false).
    #[serde(default, skip_serializing_if = "is_false")]
    pub low_time_warned: bool,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl SyncState {
    /// The API JSON text (docs/API.md §2).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("SyncState always serializes")
    }

    /// Parses the API JSON text.
    pub fn from_json(s: &str) -> Result<SyncState, serde_json::Error> {
        serde_json::from_str(s)
    }

    /// Index of the active participant.
    pub fn active_index(&self) -> Option<usize> {
        let id = self.active_participant_id.as_deref()?;
        self.participants
            .iter()
            .position(|p| p.participant_id == id)
    }

    /// Index of the participant with this id (ids are compared lower-cased).
    pub fn participant_index_of(&self, id: &str) -> Option<usize> {
        let id = id.to_ascii_lowercase();
        self.participants
            .iter()
            .position(|p| p.participant_id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/API.md §2: key order, ISO timestamps with ms and `Z`, omitted-when-unset
    /// fields (`group_id`, `max_time_ms`, `metadata`, `cycle_expiry`), nulls kept.
    #[test]
    fn renders_the_contract_json_exactly() {
        let json = concat!(
            r#"{"session_id":"00000000-0000-4000-8000-000000000000","sync_mode":"per_participant","#,
            r#""status":"running","version":3,"participants":[{"participant_id":"#,
            r#""00000000-0000-4000-8000-000000000001","participant_index":0,"total_time_ms":58000,"#,
            r#""time_used_ms":2000,"time_remaining_ms":58000,"cycle_count":1,"is_active":true,"#,
            r#""has_expired":false},{"participant_id":"00000000-0000-4000-8000-000000000002","#,
            r#""participant_index":1,"total_time_ms":60000,"time_used_ms":0,"time_remaining_ms":60000,"#,
            r#""cycle_count":0,"is_active":false,"has_expired":false,"group_id":"#,
            r#""00000000-0000-4000-8000-0000000000ff"}],"active_participant_id":"#,
            r#""00000000-0000-4000-8000-000000000001","total_time_ms":60000,"time_per_cycle_ms":null,"#,
            r#""cycle_started_at":"2026-11-23T17:39:06.123Z","session_started_at":"2026-11-23T17:39:00.000Z","#,
            r#""session_completed_at":null,"increment_ms":0,"created_at":"2026-11-23T17:38:20.000Z","#,
            r#""updated_at":"2026-11-23T17:39:06.123Z","server_time_ms":1795455546123,"#,
            r#""expires_at":"2026-11-23T17:40:04.123Z"}"#
        );
        let st = SyncState::from_json(json).expect("parses");
        assert_eq!(st.cycle_started_at, Some(Timestamp(1_795_455_546_123)));
        assert_eq!(st.max_time_ms, None);
        assert_eq!(st.to_json(), json);
        let mut with_ext = st.clone();
        with_ext.max_time_ms = Some(5000);
        with_ext.cycle_expiry = Some(CycleExpiry::AutoAdvance);
        with_ext.metadata = Some(Metadata(
            serde_json::value::RawValue::from_string(r#"{"b":1,"a":[true]}"#.into()).unwrap(),
        ));
        let text = with_ext.to_json();
        assert!(text.contains(r#""increment_ms":0,"max_time_ms":5000,"created_at""#));
        assert!(text.contains(r#""metadata":{"b":1,"a":[true]},"server_time_ms""#));
        assert!(text.ends_with(
            r#""expires_at":"2026-11-23T17:40:04.123Z","cycle_expiry":"auto_advance"}"#
        ));
    }
}
