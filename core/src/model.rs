//! The reference model: what every command does, as a pure function.
//!
//! The Lua scripts in `core/lua/` implement exactly this; property tests run
//! random command sequences through both and require equal states, replies,
//! audit events and published messages. A behaviour change touches both.
//!
//! Order of checks in every command (the scripts follow it too):
//! 1. existence (`create`: absence, and no tombstone of a deleted session
//!    with this id), 2. expected version, 3. whose turn it
//!    is (only with [`Request::only_if_active`]), 4. the switch rate limit,
//!    5. **settle**: a running session whose deadline has passed is first
//!    expired at its deadline (or, `per_cycle` with `auto_advance`, its
//!    timed-out turns are passed on, until [`Ctx::max_idle_cycles`] turns in a
//!    row have run out with no command: then it expires), and a live session
//!    without a deadline that has seen no command for [`Ctx::idle_ttl_ms`]
//!    expires at that idle end, 6. the command itself.
//!
//! A `switch` that arrives after the deadline does not switch: it returns the
//! settled state with `expired_participant_id`. Any other command is applied
//! to the settled state, so e.g. `pause` after an expiry is refused with
//! `INVALID_STATE_TRANSITION (current status: expired)` while the expiry itself
//! is kept.

use crate::audit::{AuditEvent, ChannelMessage, EventType};
use crate::command::{Command, CreateSpec, Request};
use crate::control::{self, TimeControl};
use crate::error::{Action, DomainError};
use crate::rate::{self, RateInfo, RateWindow};
use crate::record;
use crate::time::Timestamp;
use crate::types::{CycleExpiry, ExpiryReason, Participant, Status, SyncMode, SyncState};
use crate::view::{
    bank_sharers, clock_of, control_of, deadline_ms, end_at, group_key, has_bank, wake_at, warn_at,
};

/// Inputs that are not part of the stored state.
#[derive(Clone, Copy, Debug)]
pub struct Ctx {
    /// Redis time of the command (epoch ms).
    pub now_ms: i64,
    /// Switches allowed per session per second; 0 = unlimited.
    pub switch_limit: u64,
    /// `per_cycle` + `auto_advance`: the session expires when this many turns
    /// in a row have run out with no command; 0 = never.
    pub max_idle_cycles: i64,
    /// A live session without a deadline expires this long after its last
    /// command (ms).
    pub idle_ttl_ms: i64,
    /// Whether a tombstone of a deleted session with this id lives.
    pub tombstone: bool,
    /// The deployment's low-time warning threshold (ms, 0 = none): what
    /// `create` stores when the request names none.
    pub low_time_warning_ms: u64,
}

impl Ctx {
    /// A context at `now_ms` with the deployment defaults
    /// ([`crate::script::Settings::default`]).
    pub fn at(now_ms: i64) -> Ctx {
        let s = crate::script::Settings::default();
        Ctx {
            now_ms,
            switch_limit: 0,
            max_idle_cycles: s.max_idle_cycles as i64,
            idle_ttl_ms: s.idle_ttl_s as i64 * 1000,
            tombstone: false,
            low_time_warning_ms: s.low_time_warning_ms,
        }
    }
}

/// A successful reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// The session after the command.
    State {
        /// The stored state.
        state: Box<SyncState>,
        /// The participant whose time ran out during this call, if any.
        expired_participant_id: Option<String>,
    },
    /// `delete`: whether there was a session to delete.
    Deleted {
        /// False when the session did not exist (still a success).
        existed: bool,
    },
    /// `expire` found nothing to do.
    NotDue {
        /// Current status.
        status: Status,
        /// Current deadline, if running with one.
        deadline_ms: Option<i64>,
    },
}

/// Everything one command call does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The stored state after the call (`None`: no session).
    pub state: Option<SyncState>,
    /// The rate-limit window after the call.
    pub rate_window: Option<RateWindow>,
    /// Audit events appended, in order (0, 1 or 2: a settle and the command).
    pub events: Vec<AuditEvent>,
    /// The message published on the session's channel, if any.
    pub published: Option<ChannelMessage>,
    /// The reply.
    pub reply: Result<Reply, DomainError>,
    /// Rate-limit header values (switch only, when a limit is set).
    pub rate: Option<RateInfo>,
    /// Whether a tombstone of the id lives after the call (`delete` leaves one).
    pub tombstone: bool,
}

