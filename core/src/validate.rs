//! Validation of create bodies (docs/API.md §3).
//!
//! [`validate_create`] works on a [`serde_json::Value`] rather than on typed
//! deserialization, so that every problem of a body is reported at once, each
//! with its dotted path and in the words of the reference (zod v4) schema.
//! Nothing here panics, whatever the input.

use crate::command::{CreateSpec, ParticipantSpec};
use crate::control::{DelayKind, LagCompensation, Stage, TimeControl};
use crate::error::{Issue, IssueCode};
use crate::types::{CycleExpiry, Metadata, SyncMode};
use serde_json::value::RawValue;
use serde_json::{Number, Value};
use std::collections::HashSet;
use std::io;

/// Largest accepted compact serialization of `metadata`, in bytes.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;

/// Most participants a session may have.
pub const MAX_PARTICIPANTS: usize = 1000;

/// Fewest participants a session may have.
pub const MIN_PARTICIPANTS: usize = 1;

/// Largest magnitude of a float accepted as an integer (2^53).
const MAX_EXACT_FLOAT: f64 = 9_007_199_254_740_992.0;

/// What [`parse_uuid`] accepts, for the OpenAPI document.
pub const UUID_PATTERN: &str =
    "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";

/// Parses a UUID in the 8-4-4-4-12 hex form (any case, exactly 36 characters)
/// and returns it lower-cased; `None` for anything else ([`UUID_PATTERN`]).
pub fn parse_uuid(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    if bytes.len() != 36 {
        return None;
    }
    let well_formed = bytes.iter().enumerate().all(|(i, &c)| match i {
        8 | 13 | 18 | 23 => c == b'-',
        _ => c.is_ascii_hexdigit(),
    });
    well_formed.then(|| s.to_ascii_lowercase())
}

/// Validates a `POST /v1/sessions` body and builds the [`CreateSpec`].
///
/// Every broken rule is reported (never only the first), in the order
/// `session_id`, `sync_mode`, `participants…`, `total_time_ms`,
/// `time_per_cycle_ms`, `increment_ms`, `max_time_ms`, `metadata`,
/// `cycle_expiry`. Unknown fields are ignored; an optional field that is
/// absent or `null` is unset. On success ids are lower-cased, participants
/// are sorted by `participant_index` (stable) and `increment_ms` defaults to 0.
pub fn validate_create(body: &Value) -> Result<CreateSpec, Vec<Issue>> {
    let mut c = Checker::default();
    let Value::Object(obj) = body else {
        c.wrong_type("", "object", Some(body));
        return Err(c.issues);
    };

    let session_id = c.uuid(
        "session_id",
        obj.get("session_id"),
        true,
        "Session ID must be a valid UUID",
    );

    let sync_mode = match c.take("sync_mode", obj.get("sync_mode"), true, "string") {
        Some(Value::String(s)) => {
            let mode = SyncMode::parse(s);
            if mode.is_none() {
                c.push(
                    "sync_mode",
                    "Invalid sync mode. Must be one of: per_participant, per_cycle, per_group, global, count_up",
                    IssueCode::InvalidValue,
                );
            }
            mode
        }
        Some(other) => {
            c.wrong_type("sync_mode", "string", Some(other));
            None
        }
        None => None,
    };

    let participants = match c.take("participants", obj.get("participants"), true, "array") {
        Some(Value::Array(items)) if items.len() < MIN_PARTICIPANTS => {
            c.push(
                "participants",
                "At least one participant is required",
                IssueCode::TooSmall,
            );
            None
        }
        Some(Value::Array(items)) if items.len() > MAX_PARTICIPANTS => {
            c.push(
                "participants",
                format!("Cannot exceed {MAX_PARTICIPANTS} participants"),
                IssueCode::TooBig,
            );
            None
        }
        Some(Value::Array(items)) => c.participants(items),
        Some(other) => {
            c.wrong_type("participants", "array", Some(other));
            None
        }
        None => None,
    };

    let total_time_ms = c.int("total_time_ms", obj.get("total_time_ms"), true, &TOTAL_TIME);

    let time_per_cycle_ms = c.int(
        "time_per_cycle_ms",
        obj.get("time_per_cycle_ms"),
        false,
        &TIME_PER_CYCLE,
    );
    if sync_mode == Some(SyncMode::PerCycle) && present(obj.get("time_per_cycle_ms")).is_none() {
        c.push(
            "time_per_cycle_ms",
            "Time per cycle is required for per_cycle mode",
            IssueCode::InvalidType,
        );
    }

    let increment_ms = c
        .int("increment_ms", obj.get("increment_ms"), false, &INCREMENT)
        .unwrap_or(0);

    let max_time_ms = c.int("max_time_ms", obj.get("max_time_ms"), false, &MAX_TIME);
    let low_time_warning_ms = c.int(
        LOW_TIME_WARNING.field,
        obj.get(LOW_TIME_WARNING.field),
        false,
        &LOW_TIME_WARNING,
    );

    let metadata = match present(obj.get("metadata")) {
        Some(v @ Value::Object(_)) => c.metadata(v),
        Some(other) => {
            c.wrong_type("metadata", "object", Some(other));
            None
        }
        None => None,
    };

    let cycle_expiry = match present(obj.get("cycle_expiry")) {
        Some(Value::String(s)) => {
            let expiry = match s.as_str() {
                "expire" => Some(CycleExpiry::Expire),
                "auto_advance" => Some(CycleExpiry::AutoAdvance),
                _ => None,
            };
            match (expiry, sync_mode) {
                (None, _) => c.push(
                    "cycle_expiry",
                    "Invalid cycle expiry. Must be one of: expire, auto_advance",
                    IssueCode::InvalidValue,
                ),
                (Some(_), Some(mode)) if mode != SyncMode::PerCycle => c.push(
                    "cycle_expiry",
                    "cycle_expiry applies only to per_cycle mode",
                    IssueCode::InvalidValue,
                ),
                _ => {}
            }
            expiry
        }
        Some(other) => {
            c.wrong_type("cycle_expiry", "string", Some(other));
            None
        }
        None => None,
    };

    let control_given = present(obj.get("time_control"));
    let mut time_control = control_given.and_then(|v| c.time_control("time_control", v));
    if control_given.is_some() && present(obj.get("increment_ms")).is_some() {
        c.push(
            "increment_ms",
            "Give either increment_ms or time_control, not both",
            IssueCode::InvalidValue,
        );
    }
    let lag_given = present(obj.get("lag_compensation"));
    let lag_compensation = lag_given.and_then(|v| c.lag_compensation(v));
    let controlled = matches!(
        sync_mode,
        Some(SyncMode::PerParticipant) | Some(SyncMode::PerGroup)
    );
    if let Some(mode) = sync_mode {
        for (field, given) in [
            ("time_control", control_given.is_some()),
            ("lag_compensation", lag_given.is_some()),
        ] {
            if given && !controlled {
                c.push(
                    field,
                    format!("{field} applies only to per_participant and per_group mode"),
                    IssueCode::InvalidValue,
                );
            }
        }
        if let Value::Array(items) = obj.get("participants").unwrap_or(&Value::Null) {
            for (i, item) in items.iter().enumerate() {
                let own = present(item.get("time_control")).is_some();
                if own && mode != SyncMode::PerParticipant {
                    c.push(
                        &format!("participants.{i}.time_control"),
                        "A participant's own time_control applies only to per_participant mode",
                        IssueCode::InvalidValue,
                    );
                } else if own && time_control == Some(TimeControl::Hourglass) {
                    c.push(
                        &format!("participants.{i}.time_control"),
                        "An hourglass session has one control for both participants",
                        IssueCode::InvalidValue,
                    );
                }
            }
        }
        if time_control == Some(TimeControl::Hourglass) {
            let two = participants.as_ref().is_some_and(|p| p.len() == 2);
            if mode != SyncMode::PerParticipant || !two {
                c.push(
                    "time_control",
                    "hourglass needs per_participant mode with exactly two participants",
                    IssueCode::InvalidValue,
                );
            }
        }
    }
    // Fischer has one declaration on the wire: increment_ms.
    let mut increment_ms = increment_ms;
    if let Some(TimeControl::Fischer { increment_ms: inc }) = time_control {
        increment_ms = inc;
        time_control = None;
    }

    match (session_id, sync_mode, participants, total_time_ms) {
        (Some(session_id), Some(sync_mode), Some(mut participants), Some(total_time_ms))
            if c.issues.is_empty() =>
        {
            participants.sort_by_key(|p| p.participant_index);
            Ok(CreateSpec {
                session_id,
                sync_mode,
                participants,
                total_time_ms,
                time_per_cycle_ms,
                increment_ms,
                max_time_ms,
                metadata,
                cycle_expiry,
                time_control,
                lag_compensation,
                low_time_warning_ms,
            })
        }
        _ => Err(c.issues),
    }
}

