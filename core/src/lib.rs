//! # synckairos-core
//!
//! The I/O-free heart of SyncKairos: the session state and its exact JSON, the
//! validation of create bodies, the reference model of every command
//! ([`model::apply`]), the live views of a clock, the Redis key layout, the
//! audit event, and the Lua scripts that run every command atomically inside
//! Redis. Nothing here reads a clock or touches a socket: `now_ms` is always a
//! parameter, so the crate builds for `wasm32-unknown-unknown` and native alike.
#![deny(missing_docs)]

pub mod api;
pub mod audit;
pub mod command;
pub mod control;
pub mod devices;
pub mod error;
pub mod keys;
pub mod model;
pub mod openapi;
pub mod prom;
pub mod rate;
pub mod record;
pub mod redact;
pub mod restore;
pub mod script;
pub mod time;
pub mod types;
pub mod validate;
pub mod view;
pub mod ws;

pub use command::{Command, CreateSpec, ParticipantSpec, Request};
pub use error::{Action, DomainError, Issue, IssueCode};
pub use time::Timestamp;
pub use types::{CycleExpiry, ExpiryReason, Metadata, Participant, Status, SyncMode, SyncState};
