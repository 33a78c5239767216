//! Hand-worked games under time controls, through the Lua scripts on a real
//! redis-server, each with its clock values worked out in the test: the
//! period and stage transitions, and the expiry exactly at the control's
//! deadline (not a millisecond before, applied at it however late the
//! scheduler comes).

mod common;

use common::{at, body, cmd, create, state, switch, uuid};
use serde_json::json;
use synckairos_core::model::Reply;
use synckairos_core::script::Settings;
use synckairos_core::{Command, Status, SyncState};
use synckairos_engine::Engine;
use synckairos_testkit::RedisServer;

const T0: i64 = 1_800_000_000_000;
const S: i64 = 1000;

/// (bank, periods_left, moves_left, stage) of a participant.
type Face = (i64, Option<u32>, Option<u32>, Option<u32>);

fn clocks(st: &SyncState) -> Vec<Face> {
    st.participants
        .iter()
        .map(|p| (p.time_remaining_ms, p.periods_left, p.moves_left, p.stage))
        .collect()
}

/// A two-player session under `control` with `bank` of main time, started at T0.
async fn game(e: &Engine, control: serde_json::Value, bank: i64) -> String {
    let sid = uuid(rand_id());
    let mut b = body(&sid, "per_participant", 2, bank);
    b["time_control"] = control;
    at(e, &create(&b), T0 - 1_000).await;
    at(e, &cmd(&sid, Command::Start), T0).await;
    sid
}

fn rand_id() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

#[tokio::test]
async fn japanese_byoyomi_5_times_30_s_keeps_periods_and_falls_at_the_last() {
    let server = RedisServer::start();
    let e = Engine::connect(&server.url(), Settings::default())
        .await
        .unwrap();
    let sid = game(
        &e,
        json!({"type": "byoyomi", "periods": 5, "period_ms": 30_000}),
        60 * S,
    )
    .await;
    let mut t = T0;
    let mut play = |ms: i64| {
        t += ms;
        t
    };
    // White 50 s (10 s of main time left); black 20 s.
    let st = state(&at(&e, &switch(&sid), play(50 * S)).await).clone();
    assert_eq!(clocks(&st)[0], (10 * S, Some(5), None, None));
    at(&e, &switch(&sid), play(20 * S)).await;
    // White 35 s: main time gone 10 s in; the move is 25 s into its first
    // period, which it keeps.
    let st = state(&at(&e, &switch(&sid), play(35 * S)).await).clone();
    assert_eq!(clocks(&st)[0], (0, Some(5), None, None));
    at(&e, &switch(&sid), play(S)).await;
    // White 95 s: three periods used up, the move is in the fourth.
    let st = state(&at(&e, &switch(&sid), play(95 * S)).await).clone();
    assert_eq!(clocks(&st)[0], (0, Some(2), None, None));
    // Black (39 s of main time) plays; white is left with 2 × 30 s.
    let st = state(&at(&e, &switch(&sid), play(S)).await).clone();
    let turn = t;
    let deadline = turn + 60 * S;
    assert_eq!(
        st.expires_at.map(|x| x.ms()),
        Some(deadline),
        "both periods count"
    );
    // One millisecond before the fall nothing is due; at it, white's clock falls.
    let r = at(&e, &cmd(&sid, Command::Expire), deadline - 1).await;
    assert!(matches!(r.result, Ok(Reply::NotDue { .. })), "{r:?}");
    let r = at(&e, &cmd(&sid, Command::Expire), deadline + 2_500).await;
    let st = state(&r);
    assert_eq!(st.status, Status::Expired);
    assert_eq!(st.session_completed_at.map(|x| x.ms()), Some(deadline));
    assert!(st.participants[0].has_expired);
    assert_eq!(clocks(st)[0], (0, Some(0), None, None));
}