/// Applies `req` to the stored state at `ctx.now_ms`.
pub fn apply(
    stored: Option<&SyncState>,
    rate_window: Option<RateWindow>,
    req: &Request,
    ctx: &Ctx,
) -> Outcome {
    let mut out = Outcome {
        state: stored.cloned(),
        rate_window,
        events: Vec::new(),
        published: None,
        reply: Ok(Reply::Deleted { existed: false }),
        rate: None,
        tombstone: ctx.tombstone,
    };
    let now = ctx.now_ms;
    let event = |t: EventType, st: &SyncState, version: u64| AuditEvent {
        event_type: t,
        session_id: st.session_id.clone(),
        version,
        at_ms: now,
        actor: req.actor.clone(),
        lag: None,
        warning: None,
        snapshot: record::encode(st),
    };
    let mut lag = None;

    match &req.command {
        Command::Create(spec) => {
            if stored.is_some() {
                out.reply = Err(DomainError::SessionExists {
                    session_id: req.session_id.clone(),
                });
                return out;
            }
            if ctx.tombstone {
                out.reply = Err(DomainError::SessionDeleted {
                    session_id: req.session_id.clone(),
                });
                return out;
            }
            let spec = spec.as_ref().clone();
            let st = initial_state(&spec.with_low_time_default(ctx.low_time_warning_ms), now);
            out.events.push(event(EventType::SessionCreated, &st, 1));
            out.published = Some(ChannelMessage::State(record::encode(&st)));
            out.reply = Ok(Reply::State {
                state: Box::new(st.clone()),
                expired_participant_id: None,
            });
            out.state = Some(st);
            return out;
        }
        Command::Delete => {
            if let Some(st) = stored {
                out.events
                    .push(event(EventType::SessionDeleted, st, st.version + 1));
                out.published = Some(ChannelMessage::Deleted {
                    session_id: st.session_id.clone(),
                    version: st.version + 1,
                    server_time_ms: now,
                });
                out.state = None;
                out.rate_window = None;
                out.tombstone = true;
            }
            out.reply = Ok(Reply::Deleted {
                existed: stored.is_some(),
            });
            return out;
        }
        _ => {}
    }

    let Some(stored) = stored else {
        out.reply = Err(DomainError::SessionNotFound {
            session_id: req.session_id.clone(),
        });
        return out;
    };
    if let Some(expected) = req.expected_version {
        if expected != stored.version {
            out.reply = Err(DomainError::VersionConflict {
                expected_version: expected,
                actual_version: stored.version,
            });
            return out;
        }
    }
    if req.only_if_active {
        if let Some(active) = stored.active_participant_id.as_deref() {
            let actor = req.actor.as_deref().unwrap_or("");
            if !actor.eq_ignore_ascii_case(active) {
                out.reply = Err(DomainError::NotYourTurn {
                    participant_id: actor.to_string(),
                });
                return out;
            }
        }
    }
    if matches!(req.command, Command::Switch { .. }) && ctx.switch_limit > 0 {
        let (w, info, allowed) = rate::check(rate_window, now, ctx.switch_limit);
        out.rate_window = Some(w);
        out.rate = Some(info);
        if !allowed {
            out.reply = Err(DomainError::RateLimited {
                retry_after_seconds: info.reset_seconds,
            });
            return out;
        }
    }

    let mut st = stored.clone();
    let mut changed = false;
    let settled = settle(&mut st, now, ctx);
    if let Some((t, _)) = &settled {
        bump(&mut st, now);
        out.events.push(event(*t, &st, st.version));
        changed = true;
    }

    let result: Result<Option<EventType>, DomainError> = match &req.command {
        Command::Expire => Ok(None),
        Command::Switch { .. } if settled.is_some() => Ok(None),
        Command::Switch {
            next_participant_id,
        } => switch(
            &mut st,
            next_participant_id.as_deref(),
            req.lag_ms,
            &mut lag,
            now,
        )
        .map(Some),
        Command::Start => start(&mut st, now).map(Some),
        Command::Pause => pause(&mut st, now).map(Some),
        Command::Resume => resume(&mut st, now).map(Some),
        Command::Complete => finish(&mut st, now, Action::Complete).map(Some),
        Command::Cancel => finish(&mut st, now, Action::Cancel).map(Some),
        Command::Create(_) | Command::Delete => unreachable!("handled above"),
    };
    let result = match result {
        Ok(Some(t)) => {
            st.idle_cycles = 0;
            bump(&mut st, now);
            out.events.push(AuditEvent {
                lag,
                ..event(t, &st, st.version)
            });
            changed = true;
            Ok(())
        }
        Ok(None) => Ok(()),
        Err(e) => Err(e),
    };
    // After every call that got this far: the running turn's low-time
    // warning, if it is due and has not fired. It is not a transition (no
    // version, no publish), but the state stores that it fired.
    let mut warned = false;
    if let Some(due) = warn_at(&st).filter(|d| *d <= now) {
        st.low_time_warned = true;
        out.events.push(AuditEvent {
            warning: Some((due, st.low_time_warning_ms.unwrap_or(0))),
            ..event(EventType::LowTimeWarning, &st, st.version)
        });
        warned = true;
    }
    out.reply = match (&req.command, result) {
        (Command::Expire, _) if settled.is_none() => Ok(Reply::NotDue {
            status: st.status,
            deadline_ms: wake_at(&st, ctx.idle_ttl_ms),
        }),
        (_, Ok(())) => Ok(Reply::State {
            state: Box::new(st.clone()),
            expired_participant_id: settled.and_then(|(_, p)| p),
        }),
        (_, Err(e)) => Err(e),
    };
    if changed {
        out.published = Some(ChannelMessage::State(record::encode(&st)));
    }
    if changed || warned {
        out.state = Some(st);
    }
    out
}

