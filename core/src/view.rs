//! Live views of a clock at a given `now` (what every client computes).

use crate::control::{self, TimeControl};
use crate::types::{Status, SyncMode, SyncState};

/// Whether participants' banks count down in this session (everything but a
/// `count_up` stopwatch without `max_time_ms`).
pub fn has_bank(st: &SyncState) -> bool {
    st.sync_mode != SyncMode::CountUp || st.max_time_ms.is_some()
}

/// The key that shares a bank in `per_group`: the group id, or the
/// participant's own id when it has none.
pub(crate) fn group_key(st: &SyncState, i: usize) -> &str {
    let p = &st.participants[i];
    p.group_id.as_deref().unwrap_or(&p.participant_id)
}

/// Indexes of the participants whose bank is the same bank as participant `i`'s:
/// only `i` in `per_participant` and `per_cycle`, its group in `per_group`,
/// everyone in `global` and `count_up`.
pub fn bank_sharers(st: &SyncState, i: usize) -> Vec<usize> {
    match st.sync_mode {
        SyncMode::PerParticipant | SyncMode::PerCycle => vec![i],
        SyncMode::PerGroup => {
            let g = group_key(st, i);
            (0..st.participants.len())
                .filter(|&j| group_key(st, j) == g)
                .collect()
        }
        SyncMode::Global | SyncMode::CountUp => (0..st.participants.len()).collect(),
    }
}

/// The time control that runs participant `i`'s clock: its own, else the
/// session's, else Fischer with `increment_ms`. Only `per_participant` and
/// `per_group` have controls (a `per_cycle` turn, the `global` countdown and a
/// stopwatch are charged as they run): `None` for the other modes.
pub fn control_of(st: &SyncState, i: usize) -> Option<TimeControl> {
    if !matches!(st.sync_mode, SyncMode::PerParticipant | SyncMode::PerGroup) {
        return None;
    }
    let p = st.participants.get(i)?;
    Some(
        p.time_control
            .clone()
            .or_else(|| st.time_control.clone())
            .unwrap_or(TimeControl::Fischer {
                increment_ms: st.increment_ms,
            }),
    )
}

/// Participant `i`'s clock as its control sees it.
pub fn clock_of(st: &SyncState, i: usize) -> control::Clock {
    let p = &st.participants[i];
    control::Clock {
        main_ms: p.time_remaining_ms,
        periods_left: p.periods_left.unwrap_or(0),
        moves_left: p.moves_left.unwrap_or(0),
        stage: p.stage.unwrap_or(0),
        overtime: p.overtime,
        turn_ms: p.turn_ms,
    }
}

/// When the running clock runs out if nobody acts (epoch ms), or `None` when
/// nothing is running or the clock has no end. Under a time control it is
/// when the control lets the clock fall ([`control::fall_after`]): delays
/// and byo-yomi periods included, so the scheduler expires it exactly.
pub fn deadline_ms(st: &SyncState) -> Option<i64> {
    if st.status != Status::Running || !has_bank(st) {
        return None;
    }
    let i = st.active_index()?;
    let left = match control_of(st, i) {
        Some(c) => control::fall_after(&c, &clock_of(st, i)),
        None => st.participants[i].time_remaining_ms,
    };
    Some(st.cycle_started_at?.ms() + left)
}

/// When a session ends by itself if nobody acts: its clock's deadline, or,
/// for a live session without one (pending, paused, an uncapped `count_up`),
/// its idle end `updated_at + idle_ttl_ms`. `None` once it has ended. The
/// state key's TTL is counted from it.
pub fn end_at(st: &SyncState, idle_ttl_ms: i64) -> Option<i64> {
    match deadline_ms(st) {
        Some(d) => Some(d),
        None if st.status.is_terminal() => None,
        None => Some(st.updated_at.ms() + idle_ttl_ms),
    }
}

