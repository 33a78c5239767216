//! Time controls: how one participant's clock is charged for a move, when it
//! falls, and what it reads during a turn, for every control a hardware chess
//! clock offers (docs/DESIGN.md §4.1). Pure arithmetic on one participant's
//! [`Clock`]; the model applies it to the bank a participant owns (its own,
//! or its team's in `per_group`) and adds what crosses participants
//! (hourglass, lag compensation).
//!
//! A turn starts at `t = 0`. [`fall_after`] is when the clock falls if no
//! move comes; [`on_move`] charges a move made at `t = elapsed` (which must be
//! before the fall: a later command finds the session expired first);
//! [`live`] is what the clock reads at `t`.
//!
//! The controls, with `main` the bank of main time:
//!
//! | control | falls after | a move at `e` |
//! |---|---|---|
//! | fischer `inc` | `main` | `main − e + inc` |
//! | bronstein `d` | `main` | `main − e + min(d, e)` |
//! | simple delay `d` | `d + main` | `main − max(0, e − d)` |
//! | byo-yomi `n × p` | `main + periods_left × p` | main first; past it, each period used up is gone, the one the move is made in is kept |
//! | canadian `m / p` | `main + p` in main time, `block` after | main first; past it a block of `p` for `m` moves, renewed when they are made |
//! | hourglass | `main` | `main − e` (and the other participant gains `e`) |
//! | stages | as its stage's increment or delay | as the stage's, then after the stage's `moves` the next stage adds its time |

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A delay's kind within a stage.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum DelayKind {
    /// Bronstein: the time used, up to the delay, is given back after the move.
    #[default]
    Bronstein,
    /// Simple (US) delay: the clock waits for the delay before it runs.
    Simple,
}

/// One stage of a multi-stage control (for example 40 moves in 90 min, then
/// 30 min more, each with a 30 s increment).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    /// Moves in this stage; the last stage has none (it lasts to the end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moves: Option<u32>,
    /// Time added to the bank when the stage begins (the first stage's time
    /// is the participant's `total_time_ms`, so it adds nothing; 0 when
    /// omitted).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub add_ms: i64,
    /// Fischer increment of each move in the stage (0 when omitted).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub increment_ms: i64,
    /// Delay of each move in the stage (0 when omitted).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub delay_ms: i64,
    /// The kind of `delay_ms` (`bronstein` when omitted).
    #[serde(default, skip_serializing_if = "is_bronstein")]
    pub delay_kind: DelayKind,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

fn is_bronstein(k: &DelayKind) -> bool {
    *k == DelayKind::Bronstein
}

/// **[ext]** A time control (docs/API.md §4.1).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum TimeControl {
    /// The increment is added after each move.
    Fischer {
        /// Added after each move (ms).
        increment_ms: i64,
    },
    /// The time a move used, up to the delay, is added back after it.
    Bronstein {
        /// The most a move gets back (ms).
        delay_ms: i64,
    },
    /// The clock does not run for the first `delay_ms` of each turn.
    SimpleDelay {
        /// The wait before the clock runs (ms).
        delay_ms: i64,
    },
    /// Main time, then `periods` periods of `period_ms`: a move made inside a
    /// period keeps it; a period that runs out is gone.
    Byoyomi {
        /// Periods after main time.
        periods: u32,
        /// Length of each period (ms).
        period_ms: i64,
    },
    /// Main time, then `moves` moves within `period_ms`, repeating.
    Canadian {
        /// Moves per block.
        moves: u32,
        /// Time per block (ms).
        period_ms: i64,
    },
    /// The time one player uses is added to the other's (two participants).
    Hourglass,
    /// Stages, each with its moves, added time, increment or delay.
    Stages {
        /// The stages, in order; every one but the last has `moves`.
        stages: Vec<Stage>,
    },
}

impl TimeControl {
    /// The compact form the session record keeps (core/src/record.rs; the
    /// Lua reads the same): `f,<inc>`, `b,<delay>`, `s,<delay>`,
    /// `y,<periods>,<period>`, `c,<moves>,<period>`, `h`, or `g` followed by
    /// `;<moves|->,<add>,<inc>,<delay>,<b|s>` per stage.
    pub fn to_compact(&self) -> String {
        match self {
            TimeControl::Fischer { increment_ms } => format!("f,{increment_ms}"),
            TimeControl::Bronstein { delay_ms } => format!("b,{delay_ms}"),
            TimeControl::SimpleDelay { delay_ms } => format!("s,{delay_ms}"),
            TimeControl::Byoyomi { periods, period_ms } => format!("y,{periods},{period_ms}"),
            TimeControl::Canadian { moves, period_ms } => format!("c,{moves},{period_ms}"),
            TimeControl::Hourglass => "h".into(),
            TimeControl::Stages { stages } => {
                let mut out = String::from("g");
                for st in stages {
                    let moves = st.moves.map_or("-".to_string(), |m| m.to_string());
                    let kind = match st.delay_kind {
                        DelayKind::Bronstein => 'b',
                        DelayKind::Simple => 's',
                    };
                    out.push_str(&format!(
                        ";{moves},{},{},{},{kind}",
                        st.add_ms, st.increment_ms, st.delay_ms
                    ));
                }
                out
            }
        }
    }

