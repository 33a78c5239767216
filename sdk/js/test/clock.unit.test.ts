// The clock math of every sync mode on hand-made snapshots. The same math is
// held to the server's own numbers in clock.stack.test.ts.
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  clocks,
  controlOf,
  deadlineMs,
  formatClock,
  remainingMs,
  type Clock,
  type Participant,
  type SyncState,
  type TimeControl,
} from "../src/index.js";

const T0 = Date.parse("2026-12-01T10:00:00.000Z");
const iso = (ms: number): string => new Date(ms).toISOString();

function participant(i: number, bank: number, extra: Partial<Participant> = {}): Participant {
  return {
    participant_id: `00000000-0000-4000-8000-00000000000${i}`,
    participant_index: i,
    total_time_ms: bank,
    time_used_ms: 0,
    time_remaining_ms: bank,
    cycle_count: 0,
    is_active: false,
    has_expired: false,
    ...extra,
  };
}

function state(mode: SyncState["sync_mode"], participants: Participant[], extra: Partial<SyncState> = {}): SyncState {
  const active = participants.find((p) => p.is_active)?.participant_id ?? null;
  return {
    session_id: "00000000-0000-4000-8000-0000000000aa",
    sync_mode: mode,
    status: active === null ? "paused" : "running",
    version: 2,
    participants,
    active_participant_id: active,
    total_time_ms: 60_000,
    time_per_cycle_ms: null,
    cycle_started_at: active === null ? null : iso(T0),
    session_started_at: iso(T0),
    session_completed_at: null,
    increment_ms: 0,
    created_at: iso(T0 - 1000),
    updated_at: iso(T0),
    server_time_ms: T0,
    expires_at: null,
    ...extra,
  } as SyncState;
}

const ids = (i: number): string => `00000000-0000-4000-8000-00000000000${i}`;

test("per_participant: only the active bank runs", () => {
  const st = state("per_participant", [participant(0, 60_000, { is_active: true }), participant(1, 60_000)]);
  const c = clocks(st, T0 + 12_345);
  assert.deepEqual(
    c.map((x) => [x.remainingMs, x.usedMs, x.isActive]),
    [
      [47_655, 12_345, true],
      [60_000, 0, false],
    ],
  );
  assert.equal(deadlineMs(st), T0 + 60_000);
  assert.equal(remainingMs(st, ids(0), T0 + 70_000), 0, "never below zero");
  assert.equal(remainingMs(st, ids(0).toUpperCase(), T0), 60_000, "ids in any case");
  assert.equal(remainingMs(st, ids(9), T0), undefined);
  // Before the snapshot's own cycle start (a clock estimate slightly behind) nothing is charged.
  assert.equal(remainingMs(st, ids(0), T0 - 50), 60_000);
});

test("per_cycle: the turn's fresh cycle runs", () => {
  const st = state("per_cycle", [participant(0, 10_000, { is_active: true }), participant(1, 10_000)], { time_per_cycle_ms: 10_000 });
  assert.equal(remainingMs(st, ids(0), T0 + 4_000), 6_000);
  assert.equal(remainingMs(st, ids(1), T0 + 4_000), 10_000);
  // An earlier turn that timed out (auto_advance) reads 0 while idle, and runs again on its turn.
  const adv = state("per_cycle", [participant(0, 10_000, { has_expired: true }), participant(1, 10_000, { is_active: true })], {
    time_per_cycle_ms: 10_000,
    cycle_expiry: "auto_advance",
  });
  assert.equal(remainingMs(adv, ids(0), T0 + 1_000), 0);
  const again = state("per_cycle", [participant(0, 10_000, { has_expired: true, is_active: true }), participant(1, 10_000)], {
    time_per_cycle_ms: 10_000,
    cycle_expiry: "auto_advance",
  });
  assert.equal(remainingMs(again, ids(0), T0 + 1_000), 9_000);
});

