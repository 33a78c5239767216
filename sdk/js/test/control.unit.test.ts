// The time controls' arithmetic (src/control.ts) held to the hand-worked
// games of core/src/control.rs's tests: the same moves, the same numbers, so
// that the server and the SDK play the same games. Each row is one move, its
// time used, and the clock after it, as a player with a hardware clock would
// read it. (control.rs's two other tests, the record's compact form and the
// wire shape's serde tags, have no counterpart here: the SDK reads the JSON
// the generated types describe.)
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  creditLag,
  fallAfter,
  live,
  onMove,
  onStop,
  startClock,
  type ControlClock,
  type LagCompensation,
  type MoveEvents,
  type TimeControl,
} from "../src/index.js";

const S = 1000;
const MIN = 60 * S;

function clock(extra: Partial<ControlClock> = {}): ControlClock {
  return { mainMs: 0, periodsLeft: 0, movesLeft: 0, stage: 0, overtime: false, turnMs: 0, ...extra };
}

const main = (ms: number): ControlClock => clock({ mainMs: ms });

function events(extra: Partial<MoveEvents> = {}): MoveEvents {
  return { delayUsedMs: 0, periodsConsumed: 0, enteredOvertime: false, blockRenewed: false, stageAdvanced: false, ...extra };
}

/** Plays `moves` ([elapsed, expected clock after, expected events]) from `start`. */
function game(control: TimeControl, start: ControlClock, moves: [number, ControlClock, MoveEvents][]): ControlClock {
  let c = start;
  moves.forEach(([e, want, ev], n) => {
    assert.ok(e < fallAfter(control, c), `move ${n + 1} at ${e} ms comes before the fall at ${fallAfter(control, c)}`);
    const got = onMove(control, c, e);
    assert.deepEqual(got.clock, want, `clock after move ${n + 1}`);
    assert.deepEqual(got.events, ev, `events of move ${n + 1}`);
    c = got.clock;
  });
  return c;
}

/** Plays `n` moves of `e` ms each and returns the clock after them. */
function moves(control: TimeControl, start: ControlClock, n: number, e: number): ControlClock {
  let c = start;
  for (let k = 0; k < n; k++) c = onMove(control, c, e).clock;
  return c;
}

test("Bronstein 3 + 2", () => {
  const c: TimeControl = { type: "bronstein", delay_ms: 2 * S };
  const start = startClock(c, 3 * MIN);
  assert.equal(fallAfter(c, start), 180 * S);
  const back = (ms: number): MoveEvents => events({ delayUsedMs: ms });
  game(c, start, [
    // A move in 1.5 s costs nothing: 1.5 s is given back.
    [1_500, main(180 * S), back(1_500)],
    // 10 s: 2 s back, 8 s charged.
    [10 * S, main(172 * S), back(2 * S)],
    // Exactly the delay: free.
    [2 * S, main(172 * S), back(2 * S)],
  ]);
  // During a turn the clock runs at once; the delay is what a move now gets back.
  const l = live(c, main(172 * S), 500);
  assert.deepEqual([l.mainMs, l.delayLeftMs], [171_500, 1_500]);
});

test("US delay 5 + 5", () => {
  const c: TimeControl = { type: "simple_delay", delay_ms: 5 * S };
  const start = startClock(c, 5 * MIN);
  // The clock waits 5 s, then runs the 5 min.
  assert.equal(fallAfter(c, start), 305 * S);
  const waited = (ms: number): MoveEvents => events({ delayUsedMs: ms });
  game(c, start, [
    [3 * S, main(300 * S), waited(3 * S)],
    [12 * S, main(293 * S), waited(5 * S)],
    [5 * S, main(293 * S), waited(5 * S)],
  ]);
  // 2 s into a turn: 3 s of delay left, main untouched; 8 s in: 3 s charged.
  let l = live(c, main(293 * S), 2 * S);
  assert.deepEqual([l.mainMs, l.delayLeftMs], [293 * S, 3 * S]);
  l = live(c, main(293 * S), 8 * S);
  assert.deepEqual([l.mainMs, l.delayLeftMs, l.untilFallMs], [290 * S, 0, 290 * S]);
});

test("Japanese byo-yomi 5 × 30 s", () => {
  const c: TimeControl = { type: "byoyomi", periods: 5, period_ms: 30 * S };
  const start = startClock(c, 10 * MIN);
  assert.equal(start.periodsLeft, 5);
  assert.equal(fallAfter(c, start), 600 * S + 150 * S);
  const at = (mainMs: number, periodsLeft: number): ControlClock => clock({ mainMs, periodsLeft });
  const consumed = (n: number): MoveEvents => events({ periodsConsumed: n });
  game(c, start, [
    // 9 min 50 s of thinking: main time 10 s left.
    [590 * S, at(10 * S, 5), events()],
    // 35 s: main time gone, the move is 25 s into the first period: kept.
    [35 * S, at(0, 5), consumed(0)],
    // 29.9 s: inside the period, kept.
    [29_900, at(0, 5), consumed(0)],
    // 75 s: two periods used up, the move is in the third.
    [75 * S, at(0, 3), consumed(2)],
    // 30 s exactly: the period is used up, the move is in the next.
    [30 * S, at(0, 2), consumed(1)],
  ]);
  // Two periods left: it falls 60 s into the turn.
  assert.equal(fallAfter(c, at(0, 2)), 60 * S);
  let l = live(c, at(0, 2), 40 * S);
  assert.deepEqual([l.periodsLeft, l.periodLeftMs, l.untilFallMs], [1, 20 * S, 20 * S]);
  // Still in main time: no period runs yet.
  l = live(c, at(10 * S, 5), 4 * S);
  assert.deepEqual([l.mainMs, l.periodLeftMs, l.periodsLeft], [6 * S, null, 5]);
  l = live(c, at(10 * S, 5), 12 * S);
  assert.deepEqual([l.mainMs, l.periodLeftMs, l.periodsLeft], [0, 28 * S, 5]);
});