    /// Reads [`TimeControl::to_compact`]'s form.
    pub fn from_compact(text: &str) -> Option<TimeControl> {
        let mut parts = text.split(';');
        let head: Vec<&str> = parts.next()?.split(',').collect();
        let n = |i: usize| -> Option<i64> { head.get(i)?.parse().ok() };
        let u = |i: usize| -> Option<u32> { head.get(i)?.parse().ok() };
        let c = match *head.first()? {
            "f" => TimeControl::Fischer {
                increment_ms: n(1)?,
            },
            "b" => TimeControl::Bronstein { delay_ms: n(1)? },
            "s" => TimeControl::SimpleDelay { delay_ms: n(1)? },
            "y" => TimeControl::Byoyomi {
                periods: u(1)?,
                period_ms: n(2)?,
            },
            "c" => TimeControl::Canadian {
                moves: u(1)?,
                period_ms: n(2)?,
            },
            "h" => TimeControl::Hourglass,
            "g" => {
                let mut stages = Vec::new();
                for part in parts {
                    let f: Vec<&str> = part.split(',').collect();
                    if f.len() != 5 {
                        return None;
                    }
                    stages.push(Stage {
                        moves: if f[0] == "-" {
                            None
                        } else {
                            Some(f[0].parse().ok()?)
                        },
                        add_ms: f[1].parse().ok()?,
                        increment_ms: f[2].parse().ok()?,
                        delay_ms: f[3].parse().ok()?,
                        delay_kind: match f[4] {
                            "b" => DelayKind::Bronstein,
                            "s" => DelayKind::Simple,
                            _ => return None,
                        },
                    });
                }
                return Some(TimeControl::Stages { stages });
            }
            _ => return None,
        };
        Some(c)
    }

    /// Which of a participant's clock fields this control keeps:
    /// (periods_left, moves_left, stage, overtime).
    pub fn keeps(&self) -> (bool, bool, bool, bool) {
        match self {
            TimeControl::Byoyomi { .. } => (true, false, false, false),
            TimeControl::Canadian { .. } => (false, true, false, true),
            TimeControl::Stages { .. } => (false, true, true, false),
            _ => (false, false, false, false),
        }
    }
}

impl LagCompensation {
    /// The compact form the record keeps: `<initial>,<gain>,<max>`.
    pub fn to_compact(&self) -> String {
        format!("{},{},{}", self.initial_ms, self.gain_ms, self.max_ms)
    }

    /// Reads [`LagCompensation::to_compact`]'s form.
    pub fn from_compact(text: &str) -> Option<LagCompensation> {
        let mut f = text.split(',').map(|x| x.parse::<i64>().ok());
        let l = LagCompensation {
            initial_ms: f.next()??,
            gain_ms: f.next()??,
            max_ms: f.next()??,
        };
        f.next().is_none().then_some(l)
    }
}

/// One participant's clock under a control, at the start of a turn (or at
/// the last checkpoint).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Clock {
    /// Main time left, or in Canadian overtime the time left in the block (ms).
    pub main_ms: i64,
    /// Byo-yomi: periods left.
    pub periods_left: u32,
    /// Canadian: moves left in the block (0 before overtime); stages: moves
    /// left in the stage (0 in the last stage).
    pub moves_left: u32,
    /// Stages: the current stage (0-based).
    pub stage: u32,
    /// Canadian: whether main time is over (blocks have begun).
    pub overtime: bool,
    /// What the running turn has already spent that the control remembers
    /// across a pause: the delay already waited or run (delays), or the time
    /// used of the running byo-yomi period. 0 when a turn starts; so a pause
    /// and a resume continue the turn instead of starting a fresh one.
    pub turn_ms: i64,
}

impl Clock {
    /// The clock at the start of a game with `main_ms` of main time.
    pub fn new(control: &TimeControl, main_ms: i64) -> Clock {
        let mut c = Clock {
            main_ms,
            ..Clock::default()
        };
        match control {
            TimeControl::Byoyomi { periods, .. } => c.periods_left = *periods,
            TimeControl::Stages { stages } => {
                c.moves_left = stages.first().and_then(|s| s.moves).unwrap_or(0);
            }
            _ => {}
        }
        c
    }
}