test("per_group: the team's shared bank runs for every member", () => {
  const g1 = "00000000-0000-4000-8000-0000000000b1";
  const g2 = "00000000-0000-4000-8000-0000000000b2";
  const st = state("per_group", [
    participant(0, 30_000, { is_active: true, group_id: g1 }),
    participant(1, 30_000, { group_id: g1 }),
    participant(2, 45_000, { group_id: g2 }),
    participant(3, 45_000),
  ]);
  const c = clocks(st, T0 + 10_000);
  assert.deepEqual(
    c.map((x) => x.remainingMs),
    [20_000, 20_000, 45_000, 45_000],
  );
  assert.deepEqual(
    c.map((x) => x.usedMs),
    [10_000, 0, 0, 0],
  );
});

test("global: one countdown for everyone", () => {
  const st = state("global", [participant(0, 60_000), participant(1, 60_000, { is_active: true }), participant(2, 60_000)]);
  assert.deepEqual(
    clocks(st, T0 + 1_500).map((x) => x.remainingMs),
    [58_500, 58_500, 58_500],
  );
});

test("count_up: laps grow; the bank moves only with max_time_ms", () => {
  const free = state("count_up", [participant(0, 60_000, { is_active: true, time_used_ms: 2_000 }), participant(1, 60_000)]);
  const c = clocks(free, T0 + 3_000);
  assert.equal(c[0]?.usedMs, 5_000);
  assert.equal(c[0]?.remainingMs, 60_000, "an uncapped stopwatch has no countdown");
  assert.equal(deadlineMs(free), null);
  const capped = state("count_up", [participant(0, 60_000, { is_active: true }), participant(1, 60_000)], { max_time_ms: 60_000 });
  assert.deepEqual(
    clocks(capped, T0 + 3_000).map((x) => x.remainingMs),
    [57_000, 57_000],
  );
  assert.equal(deadlineMs(capped), T0 + 60_000);
});

test("nothing runs unless the session runs; an expired participant reads 0", () => {
  const paused = state("per_participant", [participant(0, 60_000, { time_remaining_ms: 41_000 }), participant(1, 60_000)]);
  assert.equal(remainingMs(paused, ids(0), T0 + 99_000), 41_000);
  assert.equal(deadlineMs(paused), null);
  const expired = state("per_participant", [participant(0, 60_000, { has_expired: true, time_remaining_ms: 0 }), participant(1, 60_000)], {
    status: "expired",
  });
  assert.equal(remainingMs(expired, ids(0), T0), 0);
});

test("formatClock shows tenths, minutes and hours", () => {
  assert.equal(formatClock(0), "0:00.0");
  assert.equal(formatClock(-5), "0:00.0");
  assert.equal(formatClock(59_999), "0:59.9");
  assert.equal(formatClock(300_000), "5:00.0");
  assert.equal(formatClock(3_723_450), "1:02:03.4");
});

// --- time controls (per_participant and per_group) ------------------------------
// The numbers are those of core/src/control.rs's hand-worked games.

const S = 1000;

/** The control fields of a clock, for comparing in one go. */
function reading(c: Clock | undefined): Partial<Clock> {
  if (c === undefined) return {};
  const { remainingMs, untilFallMs, delayLeftMs, periodLeftMs, periodsLeft, movesLeft, stage, overtime } = c;
  return { remainingMs, untilFallMs, delayLeftMs, periodLeftMs, periodsLeft, movesLeft, stage, overtime };
}

const plain = { delayLeftMs: null, periodLeftMs: null, periodsLeft: null, movesLeft: null, stage: null, overtime: false };

test("controlOf: the participant's own, else the session's, else Fischer; none outside per_participant and per_group", () => {
  const byo: TimeControl = { type: "byoyomi", periods: 5, period_ms: 30 * S };
  const own: TimeControl = { type: "bronstein", delay_ms: 2 * S };
  const st = state("per_participant", [participant(0, 60_000, { time_control: own }), participant(1, 60_000)], { time_control: byo });
  assert.deepEqual(controlOf(st, 0), own);
  assert.deepEqual(controlOf(st, 1), byo);
  assert.equal(controlOf(st, 2), null);
  const fischer = state("per_group", [participant(0, 60_000)], { increment_ms: 3_000 });
  assert.deepEqual(controlOf(fischer, 0), { type: "fischer", increment_ms: 3_000 });
  for (const mode of ["per_cycle", "global", "count_up"] as const) {
    const other = state(mode, [participant(0, 60_000, { is_active: true })], { time_per_cycle_ms: 60_000 });
    assert.equal(controlOf(other, 0), null, mode);
    assert.deepEqual(reading(clocks(other, T0 + 1_000)[0]), {
      remainingMs: mode === "count_up" ? 60_000 : 59_000,
      untilFallMs: mode === "count_up" ? null : 59_000,
      ...plain,
    });
    assert.equal(clocks(other, T0)[0]?.control, null);
  }
});

