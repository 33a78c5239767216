/**
 * Time controls: how one participant's clock is charged for a move, when it
 * falls, and what it reads during a turn. The TypeScript twin of
 * `synckairos_core::control` (docs/DESIGN.md §4): the same arithmetic, held
 * to the same hand-worked games by `test/control.unit.test.ts`, and to the
 * server's own checkpoints by `test/control.stack.test.ts`.
 *
 * A turn starts at `t = 0`. {@link fallAfter} is when the clock falls if no
 * move comes; {@link onMove} charges a move made at `t = elapsed`;
 * {@link onStop} charges a turn that ends without a move (a pause, a
 * completion, the fall); {@link live} is what the clock reads at `t`.
 *
 * | control | falls after | a move at `e` |
 * |---|---|---|
 * | fischer `inc` | `main` | `main − e + inc` |
 * | bronstein `d` | `main` | `main − e + min(d, e)` |
 * | simple delay `d` | `d + main` | `main − max(0, e − d)` |
 * | byo-yomi `n × p` | `main + periodsLeft × p` | main first; past it, each period used up is gone, the one the move is made in is kept |
 * | canadian `m / p` | `main + p` in main time, `block` after | main first; past it a block of `p` for `m` moves, renewed when they are made |
 * | hourglass | `main` | `main − e` (and the other participant gains `e`) |
 * | stages | as its stage's increment or delay | as the stage's, then after the stage's `moves` the next stage adds its time |
 */
import type { DelayKind, LagCompensation, TimeControl } from "./generated/api.js";

/**
 * One participant's clock under a control, at the start of a turn (or at the
 * last checkpoint): a participant's `time_remaining_ms`, `periods_left`,
 * `moves_left`, `stage` and `overtime`.
 */
export interface ControlClock {
  /** Main time left, or in Canadian overtime the time left in the block (ms). */
  mainMs: number;
  /** Byo-yomi: periods left. */
  periodsLeft: number;
  /** Canadian: moves left in the block (0 before overtime); stages: moves left in the stage (0 in the last stage). */
  movesLeft: number;
  /** Stages: the current stage (0-based). */
  stage: number;
  /** Canadian: whether main time is over (blocks have begun). */
  overtime: boolean;
  /**
   * What the running turn already spent that the control remembers across a
   * pause (the delay waited or run, or the time used of the running byo-yomi
   * period); 0 when a turn starts. A participant's `turn_ms`.
   */
  turnMs: number;
}

/** What a move did beyond charging time. */
export interface MoveEvents {
  /** Time given back or not charged because of a delay (ms). */
  delayUsedMs: number;
  /** Byo-yomi periods used up by this move. */
  periodsConsumed: number;
  /** Canadian: main time ran out during this move (blocks begin). */
  enteredOvertime: boolean;
  /** Canadian: the block's moves were made and it was renewed. */
  blockRenewed: boolean;
  /** Stages: this move finished its stage and the next one began. */
  stageAdvanced: boolean;
}

/** What a clock reads `t` ms into a turn that is running. */
export interface ControlLive {
  /** Main time left (or the Canadian block's time left), never below 0. */
  mainMs: number;
  /**
   * The delay still to run before the clock moves (simple delay), or that a
   * move now would get back in full (Bronstein) (ms).
   */
  delayLeftMs: number;
  /** Byo-yomi: the current period's time left, once main time is over; else `null`. */
  periodLeftMs: number | null;
  /** Byo-yomi: periods left, the current one included. */
  periodsLeft: number;
  /** Canadian and stages: moves left in the block or stage. */
  movesLeft: number;
  /** Until the clock falls (ms, never below 0). */
  untilFallMs: number;
}

/** The clock at the start of a game with `mainMs` of main time (`Clock::new`). */
export function startClock(control: TimeControl, mainMs: number): ControlClock {
  const c: ControlClock = { mainMs, periodsLeft: 0, movesLeft: 0, stage: 0, overtime: false, turnMs: 0 };
  if (control.type === "byoyomi") c.periodsLeft = control.periods;
  if (control.type === "stages") c.movesLeft = control.stages[0]?.moves ?? 0;
  return c;
}