test("Canadian 20 moves in 5 min", () => {
  const c: TimeControl = { type: "canadian", moves: 20, period_ms: 5 * MIN };
  const start = startClock(c, 60 * S);
  // Main time, then a first block of 5 min.
  assert.equal(fallAfter(c, start), 360 * S);
  const block = (mainMs: number, movesLeft: number): ControlClock => clock({ mainMs, movesLeft, overtime: true });
  const rows: [number, ControlClock, MoveEvents][] = [
    // 50 s of main time.
    [50 * S, main(10 * S), events()],
    // 25 s: main time ran out 10 s in; the block began then and this move
    // (15 s into it) is its first of 20.
    [25 * S, block(285 * S, 19), events({ enteredOvertime: true })],
  ];
  // 18 more moves of 10 s each: 1 move left, 105 s left in the block.
  let left = 285 * S;
  for (let k = 0; k < 18; k++) {
    left -= 10 * S;
    rows.push([10 * S, block(left, 18 - k), events()]);
  }
  assert.equal(left, 105 * S);
  // The block's 20th move renews it: 5 min for the next 20.
  rows.push([100 * S, block(300 * S, 20), events({ blockRenewed: true })]);
  game(c, start, rows);
  // In overtime it falls when the block's time runs out.
  assert.equal(fallAfter(c, block(105 * S, 1)), 105 * S);
  // In main time the coming block shows once main time is over.
  const l = live(c, main(10 * S), 40 * S);
  assert.deepEqual([l.mainMs, l.movesLeft, l.untilFallMs], [270 * S, 20, 270 * S]);
});

test("FIDE: 90 min for 40 moves, then 30 min, with a 30 s increment", () => {
  const c: TimeControl = {
    type: "stages",
    stages: [
      { moves: 40, increment_ms: 30 * S },
      { add_ms: 30 * MIN, increment_ms: 30 * S },
    ],
  };
  const start = startClock(c, 90 * MIN);
  assert.deepEqual([start.stage, start.movesLeft], [0, 40]);
  // 39 moves of 2 min 10 s: each costs 100 s net (130 − 30).
  let k = moves(c, start, 39, 130 * S);
  assert.equal(k.mainMs, 5_400 * S - 39 * 100 * S);
  assert.deepEqual([k.stage, k.movesLeft], [0, 1]);
  // Move 40 (60 s): +30 s increment, then the second stage adds 30 min.
  let r = onMove(c, k, 60 * S);
  assert.ok(r.events.stageAdvanced);
  k = r.clock;
  assert.equal(k.mainMs, 1_500 * S - 60 * S + 30 * S + 1_800 * S);
  assert.deepEqual([k.stage, k.movesLeft], [1, 0]);
  // The last stage has no move count: it goes on with its increment.
  r = onMove(c, k, 100 * S);
  assert.ok(!r.events.stageAdvanced);
  k = r.clock;
  assert.equal(k.mainMs, 3_270 * S - 70 * S);
  assert.equal(fallAfter(c, k), 3_200 * S);
});

test("stages carry their own delay", () => {
  // 2 moves with a 5 s simple delay, then +10 min with a 2 s Bronstein delay.
  const c: TimeControl = {
    type: "stages",
    stages: [
      { moves: 2, delay_ms: 5 * S, delay_kind: "simple" },
      { add_ms: 10 * MIN, delay_ms: 2 * S },
    ],
  };
  let k = startClock(c, 60 * S);
  assert.equal(fallAfter(c, k), 65 * S, "the simple delay comes first");
  k = onMove(c, k, 8 * S).clock; // 3 s charged
  assert.equal(k.mainMs, 57 * S);
  const r = onMove(c, k, 4 * S); // inside the delay: free; stage 2 begins
  assert.ok(r.events.stageAdvanced);
  k = r.clock;
  assert.equal(k.mainMs, 657 * S);
  assert.equal(fallAfter(c, k), 657 * S, "Bronstein: the clock runs at once");
  k = onMove(c, k, 7 * S).clock; // 2 s back
  assert.equal(k.mainMs, 652 * S);
});