/// When the running turn's low-time warning is due: the clock's deadline
/// minus the session's threshold, until the turn's warning has fired. It
/// is before the turn began when the turn began with less time than the
/// threshold (the warning then fires with the command that began it).
pub fn warn_at(st: &SyncState) -> Option<i64> {
    let threshold = st.low_time_warning_ms.filter(|w| *w > 0)?;
    if st.low_time_warned {
        return None;
    }
    Some(deadline_ms(st)? - threshold)
}

/// When the scheduler must next look at a session: its low-time warning if
/// one is due this turn, else [`end_at`]. `None` once it has ended. This is
/// the score of its entry in the shard's deadline ZSET.
pub fn wake_at(st: &SyncState, idle_ttl_ms: i64) -> Option<i64> {
    warn_at(st).or_else(|| end_at(st, idle_ttl_ms))
}

/// A participant's clock at `now_ms`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Clock {
    /// Whose clock.
    pub participant_id: String,
    /// Bank left now (never below 0). For a `count_up` without a cap, the
    /// stored bank, which does not move.
    pub remaining_ms: i64,
    /// Time used so far, the running turn included.
    pub used_ms: i64,
    /// Whether it is this participant's turn.
    pub is_active: bool,
    /// Whether this participant's time ran out.
    pub has_expired: bool,
    /// Until this clock falls if it runs (live for the active participant;
    /// `None` without a bank).
    pub until_fall_ms: Option<i64>,
    /// The delay still to run in this turn (simple delay), or that a move now
    /// gets back in full (Bronstein); 0 otherwise.
    pub delay_left_ms: i64,
    /// Byo-yomi: the running period's time left, once main time is over.
    pub period_left_ms: Option<i64>,
    /// Byo-yomi: periods left, the running one included.
    pub periods_left: Option<u32>,
    /// Canadian: moves left in the block; stages: moves left in the stage.
    pub moves_left: Option<u32>,
    /// Stages: the current stage (from 0).
    pub stage: Option<u32>,
}