/// What a move did beyond charging time (the differential tests tally these).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct MoveEvents {
    /// Time given back or not charged because of a delay (ms).
    pub delay_used_ms: i64,
    /// Byo-yomi periods used up by this move.
    pub periods_consumed: u32,
    /// Canadian: main time ran out during this move (blocks begin).
    pub entered_overtime: bool,
    /// Canadian: the block's moves were made and it was renewed.
    pub block_renewed: bool,
    /// Stages: this move finished its stage and the next one began.
    pub stage_advanced: bool,
}

/// The increment and delay a move is charged with, for the controls that
/// have them (the current stage's for `stages`).
fn increment_and_delay(control: &TimeControl, clock: &Clock) -> (i64, i64, DelayKind) {
    match control {
        TimeControl::Fischer { increment_ms } => (*increment_ms, 0, DelayKind::Bronstein),
        TimeControl::Bronstein { delay_ms } => (0, *delay_ms, DelayKind::Bronstein),
        TimeControl::SimpleDelay { delay_ms } => (0, *delay_ms, DelayKind::Simple),
        TimeControl::Stages { stages } => stages
            .get(clock.stage as usize)
            .map_or((0, 0, DelayKind::Bronstein), |s| {
                (s.increment_ms, s.delay_ms, s.delay_kind)
            }),
        _ => (0, 0, DelayKind::Bronstein),
    }
}

/// How long after the turn's start (or its resumption) the clock falls if
/// no move comes (ms).
pub fn fall_after(control: &TimeControl, clock: &Clock) -> i64 {
    match control {
        TimeControl::Byoyomi { period_ms, .. } => {
            clock.main_ms + i64::from(clock.periods_left) * period_ms - clock.turn_ms
        }
        TimeControl::Canadian { period_ms, .. } if !clock.overtime => clock.main_ms + period_ms,
        _ => {
            let (_, delay, kind) = increment_and_delay(control, clock);
            match kind {
                DelayKind::Simple => (delay - clock.turn_ms).max(0) + clock.main_ms,
                DelayKind::Bronstein => clock.main_ms,
            }
        }
    }
}

/// Byo-yomi: charges `e` ms (main time first, then periods from the running
/// one's progress); returns the periods used up and the progress into the
/// period left running.
fn byoyomi_charge(clock: &mut Clock, period_ms: i64, e: i64) -> (u32, i64) {
    if e <= clock.main_ms {
        clock.main_ms -= e;
        return (0, clock.turn_ms);
    }
    let over = e - clock.main_ms + clock.turn_ms;
    clock.main_ms = 0;
    let p = period_ms.max(1);
    let used = u32::try_from(over / p).unwrap_or(u32::MAX);
    let consumed = used.min(clock.periods_left);
    clock.periods_left -= consumed;
    let progress = if clock.periods_left == 0 { 0 } else { over % p };
    (consumed, progress)
}

/// Charges a move made `elapsed` ms into the turn (`elapsed` <
/// [`fall_after`]) and returns what it did.
pub fn on_move(control: &TimeControl, clock: &mut Clock, elapsed: i64) -> MoveEvents {
    let e = elapsed.max(0);
    let mut ev = MoveEvents::default();
    match control {
        TimeControl::Byoyomi { period_ms, .. } => {
            // The period the move is made in is kept: the next turn starts it afresh.
            ev.periods_consumed = byoyomi_charge(clock, *period_ms, e).0;
            clock.turn_ms = 0;
        }
        TimeControl::Canadian { moves, period_ms } => {
            if !clock.overtime {
                if e <= clock.main_ms {
                    clock.main_ms -= e;
                    return ev;
                }
                // Main time ran out during this move: its first block began
                // then, and this move is the block's first.
                ev.entered_overtime = true;
                clock.overtime = true;
                clock.main_ms = period_ms - (e - clock.main_ms);
                clock.moves_left = *moves;
            } else {
                clock.main_ms -= e;
            }
            clock.moves_left = clock.moves_left.saturating_sub(1);
            if clock.moves_left == 0 {
                ev.block_renewed = true;
                clock.main_ms = *period_ms;
                clock.moves_left = *moves;
            }
        }
        TimeControl::Hourglass => clock.main_ms -= e,
        _ => {
            let (increment, delay, kind) = increment_and_delay(control, clock);
            // Over the whole turn (a pause included), the delay shields or
            // gives back at most `delay`.
            let tm = clock.turn_ms;
            ev.delay_used_ms = delay.min(tm + e);
            clock.main_ms -= match kind {
                // The part before a pause was charged then, in full.
                DelayKind::Bronstein => e - ev.delay_used_ms,
                // The part before a pause was charged beyond the delay only.
                DelayKind::Simple => tm + e - ev.delay_used_ms,
            };
            clock.main_ms += increment;
            clock.turn_ms = 0;
            if let TimeControl::Stages { stages } = control {
                if stages[clock.stage as usize].moves.is_some() {
                    clock.moves_left = clock.moves_left.saturating_sub(1);
                    if clock.moves_left == 0 && (clock.stage as usize) + 1 < stages.len() {
                        clock.stage += 1;
                        let next = &stages[clock.stage as usize];
                        clock.main_ms += next.add_ms;
                        clock.moves_left = next.moves.unwrap_or(0);
                        ev.stage_advanced = true;
                    }
                }
            }
        }
    }
    ev
}

