// The SDK's time controls held to the server's own numbers, as
// clock.stack.test.ts does it for the sync modes: for every control, games
// paused, resumed and switched at random moments, where
//   - what clocks(before, t) computes at the server's instant t of a pause
//     (or the completion) is what the server stored: the bank, the time used,
//     the periods and moves left, the stage, Canadian overtime;
//   - so is what onStop computes for the same instant;
//   - what onMove (and creditLag, when the session compensates lag) computes
//     for a switch at its instant is what the server stored;
//   - deadlineMs(state) is the server's expires_at after every command;
// and a clock left alone expires exactly at the SDK's deadline, delays,
// byo-yomi periods and Canadian blocks included.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import {
  SessionWatcher,
  SyncKairos,
  activeIndex,
  bankSharers,
  clocks,
  controlClockOf,
  controlOf,
  creditLag,
  deadlineMs,
  onMove,
  onStop,
  parseTimestamp,
  type Clock,
  type ControlClock,
  type CreateSessionBody,
  type MoveEvents,
  type Participant,
  type SyncState,
  type TimeControl,
} from "../src/index.js";
import { Stack, sleep, uuid } from "./support/stack.js";

let stack: Stack;
let sk: SyncKairos;

before(async () => {
  stack = await Stack.start({ env: { SWITCH_RATE_LIMIT: "0" } });
  sk = new SyncKairos({ baseUrl: stack.server.url, token: stack.token() });
});
after(async () => stack.close());

type Body = Omit<CreateSessionBody, "session_id">;

function participants(banks: number[], extra: Partial<CreateSessionBody["participants"][number]>[] = []): CreateSessionBody["participants"] {
  return banks.map((b, i) => ({ participant_id: uuid(), participant_index: i, total_time_ms: b, ...extra[i] }));
}

function twoPlayers(bank: number, control: TimeControl, more: Partial<Body> = {}): Body {
  return { sync_mode: "per_participant", total_time_ms: bank, time_control: control, participants: participants([bank, bank]), ...more };
}

/** What a game saw, from the SDK's own expectations of each move (held equal to the server's). */
interface Seen {
  events: MoveEvents[];
  /** [elapsed, credited, claimed, whether the quota hit its maximum] of each move of a session with lag compensation. */
  lag: [number, number, number, boolean][];
  states: SyncState[];
}

interface Case {
  body: Body;
  /** Random waits before each command, [min, max) ms. */
  waitMs: [number, number];
  /** The lag a switch claims (sessions with lag compensation). */
  claim?: () => number;
  /** Play on until this holds (at least 4 rounds, at most 16). */
  covered: (seen: Seen) => boolean;
}

const g1 = uuid();
const g2 = uuid();
const random = (lo: number, hi: number): number => lo + Math.floor(Math.random() * (hi - lo));

/** A move made inside the delay, and one made past it. */
const bothSidesOfTheDelay = (seen: Seen): boolean =>
  seen.events.some((e) => e.delayUsedMs > 0 && e.delayUsedMs < 300) && seen.events.some((e) => e.delayUsedMs === 300);

/** Byo-yomi periods ran out, by a move or in a pause (each of those turn segments takes less than 2 periods). */
const periodsUsedUp = (seen: Seen): boolean =>
  seen.events.some((e) => e.periodsConsumed > 0) || seen.states.some((s) => s.participants.some((p) => (p.periods_left ?? 20) < 20));

