//! The domain errors every transport maps to a status and a stable code.

use crate::types::Status;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::fmt;

/// One problem found in a request body (docs/API.md §3, `details[]`).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct Issue {
    /// Dotted path, e.g. `participants.0.total_time_ms` (empty for the body itself).
    pub field: String,
    /// Human-readable message.
    pub message: String,
    /// One of `invalid_type|invalid_format|invalid_value|too_small|too_big`.
    pub code: IssueCode,
}

/// The machine-readable kind of an [`Issue`].
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum IssueCode {
    /// Wrong JSON type, or a required field missing.
    InvalidType,
    /// A string in the wrong format (UUID).
    InvalidFormat,
    /// A value outside an enumeration or otherwise not allowed.
    InvalidValue,
    /// Below a minimum (count or number).
    TooSmall,
    /// Above a maximum (count, number or size).
    TooBig,
}

/// The command a transition error is about, in the words of its message.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// `start`
    Start,
    /// `switch`
    Switch,
    /// `pause`
    Pause,
    /// `resume`
    Resume,
    /// `complete`
    Complete,
    /// `cancel`
    Cancel,
}

impl Action {
    /// Parses a path segment (`start`, `switch`, …).
    pub fn parse(s: &str) -> Option<Action> {
        Some(match s {
            "start" => Action::Start,
            "switch" => Action::Switch,
            "pause" => Action::Pause,
            "resume" => Action::Resume,
            "complete" => Action::Complete,
            "cancel" => Action::Cancel,
            _ => return None,
        })
    }

    /// The path segment and wire name (`start`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Start => "start",
            Action::Switch => "switch",
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Complete => "complete",
            Action::Cancel => "cancel",
        }
    }

    /// The past participle used in messages (`started`, …).
    pub fn past(self) -> &'static str {
        match self {
            Action::Start => "started",
            Action::Switch => "switched",
            Action::Pause => "paused",
            Action::Resume => "resumed",
            Action::Complete => "completed",
            Action::Cancel => "cancelled",
        }
    }
}

/// Everything a command can be refused for.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// The request body broke one or more rules.
    #[error("Request validation failed")]
    Validation(Vec<Issue>),
    /// No session with this id.
    #[error("Session {session_id} not found")]
    SessionNotFound {
        /// The id asked for.
        session_id: String,
    },
    /// `create` with an id that is taken.
    #[error("Session {session_id} already exists")]
    SessionExists {
        /// The id asked for.
        session_id: String,
    },
    /// `create` with the id of a session deleted less than
    /// `TOMBSTONE_TTL_SECONDS` ago.
    #[error("Session {session_id} was deleted recently; its id cannot be reused yet")]
    SessionDeleted {
        /// The id asked for.
        session_id: String,
    },
    /// The command is not allowed in the current status.
    #[error("{}", transition_message(.session_id, *.action, *.status))]
    InvalidTransition {
        /// The session.
        session_id: String,
        /// What was asked.
        action: Action,
        /// The status it is in.
        status: Status,
    },
    /// `switch` named a participant the session does not have.
    #[error("Participant {participant_id} not found in session")]
    ParticipantNotFound {
        /// The id asked for.
        participant_id: String,
    },
    /// The expected version did not match the stored one.
    #[error("Version conflict: expected {expected_version}, actual {actual_version}")]
    VersionConflict {
        /// What the caller expected.
        expected_version: u64,
        /// What is stored.
        actual_version: u64,
    },
    /// The per-session switch limit was hit.
    #[error("Too many requests, retry after {retry_after_seconds} s")]
    RateLimited {
        /// Seconds until the window resets.
        retry_after_seconds: u64,
    },
    /// A participant tried to act while it is not its turn.
    #[error("Participant {participant_id} is not the active participant")]
    NotYourTurn {
        /// The caller.
        participant_id: String,
    },
    /// An idempotency key was reused for a different command, or for the
    /// same command with a different body or caller.
    #[error("Idempotency key was already used for a different request")]
    IdempotencyKeyReused,
}

impl DomainError {
    /// One value of each variant: what the OpenAPI document derives each
    /// operation's error statuses and codes from ([`DomainError::http_status`],
    /// [`DomainError::code`]). A test holds it to every variant.
    pub fn every_kind() -> Vec<DomainError> {
        let id = || "00000000-0000-4000-8000-000000000000".to_string();
        vec![
            DomainError::Validation(Vec::new()),
            DomainError::SessionNotFound { session_id: id() },
            DomainError::SessionExists { session_id: id() },
            DomainError::InvalidTransition {
                session_id: id(),
                action: Action::Start,
                status: Status::Running,
            },
            DomainError::ParticipantNotFound {
                participant_id: id(),
            },
            DomainError::VersionConflict {
                expected_version: 1,
                actual_version: 2,
            },
            DomainError::RateLimited {
                retry_after_seconds: 1,
            },
            DomainError::NotYourTurn {
                participant_id: id(),
            },
            DomainError::IdempotencyKeyReused,
            DomainError::SessionDeleted { session_id: id() },
        ]
    }
}