/// Charges `elapsed` ms of a turn that ends without a move (a pause, a
/// completion, the fall itself): the time the clock really ran, with no
/// increment, no delay given back and no move counted. A simple delay still
/// shields its first `delay_ms`; byo-yomi loses the periods that ran out
/// (the one running is kept, as for a move); Canadian main time that runs
/// out begins the first block.
pub fn on_stop(control: &TimeControl, clock: &mut Clock, elapsed: i64) {
    let e = elapsed.max(0);
    match control {
        TimeControl::Byoyomi { period_ms, .. } => {
            // The running period's progress is remembered for the resumption.
            clock.turn_ms = byoyomi_charge(clock, *period_ms, e).1;
        }
        TimeControl::Canadian { moves, period_ms } => {
            if clock.overtime || e <= clock.main_ms {
                clock.main_ms -= e;
            } else {
                clock.overtime = true;
                clock.main_ms = period_ms - (e - clock.main_ms);
                clock.moves_left = *moves;
            }
        }
        _ => {
            let (_, delay, kind) = increment_and_delay(control, clock);
            let tm = clock.turn_ms;
            let waited = delay.min(tm + e);
            clock.main_ms -= match kind {
                DelayKind::Simple => tm + e - waited,
                DelayKind::Bronstein => e,
            };
            // The delay run so far goes on after a resume.
            clock.turn_ms = if delay > 0 { waited } else { 0 };
        }
    }
}

/// What a clock reads `t` ms into a turn that is running.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Live {
    /// Main time left (or the Canadian block's time left), never below 0.
    pub main_ms: i64,
    /// The delay still to run before the clock moves (simple delay), or
    /// that a move now would get back in full (Bronstein) (ms).
    pub delay_left_ms: i64,
    /// Byo-yomi: the current period's time left, once main time is over.
    pub period_left_ms: Option<i64>,
    /// Byo-yomi: periods left, the current one included.
    pub periods_left: u32,
    /// Canadian and stages: moves left in the block or stage.
    pub moves_left: u32,
    /// Until the clock falls (ms, never below 0).
    pub until_fall_ms: i64,
}

/// The clock `t` ms into its running turn.
pub fn live(control: &TimeControl, clock: &Clock, t: i64) -> Live {
    let t = t.max(0);
    let until_fall_ms = (fall_after(control, clock) - t).max(0);
    let mut v = Live {
        main_ms: (clock.main_ms - t).max(0),
        periods_left: clock.periods_left,
        moves_left: clock.moves_left,
        until_fall_ms,
        ..Live::default()
    };
    match control {
        TimeControl::Byoyomi { period_ms, .. } if t >= clock.main_ms => {
            let over = t - clock.main_ms + clock.turn_ms;
            let used = u32::try_from(over / period_ms.max(&1)).unwrap_or(u32::MAX);
            v.periods_left = clock.periods_left.saturating_sub(used);
            v.period_left_ms = Some(if v.periods_left == 0 {
                0
            } else {
                period_ms - over % period_ms
            });
        }
        TimeControl::Canadian { moves, period_ms } if !clock.overtime && t > clock.main_ms => {
            v.main_ms = (period_ms - (t - clock.main_ms)).max(0);
            v.moves_left = *moves;
        }
        _ => {
            let (_, delay, kind) = increment_and_delay(control, clock);
            let tm = clock.turn_ms;
            v.delay_left_ms = (delay - tm - t).max(0);
            if kind == DelayKind::Simple {
                v.main_ms = (clock.main_ms - (tm + t - delay).max(0)).max(0);
            }
        }
    }
    v
}