test("Fischer (increment_ms): the bank runs, nothing else to show", () => {
  const st = state("per_participant", [participant(0, 60_000, { is_active: true }), participant(1, 45_000)], { increment_ms: 2_000 });
  const c = clocks(st, T0 + 5_000);
  assert.deepEqual(reading(c[0]), { remainingMs: 55_000, untilFallMs: 55_000, ...plain });
  assert.deepEqual(reading(c[1]), { remainingMs: 45_000, untilFallMs: 45_000, ...plain });
  assert.deepEqual(c[0]?.control, { type: "fischer", increment_ms: 2_000 });
  assert.equal(deadlineMs(st), T0 + 60_000);
});

test("Bronstein 3 + 2: the bank runs at once; the delay is what a move now gets back", () => {
  const c: TimeControl = { type: "bronstein", delay_ms: 2 * S };
  const st = state("per_participant", [participant(0, 172 * S, { is_active: true }), participant(1, 180 * S)], { time_control: c });
  const live = clocks(st, T0 + 500);
  assert.deepEqual(reading(live[0]), { ...plain, remainingMs: 171_500, untilFallMs: 171_500, delayLeftMs: 1_500 });
  // The delay runs only in a turn: 0 for the clock that waits.
  assert.deepEqual(reading(live[1]), { ...plain, remainingMs: 180 * S, untilFallMs: 180 * S, delayLeftMs: 0 });
  assert.equal(clocks(st, T0 + 3_000)[0]?.delayLeftMs, 0);
  assert.equal(deadlineMs(st), T0 + 172 * S);
});

test("US delay 5 + 5: the bank waits for the delay, and the deadline includes it", () => {
  const c: TimeControl = { type: "simple_delay", delay_ms: 5 * S };
  const st = state("per_participant", [participant(0, 293 * S, { is_active: true }), participant(1, 300 * S)], { time_control: c });
  assert.deepEqual(reading(clocks(st, T0 + 2 * S)[0]), { ...plain, remainingMs: 293 * S, untilFallMs: 296 * S, delayLeftMs: 3 * S });
  assert.deepEqual(reading(clocks(st, T0 + 8 * S)[0]), { ...plain, remainingMs: 290 * S, untilFallMs: 290 * S, delayLeftMs: 0 });
  assert.deepEqual(reading(clocks(st, T0)[1]), { ...plain, remainingMs: 300 * S, untilFallMs: 305 * S, delayLeftMs: 0 });
  assert.equal(deadlineMs(st), T0 + 298 * S);
});

test("byo-yomi 5 × 30 s: main time, then the period and the periods left", () => {
  const c: TimeControl = { type: "byoyomi", periods: 5, period_ms: 30 * S };
  const st = state(
    "per_participant",
    [participant(0, 0, { is_active: true, periods_left: 2 }), participant(1, 10 * S, { periods_left: 5 })],
    { time_control: c },
  );
  // Two periods left: 40 s in, the second (and last) has 20 s left.
  let live = clocks(st, T0 + 40 * S);
  assert.deepEqual(reading(live[0]), { ...plain, remainingMs: 0, untilFallMs: 20 * S, periodLeftMs: 20 * S, periodsLeft: 1 });
  // Not running: still in main time, no period shown yet; it falls after main + 5 periods.
  assert.deepEqual(reading(live[1]), { ...plain, remainingMs: 10 * S, untilFallMs: 160 * S, periodsLeft: 5 });
  assert.equal(deadlineMs(st), T0 + 60 * S);
  // Main time running: no period until it is over, then the first one runs.
  const other = state("per_participant", [participant(0, 10 * S, { is_active: true, periods_left: 5 }), participant(1, 0, { periods_left: 3 })], {
    time_control: c,
  });
  live = clocks(other, T0 + 4 * S);
  assert.deepEqual(reading(live[0]), { ...plain, remainingMs: 6 * S, untilFallMs: 156 * S, periodsLeft: 5 });
  // A waiting clock in its periods shows a whole period.
  assert.deepEqual(reading(live[1]), { ...plain, remainingMs: 0, untilFallMs: 90 * S, periodLeftMs: 30 * S, periodsLeft: 3 });
  assert.deepEqual(reading(clocks(other, T0 + 12 * S)[0]), { ...plain, remainingMs: 0, untilFallMs: 148 * S, periodLeftMs: 28 * S, periodsLeft: 5 });
  // Past the fall: nothing left.
  assert.deepEqual(reading(clocks(st, T0 + 70 * S)[0]), { ...plain, remainingMs: 0, untilFallMs: 0, periodLeftMs: 0, periodsLeft: 0 });
});