const CASES: Record<string, Case> = {
  bronstein: {
    body: twoPlayers(30_000, { type: "bronstein", delay_ms: 300 }),
    waitMs: [0, 600],
    covered: bothSidesOfTheDelay,
  },
  simple_delay: {
    body: twoPlayers(30_000, { type: "simple_delay", delay_ms: 300 }),
    waitMs: [0, 600],
    covered: bothSidesOfTheDelay,
  },
  byoyomi: {
    // 1 s of main time, then 20 periods of 1 s: turns of up to 3.2 s use some up.
    body: twoPlayers(1_000, { type: "byoyomi", periods: 20, period_ms: 1_000 }),
    waitMs: [100, 1_600],
    covered: (seen) => periodsUsedUp(seen) && seen.states.some((s) => s.participants.every((p) => p.time_remaining_ms === 0)),
  },
  canadian: {
    // 1 s of main time, then blocks of 2 moves in 5 s (a turn takes at most 1.4 s).
    body: twoPlayers(1_000, { type: "canadian", moves: 2, period_ms: 5_000 }),
    waitMs: [100, 700],
    covered: (seen) => seen.states.some((s) => s.participants.every((p) => p.overtime === true)) && seen.events.some((e) => e.blockRenewed),
  },
  hourglass: {
    body: twoPlayers(10_000, { type: "hourglass" }),
    waitMs: [50, 500],
    covered: () => true,
  },
  stages: {
    // 2 moves with a 100 ms increment; 1 move more with +1 s and a 300 ms simple delay; then +2 s with a 200 ms Bronstein delay.
    body: twoPlayers(20_000, {
      type: "stages",
      stages: [
        { moves: 2, increment_ms: 100 },
        { moves: 1, add_ms: 1_000, delay_ms: 300, delay_kind: "simple" },
        { add_ms: 2_000, delay_ms: 200 },
      ],
    }),
    waitMs: [0, 500],
    covered: (seen) => seen.states.some((s) => s.participants.every((p) => p.stage === 2)),
  },
  "own controls (byo-yomi against a simple delay)": {
    body: {
      sync_mode: "per_participant",
      total_time_ms: 1_000,
      participants: participants(
        [1_000, 60_000],
        [{ time_control: { type: "byoyomi", periods: 20, period_ms: 1_000 } }, { time_control: { type: "simple_delay", delay_ms: 300 } }],
      ),
    },
    waitMs: [100, 1_600],
    covered: periodsUsedUp,
  },
  "per_group under Bronstein": {
    body: {
      sync_mode: "per_group",
      total_time_ms: 20_000,
      time_control: { type: "bronstein", delay_ms: 300 },
      participants: participants([20_000, 20_000, 25_000, 30_000], [{ group_id: g1 }, { group_id: g1 }, { group_id: g2 }, {}]),
    },
    waitMs: [0, 600],
    covered: bothSidesOfTheDelay,
  },
  "per_group under stages, with lag compensation": {
    body: {
      sync_mode: "per_group",
      total_time_ms: 20_000,
      time_control: { type: "stages", stages: [{ moves: 1, increment_ms: 200 }, { add_ms: 3_000, increment_ms: 100 }] },
      lag_compensation: { initial_ms: 300, gain_ms: 50, max_ms: 400 },
      participants: participants([20_000, 20_000, 20_000], [{ group_id: g1 }, { group_id: g1 }, {}]),
    },
    waitMs: [50, 500],
    claim: () => random(0, 250),
    covered: (seen) => seen.lag.some(([, c, claimed]) => c > 0 && c === claimed),
  },
  "Fischer with lag compensation": {
    body: {
      sync_mode: "per_participant",
      total_time_ms: 30_000,
      increment_ms: 500,
      lag_compensation: { initial_ms: 800, gain_ms: 300, max_ms: 1_000 },
      participants: participants([30_000, 30_000]),
    },
    waitMs: [50, 500],
    // First no claim (the quota fills to its cap), a claim beyond the quota
    // and an honest one, so every case it is for comes up; then mostly
    // honest claims, now and then one beyond the quota.
    claim: ((first: number[]) => () => first.shift() ?? (Math.random() < 0.25 ? 5_000 : random(0, 300)))([0, 5_000, 100]),
    covered: (seen) =>
      seen.lag.some(([, c, claimed]) => c > 0 && c < claimed) &&
      seen.lag.some(([, c, claimed]) => c > 0 && c === claimed) &&
      seen.lag.some(([, , , capped]) => capped),
  },
  "hourglass with lag compensation": {
    body: twoPlayers(10_000, { type: "hourglass" }, { lag_compensation: { initial_ms: 200, gain_ms: 100, max_ms: 400 } }),
    waitMs: [50, 500],
    claim: () => random(0, 400),
    covered: (seen) => seen.lag.some(([e, c]) => c > 0 && c < e),
  },
};