/// Inclusive bounds of an integer field and the messages for breaking them:
/// the one declaration that validation and the OpenAPI document
/// ([`crate::openapi`]) both read.
#[derive(Debug)]
pub struct Bounds {
    /// The field's name in its object.
    pub field: &'static str,
    /// Smallest accepted value.
    pub min: i64,
    /// Largest accepted value.
    pub max: i64,
    /// The message below `min` (code `too_small`).
    pub too_small: &'static str,
    /// The message above `max` (code `too_big`).
    pub too_big: &'static str,
}

/// Which object of a create body a field belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// The body itself.
    Body,
    /// Each of `participants[]`.
    Participant,
}

/// Every integer field of a create body, with its bounds.
pub const CREATE_INTEGERS: [(Scope, &Bounds); 7] = [
    (Scope::Body, &TOTAL_TIME),
    (Scope::Body, &TIME_PER_CYCLE),
    (Scope::Body, &INCREMENT),
    (Scope::Body, &MAX_TIME),
    (Scope::Body, &LOW_TIME_WARNING),
    (Scope::Participant, &PARTICIPANT_INDEX),
    (Scope::Participant, &TOTAL_TIME),
];

/// Every UUID field of a create body.
pub const CREATE_UUIDS: [(Scope, &str); 3] = [
    (Scope::Body, "session_id"),
    (Scope::Participant, "participant_id"),
    (Scope::Participant, "group_id"),
];

const PARTICIPANT_INDEX: Bounds = Bounds {
    field: "participant_index",
    min: 0,
    max: 2_147_483_647,
    too_small: "Participant index must be non-negative",
    too_big: "Participant index cannot exceed 2147483647",
};

const TOTAL_TIME: Bounds = Bounds {
    field: "total_time_ms",
    min: 1000,
    max: 86_400_000,
    too_small: "Total time must be at least 1000ms (1 second)",
    too_big: "Total time cannot exceed 86400000ms (24 hours)",
};

const TIME_PER_CYCLE: Bounds = Bounds {
    field: "time_per_cycle_ms",
    min: 1000,
    max: 86_400_000,
    too_small: "Time per cycle must be at least 1000ms (1 second)",
    too_big: "Time per cycle cannot exceed 86400000ms (24 hours)",
};

/// The Fischer increment (also a stage's).
pub const INCREMENT_BOUNDS: Bounds = INCREMENT;

const INCREMENT: Bounds = Bounds {
    field: "increment_ms",
    min: 0,
    max: 60_000,
    too_small: "Increment cannot be negative",
    too_big: "Increment cannot exceed 60000ms (1 minute)",
};

const MAX_TIME: Bounds = Bounds {
    field: "max_time_ms",
    min: 1000,
    max: 86_400_000,
    too_small: "Max time must be at least 1000ms (1 second)",
    too_big: "Max time cannot exceed 86400000ms (24 hours)",
};

/// The low-time warning threshold of a session (`low_time_warning_ms`; 0 =
/// none) and of a deployment (`LOW_TIME_WARNING_MS`).
pub const LOW_TIME_WARNING: Bounds = Bounds {
    field: "low_time_warning_ms",
    min: 0,
    max: 86_400_000,
    too_small: "Low-time warning cannot be negative",
    too_big: "Low-time warning cannot exceed 86400000ms (24 hours)",
};

/// Bounds of a time control's integers (docs/API.md §4.1), read by
/// validation and the OpenAPI document alike.
pub const DELAY: Bounds = Bounds {
    field: "delay_ms",
    min: 0,
    max: 60_000,
    too_small: "Delay cannot be negative",
    too_big: "Delay cannot exceed 60000ms (1 minute)",
};

/// Byo-yomi periods.
pub const PERIODS: Bounds = Bounds {
    field: "periods",
    min: 1,
    max: 100,
    too_small: "Periods must be at least 1",
    too_big: "Periods cannot exceed 100",
};

/// A byo-yomi period or a Canadian block.
pub const PERIOD: Bounds = Bounds {
    field: "period_ms",
    min: 1000,
    max: 86_400_000,
    too_small: "Period must be at least 1000ms (1 second)",
    too_big: "Period cannot exceed 86400000ms (24 hours)",
};

/// Moves of a Canadian block or a stage.
pub const MOVES: Bounds = Bounds {
    field: "moves",
    min: 1,
    max: 1000,
    too_small: "Moves must be at least 1",
    too_big: "Moves cannot exceed 1000",
};

/// Time a stage adds.
pub const ADD: Bounds = Bounds {
    field: "add_ms",
    min: 0,
    max: 86_400_000,
    too_small: "Added time cannot be negative",
    too_big: "Added time cannot exceed 86400000ms (24 hours)",
};

/// At most this many stages.
pub const MAX_STAGES: usize = 10;

/// The `type`s of a time control.
pub const TIME_CONTROL_TYPES: [&str; 7] = [
    "fischer",
    "bronstein",
    "simple_delay",
    "byoyomi",
    "canadian",
    "hourglass",
    "stages",
];

/// Lag compensation's three amounts.
pub const LAG_AMOUNTS: [Bounds; 3] = [
    Bounds {
        field: "initial_ms",
        min: 0,
        max: 60_000,
        too_small: "Initial quota cannot be negative",
        too_big: "Initial quota cannot exceed 60000ms (1 minute)",
    },
    Bounds {
        field: "gain_ms",
        min: 0,
        max: 60_000,
        too_small: "Quota gain cannot be negative",
        too_big: "Quota gain cannot exceed 60000ms (1 minute)",
    },
    Bounds {
        field: "max_ms",
        min: 0,
        max: 60_000,
        too_small: "Quota maximum cannot be negative",
        too_big: "Quota maximum cannot exceed 60000ms (1 minute)",
    },
];

/// The lag a switch may claim (`lag_ms`).
pub const LAG: Bounds = Bounds {
    field: "lag_ms",
    min: 0,
    max: 60_000,
    too_small: "Lag cannot be negative",
    too_big: "Lag cannot exceed 60000ms (1 minute)",
};

/// Whether any key or string in `v` holds a NUL character.
fn has_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

/// A JSON number seen as an integer.
enum IntValue {
    /// An integer that fits (floats with no fraction within ±2^53 included).
    Exact(i64),
    /// An integer too large to hold exactly.
    Above,
    /// An integer too small to hold exactly.
    Below,
    /// A number with a fractional part.
    NotInt,
}

fn classify(n: &Number) -> IntValue {
    if let Some(i) = n.as_i64() {
        return IntValue::Exact(i);
    }
    if n.as_u64().is_some() {
        // Only reached above i64::MAX.
        return IntValue::Above;
    }
    match n.as_f64() {
        Some(f) if f.is_finite() && f.fract() == 0.0 => {
            if f > MAX_EXACT_FLOAT {
                IntValue::Above
            } else if f < -MAX_EXACT_FLOAT {
                IntValue::Below
            } else {
                // In range and without fraction: the cast is exact.
                IntValue::Exact(f as i64)
            }
        }
        _ => IntValue::NotInt,
    }
}

/// The value of an optional field: absent and `null` both mean unset.
fn present(v: Option<&Value>) -> Option<&Value> {
    v.filter(|v| !v.is_null())
}