/// The state `create` stores. Banks start as each mode needs them:
/// `per_cycle` → `time_per_cycle_ms`; `per_group` → the bank of the group's
/// first participant; `global` → the session's `total_time_ms`; `count_up`
/// with a cap → `max_time_ms`; otherwise the participant's own `total_time_ms`.
pub fn initial_state(spec: &CreateSpec, now: i64) -> SyncState {
    let mut participants: Vec<Participant> = spec
        .participants
        .iter()
        .map(|p| Participant {
            participant_id: p.participant_id.clone(),
            participant_index: p.participant_index,
            total_time_ms: p.total_time_ms,
            time_used_ms: 0,
            time_remaining_ms: p.total_time_ms,
            cycle_count: 0,
            is_active: false,
            has_expired: false,
            group_id: p.group_id.clone(),
            time_control: p.time_control.clone(),
            periods_left: None,
            moves_left: None,
            stage: None,
            overtime: false,
            turn_ms: 0,
            lag_quota_ms: None,
        })
        .collect();
    for i in 0..participants.len() {
        let bank = match spec.sync_mode {
            SyncMode::PerParticipant => participants[i].total_time_ms,
            SyncMode::PerCycle => spec.time_per_cycle_ms.unwrap_or(spec.total_time_ms),
            SyncMode::PerGroup => {
                let key = |p: &Participant| p.group_id.clone().unwrap_or(p.participant_id.clone());
                let k = key(&participants[i]);
                participants
                    .iter()
                    .find(|p| key(p) == k)
                    .map_or(participants[i].total_time_ms, |p| p.total_time_ms)
            }
            SyncMode::Global => spec.total_time_ms,
            SyncMode::CountUp => spec.max_time_ms.unwrap_or(participants[i].total_time_ms),
        };
        participants[i].total_time_ms = bank;
        participants[i].time_remaining_ms = bank;
        participants[i].lag_quota_ms = spec.lag_compensation.map(|l| l.initial_ms);
    }
    let mut st = SyncState {
        session_id: spec.session_id.clone(),
        sync_mode: spec.sync_mode,
        status: Status::Pending,
        version: 1,
        participants,
        active_participant_id: None,
        total_time_ms: spec.total_time_ms,
        time_per_cycle_ms: spec.time_per_cycle_ms,
        cycle_started_at: None,
        session_started_at: None,
        session_completed_at: None,
        increment_ms: spec.increment_ms,
        max_time_ms: spec.max_time_ms,
        created_at: Timestamp(now),
        updated_at: Timestamp(now),
        metadata: spec.metadata.clone(),
        server_time_ms: now,
        expires_at: None,
        cycle_expiry: spec.cycle_expiry,
        idle_cycles: 0,
        expiry_reason: None,
        time_control: spec.time_control.clone(),
        lag_compensation: spec.lag_compensation,
        low_time_warning_ms: spec.low_time_warning_ms.filter(|w| *w > 0),
        low_time_warned: false,
    };
    for i in 0..st.participants.len() {
        if let Some(c) = control_of(&st, i) {
            let clock = control::Clock::new(&c, st.participants[i].time_remaining_ms);
            store_clock(&mut st, i, &c, clock);
        }
    }
    st
}

