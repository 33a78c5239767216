//! Rebuilding a session that Redis lost from its latest audited snapshot.
//!
//! The restored session gets the next version after the last audited one,
//! so every client and gateway treats it as newer than anything it saw. A
//! session that was running comes back **paused**, its clocks exactly as the
//! last audited event left them: the time Redis was without the session is
//! charged to nobody, and the players resume when they are ready.

use crate::command::{Command, Request};
use crate::model::{self, Ctx, Reply};
use crate::time::Timestamp;
use crate::types::{Status, SyncState};

/// The state to write back: `last` (the snapshot of the latest audited event,
/// whose version was `last_version`) at `now_ms` with version `last_version + 1`.
///
/// ```
/// # use synckairos_core::{model, validate, restore, Command, Request, Status};
/// let body = serde_json::json!({"session_id": "00000000-0000-4000-8000-000000000001",
///     "sync_mode": "per_participant", "total_time_ms": 60000, "participants": [
///     {"participant_id": "00000000-0000-4000-8000-00000000000a", "participant_index": 0, "total_time_ms": 60000},
///     {"participant_id": "00000000-0000-4000-8000-00000000000b", "participant_index": 1, "total_time_ms": 60000}]});
/// let spec = validate::validate_create(&body).unwrap();
/// let id = spec.session_id.clone();
/// let ctx = model::Ctx::at;
/// let st = model::initial_state(&spec, 1_000);
/// let out = model::apply(Some(&st), None, &Request::new(&id, Command::Start), &ctx(2_000));
/// let running = out.state.unwrap();
/// let back = restore::restored_state(&running, running.version, 90_000);
/// assert_eq!(back.status, Status::Paused);
/// assert_eq!(back.version, running.version + 1);
/// assert_eq!(back.participants[0].time_remaining_ms, 60_000); // nothing charged
/// ```
pub fn restored_state(last: &SyncState, last_version: u64, now_ms: i64) -> SyncState {
    let mut st = last.clone();
    if st.status == Status::Running {
        // Pause at the snapshot's own time: charges only what the snapshot
        // already had running (an auto-advanced turn), never the outage.
        let at = last.updated_at.ms();
        let req = Request::new(&last.session_id, Command::Pause);
        let out = model::apply(Some(last), None, &req, &Ctx::at(at));
        if let Ok(Reply::State { state, .. }) = out.reply {
            st = *state;
        }
    }
    st.version = last_version + 1;
    st.updated_at = Timestamp(now_ms);
    st.server_time_ms = now_ms;
    st
}
