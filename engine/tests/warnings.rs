//! Low-time warnings, hand-worked through the Lua scripts on a real
//! redis-server: due exactly `threshold` before the running clock's deadline,
//! once per turn, carried by the deadline ZSET (no extra work while idle), not
//! a transition (no version, no publish), and fired with the command that
//! begins a turn when the turn begins with less time than the threshold.

mod common;

use common::{at, audit_after, body, cmd, conn, create, state, switch, uuid};
use synckairos_core::audit::{AuditEvent, EventType};
use synckairos_core::keys::SessionKeys;
use synckairos_core::model::Reply;
use synckairos_core::script::Settings;
use synckairos_core::{Command, Status};
use synckairos_engine::Engine;
use synckairos_testkit::RedisServer;

const T0: i64 = 1_800_000_000_000;
const S: i64 = 1000;

struct Game {
    e: Engine,
    sid: String,
    keys: SessionKeys,
    conn: redis::aio::MultiplexedConnection,
    last: String,
    _server: RedisServer,
}

impl Game {
    /// Two players with `bank` each; `threshold` in the body if given, and
    /// `default` as the deployment's `LOW_TIME_WARNING_MS`.
    async fn new(bank: i64, threshold: Option<i64>, default: u64) -> Game {
        let server = RedisServer::start();
        let settings = Settings {
            low_time_warning_ms: default,
            ..Settings::default()
        };
        let e = Engine::connect(&server.url(), settings.clone())
            .await
            .unwrap();
        let sid = uuid(0x1_0000 + bank as u128);
        let mut b = body(&sid, "per_participant", 2, bank);
        if let Some(t) = threshold {
            b["low_time_warning_ms"] = t.into();
        }
        at(&e, &create(&b), T0 - S).await;
        let conn = conn(&server).await;
        Game {
            e,
            keys: SessionKeys::new(&sid, settings.shards),
            sid,
            conn,
            last: "0-0".into(),
            _server: server,
        }
    }

    async fn events(&mut self) -> Vec<AuditEvent> {
        let (ev, last) = audit_after(&mut self.conn, &self.keys, &self.last).await;
        self.last = last;
        ev
    }

    async fn warnings(&mut self) -> Vec<AuditEvent> {
        let ev = self.events().await;
        ev.into_iter()
            .filter(|e| e.event_type == EventType::LowTimeWarning)
            .collect()
    }

    async fn wake(&mut self) -> Option<i64> {
        redis::cmd("ZSCORE")
            .arg(&self.keys.deadlines)
            .arg(&self.sid)
            .query_async(&mut self.conn)
            .await
            .expect("ZSCORE")
    }
}

#[tokio::test]
async fn fires_once_per_turn_exactly_at_the_threshold() {
    let mut g = Game::new(60 * S, Some(30 * S), 0).await;
    let st = state(&at(&g.e, &cmd(&g.sid, Command::Start), T0).await).clone();
    assert_eq!(st.low_time_warning_ms, Some(30 * S));
    g.events().await;
    // The scheduler wakes at the warning, not at the fall.
    assert_eq!(g.wake().await, Some(T0 + 30 * S));

    // A millisecond early: nothing.
    let r = at(&g.e, &cmd(&g.sid, Command::Expire), T0 + 30 * S - 1).await;
    assert_eq!(
        r.result,
        Ok(Reply::NotDue {
            status: Status::Running,
            deadline_ms: Some(T0 + 30 * S)
        })
    );
    assert!(g.events().await.is_empty());

    // On time: the warning, at the session's current version; next, the fall.
    let r = at(&g.e, &cmd(&g.sid, Command::Expire), T0 + 30 * S + 3).await;
    assert_eq!(
        r.result,
        Ok(Reply::NotDue {
            status: Status::Running,
            deadline_ms: Some(T0 + 60 * S)
        })
    );
    let w = g.warnings().await;
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].version, st.version);
    assert_eq!(w[0].at_ms, T0 + 30 * S + 3);
    assert_eq!(w[0].warning, Some((T0 + 30 * S, 30 * S)));
    assert!(w[0].state().unwrap().low_time_warned);
    assert_eq!(g.wake().await, Some(T0 + 60 * S));
    let stored = g.e.get(&g.sid).await.unwrap().unwrap();
    assert_eq!(stored.version, st.version, "a warning is not a transition");

    // Once per turn: again, nothing.
    at(&g.e, &cmd(&g.sid, Command::Expire), T0 + 31 * S).await;
    assert!(g.events().await.is_empty());

    // A pause and a resume continue the turn: no second warning.
    at(&g.e, &cmd(&g.sid, Command::Pause), T0 + 40 * S).await;
    let st = state(&at(&g.e, &cmd(&g.sid, Command::Resume), T0 + 50 * S).await).clone();
    assert!(st.low_time_warned);
    assert!(g.warnings().await.is_empty());

    // The switch begins black's turn (60 s): its warning is due 30 s in.
    let st = state(&at(&g.e, &switch(&g.sid), T0 + 55 * S).await).clone();
    assert!(!st.low_time_warned);
    assert!(g.warnings().await.is_empty());
    assert_eq!(g.wake().await, Some(T0 + 85 * S));
    at(&g.e, &cmd(&g.sid, Command::Expire), T0 + 85 * S).await;
    let w = g.warnings().await;
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].warning, Some((T0 + 85 * S, 30 * S)));
    assert_eq!(
        w[0].state().unwrap().active_participant_id,
        st.active_participant_id
    );
}