/** A participant's clock as stored: bank, time used, periods and moves left, stage, overtime, lag quota. */
type Row = [number, number, number | null, number | null, number | null, boolean, number | null];

function stored(ps: Participant[]): Row[] {
  return ps.map((p) => [
    p.time_remaining_ms,
    p.time_used_ms,
    p.periods_left ?? null,
    p.moves_left ?? null,
    p.stage ?? null,
    p.overtime ?? false,
    p.lag_quota_ms ?? null,
  ]);
}

/** What the SDK reads from `before` at the server's instant `at`: what a pause (or the end) stores. */
function computed(before: SyncState, at: number): Row[] {
  return clocks(before, at).map((c, j) => [
    c.remainingMs,
    c.usedMs,
    c.periodsLeft,
    c.movesLeft,
    c.stage,
    c.overtime,
    before.participants[j]?.lag_quota_ms ?? null,
  ]);
}

/** Writes a control's clock to a stored row, keeping what the control keeps (model::store_clock). */
function put(r: Row, control: TimeControl, clock: ControlClock): void {
  r[0] = clock.mainMs;
  r[2] = control.type === "byoyomi" ? clock.periodsLeft : null;
  r[3] = control.type === "canadian" || control.type === "stages" ? clock.movesLeft : null;
  r[4] = control.type === "stages" ? clock.stage : null;
  r[5] = control.type === "canadian" && clock.overtime;
}

/**
 * What onStop (model::charge) expects a pause at the server's instant `at` to
 * store: the same as {@link computed}, by the other road.
 */
function afterStop(before: SyncState, at: number): Row[] {
  const i = activeIndex(before);
  const rows = stored(before.participants);
  const e = Math.max(0, at - (parseTimestamp(before.cycle_started_at) as number));
  (rows[i] as Row)[1] += e;
  const control = controlOf(before, i) as TimeControl;
  const clock = onStop(control, controlClockOf(before, i) as ControlClock, e);
  for (const j of bankSharers(before, i)) put(rows[j] as Row, control, clock);
  if (control.type === "hourglass" && rows.length === 2) (rows[1 - i] as Row)[0] += e;
  return rows;
}

/**
 * What the SDK expects a switch at the server's instant `at`, claiming
 * `claimMs` of lag, to store (model::charge_move): the lag credited from the
 * mover's quota, the rest charged by its control to the bank it shares;
 * hourglass gives it to the other participant.
 */
function afterMove(
  before: SyncState,
  at: number,
  claimMs: number | undefined,
): { rows: Row[]; events: MoveEvents; lag: [number, number, number, boolean] } {
  const i = activeIndex(before);
  const rows = stored(before.participants);
  const mover = rows[i] as Row;
  const elapsed = Math.max(0, at - (parseTimestamp(before.cycle_started_at) as number));
  let e = elapsed;
  let credited = 0;
  let capped = false;
  const lag = before.lag_compensation;
  if (lag !== undefined && lag !== null) {
    const had = mover[6] ?? lag.initial_ms;
    const [c, quota] = creditLag(lag, claimMs ?? 0, had);
    credited = c;
    capped = had + lag.gain_ms - c > lag.max_ms;
    mover[6] = quota;
    e = Math.max(0, elapsed - c);
  }
  mover[1] += e;
  const control = controlOf(before, i) as TimeControl;
  const { clock, events } = onMove(control, controlClockOf(before, i) as ControlClock, e);
  for (const j of bankSharers(before, i)) put(rows[j] as Row, control, clock);
  if (control.type === "hourglass" && rows.length === 2) (rows[1 - i] as Row)[0] += e;
  return { rows, events, lag: [elapsed, credited, claimMs ?? 0, capped] };
}

function expiresAt(st: { expires_at: string | null }): number | null {
  return parseTimestamp(st.expires_at);
}

