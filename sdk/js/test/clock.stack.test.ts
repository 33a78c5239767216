// The SDK's clock math, every sync mode, held to the server's own numbers:
// the live clocks computed from one snapshot at the instant of the next
// command must be what the server charged at that instant (pause and switch
// checkpoints), the deadline must be the server's `expires_at`, and an expiry
// must land on that deadline.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import {
  SessionWatcher,
  SyncKairos,
  bankSharers,
  clocks,
  deadlineMs,
  parseTimestamp,
  type CreateSessionBody,
  type SyncState,
} from "../src/index.js";
import { Stack, sleep, uuid } from "./support/stack.js";

let stack: Stack;
let sk: SyncKairos;

before(async () => {
  stack = await Stack.start({ env: { SWITCH_RATE_LIMIT: "0" } });
  sk = new SyncKairos({ baseUrl: stack.server.url, token: stack.token() });
});
after(async () => stack.close());

function participants(banks: number[], groups: (string | undefined)[] = []): CreateSessionBody["participants"] {
  return banks.map((b, i) => {
    const p: CreateSessionBody["participants"][number] = { participant_id: uuid(), participant_index: i, total_time_ms: b };
    const g = groups[i];
    if (g !== undefined) p.group_id = g;
    return p;
  });
}

const g1 = uuid();
const g2 = uuid();

/** One session body per case; `bank` is small for the expiry runs. */
const CASES: Record<string, (bank: number) => Omit<CreateSessionBody, "session_id">> = {
  per_participant: (bank) => ({
    sync_mode: "per_participant",
    total_time_ms: bank,
    increment_ms: 1_500,
    participants: participants([bank, bank + 15_000]),
  }),
  per_cycle: (bank) => ({
    sync_mode: "per_cycle",
    total_time_ms: 60_000,
    time_per_cycle_ms: bank,
    participants: participants([60_000, 60_000, 60_000]),
  }),
  per_group: (bank) => ({
    sync_mode: "per_group",
    total_time_ms: bank,
    increment_ms: 1_000,
    participants: participants([bank, bank, bank + 10_000, bank + 20_000], [g1, g1, g2, undefined]),
  }),
  global: (bank) => ({
    sync_mode: "global",
    total_time_ms: bank,
    participants: participants([bank, bank, bank]),
  }),
  count_up: () => ({
    sync_mode: "count_up",
    total_time_ms: 60_000,
    participants: participants([60_000, 60_000]),
  }),
  "count_up with max_time_ms": (bank) => ({
    sync_mode: "count_up",
    total_time_ms: 60_000,
    max_time_ms: bank,
    participants: participants([60_000, 60_000]),
  }),
};

/** What the SDK computes from `before` at the server's instant `at`, per participant: [remaining, used]. */
function computed(before: SyncState, at: number): [number, number][] {
  return clocks(before, at).map((c) => [c.remainingMs, c.usedMs]);
}

function stored(st: { participants: SyncState["participants"] }): [number, number][] {
  return st.participants.map((p) => [p.time_remaining_ms, p.time_used_ms]);
}

function expiresAt(st: { expires_at: string | null }): number | null {
  return parseTimestamp(st.expires_at);
}

const jitter = (): Promise<void> => sleep(120 + Math.floor(Math.random() * 250));

describe("the clock math of every mode equals the server's checkpoints", () => {
  for (const [name, make] of Object.entries(CASES)) {
    test(name, async () => {
      const sid = uuid();
      await sk.createSession({ session_id: sid, ...make(60_000) });
      let st = await sk.start(sid);
      assert.equal(deadlineMs(st), expiresAt(st), "deadline = expires_at at start");
      for (let round = 0; round < 3; round++) {
        // pause: the running turn is charged at the pause's instant.
        await jitter();
        const paused = await sk.pause(sid);
        const at = parseTimestamp(paused.updated_at) as number;
        assert.deepEqual(computed(st, at), stored(paused), `pause ${round}`);
        assert.equal(deadlineMs(paused), null);
        st = await sk.resume(sid);
        assert.equal(deadlineMs(st), expiresAt(st), "deadline = expires_at after resume");
        // switch: charged, then the mode's own rule for the bank.
        await jitter();
        const i = st.participants.findIndex((p) => p.is_active);
        const w = await sk.switchTurn(sid);
        const t = parseTimestamp(w.cycle_started_at) as number;
        const expected = computed(st, t);
        for (const j of bankSharers(st, i)) {
          const e = expected[j] as [number, number];
          if (st.sync_mode === "per_participant" || st.sync_mode === "per_group") e[0] += st.increment_ms;
        }
        if (st.sync_mode === "per_cycle") {
          // The old and the new turn both hold a fresh cycle.
          const next = w.participants.findIndex((p) => p.is_active);
          (expected[i] as [number, number])[0] = st.time_per_cycle_ms as number;
          (expected[next] as [number, number])[0] = st.time_per_cycle_ms as number;
        }
        assert.deepEqual(stored(w), expected, `switch ${round}`);
        st = await sk.getSession(sid);
        assert.equal(deadlineMs(st), expiresAt(st), "deadline = expires_at after switch");
      }
      // complete: the running turn is charged once more.
      await jitter();
      const done = await sk.complete(sid);
      assert.deepEqual(computed(st, parseTimestamp(done.updated_at) as number), stored(done), "complete");
    });
  }
});

describe("expiry lands on the deadline the SDK computes", () => {
  for (const [name, make] of Object.entries(CASES)) {
    if (name === "count_up") continue; // no deadline without max_time_ms
    test(name, async () => {
      const sid = uuid();
      await sk.createSession({ session_id: sid, ...make(1_000) });
      const w = new SessionWatcher({ url: stack.server.url, sessionId: sid, token: stack.token() });
      try {
        const started = await sk.start(sid);
        const deadline = deadlineMs(started) as number;
        assert.equal(deadline, expiresAt(started));
        const live = await w.waitFor((s) => s.version === started.version);
        // Just before the deadline, the active clock reads what is left.
        const before = clocks(live, deadline - 1).find((c) => c.isActive);
        assert.equal(before?.remainingMs, 1);
        const expired = await w.waitFor((s) => s.status === "expired", { timeoutMs: 10_000 });
        assert.equal(parseTimestamp(expired.session_completed_at), deadline, "expired at the deadline, not later");
        assert.equal(expired.expiry_reason, "time_ran_out");
        const out = expired.participants.find((p) => p.has_expired);
        assert.ok(out !== undefined, "someone ran out");
        assert.equal(w.remainingMs(out.participant_id), 0);
        const lateness = (parseTimestamp(expired.updated_at) ?? deadline) - deadline;
        console.log(`${name}: expired at its deadline; applied ${lateness} ms after it`);
      } finally {
        w.close();
      }
    });
  }
});