test("Fischer and hourglass", () => {
  const f: TimeControl = { type: "fischer", increment_ms: 2 * S };
  let k = onMove(f, startClock(f, 60 * S), 5 * S).clock;
  assert.equal(k.mainMs, 57 * S);
  assert.equal(fallAfter(f, k), 57 * S);
  // Hourglass charges the mover; the model gives the other player the same.
  const h: TimeControl = { type: "hourglass" };
  k = onMove(h, startClock(h, 60 * S), 5 * S).clock;
  assert.equal(k.mainMs, 55 * S);
});

test("a turn stopped without a move is charged what the clock ran", () => {
  // Bronstein and Fischer: all of it, nothing given back or added.
  for (const c of [
    { type: "bronstein", delay_ms: 2 * S },
    { type: "fischer", increment_ms: 2 * S },
  ] satisfies TimeControl[]) {
    assert.equal(onStop(c, startClock(c, 60 * S), 10 * S).mainMs, 50 * S, c.type);
  }
  // A simple delay still waits first, once per turn: a pause 3 s in leaves
  // 2 s of it for the resumed turn.
  const d: TimeControl = { type: "simple_delay", delay_ms: 5 * S };
  let k = onStop(d, startClock(d, 60 * S), 3 * S);
  assert.deepEqual([k.mainMs, k.turnMs], [60 * S, 3 * S]);
  assert.equal(fallAfter(d, k), 62 * S);
  k = onStop(d, k, 8 * S);
  assert.deepEqual([k.mainMs, k.turnMs], [54 * S, 5 * S]);
  // Byo-yomi: whole periods that ran out are gone; the running one goes on
  // after a resume.
  const y: TimeControl = { type: "byoyomi", periods: 3, period_ms: 10 * S };
  k = onStop(y, startClock(y, 5 * S), 27 * S);
  assert.deepEqual([k.mainMs, k.periodsLeft, k.turnMs], [0, 1, 2 * S]);
  assert.equal(fallAfter(y, k), 8 * S);
  // Canadian: main time that ran out begins a block; no move is counted.
  const ca: TimeControl = { type: "canadian", moves: 5, period_ms: 60 * S };
  k = onStop(ca, startClock(ca, 10 * S), 25 * S);
  assert.deepEqual([k.mainMs, k.movesLeft, k.overtime], [45 * S, 5, true]);
  k = onStop(ca, k, 5 * S);
  assert.deepEqual([k.mainMs, k.movesLeft], [40 * S, 5]);
  // Stages: no move counted, so no stage change.
  const g: TimeControl = { type: "stages", stages: [{ moves: 1 }, { add_ms: 60 * S }] };
  k = onStop(g, startClock(g, 30 * S), 10 * S);
  assert.deepEqual([k.mainMs, k.stage, k.movesLeft], [20 * S, 0, 1]);
});

test("lag is credited from a quota that regenerates", () => {
  // Lichess-like: 0.5 s at the start, +0.1 s a move, at most 1 s.
  const lag: LagCompensation = { initial_ms: 500, gain_ms: 100, max_ms: 1_000 };
  let quota = lag.initial_ms;
  const credited: number[] = [];
  for (const claim of [200, 300, 10_000, 50, 0, 0, 0, 0, 0, 0, 0, 0]) {
    const [c, q] = creditLag(lag, claim, quota);
    credited.push(c);
    quota = q;
  }
  // 500 → 400 → 200; a huge claim gets the 200 left and no more.
  assert.deepEqual(credited.slice(0, 4), [200, 300, 200, 50]);
  // 100 + 100 − 50 = 150, then eight moves without lag refill it.
  assert.equal(quota, 950);
  assert.equal(creditLag(lag, 0, 950)[1], 1_000);
  // A negative claim is no claim.
  assert.deepEqual(creditLag(lag, -5, 300), [0, 400]);
});

test("the inputs are left as they were", () => {
  const c: TimeControl = { type: "canadian", moves: 2, period_ms: 10 * S };
  const k = startClock(c, 1 * S);
  const copy = { ...k };
  onMove(c, k, 5 * S);
  onStop(c, k, 5 * S);
  live(c, k, 5 * S);
  assert.deepEqual(k, copy);
});

test("a pause and a resume continue the turn (as in control.rs)", () => {
  const controls: TimeControl[] = [
    { type: "simple_delay", delay_ms: 5 * S },
    { type: "bronstein", delay_ms: 5 * S },
    { type: "byoyomi", periods: 3, period_ms: 4 * S },
    { type: "canadian", moves: 2, period_ms: 6 * S },
    { type: "stages", stages: [{ moves: 1, delay_ms: 3 * S, delay_kind: "simple" }, {}] },
  ];
  for (const c of controls) {
    const start = startClock(c, 2 * S);
    const fall = fallAfter(c, start);
    let paused = start;
    let t = 0;
    while (t < 9 * S && t + 900 < fall) {
      assert.equal(fallAfter(c, paused), fall - t, `${c.type} at ${t}`);
      paused = onStop(c, paused, 900);
      t += 900;
    }
    assert.equal(fallAfter(c, paused), fall - t, `${c.type} at ${t}`);
    if (t < fall) {
      assert.deepEqual(onMove(c, paused, 0).clock, onMove(c, start, t).clock, `${c.type}: the move ends the turn alike`);
    }
  }
});