/// Every participant's clock at `now_ms`.
///
/// ```
/// # use synckairos_core::{validate::validate_create, model::{apply, Ctx}, Command, Request};
/// # use synckairos_core::view::clocks;
/// let body = serde_json::json!({"session_id": "00000000-0000-4000-8000-000000000001",
///   "sync_mode": "per_participant", "total_time_ms": 60000, "participants": [
///   {"participant_id": "00000000-0000-4000-8000-0000000000a1", "participant_index": 0, "total_time_ms": 60000},
///   {"participant_id": "00000000-0000-4000-8000-0000000000a2", "participant_index": 1, "total_time_ms": 60000}]});
/// let spec = validate_create(&body).unwrap();
/// let id = spec.session_id.clone();
/// let ctx = Ctx::at;
/// let created = apply(None, None, &Request::new(&id, Command::Create(Box::new(spec))), &ctx(1_000)).state;
/// let started = apply(created.as_ref(), None, &Request::new(&id, Command::Start), &ctx(2_000)).state.unwrap();
/// let c = clocks(&started, 12_000);
/// assert_eq!(c[0].remaining_ms, 50_000);
/// assert_eq!(c[0].used_ms, 10_000);
/// assert_eq!(c[1].remaining_ms, 60_000);
/// ```
pub fn clocks(st: &SyncState, now_ms: i64) -> Vec<Clock> {
    let running = match (st.status, st.active_index(), st.cycle_started_at) {
        (Status::Running, Some(i), Some(cs)) => Some((i, (now_ms - cs.ms()).max(0))),
        _ => None,
    };
    let sharers = running
        .map(|(i, _)| bank_sharers(st, i))
        .unwrap_or_default();
    let elapsed = running.map_or(0, |(_, e)| e);
    // Hourglass: what the running clock uses goes to the other one.
    let hourglass = running
        .filter(|&(i, _)| control_of(st, i) == Some(TimeControl::Hourglass))
        .map(|(i, _)| 1 - i);
    st.participants
        .iter()
        .enumerate()
        .map(|(j, p)| {
            let live = has_bank(st) && sharers.contains(&j);
            let control = control_of(st, j);
            let at = if live { elapsed } else { 0 };
            let view = control
                .as_ref()
                .map(|c| control::live(c, &clock_of(st, j), at));
            let mut remaining_ms = match (&view, live) {
                (Some(v), _) => v.main_ms,
                (None, true) => (p.time_remaining_ms - elapsed).max(0),
                (None, false) => p.time_remaining_ms,
            };
            if hourglass == Some(j) {
                remaining_ms += elapsed;
            }
            Clock {
                participant_id: p.participant_id.clone(),
                remaining_ms,
                used_ms: p.time_used_ms
                    + if running.map(|(i, _)| i) == Some(j) {
                        elapsed
                    } else {
                        0
                    },
                is_active: p.is_active,
                has_expired: p.has_expired,
                until_fall_ms: match &view {
                    Some(v) => {
                        Some(v.until_fall_ms + if hourglass == Some(j) { elapsed } else { 0 })
                    }
                    None if has_bank(st) => Some(remaining_ms),
                    None => None,
                },
                delay_left_ms: view.filter(|_| live).map_or(0, |v| v.delay_left_ms),
                period_left_ms: view.and_then(|v| v.period_left_ms),
                periods_left: p.periods_left.and(view.map(|v| v.periods_left)),
                moves_left: p.moves_left.and(view.map(|v| v.moves_left)),
                stage: p.stage,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{apply, Ctx};
    use crate::{validate::validate_create, Command, Request};
    use serde_json::json;

    const A: &str = "00000000-0000-4000-8000-0000000000a1";
    const B: &str = "00000000-0000-4000-8000-0000000000a2";

    /// A two-player session under `control`, started at t = 1000.
    fn started(control: serde_json::Value, bank: i64) -> SyncState {
        let body = json!({"session_id": "00000000-0000-4000-8000-000000000001",
            "sync_mode": "per_participant", "total_time_ms": bank, "time_control": control,
            "participants": [
                {"participant_id": A, "participant_index": 0, "total_time_ms": bank},
                {"participant_id": B, "participant_index": 1, "total_time_ms": bank}]});
        let spec = validate_create(&body).expect("valid");
        let id = spec.session_id.clone();
        let created = apply(
            None,
            None,
            &Request::new(&id, Command::Create(Box::new(spec))),
            &Ctx::at(0),
        )
        .state
        .expect("created");
        apply(
            Some(&created),
            None,
            &Request::new(&id, Command::Start),
            &Ctx::at(1_000),
        )
        .state
        .expect("started")
    }

    #[test]
    fn byoyomi_shows_the_running_period_and_falls_at_the_last() {
        let st = started(
            json!({"type": "byoyomi", "periods": 3, "period_ms": 10_000}),
            5_000,
        );
        assert_eq!(deadline_ms(&st), Some(1_000 + 5_000 + 30_000));
        let c = &clocks(&st, 1_000 + 17_000)[0];
        // Main time over 12 s ago: the first period ran out, 8 s left in the second.
        assert_eq!(
            (
                c.remaining_ms,
                c.periods_left,
                c.period_left_ms,
                c.until_fall_ms
            ),
            (0, Some(2), Some(8_000), Some(18_000))
        );
        // The waiting player's periods are all there.
        assert_eq!(clocks(&st, 18_000)[1].periods_left, Some(3));
    }

    #[test]
    fn a_simple_delay_holds_the_clock_and_hourglass_fills_the_other() {
        let st = started(json!({"type": "simple_delay", "delay_ms": 5_000}), 60_000);
        let c = &clocks(&st, 1_000 + 3_000)[0];
        assert_eq!(
            (c.remaining_ms, c.delay_left_ms, c.until_fall_ms),
            (60_000, 2_000, Some(62_000))
        );
        let c = &clocks(&st, 1_000 + 9_000)[0];
        assert_eq!((c.remaining_ms, c.delay_left_ms), (56_000, 0));
        assert_eq!(deadline_ms(&st), Some(1_000 + 65_000));

        let st = started(json!({"type": "hourglass"}), 60_000);
        let c = clocks(&st, 1_000 + 7_000);
        assert_eq!((c[0].remaining_ms, c[1].remaining_ms), (53_000, 67_000));
    }
}