describe("every control: the SDK's clocks equal the server's checkpoints", () => {
  for (const [name, c] of Object.entries(CASES)) {
    test(name, async () => {
      const sid = uuid();
      const wait = (): Promise<void> => sleep(random(c.waitMs[0], c.waitMs[1]));
      const seen: Seen = { events: [], lag: [], states: [] };
      await sk.createSession({ session_id: sid, ...c.body });
      let st = await sk.start(sid);
      assert.equal(deadlineMs(st), expiresAt(st), "deadline = expires_at at start");
      let round = 0;
      for (; round < 16 && (round < 4 || !c.covered(seen)); round++) {
        // Half the turns are paused once: the running turn is charged at the pause's instant.
        if (Math.random() < 0.5) {
          await wait();
          const paused = await sk.pause(sid);
          const at = parseTimestamp(paused.updated_at) as number;
          assert.deepEqual(stored(paused.participants), computed(st, at), `pause in round ${round}: clocks()`);
          assert.deepEqual(stored(paused.participants), afterStop(st, at), `pause in round ${round}: onStop`);
          assert.equal(deadlineMs(paused), null);
          assert.equal(expiresAt(paused), null);
          seen.states.push(paused);
          st = await sk.resume(sid);
          assert.equal(deadlineMs(st), expiresAt(st), `deadline = expires_at after resume in round ${round}`);
        }
        await wait();
        const claim = c.claim?.();
        const w = await sk.switchTurn(sid, claim === undefined ? {} : { lagMs: claim });
        assert.equal(w.status, "running", `round ${round}: nobody ran out`);
        const expected = afterMove(st, parseTimestamp(w.cycle_started_at) as number, claim);
        assert.deepEqual(stored(w.participants), expected.rows, `switch in round ${round}`);
        seen.events.push(expected.events);
        if (claim !== undefined) seen.lag.push(expected.lag);
        st = await sk.getSession(sid);
        assert.equal(st.version, w.version);
        assert.equal(deadlineMs(st), expiresAt(st), `deadline = expires_at after the switch in round ${round}`);
        assert.equal(expiresAt(w), expiresAt(st));
        seen.states.push(st);
      }
      assert.ok(c.covered(seen), `${name}: the game covered what it is for in ${round} rounds`);
      // complete: the running turn is charged once more, as a pause.
      await wait();
      const done = await sk.complete(sid);
      const end = parseTimestamp(done.updated_at) as number;
      assert.deepEqual(stored(done.participants), computed(st, end), "complete: clocks()");
      assert.deepEqual(stored(done.participants), afterStop(st, end), "complete: onStop");
      assert.equal(deadlineMs(done), null);
      console.log(`${name}: ${round} rounds`);
    });
  }
});

describe("a stages session crosses its stages", () => {
  test("1 move, then 2 moves with +5 s, then +1 s", async () => {
    const sid = uuid();
    const control: TimeControl = {
      type: "stages",
      stages: [
        { moves: 1, increment_ms: 1_000 },
        { moves: 2, add_ms: 5_000 },
        { add_ms: 1_000, delay_ms: 500, delay_kind: "simple" },
      ],
    };
    await sk.createSession({ session_id: sid, ...twoPlayers(10_000, control) });
    let st = await sk.start(sid);
    assert.deepEqual(
      st.participants.map((p) => [p.stage, p.moves_left]),
      [
        [0, 1],
        [0, 1],
      ],
    );
    const view = (s: SyncState): [number | null, number | null][] => clocks(s, s.server_time_ms).map((c) => [c.stage, c.movesLeft]);
    const expectations: [number, number][][] = [
      // White's first move ends its first stage: the second begins with 2 moves.
      [
        [1, 2],
        [0, 1],
      ],
      [
        [1, 2],
        [1, 2],
      ],
      [
        [1, 1],
        [1, 2],
      ],
      [
        [1, 1],
        [1, 1],
      ],
      // The second stage's last move: the third begins, with no move count.
      [
        [2, 0],
        [1, 1],
      ],
      [
        [2, 0],
        [2, 0],
      ],
    ];
    for (const [n, want] of expectations.entries()) {
      await sleep(random(20, 200));
      const w = await sk.switchTurn(sid);
      const expected = afterMove(st, parseTimestamp(w.cycle_started_at) as number, undefined);
      assert.deepEqual(stored(w.participants), expected.rows, `move ${n + 1}`);
      assert.equal(expected.events.stageAdvanced, n === 0 || n === 1 || n === 4 || n === 5, `move ${n + 1} begins a stage`);
      st = await sk.getSession(sid);
      assert.deepEqual(
        st.participants.map((p) => [p.stage, p.moves_left]),
        want,
        `the server after move ${n + 1}`,
      );
      assert.deepEqual(view(st), want, `the SDK after move ${n + 1}`);
      assert.equal(deadlineMs(st), expiresAt(st));
    }
    // In the third stage the simple delay shows and the deadline waits for it.
    const active = clocks(st, parseTimestamp(st.cycle_started_at) as number).find((c) => c.isActive);
    assert.equal(active?.delayLeftMs, 500);
    assert.equal(active?.untilFallMs, (active?.remainingMs ?? 0) + 500);
    assert.equal(deadlineMs(st), (parseTimestamp(st.cycle_started_at) as number) + (active?.untilFallMs ?? 0));
    await sk.complete(sid);
  });
});