/// Lag compensation (opt in per session): the quota a participant's moves
/// may claim network lag from, as Lichess does it.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LagCompensation {
    /// Each participant's quota at the start (ms).
    pub initial_ms: i64,
    /// Added to the quota after every move, up to `max_ms` (ms).
    pub gain_ms: i64,
    /// The most a quota holds (ms).
    pub max_ms: i64,
}

impl LagCompensation {
    /// For a move claiming `lag_ms` of network delay with `quota` left: the
    /// lag credited, `min(lag, quota)`, and the quota after the move,
    /// `min(quota + gain − credited, max)`.
    pub fn credit(&self, lag_ms: i64, quota: i64) -> (i64, i64) {
        let credited = lag_ms.max(0).min(quota.max(0));
        let quota = (quota + self.gain_ms - credited).min(self.max_ms);
        (credited, quota)
    }
}

#[cfg(test)]
mod tests {
    //! Hand-worked games: each row is one move, its time used, and the
    //! clock after it, as a player with a hardware clock would read it.
    use super::*;

    const S: i64 = 1000;
    const MIN: i64 = 60 * S;

    /// Plays `moves` (elapsed, expected clock after, expected events) from `start`.
    fn game(control: &TimeControl, start: Clock, moves: &[(i64, Clock, MoveEvents)]) {
        let mut c = start;
        for (n, (e, want, events)) in moves.iter().enumerate() {
            assert!(
                *e < fall_after(control, &c),
                "move {} at {e} ms comes before the fall at {}",
                n + 1,
                fall_after(control, &c)
            );
            let got = on_move(control, &mut c, *e);
            assert_eq!(c, *want, "clock after move {}", n + 1);
            assert_eq!(got, *events, "events of move {}", n + 1);
        }
    }

    fn main(ms: i64) -> Clock {
        Clock {
            main_ms: ms,
            ..Clock::default()
        }
    }

    #[test]
    fn bronstein_3_plus_2() {
        let c = TimeControl::Bronstein { delay_ms: 2 * S };
        let start = Clock::new(&c, 3 * MIN);
        assert_eq!(fall_after(&c, &start), 180 * S);
        let back = |ms| MoveEvents {
            delay_used_ms: ms,
            ..MoveEvents::default()
        };
        game(
            &c,
            start,
            &[
                // A move in 1.5 s costs nothing: 1.5 s is given back.
                (1_500, main(180 * S), back(1_500)),
                // 10 s: 2 s back, 8 s charged.
                (10 * S, main(172 * S), back(2 * S)),
                // Exactly the delay: free.
                (2 * S, main(172 * S), back(2 * S)),
            ],
        );
        // During a turn the clock runs at once; the delay is what a move now gets back.
        let l = live(&c, &main(172 * S), 500);
        assert_eq!((l.main_ms, l.delay_left_ms), (171_500, 1_500));
    }

    #[test]
    fn us_delay_5_plus_5() {
        let c = TimeControl::SimpleDelay { delay_ms: 5 * S };
        let start = Clock::new(&c, 5 * MIN);
        // The clock waits 5 s, then runs the 5 min.
        assert_eq!(fall_after(&c, &start), 305 * S);
        let waited = |ms| MoveEvents {
            delay_used_ms: ms,
            ..MoveEvents::default()
        };
        game(
            &c,
            start,
            &[
                (3 * S, main(300 * S), waited(3 * S)),
                (12 * S, main(293 * S), waited(5 * S)),
                (5 * S, main(293 * S), waited(5 * S)),
            ],
        );
        // 2 s into a turn: 3 s of delay left, main untouched; 8 s in: 3 s charged.
        let l = live(&c, &main(293 * S), 2 * S);
        assert_eq!((l.main_ms, l.delay_left_ms), (293 * S, 3 * S));
        let l = live(&c, &main(293 * S), 8 * S);
        assert_eq!(
            (l.main_ms, l.delay_left_ms, l.until_fall_ms),
            (290 * S, 0, 290 * S)
        );
    }