#[tokio::test]
async fn fide_stages_add_30_min_after_move_40_and_canadian_blocks_renew() {
    let server = RedisServer::start();
    let e = Engine::connect(&server.url(), Settings::default())
        .await
        .unwrap();
    // A short FIDE-like control: 2 moves in 60 s with 5 s a move, then +30 s.
    let sid = game(
        &e,
        json!({"type": "stages", "stages": [{"moves": 2, "increment_ms": 5_000},
            {"add_ms": 30_000, "increment_ms": 5_000}]}),
        60 * S,
    )
    .await;
    let mut t = T0;
    for (n, (white_ms, want)) in [
        (10 * S, (55 * S, Some(1), Some(0))),
        // Move 2: 55 − 20 + 5 = 40, then the second stage adds 30 s.
        (20 * S, (70 * S, Some(0), Some(1))),
        (10 * S, (65 * S, Some(0), Some(1))),
    ]
    .into_iter()
    .enumerate()
    {
        t += white_ms;
        let st = state(&at(&e, &switch(&sid), t).await).clone();
        let w = clocks(&st)[0];
        assert_eq!((w.0, w.2, w.3), want, "white's move {}", n + 1);
        t += S;
        at(&e, &switch(&sid), t).await;
    }

    // Canadian 3 moves in 20 s after 10 s of main time.
    let sid = game(
        &e,
        json!({"type": "canadian", "moves": 3, "period_ms": 20_000}),
        10 * S,
    )
    .await;
    let mut t = T0;
    let white = |ms: i64, t: &mut i64| {
        *t += ms;
        *t
    };
    let mut after = Vec::new();
    for ms in [15 * S, 4 * S, 6 * S, 5 * S] {
        let st = state(&at(&e, &switch(&sid), white(ms, &mut t)).await).clone();
        let p = &st.participants[0];
        after.push((p.time_remaining_ms, p.moves_left, p.overtime));
        t += S;
        at(&e, &switch(&sid), t).await;
    }
    assert_eq!(
        after,
        vec![
            // Main time ran out 10 s in; the block began then: 20 − 5 left, 2 moves.
            (15 * S, Some(2), true),
            (11 * S, Some(1), true),
            // The block's third move renews it.
            (20 * S, Some(3), true),
            (15 * S, Some(2), true),
        ]
    );
}

#[tokio::test]
async fn pausing_never_earns_time_the_turn_goes_on_where_it_stopped() {
    let server = RedisServer::start();
    let e = Engine::connect(&server.url(), Settings::default())
        .await
        .unwrap();
    // A US delay of 1 s on a 1 s bank, and byo-yomi 1 s + 1 × 2 s: each
    // clock falls after 2 s and 3 s of running, however often a host
    // pauses it (every 0.9 s here, for 5 s each time).
    for (control, runs_ms) in [
        (json!({"type": "simple_delay", "delay_ms": 1_000}), 2_000),
        (
            json!({"type": "byoyomi", "periods": 1, "period_ms": 2_000}),
            3_000,
        ),
        (json!({"type": "bronstein", "delay_ms": 1_000}), 1_000),
    ] {
        let sid = game(&e, control.clone(), S).await;
        at(&e, &cmd(&sid, Command::Pause), T0).await;
        let (mut t, mut ran) = (T0, 0);
        loop {
            let st = state(&at(&e, &cmd(&sid, Command::Resume), t).await).clone();
            if ran > 0 {
                assert_eq!(
                    st.expires_at.map(|x| x.ms() - t),
                    Some(runs_ms - ran),
                    "{control}: resumed after {ran} ms of running"
                );
            }
            if ran + 900 >= runs_ms {
                break;
            }
            t += 900;
            ran += 900;
            at(&e, &cmd(&sid, Command::Pause), t).await;
            t += 5_000;
        }
        let r = at(&e, &cmd(&sid, Command::Expire), t + runs_ms - ran).await;
        assert_eq!(state(&r).status, Status::Expired, "{control}");
    }
}