describe("a clock left alone expires at the deadline the SDK computes", () => {
  const EXPIRING: Record<string, { body: Body; fallsAfter: number; justBefore: (c: Clock) => void }> = {
    // 1 s of main time, then 2 periods of 1 s: it falls 3 s in.
    "byo-yomi 1 s + 2 × 1 s": {
      body: twoPlayers(1_000, { type: "byoyomi", periods: 2, period_ms: 1_000 }),
      fallsAfter: 3_000,
      justBefore: (c) => assert.deepEqual([c.remainingMs, c.periodsLeft, c.periodLeftMs, c.untilFallMs], [0, 1, 1, 1]),
    },
    // The delay of 1.5 s first, then the bank of 1 s.
    "simple delay 1.5 s on 1 s": {
      body: twoPlayers(1_000, { type: "simple_delay", delay_ms: 1_500 }),
      fallsAfter: 2_500,
      justBefore: (c) => assert.deepEqual([c.remainingMs, c.delayLeftMs, c.untilFallMs], [1, 0, 1]),
    },
    // 1 s of main time, then the first block of 1 s.
    "Canadian 1 s, then 3 moves in 1 s": {
      body: twoPlayers(1_000, { type: "canadian", moves: 3, period_ms: 1_000 }),
      fallsAfter: 2_000,
      justBefore: (c) => assert.deepEqual([c.remainingMs, c.movesLeft, c.overtime, c.untilFallMs], [1, 3, true, 1]),
    },
  };
  for (const [name, c] of Object.entries(EXPIRING)) {
    test(name, async () => {
      const sid = uuid();
      await sk.createSession({ session_id: sid, ...c.body });
      const w = new SessionWatcher({ url: stack.server.url, sessionId: sid, token: stack.token() });
      try {
        const started = await sk.start(sid);
        const deadline = deadlineMs(started) as number;
        assert.equal(deadline, expiresAt(started));
        assert.equal(deadline, (parseTimestamp(started.cycle_started_at) as number) + c.fallsAfter);
        const live = await w.waitFor((s) => s.version === started.version);
        const before = clocks(live, deadline - 1).find((x) => x.isActive);
        assert.ok(before !== undefined);
        c.justBefore(before);
        const expired = await w.waitFor((s) => s.status === "expired", { timeoutMs: 10_000 });
        assert.equal(parseTimestamp(expired.session_completed_at), deadline, "expired at the deadline, not later");
        assert.equal(expired.expiry_reason, "time_ran_out");
        // The fall is charged as a stop at the deadline (model::settle).
        assert.deepEqual(stored(expired.participants), afterStop(live, deadline));
        const out = expired.participants[0] as Participant;
        assert.equal(out.has_expired, true);
        assert.equal(out.time_remaining_ms, 0);
        assert.equal(out.time_used_ms, c.fallsAfter);
        if (c.body.time_control?.type === "byoyomi") assert.equal(out.periods_left, 0);
        const after = clocks(expired, deadline + 5_000)[0];
        assert.deepEqual([after?.remainingMs, after?.untilFallMs], [0, 0]);
        const lateness = (parseTimestamp(expired.updated_at) ?? deadline) - deadline;
        console.log(`${name}: expired at its deadline; applied ${lateness} ms after it`);
      } finally {
        w.close();
      }
    });
  }
});
