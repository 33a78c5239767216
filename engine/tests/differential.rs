//! Differential property tests: random command sequences with random times go
//! through the Rust reference model and through the Lua scripts on a real
//! redis-server; after every command the replies, the stored state (byte for
//! byte), the audit events, the published message, the deadline ZSET entry
//! the rate-limit window and the tombstone must be identical. Idle limits are
//! small here (3 idle cycles, 40 s idle TTL) so that random cases reach them.
//!
//! `DIFF_CASES` raises the case count (default 256 per mode, the CI minimum).

mod common;

use common::uuid;
use futures::StreamExt;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;
use synckairos_core::audit::ChannelMessage;
use synckairos_core::keys::SessionKeys;
use synckairos_core::model::{self, Ctx, Reply};
use synckairos_core::rate::{self, RateWindow};
use synckairos_core::record;
use synckairos_core::script::{CallOptions, Settings};
use synckairos_core::view::{deadline_ms, wake_at};
use synckairos_core::{Command, DomainError, ExpiryReason, Request, SyncMode, SyncState};
use synckairos_engine::Engine;
use synckairos_testkit::RedisServer;

#[derive(Clone, Debug)]
enum Target {
    Index(usize),
    IndexUpper(usize),
    Unknown,
}

#[derive(Clone, Debug)]
enum Op {
    Create,
    Start,
    Switch(Option<Target>),
    Pause,
    Resume,
    Complete,
    Cancel,
    Expire,
    Delete,
}

#[derive(Clone, Copy, Debug)]
enum Version {
    Any,
    Current,
    Stale,
}

#[derive(Clone, Debug)]
struct Step {
    /// Time to the command; `at_deadline` instead lands at deadline + offset.
    delay_ms: i64,
    at_deadline: Option<i64>,
    op: Op,
    version: Version,
    actor: Actor,
    only_if_active: bool,
}

/// Who sends a command: nobody known, the active participant (in a random
/// letter case), or someone else.
#[derive(Clone, Copy, Debug)]
enum Actor {
    None,
    Active,
    ActiveUpper,
    Other,
}

#[derive(Clone, Debug)]
struct Case {
    body: Value,
    start_ms: i64,
    switch_limit: u64,
    steps: Vec<Step>,
}