    #[test]
    fn japanese_byoyomi_5_times_30_s() {
        let c = TimeControl::Byoyomi {
            periods: 5,
            period_ms: 30 * S,
        };
        let start = Clock::new(&c, 10 * MIN);
        assert_eq!(start.periods_left, 5);
        assert_eq!(fall_after(&c, &start), 600 * S + 150 * S);
        let at = |main_ms, periods_left| Clock {
            main_ms,
            periods_left,
            ..Clock::default()
        };
        let consumed = |n| MoveEvents {
            periods_consumed: n,
            ..MoveEvents::default()
        };
        game(
            &c,
            start,
            &[
                // 9 min 50 s of thinking: main time 10 s left.
                (590 * S, at(10 * S, 5), MoveEvents::default()),
                // 35 s: main time gone, the move is 25 s into the first period: kept.
                (35 * S, at(0, 5), consumed(0)),
                // 29.9 s: inside the period, kept.
                (29_900, at(0, 5), consumed(0)),
                // 75 s: two periods used up, the move is in the third.
                (75 * S, at(0, 3), consumed(2)),
                // 30 s exactly: the period is used up, the move is in the next.
                (30 * S, at(0, 2), consumed(1)),
            ],
        );
        // Two periods left: it falls 60 s into the turn.
        assert_eq!(fall_after(&c, &at(0, 2)), 60 * S);
        let l = live(&c, &at(0, 2), 40 * S);
        assert_eq!(
            (l.periods_left, l.period_left_ms, l.until_fall_ms),
            (1, Some(20 * S), 20 * S)
        );
        // Still in main time: no period runs yet.
        let l = live(&c, &at(10 * S, 5), 4 * S);
        assert_eq!(
            (l.main_ms, l.period_left_ms, l.periods_left),
            (6 * S, None, 5)
        );
        let l = live(&c, &at(10 * S, 5), 12 * S);
        assert_eq!(
            (l.main_ms, l.period_left_ms, l.periods_left),
            (0, Some(28 * S), 5)
        );
    }

    #[test]
    fn canadian_20_moves_in_5_min() {
        let c = TimeControl::Canadian {
            moves: 20,
            period_ms: 5 * MIN,
        };
        let start = Clock::new(&c, 60 * S);
        // Main time, then a first block of 5 min.
        assert_eq!(fall_after(&c, &start), 360 * S);
        let block = |main_ms, moves_left| Clock {
            main_ms,
            moves_left,
            overtime: true,
            ..Clock::default()
        };
        let mut moves = vec![
            // 50 s of main time.
            (50 * S, main(10 * S), MoveEvents::default()),
            // 25 s: main time ran out 10 s in; the block began then and this
            // move (15 s into it) is its first of 20.
            (
                25 * S,
                block(285 * S, 19),
                MoveEvents {
                    entered_overtime: true,
                    ..MoveEvents::default()
                },
            ),
        ];
        // 18 more moves of 10 s each: 1 move left, 105 s left in the block.
        let mut left = 285 * S;
        for k in 0..18 {
            left -= 10 * S;
            moves.push((10 * S, block(left, 18 - k), MoveEvents::default()));
        }
        assert_eq!(left, 105 * S);
        // The block's 20th move renews it: 5 min for the next 20.
        moves.push((
            100 * S,
            block(300 * S, 20),
            MoveEvents {
                block_renewed: true,
                ..MoveEvents::default()
            },
        ));
        game(&c, start, &moves);
        // In overtime it falls when the block's time runs out.
        assert_eq!(fall_after(&c, &block(105 * S, 1)), 105 * S);
        // In main time the coming block shows once main time is over.
        let l = live(&c, &main(10 * S), 40 * S);
        assert_eq!(
            (l.main_ms, l.moves_left, l.until_fall_ms),
            (270 * S, 20, 270 * S)
        );
    }

    #[test]
    fn fide_90_min_40_moves_then_30_min_with_30_s_increment() {
        let c = TimeControl::Stages {
            stages: vec![
                Stage {
                    moves: Some(40),
                    increment_ms: 30 * S,
                    ..Stage::default()
                },
                Stage {
                    add_ms: 30 * MIN,
                    increment_ms: 30 * S,
                    ..Stage::default()
                },
            ],
        };
        let start = Clock::new(&c, 90 * MIN);
        assert_eq!((start.stage, start.moves_left), (0, 40));
        let mut clock = start;
        // 39 moves of 2 min 10 s: each costs 100 s net (130 − 30).
        for _ in 0..39 {
            on_move(&c, &mut clock, 130 * S);
        }
        assert_eq!(clock.main_ms, 5_400 * S - 39 * 100 * S);
        assert_eq!((clock.stage, clock.moves_left), (0, 1));
        // Move 40 (60 s): +30 s increment, then the second stage adds 30 min.
        let ev = on_move(&c, &mut clock, 60 * S);
        assert!(ev.stage_advanced);
        assert_eq!(clock.main_ms, 1_500 * S - 60 * S + 30 * S + 1_800 * S);
        assert_eq!((clock.stage, clock.moves_left), (1, 0));
        // The last stage has no move count: it goes on with its increment.
        let ev = on_move(&c, &mut clock, 100 * S);
        assert!(!ev.stage_advanced);
        assert_eq!(clock.main_ms, 3_270 * S - 70 * S);
        assert_eq!(fall_after(&c, &clock), 3_200 * S);
    }