#[tokio::test]
async fn a_turn_that_begins_below_the_threshold_warns_with_its_command() {
    let mut g = Game::new(20 * S, Some(30 * S), 0).await;
    g.events().await;
    // The start begins white's turn with 20 s: the warning comes with it,
    // after the start's event, at the start's version.
    let st = state(&at(&g.e, &cmd(&g.sid, Command::Start), T0).await).clone();
    assert!(st.low_time_warned);
    let ev = g.events().await;
    let types: Vec<_> = ev.iter().map(|e| e.event_type).collect();
    assert_eq!(
        types,
        [EventType::SessionStarted, EventType::LowTimeWarning],
        "{ev:?}"
    );
    assert_eq!(ev[1].version, st.version);
    assert_eq!(ev[1].warning, Some((T0 + 20 * S - 30 * S, 30 * S)));
    assert_eq!(g.wake().await, Some(T0 + 20 * S));
    // The switch begins black's turn, with 20 s too: warned with the switch.
    at(&g.e, &switch(&g.sid), T0 + 5 * S).await;
    let w = g.warnings().await;
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].at_ms, T0 + 5 * S);
}

#[tokio::test]
async fn the_deployment_default_applies_and_zero_turns_it_off() {
    // No threshold in the body: the deployment's.
    let mut g = Game::new(60 * S, None, 10_000).await;
    let st = state(&at(&g.e, &cmd(&g.sid, Command::Start), T0).await).clone();
    assert_eq!(st.low_time_warning_ms, Some(10_000));
    assert_eq!(g.wake().await, Some(T0 + 50 * S));

    // 0 in the body: none for this session, whatever the deployment says.
    let mut g = Game::new(61 * S, Some(0), 10_000).await;
    let st = state(&at(&g.e, &cmd(&g.sid, Command::Start), T0).await).clone();
    assert_eq!(st.low_time_warning_ms, None);
    assert_eq!(g.wake().await, Some(T0 + 61 * S));
    at(&g.e, &cmd(&g.sid, Command::Expire), T0 + 61 * S).await;
    let ev = g.events().await;
    assert!(ev.iter().all(|e| e.event_type != EventType::LowTimeWarning));
    assert!(ev.iter().any(|e| e.event_type == EventType::SessionExpired));
}

#[tokio::test]
async fn a_late_scheduler_still_warns_before_the_fall_and_never_after() {
    // The scheduler comes after the fall: the session expires; no warning
    // for a turn that is over.
    let mut g = Game::new(60 * S, Some(30 * S), 0).await;
    at(&g.e, &cmd(&g.sid, Command::Start), T0).await;
    g.events().await;
    let r = at(&g.e, &cmd(&g.sid, Command::Expire), T0 + 61 * S).await;
    assert_eq!(state(&r).status, Status::Expired);
    let ev = g.events().await;
    let types: Vec<_> = ev.iter().map(|e| e.event_type).collect();
    assert_eq!(types, [EventType::SessionExpired]);
    assert_eq!(g.wake().await, None);
}