/// Writes participant `i`'s clock back, to every participant sharing its
/// bank, keeping only the fields its control uses.
fn store_clock(st: &mut SyncState, i: usize, c: &TimeControl, clock: control::Clock) {
    let (periods, moves, stage, overtime) = c.keeps();
    for j in bank_sharers(st, i) {
        let p = &mut st.participants[j];
        p.total_time_ms = clock.main_ms;
        p.time_remaining_ms = clock.main_ms;
        p.periods_left = periods.then_some(clock.periods_left);
        p.moves_left = moves.then_some(clock.moves_left);
        p.stage = stage.then_some(clock.stage);
        p.overtime = overtime && clock.overtime;
        p.turn_ms = clock.turn_ms;
    }
}

/// Hourglass: what one participant's clock used goes to the other's bank.
fn hourglass_gain(st: &mut SyncState, i: usize, c: &TimeControl, used: i64) {
    if *c == TimeControl::Hourglass && st.participants.len() == 2 {
        let o = 1 - i;
        let bank = st.participants[o].time_remaining_ms + used;
        st.participants[o].total_time_ms = bank;
        st.participants[o].time_remaining_ms = bank;
    }
}

/// Version +1 and the time stamps of a mutation.
fn bump(st: &mut SyncState, now: i64) {
    st.version += 1;
    st.updated_at = Timestamp(now);
    st.server_time_ms = now;
    st.expires_at = deadline_ms(st).map(Timestamp);
}

fn set_bank(st: &mut SyncState, sharers_of: usize, bank: i64) {
    for j in bank_sharers(st, sharers_of) {
        st.participants[j].total_time_ms = bank;
        st.participants[j].time_remaining_ms = bank;
    }
}

/// Charges `elapsed` of a turn that ends without a move (pause, complete,
/// cancel, expiry) to participant `i`: its time used grows, and the bank it
/// shares (if the mode has banks) shrinks as its control says
/// ([`control::on_stop`]).
fn charge(st: &mut SyncState, i: usize, elapsed: i64) {
    st.participants[i].time_used_ms += elapsed;
    if let Some(c) = control_of(st, i) {
        let mut clock = clock_of(st, i);
        control::on_stop(&c, &mut clock, elapsed);
        store_clock(st, i, &c, clock);
        hourglass_gain(st, i, &c, elapsed);
    } else if has_bank(st) {
        let bank = st.participants[i].time_remaining_ms - elapsed;
        set_bank(st, i, bank);
    }
}

/// Charges a move made `elapsed` into participant `i`'s turn: the lag it
/// claims is credited from its quota first (when the session compensates
/// lag), then its control charges the rest ([`control::on_move`]). Returns
/// the lag claimed and credited, for the audit event, when the session
/// compensates lag.
fn charge_move(
    st: &mut SyncState,
    i: usize,
    elapsed: i64,
    lag_ms: Option<i64>,
) -> Option<(i64, i64)> {
    let mut e = elapsed;
    let mut noted = None;
    if let Some(lag) = st.lag_compensation {
        let claimed = lag_ms.unwrap_or(0).max(0);
        let quota = st.participants[i].lag_quota_ms.unwrap_or(lag.initial_ms);
        let (credited, quota) = lag.credit(claimed, quota);
        st.participants[i].lag_quota_ms = Some(quota);
        e = (elapsed - credited).max(0);
        noted = Some((claimed, credited));
    }
    st.participants[i].time_used_ms += e;
    if let Some(c) = control_of(st, i) {
        let mut clock = clock_of(st, i);
        control::on_move(&c, &mut clock, e);
        store_clock(st, i, &c, clock);
        hourglass_gain(st, i, &c, e);
    } else if has_bank(st) {
        let bank = st.participants[i].time_remaining_ms - e;
        set_bank(st, i, bank);
    }
    noted
}