    #[test]
    fn stages_carry_their_own_delay() {
        // 20 moves with a 5 s simple delay, then +10 min with a 2 s Bronstein delay.
        let c = TimeControl::Stages {
            stages: vec![
                Stage {
                    moves: Some(2),
                    delay_ms: 5 * S,
                    delay_kind: DelayKind::Simple,
                    ..Stage::default()
                },
                Stage {
                    add_ms: 10 * MIN,
                    delay_ms: 2 * S,
                    ..Stage::default()
                },
            ],
        };
        let mut clock = Clock::new(&c, 60 * S);
        assert_eq!(
            fall_after(&c, &clock),
            65 * S,
            "the simple delay comes first"
        );
        on_move(&c, &mut clock, 8 * S); // 3 s charged
        assert_eq!(clock.main_ms, 57 * S);
        let ev = on_move(&c, &mut clock, 4 * S); // inside the delay: free; stage 2 begins
        assert!(ev.stage_advanced);
        assert_eq!(clock.main_ms, 657 * S);
        assert_eq!(
            fall_after(&c, &clock),
            657 * S,
            "Bronstein: the clock runs at once"
        );
        on_move(&c, &mut clock, 7 * S); // 2 s back
        assert_eq!(clock.main_ms, 652 * S);
    }

    #[test]
    fn fischer_and_hourglass() {
        let f = TimeControl::Fischer {
            increment_ms: 2 * S,
        };
        let mut c = Clock::new(&f, 60 * S);
        on_move(&f, &mut c, 5 * S);
        assert_eq!(c.main_ms, 57 * S);
        assert_eq!(fall_after(&f, &c), 57 * S);
        // Hourglass charges the mover; the model gives the other player the same.
        let h = TimeControl::Hourglass;
        let mut c = Clock::new(&h, 60 * S);
        on_move(&h, &mut c, 5 * S);
        assert_eq!(c.main_ms, 55 * S);
    }

    #[test]
    fn a_turn_stopped_without_a_move_is_charged_what_the_clock_ran() {
        // Bronstein and Fischer: all of it, nothing given back or added.
        for c in [
            TimeControl::Bronstein { delay_ms: 2 * S },
            TimeControl::Fischer {
                increment_ms: 2 * S,
            },
        ] {
            let mut k = Clock::new(&c, 60 * S);
            on_stop(&c, &mut k, 10 * S);
            assert_eq!(k.main_ms, 50 * S, "{c:?}");
        }
        // A simple delay still waits first, once per turn: a pause 3 s in
        // leaves 2 s of it for the resumed turn.
        let c = TimeControl::SimpleDelay { delay_ms: 5 * S };
        let mut k = Clock::new(&c, 60 * S);
        on_stop(&c, &mut k, 3 * S);
        assert_eq!((k.main_ms, k.turn_ms), (60 * S, 3 * S));
        assert_eq!(fall_after(&c, &k), 62 * S);
        on_stop(&c, &mut k, 8 * S);
        assert_eq!((k.main_ms, k.turn_ms), (54 * S, 5 * S));
        // Byo-yomi: whole periods that ran out are gone.
        let c = TimeControl::Byoyomi {
            periods: 3,
            period_ms: 10 * S,
        };
        let mut k = Clock::new(&c, 5 * S);
        on_stop(&c, &mut k, 27 * S);
        // 2 s into the last period, which the resumed turn continues.
        assert_eq!((k.main_ms, k.periods_left, k.turn_ms), (0, 1, 2 * S));
        assert_eq!(fall_after(&c, &k), 8 * S);
        // Canadian: main time that ran out begins a block; no move is counted.
        let c = TimeControl::Canadian {
            moves: 5,
            period_ms: 60 * S,
        };
        let mut k = Clock::new(&c, 10 * S);
        on_stop(&c, &mut k, 25 * S);
        assert_eq!((k.main_ms, k.moves_left, k.overtime), (45 * S, 5, true));
        on_stop(&c, &mut k, 5 * S);
        assert_eq!((k.main_ms, k.moves_left), (40 * S, 5));
        // Stages: no move counted, so no stage change.
        let c = TimeControl::Stages {
            stages: vec![
                Stage {
                    moves: Some(1),
                    ..Stage::default()
                },
                Stage {
                    add_ms: 60 * S,
                    ..Stage::default()
                },
            ],
        };
        let mut k = Clock::new(&c, 30 * S);
        on_stop(&c, &mut k, 10 * S);
        assert_eq!((k.main_ms, k.stage, k.moves_left), (20 * S, 0, 1));
    }