test("Canadian 20 moves in 5 min: the block begins when main time runs out", () => {
  const c: TimeControl = { type: "canadian", moves: 20, period_ms: 300 * S };
  const st = state(
    "per_participant",
    [participant(0, 10 * S, { is_active: true, moves_left: 0 }), participant(1, 105 * S, { moves_left: 1, overtime: true })],
    { time_control: c },
  );
  assert.equal(deadlineMs(st), T0 + 310 * S);
  assert.deepEqual(reading(clocks(st, T0 + 4 * S)[0]), { ...plain, remainingMs: 6 * S, untilFallMs: 306 * S, movesLeft: 0 });
  // 40 s in: main time ran out 30 s ago, the block shows 270 s for 20 moves.
  const live = clocks(st, T0 + 40 * S);
  assert.deepEqual(reading(live[0]), { ...plain, remainingMs: 270 * S, untilFallMs: 270 * S, movesLeft: 20, overtime: true });
  assert.deepEqual(reading(live[1]), { ...plain, remainingMs: 105 * S, untilFallMs: 105 * S, movesLeft: 1, overtime: true });
});

test("hourglass: the waiting clock grows by what the running one uses", () => {
  const c: TimeControl = { type: "hourglass" };
  const st = state("per_participant", [participant(0, 60 * S, { is_active: true }), participant(1, 50 * S)], { time_control: c });
  const live = clocks(st, T0 + 5 * S);
  assert.deepEqual(reading(live[0]), { ...plain, remainingMs: 55 * S, untilFallMs: 55 * S });
  assert.deepEqual(reading(live[1]), { ...plain, remainingMs: 55 * S, untilFallMs: 55 * S });
  assert.deepEqual(live.map((x) => x.usedMs), [5 * S, 0], "only the running clock's time is used");
  assert.equal(deadlineMs(st), T0 + 60 * S);
  // Paused: nothing moves.
  const paused = state("per_participant", [participant(0, 60 * S), participant(1, 50 * S)], { time_control: c });
  assert.deepEqual(clocks(paused, T0 + 5 * S).map((x) => x.remainingMs), [60 * S, 50 * S]);
});

test("stages: the stage, its moves left, and its own increment or delay", () => {
  const c: TimeControl = {
    type: "stages",
    stages: [
      { moves: 40, increment_ms: 30 * S },
      { add_ms: 1_800 * S, delay_ms: 5 * S, delay_kind: "simple" },
    ],
  };
  const st = state(
    "per_participant",
    [participant(0, 1_500 * S, { is_active: true, stage: 0, moves_left: 1 }), participant(1, 3_000 * S, { stage: 1, moves_left: 0 })],
    { time_control: c },
  );
  const live = clocks(st, T0 + 60 * S);
  assert.deepEqual(reading(live[0]), { ...plain, remainingMs: 1_440 * S, untilFallMs: 1_440 * S, movesLeft: 1, stage: 0 });
  // The second stage has a simple delay: its fall waits for it.
  assert.deepEqual(reading(live[1]), { ...plain, remainingMs: 3_000 * S, untilFallMs: 3_005 * S, delayLeftMs: 0, movesLeft: 0, stage: 1 });
  assert.equal(deadlineMs(st), T0 + 1_500 * S);
});

