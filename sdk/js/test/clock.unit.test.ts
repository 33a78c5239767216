// The clock math of every sync mode on hand-made snapshots. The same math is
// held to the server's own numbers in clock.stack.test.ts.
import assert from "node:assert/strict";
import { test } from "node:test";
import { clocks, deadlineMs, formatClock, remainingMs, type Participant, type SyncState } from "../src/index.js";

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