fn running_turn(st: &SyncState, now: i64) -> Option<(usize, i64)> {
    let i = st.active_index()?;
    let started = st.cycle_started_at?.ms();
    Some((i, (now - started).max(0)))
}

fn set_active(st: &mut SyncState, i: Option<usize>) {
    for (j, p) in st.participants.iter_mut().enumerate() {
        p.is_active = Some(j) == i;
    }
    st.active_participant_id = i.map(|i| st.participants[i].participant_id.clone());
}

fn end(st: &mut SyncState, status: Status, at: i64) {
    st.expiry_reason = None;
    st.low_time_warned = false;
    set_active(st, None);
    st.status = status;
    st.cycle_started_at = None;
    st.session_completed_at = Some(Timestamp(at));
}

/// Applies a passed deadline or idle end. Returns the event and the
/// participant whose time ran out (none for an idle end), or `None` if
/// nothing was due.
fn settle(st: &mut SyncState, now: i64, ctx: &Ctx) -> Option<(EventType, Option<String>)> {
    let Some(deadline) = deadline_ms(st) else {
        let idle_end = end_at(st, ctx.idle_ttl_ms)?;
        if now < idle_end {
            return None;
        }
        if let Some((i, _)) = running_turn(st, idle_end) {
            let started = st.cycle_started_at.map_or(idle_end, Timestamp::ms);
            charge(st, i, (idle_end - started).max(0));
        }
        end(st, Status::Expired, idle_end);
        st.expiry_reason = Some(ExpiryReason::IdleTimeout);
        return Some((EventType::SessionExpired, None));
    };
    if now < deadline {
        return None;
    }
    let mut i = st.active_index()?;
    let mut ends_at = deadline;
    let mut reason = ExpiryReason::TimeRanOut;
    if st.sync_mode == SyncMode::PerCycle && st.cycle_expiry == Some(CycleExpiry::AutoAdvance) {
        let c = cycle_ms(st);
        let k = 1 + (now - deadline) / c;
        // Turns that may still run out before the idle limit ends the session.
        let room = match ctx.max_idle_cycles {
            0 => i64::MAX,
            max => (max - st.idle_cycles).max(1),
        };
        if k < room {
            let expired = st.participants[i].participant_id.clone();
            auto_advance(st, i, deadline, k);
            st.idle_cycles += k;
            return Some((EventType::CycleExpired, Some(expired)));
        }
        // The `room`-th turn in a row to run out ends the session.
        if room > 1 {
            auto_advance(st, i, deadline, room - 1);
            i = st.active_index()?;
            ends_at = deadline + (room - 1) * c;
        }
        st.idle_cycles += room;
        reason = ExpiryReason::IdleCycles;
    }
    let expired = st.participants[i].participant_id.clone();
    let started = st.cycle_started_at.map_or(ends_at, Timestamp::ms);
    charge(st, i, ends_at - started);
    st.participants[i].has_expired = true;
    end(st, Status::Expired, ends_at);
    st.expiry_reason = Some(reason);
    Some((EventType::SessionExpired, Some(expired)))
}

fn cycle_ms(st: &SyncState) -> i64 {
    st.time_per_cycle_ms.unwrap_or(st.total_time_ms)
}

/// `per_cycle` + `auto_advance`: the `k` turns that ran out from the first
/// deadline `d1` on are each charged a full cycle (the first one what was
/// left of it) and counted, their participants flagged `has_expired`, and the
/// turn continues with whoever is next, from the last of those deadlines on.
fn auto_advance(st: &mut SyncState, i: usize, d1: i64, k: i64) {
    let n = st.participants.len() as i64;
    let c = cycle_ms(st);
    let first_turn = st.participants[i].time_remaining_ms;
    for j in 0..n {
        let d = (j - i as i64).rem_euclid(n);
        let turns = if d < k { (k - 1 - d) / n + 1 } else { 0 };
        if turns > 0 {
            let p = &mut st.participants[j as usize];
            p.time_used_ms += turns * c;
            p.cycle_count += turns;
            p.has_expired = true;
        }
    }
    st.participants[i].time_used_ms -= c - first_turn;
    for p in &mut st.participants {
        p.total_time_ms = c;
        p.time_remaining_ms = c;
    }
    set_active(st, Some(((i as i64 + k) % n) as usize));
    st.cycle_started_at = Some(Timestamp(d1 + (k - 1) * c));
    st.low_time_warned = false;
}