/// The type name zod v4 prints for a value (`undefined` when missing).
fn type_name(v: Option<&Value>) -> &'static str {
    match v {
        None => "undefined",
        Some(Value::Null) => "null",
        Some(Value::Bool(_)) => "boolean",
        Some(Value::Number(_)) => "number",
        Some(Value::String(_)) => "string",
        Some(Value::Array(_)) => "array",
        Some(Value::Object(_)) => "object",
    }
}

/// A writer that refuses to grow past [`MAX_METADATA_BYTES`], so that an
/// oversized `metadata` is never serialized in full.
struct CappedBuf(Vec<u8>);

impl io::Write for CappedBuf {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.0.len().saturating_add(data.len()) > MAX_METADATA_BYTES {
            return Err(io::Error::other("metadata too big"));
        }
        self.0.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Collects issues while the body is walked.
#[derive(Default)]
struct Checker {
    issues: Vec<Issue>,
}

impl Checker {
    fn push(&mut self, field: &str, message: impl Into<String>, code: IssueCode) {
        self.issues.push(Issue {
            field: field.to_string(),
            message: message.into(),
            code,
        });
    }

    fn wrong_type(&mut self, field: &str, expected: &str, got: Option<&Value>) {
        self.push(
            field,
            format!(
                "Invalid input: expected {expected}, received {}",
                type_name(got)
            ),
            IssueCode::InvalidType,
        );
    }