fn transition_message(session_id: &str, action: Action, status: Status) -> String {
    match action {
        Action::Switch => format!("Session {session_id} not running (current status: {status})"),
        _ => format!(
            "Session {session_id} cannot be {} (current status: {status})",
            action.past()
        ),
    }
}

impl DomainError {
    /// The stable error code of the API (`error.code`).
    pub fn code(&self) -> &'static str {
        match self {
            DomainError::Validation(_) | DomainError::ParticipantNotFound { .. } => {
                "VALIDATION_ERROR"
            }
            DomainError::SessionNotFound { .. } => "SESSION_NOT_FOUND",
            DomainError::SessionExists { .. } => "SESSION_EXISTS",
            DomainError::SessionDeleted { .. } => "SESSION_DELETED",
            DomainError::InvalidTransition { .. } => "INVALID_STATE_TRANSITION",
            DomainError::VersionConflict { .. } => "CONFLICT",
            DomainError::RateLimited { .. } => "RATE_LIMIT_EXCEEDED",
            DomainError::NotYourTurn { .. } => "FORBIDDEN",
            DomainError::IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
        }
    }

    /// The HTTP status this error maps to (shared by every HTTP transport).
    pub fn http_status(&self) -> u16 {
        match self {
            DomainError::Validation(_)
            | DomainError::ParticipantNotFound { .. }
            | DomainError::InvalidTransition { .. } => 400,
            DomainError::SessionNotFound { .. } => 404,
            DomainError::SessionExists { .. }
            | DomainError::SessionDeleted { .. }
            | DomainError::VersionConflict { .. } => 409,
            DomainError::NotYourTurn { .. } => 403,
            DomainError::IdempotencyKeyReused => 422,
            DomainError::RateLimited { .. } => 429,
        }
    }
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// An error and its causes on one line, each cause once (HTTP clients'
/// own messages often leave the cause out: a refused connection, a name
/// that does not resolve, a timeout). For log lines.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The number of arms of [`variant`].
    const VARIANTS: usize = 10;

    /// The position of `e`'s variant. Exhaustive, so a new variant cannot
    /// compile without an arm here (and one more in [`VARIANTS`]), and the
    /// test below then fails until [`DomainError::every_kind`] has it.
    fn variant(e: &DomainError) -> usize {
        match e {
            DomainError::Validation(_) => 0,
            DomainError::SessionNotFound { .. } => 1,
            DomainError::SessionExists { .. } => 2,
            DomainError::InvalidTransition { .. } => 3,
            DomainError::ParticipantNotFound { .. } => 4,
            DomainError::VersionConflict { .. } => 5,
            DomainError::RateLimited { .. } => 6,
            DomainError::NotYourTurn { .. } => 7,
            DomainError::IdempotencyKeyReused => 8,
            DomainError::SessionDeleted { .. } => 9,
        }
    }

    #[test]
    fn every_kind_has_each_variant_once() {
        let seen: Vec<usize> = DomainError::every_kind().iter().map(variant).collect();
        assert_eq!(
            seen,
            (0..VARIANTS).collect::<Vec<_>>(),
            "one of each, in order"
        );
    }

    #[test]
    fn transition_messages_match_the_contract() {
        let e = DomainError::InvalidTransition {
            session_id: "s".into(),
            action: Action::Pause,
            status: Status::Completed,
        };
        assert_eq!(
            e.to_string(),
            "Session s cannot be paused (current status: completed)"
        );
        let e = DomainError::InvalidTransition {
            session_id: "s".into(),
            action: Action::Switch,
            status: Status::Paused,
        };
        assert_eq!(
            e.to_string(),
            "Session s not running (current status: paused)"
        );
    }

    #[test]
    fn chains_name_each_cause_once() {
        #[derive(Debug)]
        struct E(&'static str, Option<Box<E>>);
        impl std::fmt::Display for E {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.0)
            }
        }
        impl std::error::Error for E {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                self.1.as_deref().map(|e| e as _)
            }
        }
        let e = E(
            "request failed",
            Some(Box::new(E(
                "connect: refused",
                Some(Box::new(E("refused", None))),
            ))),
        );
        assert_eq!(super::chain(&e), "request failed: connect: refused");
        assert_eq!(super::chain(&E("alone", None)), "alone");
    }
}
