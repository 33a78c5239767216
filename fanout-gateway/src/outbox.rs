//! A client's outgoing queue: bounded, and coalescing to the newest snapshot
//! per session, so a slow client costs at most one pending snapshot per
//! session it watches plus a short queue of replies, whatever it does.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use synckairos_core::ws::CloseCode;
use synckairos_core::SyncState;
use tokio::sync::Notify;

/// A state rendered once for every client that gets it (a snapshot goes to
/// many sockets; serializing it per socket would multiply the work).
#[derive(Debug)]
pub struct Rendered {
    /// Its version.
    pub version: u64,
    /// When Redis produced it (fan-out latency is measured from here).
    pub server_time_ms: i64,
    /// The API JSON of the state.
    pub json: String,
}

impl Rendered {
    /// Renders `state`.
    pub fn new(state: &SyncState) -> Arc<Rendered> {
        Arc::new(Rendered {
            version: state.version,
            server_time_ms: state.server_time_ms,
            json: state.to_json(),
        })
    }

    /// The `STATE_UPDATE` (or, with `sync`, `STATE_SYNC`) text for
    /// `session_id` at `now`: exactly what `ClientOut` serializes to, with
    /// the state's JSON reused (a session id is a UUID: nothing to escape).
    pub fn message(&self, session_id: &str, now: i64, sync: bool) -> String {
        let kind = if sync { "STATE_SYNC" } else { "STATE_UPDATE" };
        format!(
            r#"{{"type":"{kind}","sessionId":"{session_id}","timestamp":{now},"state":{}}}"#,
            self.json
        )
    }
}

/// A session change for one client.
#[derive(Clone, Debug)]
pub enum Snapshot {
    /// A new state: `STATE_UPDATE`, or `STATE_SYNC` when `sync`.
    State {
        /// The state.
        state: Arc<Rendered>,
        /// Sent as `STATE_SYNC` (on connect, subscribe, resync).
        sync: bool,
    },
    /// `SESSION_DELETED` (final: nothing replaces it).
    Deleted {
        /// Its version.
        version: u64,
    },
}

impl Snapshot {
    /// The version it carries.
    pub fn version(&self) -> u64 {
        match self {
            Snapshot::State { state, .. } => state.version,
            Snapshot::Deleted { version } => *version,
        }
    }
}

/// Something to write to the socket.
#[derive(Debug)]
pub enum Out {
    /// A ready JSON text.
    Text(String),
    /// A `TIME_SYNC` reply, whose `t2` is stamped when it is written.
    TimeSync {
        /// The client's send time.
        t0: i64,
        /// When the request arrived (Redis time).
        t1: i64,
    },
    /// A session's newest change.
    Snapshot(String, Snapshot),
    /// Close the socket (with the code's [`CloseCode::reason`]).
    Close(CloseCode),
    /// The client went away: stop writing.
    Stop,
}

#[derive(Default)]
struct State {
    control: VecDeque<Out>,
    snapshots: VecDeque<(String, Snapshot)>,
    close: Option<CloseCode>,
    stopped: bool,
}

/// What [`Outbox::push_snapshot`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    /// Queued.
    Queued,
    /// Replaced an older pending snapshot of the same session.
    Coalesced,
    /// Dropped: an equal or newer one is already pending.
    Stale,
}

/// One client's queue.
pub struct Outbox {
    state: Mutex<State>,
    notify: Notify,
    max_control: usize,
}

impl Outbox {
    /// A queue holding at most `max_control` replies.
    pub fn new(max_control: usize) -> Outbox {
        Outbox {
            state: Mutex::new(State::default()),
            notify: Notify::new(),
            max_control,
        }
    }

    /// Queues a reply; past the limit the client is closed as too slow
    /// (`false`).
    pub fn push(&self, out: Out) -> bool {
        let mut s = self.state.lock().expect("outbox lock");
        if s.close.is_some() {
            return false;
        }
        if s.control.len() >= self.max_control {
            s.close = Some(CloseCode::TooSlow);
            drop(s);
            self.notify.notify_one();
            return false;
        }
        s.control.push_back(out);
        drop(s);
        self.notify.notify_one();
        true
    }

    /// Queues `snap` for `session_id`, replacing an older pending one.
    pub fn push_snapshot(&self, session_id: &str, snap: Snapshot) -> Pushed {
        let mut s = self.state.lock().expect("outbox lock");
        let pushed = match s.snapshots.iter_mut().find(|(id, _)| id == session_id) {
            Some((_, pending)) => {
                if matches!(pending, Snapshot::Deleted { .. }) || pending.version() > snap.version()
                {
                    return Pushed::Stale;
                }
                // The same version as a sync and as an update: keep one.
                *pending = snap;
                Pushed::Coalesced
            }
            None => {
                s.snapshots.push_back((session_id.to_string(), snap));
                Pushed::Queued
            }
        };
        drop(s);
        self.notify.notify_one();
        pushed
    }