    /// The value of a field if set; records a missing required field.
    fn take<'a>(
        &mut self,
        field: &str,
        v: Option<&'a Value>,
        required: bool,
        expected: &str,
    ) -> Option<&'a Value> {
        match present(v) {
            Some(v) => Some(v),
            None => {
                if required {
                    self.wrong_type(field, expected, v);
                }
                None
            }
        }
    }

    /// A UUID string field, lower-cased.
    fn uuid(
        &mut self,
        field: &str,
        v: Option<&Value>,
        required: bool,
        message: &str,
    ) -> Option<String> {
        match self.take(field, v, required, "string")? {
            Value::String(s) => {
                let id = parse_uuid(s);
                if id.is_none() {
                    self.push(field, message, IssueCode::InvalidFormat);
                }
                id
            }
            other => {
                self.wrong_type(field, "string", Some(other));
                None
            }
        }
    }

    /// An integer field within `bounds`.
    fn int(
        &mut self,
        field: &str,
        v: Option<&Value>,
        required: bool,
        bounds: &Bounds,
    ) -> Option<i64> {
        let n = match self.take(field, v, required, "number")? {
            Value::Number(n) => n,
            other => {
                self.wrong_type(field, "number", Some(other));
                return None;
            }
        };
        match classify(n) {
            IntValue::Exact(i) if i < bounds.min => {
                self.push(field, bounds.too_small, IssueCode::TooSmall)
            }
            IntValue::Exact(i) if i > bounds.max => {
                self.push(field, bounds.too_big, IssueCode::TooBig)
            }
            IntValue::Exact(i) => return Some(i),
            IntValue::Above => self.push(field, bounds.too_big, IssueCode::TooBig),
            IntValue::Below => self.push(field, bounds.too_small, IssueCode::TooSmall),
            IntValue::NotInt => self.push(
                field,
                "Invalid input: expected int, received number",
                IssueCode::InvalidType,
            ),
        }
        None
    }

    /// A `time_control` object at `field`.
    fn time_control(&mut self, field: &str, v: &Value) -> Option<TimeControl> {
        let Value::Object(o) = v else {
            self.wrong_type(field, "object", Some(v));
            return None;
        };
        let f = |name: &str| format!("{field}.{name}");
        let kind = match self.take(&f("type"), o.get("type"), true, "string")? {
            Value::String(t) if TIME_CONTROL_TYPES.contains(&t.as_str()) => t.as_str(),
            Value::String(_) => {
                self.push(
                    &f("type"),
                    format!(
                        "Invalid time control. Must be one of: {}",
                        TIME_CONTROL_TYPES.join(", ")
                    ),
                    IssueCode::InvalidValue,
                );
                return None;
            }
            other => {
                self.wrong_type(&f("type"), "string", Some(other));
                return None;
            }
        };
        let int = |c: &mut Checker, b: &Bounds| c.int(&f(b.field), o.get(b.field), true, b);
        Some(match kind {
            "fischer" => TimeControl::Fischer {
                increment_ms: int(self, &INCREMENT)?,
            },
            "bronstein" => TimeControl::Bronstein {
                delay_ms: int(self, &DELAY)?,
            },
            "simple_delay" => TimeControl::SimpleDelay {
                delay_ms: int(self, &DELAY)?,
            },
            "byoyomi" => {
                let (periods, period_ms) = (int(self, &PERIODS), int(self, &PERIOD));
                TimeControl::Byoyomi {
                    periods: u32::try_from(periods?).ok()?,
                    period_ms: period_ms?,
                }
            }
            "canadian" => {
                let (moves, period_ms) = (int(self, &MOVES), int(self, &PERIOD));
                TimeControl::Canadian {
                    moves: u32::try_from(moves?).ok()?,
                    period_ms: period_ms?,
                }
            }
            "hourglass" => TimeControl::Hourglass,
            _ => {
                let items = match self.take(&f("stages"), o.get("stages"), true, "array")? {
                    Value::Array(items) if items.is_empty() => {
                        self.push(
                            &f("stages"),
                            "At least one stage is required",
                            IssueCode::TooSmall,
                        );
                        return None;
                    }
                    Value::Array(items) if items.len() > MAX_STAGES => {
                        self.push(
                            &f("stages"),
                            format!("Cannot exceed {MAX_STAGES} stages"),
                            IssueCode::TooBig,
                        );
                        return None;
                    }
                    Value::Array(items) => items,
                    other => {
                        self.wrong_type(&f("stages"), "array", Some(other));
                        return None;
                    }
                };
                let mut stages = Vec::with_capacity(items.len());
                let mut ok = true;
                for (i, item) in items.iter().enumerate() {
                    let sf = |name: &str| format!("{field}.stages.{i}.{name}");
                    let Value::Object(so) = item else {
                        self.wrong_type(&format!("{field}.stages.{i}"), "object", Some(item));
                        ok = false;
                        continue;
                    };
                    let last = i + 1 == items.len();
                    let moves = self.int(&sf("moves"), so.get("moves"), !last, &MOVES);
                    if last && moves.is_some() {
                        self.push(
                            &sf("moves"),
                            "The last stage lasts to the end: it has no moves",
                            IssueCode::InvalidValue,
                        );
                        ok = false;
                    }
                    let add_ms = self.int(&sf("add_ms"), so.get("add_ms"), false, &ADD);
                    if i == 0 && add_ms.unwrap_or(0) != 0 {
                        self.push(
                            &sf("add_ms"),
                            "The first stage's time is total_time_ms: it adds nothing",
                            IssueCode::InvalidValue,
                        );
                        ok = false;
                    }
                    let increment_ms = self.int(
                        &sf("increment_ms"),
                        so.get("increment_ms"),
                        false,
                        &INCREMENT,
                    );
                    let delay_ms = self.int(&sf("delay_ms"), so.get("delay_ms"), false, &DELAY);
                    let delay_kind = match present(so.get("delay_kind")) {
                        None => Some(DelayKind::Bronstein),
                        Some(Value::String(k)) if k == "bronstein" => Some(DelayKind::Bronstein),
                        Some(Value::String(k)) if k == "simple" => Some(DelayKind::Simple),
                        Some(Value::String(_)) => {
                            self.push(
                                &sf("delay_kind"),
                                "Invalid delay kind. Must be one of: bronstein, simple",
                                IssueCode::InvalidValue,
                            );
                            None
                        }
                        Some(other) => {
                            self.wrong_type(&sf("delay_kind"), "string", Some(other));
                            None
                        }
                    };
                    let given = |k: &str| present(so.get(k)).is_some();
                    let complete = (last || moves.is_some())
                        && (add_ms.is_some() || !given("add_ms"))
                        && (increment_ms.is_some() || !given("increment_ms"))
                        && (delay_ms.is_some() || !given("delay_ms"))
                        && delay_kind.is_some();
                    if !complete {
                        ok = false;
                        continue;
                    }
                    stages.push(Stage {
                        moves: moves.and_then(|m| u32::try_from(m).ok()),
                        add_ms: add_ms.unwrap_or(0),
                        increment_ms: increment_ms.unwrap_or(0),
                        delay_ms: delay_ms.unwrap_or(0),
                        delay_kind: delay_kind.unwrap_or_default(),
                    });
                }
                if !ok {
                    return None;
                }
                TimeControl::Stages { stages }
            }
        })
    }

    /// A `lag_compensation` object.
    fn lag_compensation(&mut self, v: &Value) -> Option<LagCompensation> {
        let Value::Object(o) = v else {
            self.wrong_type("lag_compensation", "object", Some(v));
            return None;
        };
        let [a, b, c] = &LAG_AMOUNTS;
        let mut get = |bounds: &Bounds| {
            self.int(
                &format!("lag_compensation.{}", bounds.field),
                o.get(bounds.field),
                true,
                bounds,
            )
        };
        let (initial_ms, gain_ms, max_ms) = (get(a), get(b), get(c));
        let l = LagCompensation {
            initial_ms: initial_ms?,
            gain_ms: gain_ms?,
            max_ms: max_ms?,
        };
        if l.max_ms < l.initial_ms {
            self.push(
                "lag_compensation.max_ms",
                "Quota maximum cannot be below the initial quota",
                IssueCode::TooSmall,
            );
            return None;
        }
        Some(l)
    }

    /// The items of a `participants` array of allowed length.
    fn participants(&mut self, items: &[Value]) -> Option<Vec<ParticipantSpec>> {
        let mut seen = HashSet::with_capacity(items.len());
        let mut specs = Vec::with_capacity(items.len());
        let mut all_ok = true;
        for (i, item) in items.iter().enumerate() {
            let base = format!("participants.{i}");
            let Value::Object(p) = item else {
                self.wrong_type(&base, "object", Some(item));
                all_ok = false;
                continue;
            };
            let id_field = format!("{base}.participant_id");
            let participant_id = match self.uuid(
                &id_field,
                p.get("participant_id"),
                true,
                "Participant ID must be a valid UUID",
            ) {
                Some(id) if !seen.insert(id.clone()) => {
                    self.push(
                        &id_field,
                        format!("Duplicate participant ID {id}"),
                        IssueCode::InvalidValue,
                    );
                    None
                }
                other => other,
            };
            let participant_index = self.int(
                &format!("{base}.participant_index"),
                p.get("participant_index"),
                true,
                &PARTICIPANT_INDEX,
            );
            let total_time_ms = self.int(
                &format!("{base}.total_time_ms"),
                p.get("total_time_ms"),
                true,
                &TOTAL_TIME,
            );
            let group_field = format!("{base}.group_id");
            let group_given = present(p.get("group_id")).is_some();
            let group_id = self.uuid(
                &group_field,
                p.get("group_id"),
                false,
                "Group ID must be a valid UUID",
            );
            let control_field = format!("{base}.time_control");
            let own_given = present(p.get("time_control"));
            let own_control = own_given.and_then(|v| self.time_control(&control_field, v));
            if own_control == Some(TimeControl::Hourglass) {
                self.push(
                    &control_field,
                    "hourglass applies to the session, not to one participant",
                    IssueCode::InvalidValue,
                );
            }
            match (participant_id, participant_index, total_time_ms) {
                (Some(participant_id), Some(participant_index), Some(total_time_ms))
                    if group_given == group_id.is_some()
                        && own_given.is_some() == own_control.is_some() =>
                {
                    specs.push(ParticipantSpec {
                        participant_id,
                        participant_index,
                        total_time_ms,
                        group_id,
                        time_control: own_control,
                    })
                }
                _ => all_ok = false,
            }
        }
        all_ok.then_some(specs)
    }

    /// A `metadata` object, kept as its compact JSON text.
    fn metadata(&mut self, v: &Value) -> Option<Metadata> {
        // JSON allows "\u0000"; PostgreSQL's jsonb (the audit trail) does
        // not, and would refuse every event of the session. Refused here,
        // where the client can still be told.
        if has_nul(v) {
            self.push(
                "metadata",
                "Metadata cannot contain the NUL character (\\u0000)",
                IssueCode::InvalidValue,
            );
            return None;
        }
        let mut buf = CappedBuf(Vec::new());
        if serde_json::to_writer(&mut buf, v).is_err() {
            self.push(
                "metadata",
                format!("Metadata cannot exceed {MAX_METADATA_BYTES} bytes"),
                IssueCode::TooBig,
            );
            return None;
        }
        let raw = String::from_utf8(buf.0)
            .ok()
            .and_then(|s| RawValue::from_string(s).ok());
        if raw.is_none() {
            // Unreachable: serde_json writes valid UTF-8 JSON.
            self.push(
                "metadata",
                "Metadata must be a JSON object",
                IssueCode::InvalidValue,
            );
        }
        raw.map(Metadata)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const SID: &str = "6f1c2a0e-3b4d-4e5f-8a9b-0c1d2e3f4a5b";

    fn pid(n: usize) -> String {
        format!("00000000-0000-4000-8000-{n:012x}")
    }

    fn participant(n: usize, index: i64) -> Value {
        json!({
            "participant_id": pid(n),
            "participant_index": index,
            "total_time_ms": 60_000,
        })
    }

    fn valid() -> Value {
        json!({
            "session_id": SID,
            "sync_mode": "per_participant",
            "participants": [participant(1, 0), participant(2, 1)],
            "total_time_ms": 120_000,
        })
    }

    fn pointer(path: &str) -> String {
        if path.is_empty() {
            String::new()
        } else {
            format!("/{}", path.replace('.', "/"))
        }
    }

    fn parent_and_key(path: &str) -> (String, &str) {
        match path.rsplit_once('.') {
            Some((parent, key)) => (pointer(parent), key),
            None => (String::new(), path),
        }
    }

    /// `valid()` with the field at the dotted `path` set to `v`.
    fn with(path: &str, v: Value) -> Value {
        let mut body = valid();
        set(&mut body, path, v);
        body
    }

    fn set(body: &mut Value, path: &str, v: Value) {
        let (parent, key) = parent_and_key(path);
        match body.pointer_mut(&parent).unwrap() {
            Value::Object(m) => {
                m.insert(key.to_string(), v);
            }
            Value::Array(a) => a[key.parse::<usize>().unwrap()] = v,
            _ => panic!("no container at {parent}"),
        }
    }

    /// `valid()` without the field at the dotted `path`.
    fn without(path: &str) -> Value {
        let mut body = valid();
        let (parent, key) = parent_and_key(path);
        body.pointer_mut(&parent)
            .unwrap()
            .as_object_mut()
            .unwrap()
            .remove(key)
            .unwrap();
        body
    }

    fn issue(field: &str, message: &str, code: IssueCode) -> Issue {
        Issue {
            field: field.into(),
            message: message.into(),
            code,
        }
    }

    fn issues(body: &Value) -> Vec<Issue> {
        validate_create(body).expect_err("expected validation issues")
    }

    #[track_caller]
    fn assert_one(body: Value, field: &str, message: &str, code: IssueCode) {
        assert_eq!(issues(&body), vec![issue(field, message, code)]);
    }

    #[track_caller]
    fn assert_type(body: Value, field: &str, expected: &str, received: &str) {
        assert_one(
            body,
            field,
            &format!("Invalid input: expected {expected}, received {received}"),
            IssueCode::InvalidType,
        );
    }

    #[track_caller]
    fn ok(body: Value) -> CreateSpec {
        match validate_create(&body) {
            Ok(spec) => spec,
            Err(issues) => panic!("unexpected issues: {issues:?}"),
        }
    }

    /// Checks the bounds of an integer field: `min - 1`, `min`, `max`,
    /// `max + 1`, a non-integer, a string, and huge magnitudes.
    #[track_caller]
    fn check_bounds(
        body: impl Fn(Value) -> Value,
        field: &str,
        (min, max): (i64, i64),
        too_small: &str,
        too_big: &str,
    ) {
        assert_one(body(json!(min - 1)), field, too_small, IssueCode::TooSmall);
        ok(body(json!(min)));
        ok(body(json!(max)));
        assert_one(body(json!(max + 1)), field, too_big, IssueCode::TooBig);
        assert_one(body(json!(1e300)), field, too_big, IssueCode::TooBig);
        assert_one(body(json!(u64::MAX)), field, too_big, IssueCode::TooBig);
        assert_one(body(json!(i64::MIN)), field, too_small, IssueCode::TooSmall);
        assert_one(body(json!(-1e300)), field, too_small, IssueCode::TooSmall);
        assert_one(
            body(json!(1000.5)),
            field,
            "Invalid input: expected int, received number",
            IssueCode::InvalidType,
        );
        assert_type(body(json!("1000")), field, "number", "string");
        assert_type(body(json!(true)), field, "number", "boolean");
        assert_type(body(json!([1000])), field, "number", "array");
        assert_type(body(json!({})), field, "number", "object");
    }

    #[test]
    fn parse_uuid_accepts_any_case_and_lowercases() {
        assert_eq!(parse_uuid(SID).as_deref(), Some(SID));
        assert_eq!(
            parse_uuid("6F1C2A0E-3B4D-4E5F-8A9B-0C1D2E3F4A5B").as_deref(),
            Some(SID)
        );
        assert_eq!(
            parse_uuid("00000000-0000-0000-0000-000000000000").as_deref(),
            Some("00000000-0000-0000-0000-000000000000")
        );
    }

    #[test]
    fn parse_uuid_rejects_malformed() {
        for s in [
            "",
            "6f1c2a0e3b4d4e5f8a9b0c1d2e3f4a5b",
            "6f1c2a0e-3b4d-4e5f-8a9b-0c1d2e3f4a5",
            "6f1c2a0e-3b4d-4e5f-8a9b-0c1d2e3f4a5bb",
            "6f1c2a0e-3b4d-4e5f-8a9b-0c1d2e3f4a5g",
            "6f1c2a0e3-b4d-4e5f-8a9b-0c1d2e3f4a5b",
            "6f1c2a0e-3b4d-4e5f-8a9b-0c1d2e3f4a-b",
            "{6f1c2a0e-3b4d-4e5f-8a9b-0c1d2e3f4a5}",
            " 6f1c2a0e-3b4d-4e5f-8a9b-0c1d2e3f4a5",
            "6f1c2a0e-3b4d-4e5f-8a9b-0c1d2e3f4aé",
            "------------------------------------",
        ] {
            assert_eq!(parse_uuid(s), None, "{s:?}");
        }
    }

    #[test]
    fn valid_body_builds_the_spec() {
        let spec = ok(valid());
        assert_eq!(spec.session_id, SID);
        assert_eq!(spec.sync_mode, SyncMode::PerParticipant);
        assert_eq!(spec.participants.len(), 2);
        assert_eq!(spec.participants[0].participant_id, pid(1));
        assert_eq!(spec.participants[0].participant_index, 0);
        assert_eq!(spec.participants[0].total_time_ms, 60_000);
        assert_eq!(spec.participants[0].group_id, None);
        assert_eq!(spec.total_time_ms, 120_000);
        assert_eq!(spec.time_per_cycle_ms, None);
        assert_eq!(spec.increment_ms, 0);
        assert_eq!(spec.max_time_ms, None);
        assert_eq!(spec.metadata, None);
        assert_eq!(spec.cycle_expiry, None);
    }

    #[test]
    fn success_lowercases_ids_and_sorts_stably() {
        let body = json!({
            "session_id": SID.to_uppercase(),
            "sync_mode": "per_group",
            "participants": [
                {"participant_id": pid(0xA).to_uppercase(), "participant_index": 2,
                 "total_time_ms": 1000, "group_id": pid(0xB).to_uppercase()},
                {"participant_id": pid(0xC), "participant_index": 0, "total_time_ms": 2000},
                {"participant_id": pid(0xD), "participant_index": 1, "total_time_ms": 3000,
                 "group_id": null},
                {"participant_id": pid(0xE), "participant_index": 0, "total_time_ms": 4000},
            ],
            "total_time_ms": 5000,
            "time_per_cycle_ms": 7000,
            "increment_ms": 500,
            "max_time_ms": 9000,
            "metadata": {"b": [1, 2], "a": "x"},
            "unknown": "ignored",
        });
        let spec = ok(body);
        assert_eq!(spec.session_id, SID);
        assert_eq!(spec.sync_mode, SyncMode::PerGroup);
        let order: Vec<_> = spec
            .participants
            .iter()
            .map(|p| {
                (
                    p.participant_id.clone(),
                    p.participant_index,
                    p.total_time_ms,
                )
            })
            .collect();
        assert_eq!(
            order,
            vec![
                (pid(0xC), 0, 2000),
                (pid(0xE), 0, 4000),
                (pid(0xD), 1, 3000),
                (pid(0xA), 2, 1000),
            ]
        );
        assert_eq!(spec.participants[3].group_id, Some(pid(0xB)));
        assert_eq!(spec.participants[2].group_id, None);
        assert_eq!(spec.total_time_ms, 5000);
        assert_eq!(spec.time_per_cycle_ms, Some(7000));
        assert_eq!(spec.increment_ms, 500);
        assert_eq!(spec.max_time_ms, Some(9000));
        assert_eq!(
            spec.metadata.as_ref().map(Metadata::get),
            Some(r#"{"a":"x","b":[1,2]}"#)
        );
        assert_eq!(spec.cycle_expiry, None);
    }

    #[test]
    fn body_must_be_an_object() {
        for (body, name) in [
            (json!(null), "null"),
            (json!(true), "boolean"),
            (json!(1), "number"),
            (json!("x"), "string"),
            (json!([valid()]), "array"),
        ] {
            assert_type(body, "", "object", name);
        }
    }

    #[test]
    fn session_id_is_a_required_uuid_string() {
        assert_type(without("session_id"), "session_id", "string", "undefined");
        assert_type(
            with("session_id", json!(null)),
            "session_id",
            "string",
            "null",
        );
        assert_type(
            with("session_id", json!(42)),
            "session_id",
            "string",
            "number",
        );
        assert_one(
            with("session_id", json!("not-a-uuid")),
            "session_id",
            "Session ID must be a valid UUID",
            IssueCode::InvalidFormat,
        );
    }

    #[test]
    fn sync_mode_is_one_of_five() {
        assert_type(without("sync_mode"), "sync_mode", "string", "undefined");
        assert_type(
            with("sync_mode", json!(false)),
            "sync_mode",
            "string",
            "boolean",
        );
        for bad in ["chess", "PER_CYCLE", ""] {
            assert_one(
                with("sync_mode", json!(bad)),
                "sync_mode",
                "Invalid sync mode. Must be one of: per_participant, per_cycle, per_group, global, count_up",
                IssueCode::InvalidValue,
            );
        }
        for mode in SyncMode::ALL {
            let mut body = with("sync_mode", json!(mode.as_str()));
            set(&mut body, "time_per_cycle_ms", json!(10_000));
            assert_eq!(ok(body).sync_mode, mode);
        }
    }

    #[test]
    fn participants_is_a_required_array() {
        assert_type(
            without("participants"),
            "participants",
            "array",
            "undefined",
        );
        assert_type(
            with("participants", json!(null)),
            "participants",
            "array",
            "null",
        );
        assert_type(
            with("participants", participant(1, 0)),
            "participants",
            "array",
            "object",
        );
    }

    #[test]
    fn participants_needs_at_least_one() {
        assert_one(
            with("participants", json!([])),
            "participants",
            "At least one participant is required",
            IssueCode::TooSmall,
        );
        ok(with("participants", json!([participant(1, 0)])));
    }

    #[test]
    fn participants_accepts_exactly_1000() {
        let items: Vec<_> = (0..1000).map(|i| participant(i, i as i64)).collect();
        assert_eq!(
            ok(with("participants", json!(items))).participants.len(),
            1000
        );
    }

    #[test]
    fn participants_refuses_1001_without_checking_items() {
        let items: Vec<_> = (0..1001).map(|i| participant(i, i as i64)).collect();
        assert_one(
            with("participants", json!(items)),
            "participants",
            "Cannot exceed 1000 participants",
            IssueCode::TooBig,
        );
        let bad: Vec<_> = (0..1001).map(|_| json!("nope")).collect();
        assert_one(
            with("participants", json!(bad)),
            "participants",
            "Cannot exceed 1000 participants",
            IssueCode::TooBig,
        );
    }

    #[test]
    fn participant_must_be_an_object() {
        assert_type(
            with("participants.1", json!("p")),
            "participants.1",
            "object",
            "string",
        );
        assert_type(
            with("participants.0", json!(null)),
            "participants.0",
            "object",
            "null",
        );
        assert_type(
            with("participants.1", json!([])),
            "participants.1",
            "object",
            "array",
        );
    }

    #[test]
    fn participant_id_is_a_required_uuid() {
        let f = "participants.0.participant_id";
        assert_type(without(f), f, "string", "undefined");
        assert_type(with(f, json!(null)), f, "string", "null");
        assert_type(with(f, json!(7)), f, "string", "number");
        assert_one(
            with(f, json!("p1")),
            f,
            "Participant ID must be a valid UUID",
            IssueCode::InvalidFormat,
        );
    }

    #[test]
    fn duplicate_participant_ids_differing_in_case() {
        let upper = pid(0xABC).to_uppercase();
        let body = with("participants.1.participant_id", json!(upper));
        let body = {
            let mut b = body;
            set(&mut b, "participants.0.participant_id", json!(pid(0xABC)));
            b
        };
        assert_one(
            body,
            "participants.1.participant_id",
            &format!("Duplicate participant ID {}", pid(0xABC)),
            IssueCode::InvalidValue,
        );
    }

    #[test]
    fn every_later_duplicate_is_reported() {
        let mut body = valid();
        set(
            &mut body,
            "participants",
            json!([
                participant(5, 0),
                participant(6, 1),
                participant(5, 2),
                participant(5, 3)
            ]),
        );
        let msg = format!("Duplicate participant ID {}", pid(5));
        assert_eq!(
            issues(&body),
            vec![
                issue(
                    "participants.2.participant_id",
                    &msg,
                    IssueCode::InvalidValue
                ),
                issue(
                    "participants.3.participant_id",
                    &msg,
                    IssueCode::InvalidValue
                ),
            ]
        );
    }

    #[test]
    fn participant_index_bounds() {
        let f = "participants.0.participant_index";
        assert_type(without(f), f, "number", "undefined");
        check_bounds(
            |v| {
                let mut b = with(f, v);
                // Keep the other index out of the way of the sort.
                set(&mut b, "participants.1.participant_index", json!(0));
                b
            },
            f,
            (0, 2_147_483_647),
            "Participant index must be non-negative",
            "Participant index cannot exceed 2147483647",
        );
    }

    #[test]
    fn participant_total_time_bounds() {
        let f = "participants.1.total_time_ms";
        assert_type(without(f), f, "number", "undefined");
        assert_type(with(f, json!(null)), f, "number", "null");
        check_bounds(
            |v| with(f, v),
            f,
            (1000, 86_400_000),
            "Total time must be at least 1000ms (1 second)",
            "Total time cannot exceed 86400000ms (24 hours)",
        );
    }

    #[test]
    fn group_id_is_an_optional_uuid() {
        let f = "participants.0.group_id";
        assert_eq!(ok(with(f, json!(null))).participants[0].group_id, None);
        assert_eq!(
            ok(with(f, json!(pid(9).to_uppercase()))).participants[0].group_id,
            Some(pid(9))
        );
        assert_one(
            with(f, json!("team-a")),
            f,
            "Group ID must be a valid UUID",
            IssueCode::InvalidFormat,
        );
        assert_type(with(f, json!(1)), f, "string", "number");
    }

    #[test]
    fn total_time_bounds() {
        let f = "total_time_ms";
        assert_type(without(f), f, "number", "undefined");
        assert_type(with(f, json!(null)), f, "number", "null");
        check_bounds(
            |v| with(f, v),
            f,
            (1000, 86_400_000),
            "Total time must be at least 1000ms (1 second)",
            "Total time cannot exceed 86400000ms (24 hours)",
        );
    }

    #[test]
    fn integral_floats_are_integers() {
        let body: Value = serde_json::from_str(&valid().to_string().replace("120000", "1000.0"))
            .expect("valid JSON");
        assert!(body["total_time_ms"].is_f64());
        assert_eq!(ok(body).total_time_ms, 1000);
        assert_eq!(ok(with("total_time_ms", json!(5e3))).total_time_ms, 5000);
        assert_eq!(ok(with("increment_ms", json!(-0.0))).increment_ms, 0);
    }

    #[test]
    fn time_per_cycle_bounds() {
        let f = "time_per_cycle_ms";
        assert_eq!(ok(with(f, json!(null))).time_per_cycle_ms, None);
        check_bounds(
            |v| with(f, v),
            f,
            (1000, 86_400_000),
            "Time per cycle must be at least 1000ms (1 second)",
            "Time per cycle cannot exceed 86400000ms (24 hours)",
        );
        assert_eq!(ok(with(f, json!(30_000))).time_per_cycle_ms, Some(30_000));
    }

    #[test]
    fn per_cycle_requires_time_per_cycle() {
        let body = with("sync_mode", json!("per_cycle"));
        assert_one(
            body.clone(),
            "time_per_cycle_ms",
            "Time per cycle is required for per_cycle mode",
            IssueCode::InvalidType,
        );
        let mut null = body.clone();
        set(&mut null, "time_per_cycle_ms", json!(null));
        assert_one(
            null,
            "time_per_cycle_ms",
            "Time per cycle is required for per_cycle mode",
            IssueCode::InvalidType,
        );
        let mut given = body;
        set(&mut given, "time_per_cycle_ms", json!(1000));
        let spec = ok(given);
        assert_eq!(spec.sync_mode, SyncMode::PerCycle);
        assert_eq!(spec.time_per_cycle_ms, Some(1000));
    }

    #[test]
    fn increment_bounds_and_default() {
        let f = "increment_ms";
        assert_eq!(ok(valid()).increment_ms, 0);
        assert_eq!(ok(with(f, json!(null))).increment_ms, 0);
        assert_eq!(ok(with(f, json!(0))).increment_ms, 0);
        assert_eq!(ok(with(f, json!(60_000))).increment_ms, 60_000);
        check_bounds(
            |v| with(f, v),
            f,
            (0, 60_000),
            "Increment cannot be negative",
            "Increment cannot exceed 60000ms (1 minute)",
        );
    }

    #[test]
    fn max_time_bounds() {
        let f = "max_time_ms";
        assert_eq!(ok(with(f, json!(null))).max_time_ms, None);
        assert_eq!(ok(with(f, json!(1000))).max_time_ms, Some(1000));
        check_bounds(
            |v| with(f, v),
            f,
            (1000, 86_400_000),
            "Max time must be at least 1000ms (1 second)",
            "Max time cannot exceed 86400000ms (24 hours)",
        );
    }

    /// A metadata object whose compact JSON is exactly `len` bytes.
    fn metadata_of(len: usize) -> Value {
        let v = json!({ "k": "x".repeat(len - r#"{"k":""}"#.len()) });
        assert_eq!(serde_json::to_string(&v).unwrap().len(), len);
        v
    }

    #[test]
    fn metadata_with_nul_is_refused_wherever_it_hides() {
        for body in [
            r#"{"note": "a\u0000b"}"#,
            r#"{"a\u0000": 1}"#,
            r#"{"deep": [{"x": ["\u0000"]}]}"#,
        ] {
            let metadata: Value = serde_json::from_str(body).unwrap();
            let issues = validate_create(&with("metadata", metadata)).unwrap_err();
            assert_eq!(
                issues,
                vec![Issue {
                    field: "metadata".into(),
                    message: "Metadata cannot contain the NUL character (\\u0000)".into(),
                    code: IssueCode::InvalidValue,
                }],
                "{body}"
            );
        }
        // An escaped backslash followed by "u0000" is text, not NUL.
        let text: Value = serde_json::from_str(r#"{"note": "\\u0000"}"#).unwrap();
        assert!(validate_create(&with("metadata", text)).is_ok());
    }

    #[test]
    fn metadata_must_be_an_object() {
        assert_eq!(ok(with("metadata", json!(null))).metadata, None);
        assert_type(with("metadata", json!([1])), "metadata", "object", "array");
        assert_type(
            with("metadata", json!("{}")),
            "metadata",
            "object",
            "string",
        );
        assert_type(with("metadata", json!(3)), "metadata", "object", "number");
        assert_type(
            with("metadata", json!(true)),
            "metadata",
            "object",
            "boolean",
        );
    }

    #[test]
    fn metadata_size_limit() {
        let v = metadata_of(MAX_METADATA_BYTES);
        let spec = ok(with("metadata", v.clone()));
        assert_eq!(
            spec.metadata.as_ref().map(Metadata::get),
            Some(serde_json::to_string(&v).unwrap().as_str())
        );
        for len in [MAX_METADATA_BYTES + 1, 10 * MAX_METADATA_BYTES] {
            assert_one(
                with("metadata", metadata_of(len)),
                "metadata",
                "Metadata cannot exceed 16384 bytes",
                IssueCode::TooBig,
            );
        }
        assert_eq!(
            ok(with("metadata", json!({})))
                .metadata
                .as_ref()
                .map(Metadata::get),
            Some("{}")
        );
    }

    #[test]
    fn cycle_expiry_values() {
        let mut body = with("sync_mode", json!("per_cycle"));
        set(&mut body, "time_per_cycle_ms", json!(5000));
        for (s, e) in [
            ("expire", CycleExpiry::Expire),
            ("auto_advance", CycleExpiry::AutoAdvance),
        ] {
            let mut b = body.clone();
            set(&mut b, "cycle_expiry", json!(s));
            assert_eq!(ok(b).cycle_expiry, Some(e));
        }
        let mut b = body.clone();
        set(&mut b, "cycle_expiry", json!(null));
        assert_eq!(ok(b).cycle_expiry, None);
        let mut b = body.clone();
        set(&mut b, "cycle_expiry", json!("never"));
        assert_one(
            b,
            "cycle_expiry",
            "Invalid cycle expiry. Must be one of: expire, auto_advance",
            IssueCode::InvalidValue,
        );
        let mut b = body;
        set(&mut b, "cycle_expiry", json!(1));
        assert_type(b, "cycle_expiry", "string", "number");
    }

    #[test]
    fn cycle_expiry_only_for_per_cycle() {
        for mode in ["per_participant", "per_group", "global", "count_up"] {
            let mut b = with("sync_mode", json!(mode));
            set(&mut b, "cycle_expiry", json!("expire"));
            assert_one(
                b,
                "cycle_expiry",
                "cycle_expiry applies only to per_cycle mode",
                IssueCode::InvalidValue,
            );
        }
        // A bad value is reported once, as a bad value.
        assert_one(
            with("cycle_expiry", json!("later")),
            "cycle_expiry",
            "Invalid cycle expiry. Must be one of: expire, auto_advance",
            IssueCode::InvalidValue,
        );
        // With an unknown mode only the mode is reported.
        let mut b = with("sync_mode", json!("chess"));
        set(&mut b, "cycle_expiry", json!("expire"));
        assert_eq!(issues(&b).len(), 1);
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let mut body = with("extra", json!({"deep": [1, 2, 3]}));
        set(&mut body, "participants.0.nickname", json!("alice"));
        assert_eq!(ok(body), ok(valid()));
    }

    #[test]
    fn all_issues_are_reported_in_field_order() {
        let body = json!({
            "session_id": "nope",
            "sync_mode": "per_cycle",
            "participants": [
                {"participant_id": pid(1), "participant_index": -1, "total_time_ms": 999,
                 "group_id": "g"},
                7,
                {"participant_id": pid(1).to_uppercase(), "participant_index": 1.5},
            ],
            "total_time_ms": "lots",
            "increment_ms": 60_001,
            "max_time_ms": 86_400_001,
            "metadata": [],
            "cycle_expiry": "sometimes",
        });
        let dup = format!("Duplicate participant ID {}", pid(1));
        assert_eq!(
            issues(&body),
            vec![
                issue(
                    "session_id",
                    "Session ID must be a valid UUID",
                    IssueCode::InvalidFormat
                ),
                issue(
                    "participants.0.participant_index",
                    "Participant index must be non-negative",
                    IssueCode::TooSmall
                ),
                issue(
                    "participants.0.total_time_ms",
                    "Total time must be at least 1000ms (1 second)",
                    IssueCode::TooSmall
                ),
                issue(
                    "participants.0.group_id",
                    "Group ID must be a valid UUID",
                    IssueCode::InvalidFormat
                ),
                issue(
                    "participants.1",
                    "Invalid input: expected object, received number",
                    IssueCode::InvalidType
                ),
                issue(
                    "participants.2.participant_id",
                    &dup,
                    IssueCode::InvalidValue
                ),
                issue(
                    "participants.2.participant_index",
                    "Invalid input: expected int, received number",
                    IssueCode::InvalidType
                ),
                issue(
                    "participants.2.total_time_ms",
                    "Invalid input: expected number, received undefined",
                    IssueCode::InvalidType
                ),
                issue(
                    "total_time_ms",
                    "Invalid input: expected number, received string",
                    IssueCode::InvalidType
                ),
                issue(
                    "time_per_cycle_ms",
                    "Time per cycle is required for per_cycle mode",
                    IssueCode::InvalidType
                ),
                issue(
                    "increment_ms",
                    "Increment cannot exceed 60000ms (1 minute)",
                    IssueCode::TooBig
                ),
                issue(
                    "max_time_ms",
                    "Max time cannot exceed 86400000ms (24 hours)",
                    IssueCode::TooBig
                ),
                issue(
                    "metadata",
                    "Invalid input: expected object, received array",
                    IssueCode::InvalidType
                ),
                issue(
                    "cycle_expiry",
                    "Invalid cycle expiry. Must be one of: expire, auto_advance",
                    IssueCode::InvalidValue
                ),
            ]
        );
    }

    #[test]
    fn empty_object_reports_every_required_field() {
        assert_eq!(
            issues(&json!({})),
            ["session_id", "sync_mode", "participants", "total_time_ms"]
                .iter()
                .zip(["string", "string", "array", "number"])
                .map(|(f, t)| issue(
                    f,
                    &format!("Invalid input: expected {t}, received undefined"),
                    IssueCode::InvalidType
                ))
                .collect::<Vec<_>>()
        );
    }

    /// Field names that matter, so that random objects hit real rules.
    const KEYS: &[&str] = &[
        "session_id",
        "sync_mode",
        "participants",
        "participant_id",
        "participant_index",
        "total_time_ms",
        "group_id",
        "time_per_cycle_ms",
        "increment_ms",
        "max_time_ms",
        "metadata",
        "cycle_expiry",
    ];

    /// Paths of `valid()` a mutation may replace or remove.
    const PATHS: &[&str] = &[
        "session_id",
        "sync_mode",
        "participants",
        "participants.0",
        "participants.0.participant_id",
        "participants.0.participant_index",
        "participants.0.total_time_ms",
        "participants.0.group_id",
        "participants.1.participant_id",
        "participants.1.participant_index",
        "total_time_ms",
        "time_per_cycle_ms",
        "increment_ms",
        "max_time_ms",
        "metadata",
        "cycle_expiry",
    ];

    fn arb_leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            (-100_000i64..100_000_000).prop_map(Value::from),
            (-2.0e6f64..1.0e8).prop_map(Value::from),
            "[ -~]{0,24}".prop_map(Value::String),
            "[0-9a-fA-F-]{36}".prop_map(Value::String),
            Just(json!(SID)),
            prop::sample::select(vec![
                "per_participant",
                "per_cycle",
                "per_group",
                "global",
                "count_up",
                "expire",
                "auto_advance",
            ])
            .prop_map(Value::from),
        ]
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        arb_leaf().prop_recursive(4, 64, 8, |inner| {
            let key = prop_oneof![
                prop::sample::select(KEYS).prop_map(str::to_string),
                "[a-z_]{0,8}",
            ];
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::vec((key, inner), 0..8)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    /// What every outcome must satisfy.
    fn check_outcome(result: Result<CreateSpec, Vec<Issue>>) -> Result<(), TestCaseError> {
        match result {
            Ok(spec) => {
                prop_assert_eq!(parse_uuid(&spec.session_id), Some(spec.session_id.clone()));
                prop_assert!(!spec.participants.is_empty() && spec.participants.len() <= 1000);
                prop_assert!(spec
                    .participants
                    .windows(2)
                    .all(|w| w[0].participant_index <= w[1].participant_index));
                for p in &spec.participants {
                    prop_assert_eq!(
                        parse_uuid(&p.participant_id),
                        Some(p.participant_id.clone())
                    );
                    prop_assert!((1000..=86_400_000).contains(&p.total_time_ms));
                    prop_assert!(p.participant_index >= 0);
                }
                prop_assert!((0..=60_000).contains(&spec.increment_ms));
                if spec.sync_mode == SyncMode::PerCycle {
                    prop_assert!(spec.time_per_cycle_ms.is_some());
                } else {
                    prop_assert!(spec.cycle_expiry.is_none());
                }
            }
            Err(issues) => prop_assert!(!issues.is_empty()),
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_json(v in arb_json()) {
            check_outcome(validate_create(&v))?;
        }

        #[test]
        fn never_panics_on_mutated_bodies(
            mutations in prop::collection::vec(
                (prop::sample::select(PATHS), prop::option::of(arb_json())),
                1..4,
            ),
        ) {
            let mut body = valid();
            for (path, value) in mutations {
                let (parent, key) = parent_and_key(path);
                match (body.pointer_mut(&parent), value) {
                    (Some(Value::Object(m)), Some(v)) => { m.insert(key.to_string(), v); }
                    (Some(Value::Object(m)), None) => { m.remove(key); }
                    (Some(Value::Array(a)), v) => {
                        if let Some(slot) = key.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                            *slot = v.unwrap_or(Value::Null);
                        }
                    }
                    _ => {}
                }
            }
            check_outcome(validate_create(&body))?;
        }
    }

    #[test]
    fn time_controls_are_read_and_refused_by_their_rules() {
        use crate::control::{DelayKind, LagCompensation, Stage, TimeControl};
        let tc = |v: Value| with("time_control", v);
        assert_eq!(
            ok(tc(
                json!({"type": "byoyomi", "periods": 5, "period_ms": 30_000})
            ))
            .time_control,
            Some(TimeControl::Byoyomi {
                periods: 5,
                period_ms: 30_000
            })
        );
        // Fischer is stored as increment_ms: one declaration on the wire.
        let f = ok(tc(json!({"type": "fischer", "increment_ms": 2_000})));
        assert_eq!((f.increment_ms, f.time_control), (2_000, None));
        let s = ok(tc(json!({"type": "stages", "stages": [
            {"moves": 40, "increment_ms": 30_000},
            {"add_ms": 1_800_000, "delay_ms": 5_000, "delay_kind": "simple"}]})));
        assert_eq!(
            s.time_control,
            Some(TimeControl::Stages {
                stages: vec![
                    Stage {
                        moves: Some(40),
                        increment_ms: 30_000,
                        ..Stage::default()
                    },
                    Stage {
                        add_ms: 1_800_000,
                        delay_ms: 5_000,
                        delay_kind: DelayKind::Simple,
                        ..Stage::default()
                    },
                ]
            })
        );
        assert_one(
            tc(json!({"type": "sandglass"})),
            "time_control.type",
            "Invalid time control. Must be one of: fischer, bronstein, simple_delay, byoyomi, canadian, hourglass, stages",
            IssueCode::InvalidValue,
        );
        assert_one(
            tc(json!({"type": "bronstein", "delay_ms": 60_001})),
            "time_control.delay_ms",
            "Delay cannot exceed 60000ms (1 minute)",
            IssueCode::TooBig,
        );
        assert_one(
            tc(json!({"type": "byoyomi", "periods": 0, "period_ms": 30_000})),
            "time_control.periods",
            "Periods must be at least 1",
            IssueCode::TooSmall,
        );
        assert_one(
            tc(json!({"type": "stages", "stages": [{"moves": 40}, {"moves": 10}]})),
            "time_control.stages.1.moves",
            "The last stage lasts to the end: it has no moves",
            IssueCode::InvalidValue,
        );
        assert_one(
            tc(json!({"type": "stages", "stages": [{"add_ms": 5}]})),
            "time_control.stages.0.add_ms",
            "The first stage's time is total_time_ms: it adds nothing",
            IssueCode::InvalidValue,
        );
        assert_one(
            tc(json!({"type": "stages", "stages": [{}, {}]})),
            "time_control.stages.0.moves",
            "Invalid input: expected number, received undefined",
            IssueCode::InvalidType,
        );
        // Both declarations of an increment.
        let mut both = tc(json!({"type": "bronstein", "delay_ms": 2_000}));
        both["increment_ms"] = json!(0);
        assert_one(
            both,
            "increment_ms",
            "Give either increment_ms or time_control, not both",
            IssueCode::InvalidValue,
        );
        // Modes without controls.
        let mut cycle = tc(json!({"type": "bronstein", "delay_ms": 2_000}));
        cycle["sync_mode"] = json!("global");
        assert_one(
            cycle,
            "time_control",
            "time_control applies only to per_participant and per_group mode",
            IssueCode::InvalidValue,
        );
        // Hourglass: two participants, one control.
        let hg = ok(tc(json!({"type": "hourglass"})));
        assert_eq!(hg.time_control, Some(TimeControl::Hourglass));
        let mut three = tc(json!({"type": "hourglass"}));
        three["participants"]
            .as_array_mut()
            .unwrap()
            .push(participant(3, 2));
        assert_one(
            three,
            "time_control",
            "hourglass needs per_participant mode with exactly two participants",
            IssueCode::InvalidValue,
        );
        assert_one(
            with("participants.0.time_control", json!({"type": "hourglass"})),
            "participants.0.time_control",
            "hourglass applies to the session, not to one participant",
            IssueCode::InvalidValue,
        );
        // A participant's own control.
        let own = ok(with(
            "participants.1.time_control",
            json!({"type": "simple_delay", "delay_ms": 5_000}),
        ));
        assert_eq!(
            own.participants[1].time_control,
            Some(TimeControl::SimpleDelay { delay_ms: 5_000 })
        );
        let mut grouped = with("participants.1.time_control", json!({"type": "hourglass"}));
        grouped["sync_mode"] = json!("per_group");
        assert!(issues(&grouped).iter().any(|i| i.message
            == "A participant's own time_control applies only to per_participant mode"));
        // Lag compensation.
        let lag = ok(with(
            "lag_compensation",
            json!({"initial_ms": 500, "gain_ms": 100, "max_ms": 1_000}),
        ));
        assert_eq!(
            lag.lag_compensation,
            Some(LagCompensation {
                initial_ms: 500,
                gain_ms: 100,
                max_ms: 1_000
            })
        );
        assert_one(
            with(
                "lag_compensation",
                json!({"initial_ms": 500, "gain_ms": 100, "max_ms": 100}),
            ),
            "lag_compensation.max_ms",
            "Quota maximum cannot be below the initial quota",
            IssueCode::TooSmall,
        );
        assert_one(
            with(
                "lag_compensation",
                json!({"initial_ms": 500, "gain_ms": 100}),
            ),
            "lag_compensation.max_ms",
            "Invalid input: expected number, received undefined",
            IssueCode::InvalidType,
        );
    }
}