fn refuse(st: &SyncState, action: Action) -> DomainError {
    DomainError::InvalidTransition {
        session_id: st.session_id.clone(),
        action,
        status: st.status,
    }
}

fn start(st: &mut SyncState, now: i64) -> Result<EventType, DomainError> {
    if st.status != Status::Pending {
        return Err(refuse(st, Action::Start));
    }
    set_active(st, Some(0));
    st.status = Status::Running;
    st.cycle_started_at = Some(Timestamp(now));
    st.session_started_at = Some(Timestamp(now));
    st.low_time_warned = false;
    Ok(EventType::SessionStarted)
}

/// Who plays after participant `i` when nobody is named: the next participant,
/// or in `per_group` the least-played member (then the first) of the next
/// group in order of first appearance.
fn rotation(st: &SyncState, i: usize) -> usize {
    let n = st.participants.len();
    if st.sync_mode != SyncMode::PerGroup {
        return (i + 1) % n;
    }
    let mut groups: Vec<&str> = Vec::new();
    for j in 0..n {
        let g = group_key(st, j);
        if !groups.contains(&g) {
            groups.push(g);
        }
    }
    let at = groups
        .iter()
        .position(|g| *g == group_key(st, i))
        .unwrap_or(0);
    let next = groups[(at + 1) % groups.len()];
    (0..n)
        .filter(|&j| group_key(st, j) == next)
        .min_by_key(|&j| (st.participants[j].cycle_count, j))
        .unwrap_or(i)
}

fn switch(
    st: &mut SyncState,
    next: Option<&str>,
    lag_ms: Option<i64>,
    lag: &mut Option<(i64, i64)>,
    now: i64,
) -> Result<EventType, DomainError> {
    if st.status != Status::Running {
        return Err(refuse(st, Action::Switch));
    }
    let named =
        match next {
            Some(id) => Some(st.participant_index_of(id).ok_or_else(|| {
                DomainError::ParticipantNotFound {
                    participant_id: id.to_string(),
                }
            })?),
            None => None,
        };
    let Some((i, elapsed)) = running_turn(st, now) else {
        return Err(refuse(st, Action::Switch));
    };
    *lag = charge_move(st, i, elapsed, lag_ms);
    st.participants[i].cycle_count += 1;
    let target = named.unwrap_or_else(|| rotation(st, i));
    if st.sync_mode == SyncMode::PerCycle {
        let c = cycle_ms(st);
        set_bank(st, i, c);
        set_bank(st, target, c);
    }
    set_active(st, Some(target));
    st.cycle_started_at = Some(Timestamp(now));
    st.low_time_warned = false;
    Ok(EventType::ParticipantSwitched)
}

fn pause(st: &mut SyncState, now: i64) -> Result<EventType, DomainError> {
    if st.status != Status::Running {
        return Err(refuse(st, Action::Pause));
    }
    if let Some((i, elapsed)) = running_turn(st, now) {
        charge(st, i, elapsed);
    }
    st.status = Status::Paused;
    st.cycle_started_at = None;
    Ok(EventType::SessionPaused)
}

fn resume(st: &mut SyncState, now: i64) -> Result<EventType, DomainError> {
    if st.status != Status::Paused {
        return Err(refuse(st, Action::Resume));
    }
    st.status = Status::Running;
    st.cycle_started_at = Some(Timestamp(now));
    Ok(EventType::SessionResumed)
}

fn finish(st: &mut SyncState, now: i64, action: Action) -> Result<EventType, DomainError> {
    if st.status.is_terminal() {
        return Err(refuse(st, action));
    }
    if st.status == Status::Running {
        if let Some((i, elapsed)) = running_turn(st, now) {
            charge(st, i, elapsed);
        }
    }
    let (status, event) = match action {
        Action::Cancel => (Status::Cancelled, EventType::SessionCancelled),
        _ => (Status::Completed, EventType::SessionCompleted),
    };
    end(st, status, now);
    Ok(event)
}