    /// Asks the writer to close the socket (after what is queued).
    pub fn close(&self, code: CloseCode) {
        let mut s = self.state.lock().expect("outbox lock");
        s.close.get_or_insert(code);
        drop(s);
        self.notify.notify_one();
    }

    /// The client went away: the writer stops.
    pub fn stop(&self) {
        self.state.lock().expect("outbox lock").stopped = true;
        self.notify.notify_one();
    }

    /// The next thing to write: replies first, then snapshots, then a close.
    /// A close for being too slow jumps the queue.
    pub fn take(&self) -> Option<Out> {
        let mut s = self.state.lock().expect("outbox lock");
        if s.stopped {
            // The client is gone or going: only a close it was owed is left.
            return Some(match s.close.take() {
                Some(c) => Out::Close(c),
                None => Out::Stop,
            });
        }
        if s.close == Some(CloseCode::TooSlow) {
            s.control.clear();
            s.snapshots.clear();
        }
        if let Some(out) = s.control.pop_front() {
            // (Empty when closing for being too slow: the close jumps the queue.)
            return Some(out);
        }
        if let Some((id, snap)) = s.snapshots.pop_front() {
            return Some(Out::Snapshot(id, snap));
        }
        s.close.map(Out::Close)
    }

    /// Waits until something is queued.
    pub async fn ready(&self) {
        self.notify.notified().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(version: u64) -> Snapshot {
        let mut st: SyncState = serde_json::from_str(SAMPLE).unwrap();
        st.version = version;
        Snapshot::State {
            state: Rendered::new(&st),
            sync: false,
        }
    }

    const SAMPLE: &str = r#"{"session_id":"00000000-0000-4000-8000-000000000001","sync_mode":"per_participant","status":"pending","version":1,"participants":[],"active_participant_id":null,"total_time_ms":60000,"time_per_cycle_ms":null,"cycle_started_at":null,"session_started_at":null,"session_completed_at":null,"increment_ms":0,"created_at":"2026-12-01T19:10:07.707Z","updated_at":"2026-12-01T19:10:07.707Z","server_time_ms":1796152207707,"expires_at":null}"#;

    #[test]
    fn a_rendered_message_is_what_client_out_serializes() {
        let st: SyncState = serde_json::from_str(SAMPLE).unwrap();
        let r = Rendered::new(&st);
        for sync in [false, true] {
            let (session_id, timestamp, state) = (st.session_id.clone(), 42, Box::new(st.clone()));
            let expected = if sync {
                synckairos_core::ws::ClientOut::StateSync {
                    session_id,
                    timestamp,
                    state,
                }
            } else {
                synckairos_core::ws::ClientOut::StateUpdate {
                    session_id,
                    timestamp,
                    state,
                }
            };
            assert_eq!(r.message(&st.session_id, 42, sync), expected.to_json());
        }
    }

    #[test]
    fn snapshots_coalesce_to_the_newest_per_session() {
        let o = Outbox::new(4);
        assert_eq!(o.push_snapshot("a", state(2)), Pushed::Queued);
        assert_eq!(o.push_snapshot("a", state(3)), Pushed::Coalesced);
        assert_eq!(o.push_snapshot("a", state(1)), Pushed::Stale);
        assert_eq!(o.push_snapshot("b", state(9)), Pushed::Queued);
        assert_eq!(
            o.push_snapshot("a", Snapshot::Deleted { version: 4 }),
            Pushed::Coalesced
        );
        assert_eq!(
            o.push_snapshot("a", state(5)),
            Pushed::Stale,
            "deleted is final"
        );
        match o.take() {
            Some(Out::Snapshot(id, Snapshot::Deleted { version: 4 })) => assert_eq!(id, "a"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(o.take(), Some(Out::Snapshot(id, s)) if id == "b" && s.version() == 9));
        assert!(o.take().is_none());
    }

    #[test]
    fn too_many_replies_close_the_client_first() {
        let o = Outbox::new(2);
        assert!(o.push(Out::Text("1".into())));
        assert!(o.push(Out::Text("2".into())));
        o.push_snapshot("a", state(2));
        assert!(!o.push(Out::Text("3".into())));
        assert!(matches!(o.take(), Some(Out::Close(CloseCode::TooSlow))));
        assert!(
            matches!(o.take(), Some(Out::Close(CloseCode::TooSlow))),
            "stays closing"
        );
        assert!(!o.push(Out::Text("4".into())));
    }
}