function noEvents(): MoveEvents {
  return { delayUsedMs: 0, periodsConsumed: 0, enteredOvertime: false, blockRenewed: false, stageAdvanced: false };
}

/**
 * The increment and delay a move is charged with, for the controls that have
 * them (the current stage's for `stages`): `[increment, delay, kind]`.
 */
export function incrementAndDelay(control: TimeControl, clock: ControlClock): [number, number, DelayKind] {
  switch (control.type) {
    case "fischer":
      return [control.increment_ms, 0, "bronstein"];
    case "bronstein":
      return [0, control.delay_ms, "bronstein"];
    case "simple_delay":
      return [0, control.delay_ms, "simple"];
    case "stages": {
      const s = control.stages[clock.stage];
      if (s === undefined) return [0, 0, "bronstein"];
      return [s.increment_ms ?? 0, s.delay_ms ?? 0, s.delay_kind ?? "bronstein"];
    }
    default:
      return [0, 0, "bronstein"];
  }
}

/** How long after the turn's start (or its resumption) the clock falls if no move comes (ms). */
export function fallAfter(control: TimeControl, clock: ControlClock): number {
  if (control.type === "byoyomi") return clock.mainMs + clock.periodsLeft * control.period_ms - clock.turnMs;
  if (control.type === "canadian" && !clock.overtime) return clock.mainMs + control.period_ms;
  const [, delay, kind] = incrementAndDelay(control, clock);
  return kind === "simple" ? Math.max(0, delay - clock.turnMs) + clock.mainMs : clock.mainMs;
}

/**
 * Byo-yomi: charges `e` ms (main time first, then periods from the running
 * one's progress); returns the periods used up and the progress into the
 * period left running. Mutates `k`.
 */
function byoyomiCharge(k: ControlClock, periodMs: number, e: number): [consumed: number, progress: number] {
  if (e <= k.mainMs) {
    k.mainMs -= e;
    return [0, k.turnMs];
  }
  const over = e - k.mainMs + k.turnMs;
  k.mainMs = 0;
  const p = Math.max(periodMs, 1);
  const consumed = Math.min(Math.floor(over / p), k.periodsLeft);
  k.periodsLeft -= consumed;
  return [consumed, k.periodsLeft === 0 ? 0 : over % p];
}

/**
 * Charges a move made `elapsed` ms into the turn (before {@link fallAfter}):
 * the clock after it and what it did. `clock` is left as it was.
 */
export function onMove(control: TimeControl, clock: ControlClock, elapsed: number): { clock: ControlClock; events: MoveEvents } {
  const e = Math.max(0, elapsed);
  const k = { ...clock };
  const ev = noEvents();
  switch (control.type) {
    case "byoyomi": {
      // The period the move is made in is kept: the next turn starts it afresh.
      ev.periodsConsumed = byoyomiCharge(k, control.period_ms, e)[0];
      k.turnMs = 0;
      break;
    }
    case "canadian": {
      if (!k.overtime) {
        if (e <= k.mainMs) {
          k.mainMs -= e;
          break;
        }
        // Main time ran out during this move: its first block began then,
        // and this move is the block's first.
        ev.enteredOvertime = true;
        k.overtime = true;
        k.mainMs = control.period_ms - (e - k.mainMs);
        k.movesLeft = control.moves;
      } else {
        k.mainMs -= e;
      }
      k.movesLeft = Math.max(0, k.movesLeft - 1);
      if (k.movesLeft === 0) {
        ev.blockRenewed = true;
        k.mainMs = control.period_ms;
        k.movesLeft = control.moves;
      }
      break;
    }
    case "hourglass":
      k.mainMs -= e;
      break;
    default: {
      const [increment, delay, kind] = incrementAndDelay(control, k);
      // Over the whole turn (a pause included) the delay shields or gives
      // back at most `delay`; the part before a pause was charged then.
      const tm = k.turnMs;
      ev.delayUsedMs = Math.min(delay, tm + e);
      k.mainMs -= kind === "simple" ? tm + e - ev.delayUsedMs : e - ev.delayUsedMs;
      k.mainMs += increment;
      k.turnMs = 0;
      if (control.type === "stages" && control.stages[k.stage]?.moves != null) {
        k.movesLeft = Math.max(0, k.movesLeft - 1);
        const next = control.stages[k.stage + 1];
        if (k.movesLeft === 0 && next !== undefined) {
          k.stage += 1;
          k.mainMs += next.add_ms ?? 0;
          k.movesLeft = next.moves ?? 0;
          ev.stageAdvanced = true;
        }
      }
    }
  }
  return { clock: k, events: ev };
}