    #[test]
    fn a_pause_and_a_resume_continue_the_turn() {
        // Each control: a 9 s turn in one go, and the same turn paused every
        // 0.9 s, fall at the same time and end alike (a pause earns nothing
        // and costs nothing).
        for c in [
            TimeControl::SimpleDelay { delay_ms: 5 * S },
            TimeControl::Bronstein { delay_ms: 5 * S },
            TimeControl::Byoyomi {
                periods: 3,
                period_ms: 4 * S,
            },
            TimeControl::Canadian {
                moves: 2,
                period_ms: 6 * S,
            },
            TimeControl::Stages {
                stages: vec![
                    Stage {
                        moves: Some(1),
                        delay_ms: 3 * S,
                        delay_kind: DelayKind::Simple,
                        ..Stage::default()
                    },
                    Stage::default(),
                ],
            },
        ] {
            let start = Clock::new(&c, 2 * S);
            let fall = fall_after(&c, &start);
            let mut paused = start;
            let mut t = 0;
            while t < 9 * S && t + 900 < fall {
                // Resumed, the clock falls when the unpaused one would.
                assert_eq!(fall_after(&c, &paused), fall - t, "{c:?} at {t}");
                on_stop(&c, &mut paused, 900);
                t += 900;
            }
            assert_eq!(fall_after(&c, &paused), fall - t, "{c:?} at {t}");
            if t < fall {
                let mut whole = start;
                on_move(&c, &mut whole, t);
                on_move(&c, &mut paused, 0);
                assert_eq!(paused, whole, "{c:?}: the move ends the turn alike");
            }
        }
    }

    #[test]
    fn lag_is_credited_from_a_quota_that_regenerates() {
        // Lichess-like: 0.5 s at the start, +0.1 s a move, at most 1 s.
        let lag = LagCompensation {
            initial_ms: 500,
            gain_ms: 100,
            max_ms: 1_000,
        };
        let mut quota = lag.initial_ms;
        let mut credited = Vec::new();
        for claim in [200, 300, 10_000, 50, 0, 0, 0, 0, 0, 0, 0, 0] {
            let (c, q) = lag.credit(claim, quota);
            credited.push(c);
            quota = q;
        }
        // 500 → 400 → 200; a huge claim gets the 200 left and no more.
        assert_eq!(&credited[..4], &[200, 300, 200, 50]);
        // 100 + 100 − 50 = 150, then eight moves without lag refill it.
        assert_eq!(quota, 950);
        let (_, q) = lag.credit(0, 950);
        assert_eq!(q, 1_000);
        // A negative claim is no claim.
        assert_eq!(lag.credit(-5, 300), (0, 400));
    }

    #[test]
    fn the_compact_form_round_trips() {
        for c in [
            TimeControl::Fischer {
                increment_ms: 2_000,
            },
            TimeControl::Bronstein { delay_ms: 2_000 },
            TimeControl::SimpleDelay { delay_ms: 5_000 },
            TimeControl::Byoyomi {
                periods: 5,
                period_ms: 30_000,
            },
            TimeControl::Canadian {
                moves: 20,
                period_ms: 300_000,
            },
            TimeControl::Hourglass,
            TimeControl::Stages {
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
                ],
            },
        ] {
            assert_eq!(TimeControl::from_compact(&c.to_compact()), Some(c.clone()));
        }
        assert_eq!(
            TimeControl::from_compact("g;40,0,30000,0,b;-,1800000,30000,0,s")
                .map(|c| c.to_compact()),
            Some("g;40,0,30000,0,b;-,1800000,30000,0,s".into())
        );
        assert_eq!(TimeControl::from_compact("x,1"), None);
        let l = LagCompensation {
            initial_ms: 500,
            gain_ms: 100,
            max_ms: 1_000,
        };
        assert_eq!(LagCompensation::from_compact(&l.to_compact()), Some(l));
        assert_eq!(LagCompensation::from_compact("1,2"), None);
    }

    #[test]
    fn the_wire_shape_is_tagged_by_type() {
        let c: TimeControl = serde_json::from_value(serde_json::json!(
            {"type": "byoyomi", "periods": 5, "period_ms": 30000}))
        .unwrap();
        assert_eq!(
            c,
            TimeControl::Byoyomi {
                periods: 5,
                period_ms: 30_000
            }
        );
        let s: TimeControl = serde_json::from_value(serde_json::json!(
            {"type": "stages", "stages": [{"moves": 40, "increment_ms": 30000},
             {"add_ms": 1800000, "increment_ms": 30000}]}))
        .unwrap();
        assert!(matches!(s, TimeControl::Stages { ref stages } if stages.len() == 2));
        assert!(serde_json::from_value::<TimeControl>(
            serde_json::json!({"type": "fischer", "increment_ms": 1, "extra": 1})
        )
        .is_err());
    }
}