fn op() -> impl Strategy<Value = Op> {
    let target = prop_oneof![
        6 => (0usize..8).prop_map(Target::Index),
        1 => (0usize..8).prop_map(Target::IndexUpper),
        1 => Just(Target::Unknown),
    ];
    prop_oneof![
        1 => Just(Op::Create),
        3 => Just(Op::Start),
        8 => Just(Op::Switch(None)),
        3 => target.prop_map(|t| Op::Switch(Some(t))),
        2 => Just(Op::Pause),
        2 => Just(Op::Resume),
        1 => Just(Op::Complete),
        1 => Just(Op::Cancel),
        3 => Just(Op::Expire),
        1 => Just(Op::Delete),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    let delay = prop_oneof![
        4 => 0i64..400,
        4 => 400i64..6_000,
        2 => 6_000i64..45_000,
    ];
    let version = prop_oneof![6 => Just(Version::Any), 2 => Just(Version::Current), 1 => Just(Version::Stale)];
    let at_deadline = prop_oneof![6 => Just(None), 1 => (-1i64..=1).prop_map(Some)];
    let actor = prop_oneof![
        Just(Actor::None),
        Just(Actor::Active),
        Just(Actor::ActiveUpper),
        Just(Actor::Other)
    ];
    (
        delay,
        at_deadline,
        op(),
        version,
        actor,
        prop::bool::weighted(0.3),
    )
        .prop_map(
            |(delay_ms, at_deadline, op, version, actor, only_if_active)| Step {
                delay_ms,
                at_deadline,
                op,
                version,
                actor,
                only_if_active,
            },
        )
}

fn body(mode: SyncMode) -> impl Strategy<Value = Value> {
    let participant = (1000i64..20_000, 0i64..6, prop::option::of(0u128..2));
    (
        any::<u128>(),
        prop::collection::vec(participant, 1..6),
        1000i64..30_000,
        1000i64..12_000,
        prop_oneof![2 => Just(0i64), 1 => 0i64..3_000],
        prop::option::of(1000i64..30_000),
        prop::option::of(prop_oneof![Just("expire"), Just("auto_advance")]),
        prop::option::of(prop_oneof![
            Just(json!({})),
            Just(json!({"room": "a\"b/ü|x\ny", "n": [1, 2.5, null], "z": {"y": true}})),
            Just(json!({"server_time_ms": 1, "metadata": {"x": ",\"server_time_ms\":"}})),
        ]),
    )
        .prop_map(
            move |(sid, ps, total, cycle, increment, max, expiry, metadata)| {
                let participants: Vec<Value> = ps
                    .iter()
                    .enumerate()
                    .map(|(i, (bank, index, group))| {
                        let mut p = json!({"participant_id": uuid(0xbeef_0000 + i as u128),
                            "participant_index": index, "total_time_ms": bank});
                        if let Some(g) = group {
                            p["group_id"] = json!(uuid(0x9000 + g));
                        }
                        p
                    })
                    .collect();
                let mut b = json!({"session_id": uuid(sid), "sync_mode": mode.as_str(),
                    "participants": participants, "total_time_ms": total, "increment_ms": increment});
                if mode == SyncMode::PerCycle {
                    b["time_per_cycle_ms"] = json!(cycle);
                    if let Some(e) = expiry {
                        b["cycle_expiry"] = json!(e);
                    }
                }
                if mode == SyncMode::CountUp {
                    if let Some(m) = max {
                        b["max_time_ms"] = json!(m);
                    }
                }
                if let Some(m) = metadata {
                    b["metadata"] = m;
                }
                b
            },
        )
}

fn case(mode: SyncMode) -> impl Strategy<Value = Case> {
    (
        body(mode),
        1_700_000_000_000i64..1_900_000_000_000,
        prop_oneof![Just(0u64), Just(2), Just(5)],
        prop::collection::vec(step(), 1..40),
    )
        .prop_map(|(body, start_ms, switch_limit, mut steps)| {
            steps.insert(
                0,
                Step {
                    delay_ms: 0,
                    at_deadline: None,
                    op: Op::Create,
                    version: Version::Any,
                    actor: Actor::Other,
                    only_if_active: false,
                },
            );
            Case {
                body,
                start_ms,
                switch_limit,
                steps,
            }
        })
}

#[derive(Default, Debug)]
struct Tally {
    cases: u64,
    commands: u64,
    refused: u64,
    expired: u64,
    auto_advanced: u64,
    settled_then_refused: u64,
    rate_limited: u64,
    conflicts: u64,
    at_deadline: u64,
    not_your_turn: u64,
    idle_cycles_ended: u64,
    idle_timeouts: u64,
    recreate_refused: u64,
    /// `per_cycle` (with `auto_advance` cases) must reach the idle-cycle end.
    needs_idle_cycles: bool,
}

/// The harness's lifetimes: small, so that random cases reach them.
const MAX_IDLE_CYCLES: u32 = 3;
const IDLE_TTL_S: u64 = 40;

fn settings(switch_limit: u64) -> Settings {
    Settings {
        switch_limit,
        max_idle_cycles: MAX_IDLE_CYCLES,
        idle_ttl_s: IDLE_TTL_S,
        ..Settings::default()
    }
}

struct Harness {
    engines: HashMap<u64, Engine>,
    conn: redis::aio::MultiplexedConnection,
    messages: futures::stream::BoxStream<'static, (String, String)>,
    sentinel: u64,
}

fn fail(msg: String) -> TestCaseError {
    TestCaseError::fail(msg)
}

macro_rules! same {
    ($what:expr, $lua:expr, $model:expr, $ctx:expr) => {
        if $lua != $model {
            return Err(fail(format!(
                "{} differ at {}\n lua:   {:?}\n model: {:?}",
                $what, $ctx, $lua, $model
            )));
        }
    };
}

impl Harness {
    async fn new(server: &RedisServer) -> Harness {
        let mut engines = HashMap::new();
        for limit in [0, 2, 5] {
            let settings = settings(limit);
            engines.insert(
                limit,
                Engine::connect(&server.url(), settings)
                    .await
                    .expect("engine"),
            );
        }
        let client = server.client();
        let conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("conn");
        let mut pubsub = client.get_async_pubsub().await.expect("pubsub");
        pubsub.psubscribe("sk:ch:*").await.expect("psubscribe");
        let messages = pubsub
            .into_on_message()
            .map(|m| {
                (
                    m.get_channel_name().to_string(),
                    m.get_payload::<String>().expect("utf-8"),
                )
            })
            .boxed();
        Harness {
            engines,
            conn,
            messages,
            sentinel: 0,
        }
    }

    /// Everything published since the last call, in order (a sentinel publish
    /// marks the end, so "nothing published" is checked too).
    async fn drain_published(&mut self) -> Vec<(String, String)> {
        self.sentinel += 1;
        let mark = self.sentinel.to_string();
        let _: i64 = redis::cmd("PUBLISH")
            .arg("sk:ch:sentinel")
            .arg(&mark)
            .query_async(&mut self.conn)
            .await
            .expect("publish");
        let mut seen = Vec::new();
        loop {
            let m = tokio::time::timeout(Duration::from_secs(5), self.messages.next())
                .await
                .expect("published messages arrive")
                .expect("pubsub open");
            if m.0 == "sk:ch:sentinel" && m.1 == mark {
                return seen;
            }
            seen.push(m);
        }
    }

    async fn run(&mut self, c: &Case, tally: &mut Tally) -> Result<(), TestCaseError> {
        tally.cases += 1;
        // A fresh session per run: shrinking re-runs cases with equal bodies.
        let mut body = c.body.clone();
        body["session_id"] = json!(uuid(0x5e55_0000_0000 + tally.cases as u128));
        let create = common::create(&body);
        let sid = create.session_id.clone();
        let keys = SessionKeys::new(&sid, Settings::default().shards);
        let engine = self.engines[&c.switch_limit].clone();
        let (_, mut last_id) = common::audit_after(&mut self.conn, &keys, "0-0").await;
        self.drain_published().await;

        let mut state: Option<SyncState> = None;
        let mut window: Option<RateWindow> = None;
        let mut tombstone = false;
        let mut now = c.start_ms;
        for (n, s) in c.steps.iter().enumerate() {
            now += s.delay_ms;
            if let (Some(off), Some(d)) = (s.at_deadline, state.as_ref().and_then(deadline_ms)) {
                now = now.max(d + off);
                tally.at_deadline += 1;
            }
            let ids: Vec<String> = state
                .as_ref()
                .map(|st| {
                    st.participants
                        .iter()
                        .map(|p| p.participant_id.clone())
                        .collect()
                })
                .unwrap_or_default();
            let pick = |i: usize| {
                ids.get(i % ids.len().max(1))
                    .cloned()
                    .unwrap_or_else(|| uuid(7))
            };
            let command = match &s.op {
                Op::Create => create.command.clone(),
                Op::Start => Command::Start,
                Op::Switch(t) => Command::Switch {
                    next_participant_id: t.as_ref().map(|t| match t {
                        Target::Index(i) => pick(*i),
                        Target::IndexUpper(i) => pick(*i).to_uppercase(),
                        Target::Unknown => uuid(0xdead),
                    }),
                },
                Op::Pause => Command::Pause,
                Op::Resume => Command::Resume,
                Op::Complete => Command::Complete,
                Op::Cancel => Command::Cancel,
                Op::Expire => Command::Expire,
                Op::Delete => Command::Delete,
            };
            let version = state.as_ref().map_or(1, |st| st.version);
            let req = Request {
                session_id: sid.clone(),
                command,
                expected_version: match s.version {
                    Version::Any => None,
                    Version::Current => Some(version),
                    Version::Stale => Some(version + 7),
                },
                actor: match s.actor {
                    Actor::None => None,
                    Actor::Other => Some(uuid(0xac + n as u128)),
                    Actor::Active | Actor::ActiveUpper => {
                        let active = state
                            .as_ref()
                            .and_then(|st| st.active_participant_id.clone());
                        let id = active.unwrap_or_else(|| uuid(0xac));
                        Some(if matches!(s.actor, Actor::ActiveUpper) {
                            id.to_uppercase()
                        } else {
                            id
                        })
                    }
                },
                only_if_active: s.only_if_active,
            };
            let ctx = Ctx {
                now_ms: now,
                switch_limit: c.switch_limit,
                max_idle_cycles: MAX_IDLE_CYCLES.into(),
                idle_ttl_ms: IDLE_TTL_S as i64 * 1000,
                tombstone,
            };
            let at = format!("step {n} ({:?} at +{} ms)", s.op, now - c.start_ms);

            let expect = model::apply(state.as_ref(), window, &req, &ctx);
            let opts = CallOptions {
                now_ms: Some(now),
                ..CallOptions::default()
            };
            let got = engine
                .execute(&req, &opts)
                .await
                .map_err(|e| fail(format!("engine error at {at}: {e}")))?;

            tally.commands += 1;
            match &expect.reply {
                Err(DomainError::RateLimited { .. }) => tally.rate_limited += 1,
                Err(DomainError::VersionConflict { .. }) => tally.conflicts += 1,
                Err(DomainError::NotYourTurn { .. }) => tally.not_your_turn += 1,
                Err(DomainError::SessionDeleted { .. }) => tally.recreate_refused += 1,
                _ => {}
            }
            if expect.reply.is_err() {
                tally.refused += 1;
                if !expect.events.is_empty() {
                    tally.settled_then_refused += 1;
                }
            }
            for e in &expect.events {
                match e.event_type.as_str() {
                    "session_expired" => {
                        tally.expired += 1;
                        let st = record::decode(&e.snapshot).expect("model record");
                        match st.expiry_reason {
                            Some(ExpiryReason::IdleCycles) => tally.idle_cycles_ended += 1,
                            Some(ExpiryReason::IdleTimeout) => tally.idle_timeouts += 1,
                            _ => {}
                        }
                    }
                    "cycle_expired" => tally.auto_advanced += 1,
                    _ => {}
                }
            }

            same!("replies", &got.result, &expect.reply, at);
            same!("rate headers", got.rate, expect.rate, at);
            same!("replayed flag", got.replayed, false, at);

            let mut conn = self.conn.clone();
            let stored: Option<String> = redis::cmd("GET")
                .arg(&keys.state)
                .query_async(&mut conn)
                .await
                .expect("GET");
            same!(
                "stored record",
                stored,
                expect.state.as_ref().map(record::encode),
                at
            );

            let (events, last) = common::audit_after(&mut conn, &keys, &last_id).await;
            last_id = last;
            same!("audit events", events, expect.events, at);

            let published: Vec<String> = self
                .drain_published()
                .await
                .into_iter()
                .map(|(ch, m)| {
                    assert_eq!(ch, keys.channel);
                    m
                })
                .collect();
            let expected_pub: Vec<String> = expect
                .published
                .iter()
                .map(ChannelMessage::encode)
                .collect();
            same!("published messages", published, expected_pub, at);

            let score: Option<i64> = redis::cmd("ZSCORE")
                .arg(&keys.deadlines)
                .arg(&sid)
                .query_async(&mut conn)
                .await
                .expect("ZSCORE");
            same!(
                "deadline entry",
                score,
                expect
                    .state
                    .as_ref()
                    .and_then(|st| wake_at(st, ctx.idle_ttl_ms)),
                at
            );
            let tomb: bool = redis::cmd("EXISTS")
                .arg(&keys.tombstone)
                .query_async(&mut conn)
                .await
                .expect("EXISTS");
            same!("tombstone", tomb, expect.tombstone, at);

            let rl: Option<String> = redis::cmd("GET")
                .arg(&keys.rate)
                .query_async(&mut conn)
                .await
                .expect("GET rl");
            same!(
                "rate window",
                rl.as_deref().and_then(rate::decode),
                expect.rate_window,
                at
            );

            if let Ok(Reply::State { state: st, .. }) = &expect.reply {
                // The reply's state is the stored one.
                same!(
                    "reply state vs stored",
                    Some(st.as_ref()),
                    expect.state.as_ref(),
                    at
                );
            }
            state = expect.state;
            window = expect.rate_window;
            tombstone = expect.tombstone;
        }
        Ok(())
    }
}

impl Tally {
    /// Whether every path `run_mode` requires has been exercised.
    fn every_path_hit(&self) -> bool {
        self.expired + self.auto_advanced > 0
            && self.rate_limited > 0
            && self.conflicts > 0
            && self.not_your_turn > 0
            && self.at_deadline > 0
            && self.settled_then_refused > 0
            && self.idle_timeouts > 0
            && self.recreate_refused > 0
            && (self.idle_cycles_ended > 0 || !self.needs_idle_cycles)
    }
}

fn cases() -> u32 {
    std::env::var("DIFF_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
        .max(256)
}

fn run_mode(mode: SyncMode) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let server = RedisServer::start();
    let harness = std::cell::RefCell::new(rt.block_on(Harness::new(&server)));
    let tally = std::cell::RefCell::new(Tally {
        needs_idle_cycles: mode == SyncMode::PerCycle,
        ..Tally::default()
    });
    // Batches of random cases until every interesting path below has been
    // hit (rare ones, like a rate limit in `global`, can miss one batch),
    // at most four: the paths must be reached, but by chance, not by a
    // fixed seed that would explore the same cases on every run.
    for _ in 0..4 {
        let mut runner = TestRunner::new(Config {
            cases: cases(),
            failure_persistence: None,
            ..Config::default()
        });
        let result = runner.run(&case(mode), |c| {
            rt.block_on(harness.borrow_mut().run(&c, &mut tally.borrow_mut()))
        });
        if let Err(e) = result {
            panic!("{} differs from the model: {e}", mode.as_str());
        }
        if tally.borrow().every_path_hit() {
            break;
        }
    }
    let tally = tally.into_inner();
    eprintln!("differential {}: {tally:?}", mode.as_str());
    assert!(tally.cases >= 256, "at least 256 cases per mode");
    // The generator must reach the interesting paths, or the test proves little.
    assert!(
        tally.expired + tally.auto_advanced > 0,
        "no expiry exercised: {tally:?}"
    );
    assert!(tally.rate_limited > 0, "no rate limit exercised: {tally:?}");
    assert!(
        tally.conflicts > 0,
        "no version conflict exercised: {tally:?}"
    );
    assert!(
        tally.not_your_turn > 0,
        "no turn check exercised: {tally:?}"
    );
    assert!(tally.at_deadline > 0, "no command at a deadline: {tally:?}");
    assert!(
        tally.settled_then_refused > 0,
        "no settle-then-refuse exercised: {tally:?}"
    );
    assert!(tally.idle_timeouts > 0, "no idle end exercised: {tally:?}");
    assert!(
        tally.recreate_refused > 0,
        "no create of a deleted id exercised: {tally:?}"
    );
    if tally.needs_idle_cycles {
        assert!(
            tally.idle_cycles_ended > 0,
            "no end after idle cycles exercised: {tally:?}"
        );
    }
}

#[test]
fn per_participant_matches_the_model() {
    run_mode(SyncMode::PerParticipant);
}

#[test]
fn per_cycle_matches_the_model() {
    run_mode(SyncMode::PerCycle);
}

#[test]
fn per_group_matches_the_model() {
    run_mode(SyncMode::PerGroup);
}

#[test]
fn global_matches_the_model() {
    run_mode(SyncMode::Global);
}

#[test]
fn count_up_matches_the_model() {
    run_mode(SyncMode::CountUp);
}