/**
 * Charges `elapsed` ms of a turn that ends without a move (a pause, a
 * completion, the fall itself): the time the clock really ran, with no
 * increment, no delay given back and no move counted. A simple delay still
 * shields its first `delay_ms`; byo-yomi loses the periods that ran out;
 * Canadian main time that runs out begins the first block. `clock` is left
 * as it was.
 */
export function onStop(control: TimeControl, clock: ControlClock, elapsed: number): ControlClock {
  const e = Math.max(0, elapsed);
  const k = { ...clock };
  if (control.type === "byoyomi") {
    // The running period's progress is remembered for the resumption.
    k.turnMs = byoyomiCharge(k, control.period_ms, e)[1];
    return k;
  }
  if (control.type === "canadian") {
    if (k.overtime || e <= k.mainMs) {
      k.mainMs -= e;
    } else {
      k.overtime = true;
      k.mainMs = control.period_ms - (e - k.mainMs);
      k.movesLeft = control.moves;
    }
    return k;
  }
  const [, delay, kind] = incrementAndDelay(control, k);
  const tm = k.turnMs;
  const waited = Math.min(delay, tm + e);
  k.mainMs -= kind === "simple" ? tm + e - waited : e;
  // The delay run so far goes on after a resume.
  k.turnMs = delay > 0 ? waited : 0;
  return k;
}

/** The clock `t` ms into its running turn. */
export function live(control: TimeControl, clock: ControlClock, t: number): ControlLive {
  const at = Math.max(0, t);
  const v: ControlLive = {
    mainMs: Math.max(0, clock.mainMs - at),
    delayLeftMs: 0,
    periodLeftMs: null,
    periodsLeft: clock.periodsLeft,
    movesLeft: clock.movesLeft,
    untilFallMs: Math.max(0, fallAfter(control, clock) - at),
  };
  if (control.type === "byoyomi" && at >= clock.mainMs) {
    const over = at - clock.mainMs + clock.turnMs;
    const period = Math.max(control.period_ms, 1);
    v.periodsLeft = Math.max(0, clock.periodsLeft - Math.floor(over / period));
    v.periodLeftMs = v.periodsLeft === 0 ? 0 : period - (over % period);
  } else if (control.type === "canadian" && !clock.overtime && at > clock.mainMs) {
    v.mainMs = Math.max(0, control.period_ms - (at - clock.mainMs));
    v.movesLeft = control.moves;
  } else {
    const [, delay, kind] = incrementAndDelay(control, clock);
    const tm = clock.turnMs;
    v.delayLeftMs = Math.max(0, delay - tm - at);
    if (kind === "simple") v.mainMs = Math.max(0, clock.mainMs - Math.max(0, tm + at - delay));
  }
  return v;
}

/**
 * Lag compensation: for a move claiming `lagMs` of network delay with
 * `quotaMs` left, the lag credited, `min(lag, quota)`, and the quota after the
 * move, `min(quota + gain − credited, max)` (`LagCompensation::credit`).
 */
export function creditLag(lag: LagCompensation, lagMs: number, quotaMs: number): [credited: number, quotaMs: number] {
  const credited = Math.min(Math.max(0, lagMs), Math.max(0, quotaMs));
  return [credited, Math.min(quotaMs + lag.gain_ms - credited, lag.max_ms)];
}
