/**
 * Live clocks: what every participant's clock reads at a given server time,
 * computed from the last snapshot (nobody counts down locally). This is the
 * TypeScript twin of `synckairos_core::view` (docs/API.md §2 and §4), the one
 * module that knows each sync mode's clock math, time controls included
 * (their arithmetic is `control.ts`); the tests hold it to the server's own
 * numbers for every mode and every control.
 */
import { fallAfter, incrementAndDelay, live as liveReading, type ControlClock } from "./control.js";
import type { SyncState, TimeControl } from "./generated/api.js";

/** A participant's clock at some instant. */
export interface Clock {
  /** Whose clock. */
  participantId: string;
  /**
   * Bank left (ms, never below 0). For a `count_up` stopwatch without
   * `max_time_ms` it is the stored bank, which does not move.
   */
  remainingMs: number;
  /** Time used so far (ms), the running turn included. */
  usedMs: number;
  /** Whether it is this participant's turn. */
  isActive: boolean;
  /** Whether this participant's time ran out (as the server last said). */
  hasExpired: boolean;
  /**
   * The time control that runs this clock ({@link controlOf}): in
   * `per_participant` and `per_group` always one (Fischer with the session's
   * `increment_ms` when none was given); `null` in the other modes.
   */
  control: TimeControl | null;
  /**
   * Until this clock falls if it runs and nobody moves (ms, never below 0):
   * for the running clock, from now; for the others, from the start of their
   * next turn. Delays and byo-yomi periods are included, so for the running
   * clock it ends at {@link deadlineMs}. `null` when the clock has no end (a
   * `count_up` without `max_time_ms`); 0 once the server marked it out of time.
   */
  untilFallMs: number | null;
  /**
   * The delay left in this turn (ms): simple delay, the wait before the bank
   * runs; Bronstein, what a move now gets back in full. 0 for a clock that
   * is not running (as `view::clocks` says); `null` when the control (or the
   * current stage) has no delay.
   */
  delayLeftMs: number | null;
  /**
   * Byo-yomi: the current period's time left once main time is over (for a
   * clock that is not running, a whole period); `null` in main time and for
   * the other controls.
   */
  periodLeftMs: number | null;
  /** Byo-yomi: periods left, the current one included; `null` for the other controls. */
  periodsLeft: number | null;
  /**
   * Canadian: moves left in the block (0 before overtime); stages: moves
   * left in the stage (0 in the last stage, which has no count); `null` for
   * the other controls.
   */
  movesLeft: number | null;
  /** Stages: the current stage, from 0; `null` for the other controls. */
  stage: number | null;
  /** Canadian: main time is over and blocks began (live: as soon as main time runs out). */
  overtime: boolean;
}

/** Epoch ms of an ISO-8601 timestamp of the API, or `null`. */
export function parseTimestamp(iso: string | null | undefined): number | null {
  if (iso === null || iso === undefined) return null;
  const ms = Date.parse(iso);
  return Number.isNaN(ms) ? null : ms;
}

/** Whether the participants' banks count down (all but an uncapped `count_up`). */
export function hasBank(state: SyncState): boolean {
  return state.sync_mode !== "count_up" || (state.max_time_ms ?? null) !== null;
}

/** The position of the active participant in `participants`, or -1. */
export function activeIndex(state: SyncState): number {
  if (state.active_participant_id === null) return -1;
  return state.participants.findIndex((p) => p.participant_id === state.active_participant_id);
}

function groupKey(state: SyncState, i: number): string {
  const p = state.participants[i];
  if (p === undefined) return "";
  return p.group_id ?? p.participant_id;
}

/**
 * Positions of the participants that share participant `i`'s bank: only `i`
 * in `per_participant` and `per_cycle`, its group in `per_group`, everyone in
 * `global` and `count_up`.
 */
export function bankSharers(state: SyncState, i: number): number[] {
  switch (state.sync_mode) {
    case "per_participant":
    case "per_cycle":
      return [i];
    case "per_group": {
      const g = groupKey(state, i);
      return state.participants.map((_, j) => j).filter((j) => groupKey(state, j) === g);
    }
    case "global":
    case "count_up":
      return state.participants.map((_, j) => j);
  }
}

/**
 * The time control that runs participant `i`'s clock (`view::control_of`):
 * its own, else the session's, else Fischer with `increment_ms`. Only
 * `per_participant` and `per_group` have controls (a `per_cycle` turn, the
 * `global` countdown and a stopwatch are charged as they run): `null` for the
 * other modes, and for a position out of range.
 */
export function controlOf(state: SyncState, i: number): TimeControl | null {
  if (state.sync_mode !== "per_participant" && state.sync_mode !== "per_group") return null;
  const p = state.participants[i];
  if (p === undefined) return null;
  return p.time_control ?? state.time_control ?? { type: "fischer", increment_ms: state.increment_ms };
}