test("a participant's own control runs its clock; the other keeps the session's", () => {
  const st = state(
    "per_participant",
    [
      participant(0, 60 * S, { time_control: { type: "simple_delay", delay_ms: 10 * S } }),
      participant(1, 20 * S, { is_active: true, periods_left: 1 }),
    ],
    { time_control: { type: "byoyomi", periods: 1, period_ms: 10 * S } },
  );
  assert.equal(deadlineMs(st), T0 + 30 * S);
  const live = clocks(st, T0 + 25 * S);
  assert.deepEqual(reading(live[0]), { ...plain, remainingMs: 60 * S, untilFallMs: 70 * S, delayLeftMs: 0 });
  assert.deepEqual(reading(live[1]), { ...plain, remainingMs: 0, untilFallMs: 5 * S, periodLeftMs: 5 * S, periodsLeft: 1 });
});

test("per_group: the team shares its control's clock", () => {
  const g1 = "00000000-0000-4000-8000-0000000000b1";
  const st = state(
    "per_group",
    [
      participant(0, 5 * S, { is_active: true, group_id: g1, periods_left: 2 }),
      participant(1, 5 * S, { group_id: g1, periods_left: 2 }),
      participant(2, 5 * S, { periods_left: 2 }),
    ],
    { time_control: { type: "byoyomi", periods: 2, period_ms: 10 * S } },
  );
  const live = clocks(st, T0 + 8 * S);
  assert.deepEqual(
    live.map((x) => [x.remainingMs, x.periodLeftMs, x.periodsLeft, x.untilFallMs]),
    [
      [0, 7 * S, 2, 17 * S],
      [0, 7 * S, 2, 17 * S],
      [5 * S, null, 2, 25 * S],
    ],
  );
  assert.equal(deadlineMs(st), T0 + 25 * S);
});

test("an expired participant under a control reads 0", () => {
  const st = state("per_participant", [participant(0, 0, { has_expired: true, periods_left: 0 }), participant(1, 60 * S, { periods_left: 3 })], {
    status: "expired",
    time_control: { type: "byoyomi", periods: 3, period_ms: 10 * S },
  });
  const c = clocks(st, T0);
  assert.deepEqual([c[0]?.remainingMs, c[0]?.untilFallMs], [0, 0]);
  assert.equal(deadlineMs(st), null);
});

// core/src/view.rs's own tests of its clocks, with the same numbers.
test("view.rs: byo-yomi shows the running period and falls at the last", () => {
  const st = state(
    "per_participant",
    [participant(0, 5 * S, { is_active: true, periods_left: 3 }), participant(1, 5 * S, { periods_left: 3 })],
    { time_control: { type: "byoyomi", periods: 3, period_ms: 10 * S }, cycle_started_at: iso(T0 + 1_000) },
  );
  assert.equal(deadlineMs(st), T0 + 1_000 + 5_000 + 30_000);
  const c = clocks(st, T0 + 1_000 + 17_000)[0];
  // Main time over 12 s ago: the first period ran out, 8 s left in the second.
  assert.deepEqual([c?.remainingMs, c?.periodsLeft, c?.periodLeftMs, c?.untilFallMs], [0, 2, 8 * S, 18 * S]);
  // The waiting player's periods are all there.
  assert.equal(clocks(st, T0 + 18_000)[1]?.periodsLeft, 3);
});

test("view.rs: a simple delay holds the clock and hourglass fills the other", () => {
  const started = (control: TimeControl): SyncState =>
    state("per_participant", [participant(0, 60 * S, { is_active: true }), participant(1, 60 * S)], {
      time_control: control,
      cycle_started_at: iso(T0 + 1_000),
    });
  let st = started({ type: "simple_delay", delay_ms: 5 * S });
  let c = clocks(st, T0 + 1_000 + 3_000)[0];
  assert.deepEqual([c?.remainingMs, c?.delayLeftMs, c?.untilFallMs], [60 * S, 2 * S, 62 * S]);
  c = clocks(st, T0 + 1_000 + 9_000)[0];
  assert.deepEqual([c?.remainingMs, c?.delayLeftMs], [56 * S, 0]);
  assert.equal(deadlineMs(st), T0 + 1_000 + 65_000);
  st = started({ type: "hourglass" });
  assert.deepEqual(
    clocks(st, T0 + 1_000 + 7_000).map((x) => x.remainingMs),
    [53 * S, 67 * S],
  );
});