/**
 * Participant `i`'s clock as its control sees it, at the last checkpoint
 * (`view::clock_of`), or `undefined` for a position out of range.
 */
export function controlClockOf(state: SyncState, i: number): ControlClock | undefined {
  const p = state.participants[i];
  if (p === undefined) return undefined;
  return {
    mainMs: p.time_remaining_ms,
    periodsLeft: p.periods_left ?? 0,
    movesLeft: p.moves_left ?? 0,
    stage: p.stage ?? 0,
    overtime: p.overtime ?? false,
    turnMs: p.turn_ms ?? 0,
  };
}

/**
 * When the running clock runs out if nobody acts (epoch ms), or `null` when
 * nothing runs or the clock has no end. Under a time control it is when the
 * control lets the clock fall (delays and byo-yomi periods included). Equal
 * to the server's `expires_at`.
 */
export function deadlineMs(state: SyncState): number | null {
  if (state.status !== "running" || !hasBank(state)) return null;
  const i = activeIndex(state);
  const started = parseTimestamp(state.cycle_started_at);
  const p = state.participants[i];
  if (p === undefined || started === null) return null;
  const control = controlOf(state, i);
  const clock = controlClockOf(state, i);
  if (control === null || clock === undefined) return started + p.time_remaining_ms;
  return started + fallAfter(control, clock);
}

/** The delay a clock's control (its current stage) charges with, or `null` when it has none. */
function delayOf(control: TimeControl, clock: ControlClock): number | null {
  const [, delay] = incrementAndDelay(control, clock);
  return delay > 0 ? delay : null;
}

/**
 * Every participant's clock at the server time `nowMs` (epoch ms), as
 * `view::clocks` computes it (and, beyond it, 0 left for a participant the
 * server marked out of time).
 */
export function clocks(state: SyncState, nowMs: number): Clock[] {
  const i = activeIndex(state);
  const started = parseTimestamp(state.cycle_started_at);
  const running = state.status === "running" && i >= 0 && started !== null;
  const elapsed = running ? Math.max(0, nowMs - (started as number)) : 0;
  const sharers = running ? bankSharers(state, i) : [];
  const bank = hasBank(state);
  // Hourglass: what the running clock uses goes to the other participant.
  const hourglassOther =
    running && state.participants.length === 2 && controlOf(state, i)?.type === "hourglass" ? 1 - i : -1;
  return state.participants.map((p, j) => {
    const live = running && bank && sharers.includes(j);
    const out = p.has_expired && !live;
    const control = controlOf(state, j);
    const base = {
      participantId: p.participant_id,
      usedMs: p.time_used_ms + (running && j === i ? elapsed : 0),
      isActive: p.is_active,
      hasExpired: p.has_expired,
    };
    const clock = controlClockOf(state, j);
    if (control === null || clock === undefined) {
      const remaining = live ? Math.max(0, p.time_remaining_ms - elapsed) : p.time_remaining_ms;
      // A participant the server marked out of time reads 0 unless its clock
      // runs again (a later turn of a per_cycle auto_advance session).
      const remainingMs = out ? 0 : remaining;
      return {
        ...base,
        remainingMs,
        control: null,
        untilFallMs: bank ? remainingMs : null,
        delayLeftMs: null,
        periodLeftMs: null,
        periodsLeft: null,
        movesLeft: null,
        stage: null,
        overtime: false,
      };
    }
    // The running clock reads `elapsed` into its turn; the others read the
    // start of their next turn (hourglass: grown by what the running one used).
    const at = live ? elapsed : 0;
    const k = j === hourglassOther ? { ...clock, mainMs: clock.mainMs + elapsed } : clock;
    const v = liveReading(control, k, at);
    const delay = delayOf(control, k);
    const byoyomi = control.type === "byoyomi";
    const canadian = control.type === "canadian";
    return {
      ...base,
      remainingMs: out ? 0 : v.mainMs,
      control,
      untilFallMs: out ? 0 : v.untilFallMs,
      delayLeftMs: delay === null ? null : live ? v.delayLeftMs : 0,
      periodLeftMs: byoyomi ? v.periodLeftMs : null,
      periodsLeft: byoyomi ? v.periodsLeft : null,
      movesLeft: canadian || control.type === "stages" ? v.movesLeft : null,
      stage: control.type === "stages" ? k.stage : null,
      overtime: canadian && (k.overtime || at > k.mainMs),
    };
  });
}

/** One participant's clock at `nowMs`, or `undefined` when it is not in the session. */
export function clockOf(state: SyncState, participantId: string, nowMs: number): Clock | undefined {
  return clocks(state, nowMs).find((c) => c.participantId === participantId.toLowerCase());
}

/**
 * A participant's remaining time at `nowMs` (ms): 0 once the server marked it
 * out of time (`has_expired`); `undefined` when it is not in the session.
 */
export function remainingMs(state: SyncState, participantId: string, nowMs: number): number | undefined {
  return clockOf(state, participantId, nowMs)?.remainingMs;
}
