// The watcher's decisions, driven through a scripted WebSocket: what each
// close code leads to, version ordering, resubscription and heartbeats. The
// same behaviours are exercised against real servers in watcher.stack.test.ts;
// here every close code can be produced on demand (1013 cannot, on a real
// gateway, without a client too slow to be a test).
import assert from "node:assert/strict";
import { afterEach, test } from "node:test";
import { CLOSE_CODES, SessionWatcher, type ConnectionInfo, type SyncState, type WebSocketLike } from "../src/index.js";

const SID = "00000000-0000-4000-8000-0000000000aa";
const OTHER = "00000000-0000-4000-8000-0000000000bb";

class FakeSocket implements WebSocketLike {
  static all: FakeSocket[] = [];
  readyState = 0;
  sent: Record<string, unknown>[] = [];
  closedWith: number | undefined;
  onopen: ((ev: unknown) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onclose: ((ev: { code: number; reason: string }) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;
  constructor(readonly url: string) {
    FakeSocket.all.push(this);
  }
  send(data: string): void {
    this.sent.push(JSON.parse(data) as Record<string, unknown>);
  }
  close(code?: number): void {
    this.closedWith = code;
    this.readyState = 3;
  }
  // --- the server's side
  open(): void {
    this.readyState = 1;
    this.onopen?.({});
    this.message({ type: "CONNECTED", sessionId: SID, timestamp: Date.now() });
  }
  message(m: unknown): void {
    this.onmessage?.({ data: JSON.stringify(m) });
  }
  drop(code: number, reason = ""): void {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }
  types(): unknown[] {
    return this.sent.map((m) => m["type"]);
  }
}

function state(version: number, createdAt = "2026-12-01T10:00:00.000Z", sid = SID): SyncState {
  return {
    session_id: sid,
    sync_mode: "per_participant",
    status: "running",
    version,
    participants: [],
    active_participant_id: null,
    total_time_ms: 60_000,
    time_per_cycle_ms: null,
    cycle_started_at: null,
    session_started_at: null,
    session_completed_at: null,
    increment_ms: 0,
    created_at: createdAt,
    updated_at: createdAt,
    server_time_ms: 0,
    expires_at: null,
  } as SyncState;
}

const watchers: SessionWatcher[] = [];
function watcher(extra: Partial<ConstructorParameters<typeof SessionWatcher>[0]> = {}): { w: SessionWatcher; events: ConnectionInfo[] } {
  const w = new SessionWatcher({
    url: "http://gateway.test",
    sessionId: SID,
    token: "t0",
    WebSocket: FakeSocket,
    timeSyncSamples: 0,
    timeSyncIntervalMs: 0,
    reconnect: { initialDelayMs: 20, maxDelayMs: 40 },
    ...extra,
  });
  watchers.push(w);
  const events: ConnectionInfo[] = [];
  w.on("connection", (i) => events.push(i));
  return { w, events };
}

const tick = (ms = 0): Promise<void> => new Promise((r) => setTimeout(r, ms));
const last = (): FakeSocket => FakeSocket.all[FakeSocket.all.length - 1] as FakeSocket;

afterEach(() => {
  for (const w of watchers.splice(0)) w.close();
  FakeSocket.all = [];
});

test("the URL carries the session and the token; /ws is added to an http base", async () => {
  watcher();
  await tick();
  assert.equal(last().url, `ws://gateway.test/ws?sessionId=${SID}&token=t0`);
});

for (const c of CLOSE_CODES) {
  test(`close ${c.code}: ${c.reconnect ? "reconnects" : "stays closed"}`, async () => {
    const { w, events } = watcher({ token: () => "t0" });
    await tick();
    last().open();
    last().drop(c.code, "from the server");
    await tick(120 + (c.code === 1013 || c.code === 4029 ? 1_000 : 0));
    if (c.reconnect) {
      assert.equal(FakeSocket.all.length, 2, "a second socket was opened");
      const r = events.find((e) => e.state === "reconnecting");
      assert.equal(r?.code, c.code);
      if (c.code === 1013 || c.code === 4029) assert.ok((r?.retryInMs ?? 0) >= 1_000, "backs off at least a second");
    } else {
      assert.equal(FakeSocket.all.length, 1, "no second socket");
      assert.equal(w.connection, "closed");
    }
  });
}

test("after 4001 the provider is asked for a fresh token ('expired'), and the new socket carries it", async () => {
  const reasons: string[] = [];
  let n = 0;
  watcher({
    token: (why) => {
      reasons.push(why);
      return `tok${n++}`;
    },
  });
  await tick();
  last().open();
  last().drop(4001, "Token expired");
  await tick(100);
  assert.deepEqual(reasons, ["initial", "expired"]);
  assert.match(last().url, /token=tok1$/);
});

test("abnormal drops back off exponentially, with jitter, up to the cap", async () => {
  const { events } = watcher({ reconnect: { initialDelayMs: 100, maxDelayMs: 400 } });
  await tick();
  for (let i = 0; i < 4; i++) {
    last().drop(1006);
    await tick(450);
  }
  const delays = events.filter((e) => e.state === "reconnecting").map((e) => e.retryInMs ?? -1);
  assert.equal(delays.length, 4);
  const ceilings = [100, 200, 400, 400];
  delays.forEach((d, i) => assert.ok(d >= (ceilings[i] as number) / 2 && d <= (ceilings[i] as number), `delay ${i}: ${d}`));
});

test("never applies an older version; a newer incarnation replaces the old one", async () => {
  const { w } = watcher();
  const seen: number[] = [];
  w.on("state", (s) => seen.push(s.version));
  await tick();
  last().open();
  const s = last();
  s.message({ type: "STATE_SYNC", sessionId: SID, timestamp: 0, state: state(5) });
  s.message({ type: "STATE_UPDATE", sessionId: SID, timestamp: 0, state: state(4) });
  s.message({ type: "STATE_UPDATE", sessionId: SID, timestamp: 0, state: state(5) });
  s.message({ type: "STATE_UPDATE", sessionId: SID, timestamp: 0, state: state(7) });
  // An older incarnation's message, then the newer incarnation at version 1.
  s.message({ type: "STATE_UPDATE", sessionId: SID, timestamp: 0, state: state(9, "2026-11-30T10:00:00.000Z") });
  s.message({ type: "STATE_UPDATE", sessionId: SID, timestamp: 0, state: state(1, "2026-12-02T10:00:00.000Z") });
  assert.deepEqual(seen, [5, 7, 1]);
  assert.equal(w.state()?.version, 1);
});

test("extra sessions are subscribed again after a reconnect; unsubscribe stops that", async () => {
  const { w } = watcher();
  await tick();
  last().open();
  w.subscribe(OTHER.toUpperCase());
  assert.deepEqual(last().sent.at(-1), { type: "SUBSCRIBE", sessionId: OTHER });
  last().message({ type: "STATE_SYNC", sessionId: OTHER, timestamp: 0, state: state(3, undefined, OTHER) });
  assert.equal(w.state(OTHER)?.version, 3);
  last().drop(1012);
  await tick(60);
  last().open();
  assert.deepEqual(last().sent, [{ type: "SUBSCRIBE", sessionId: OTHER }]);
  w.unsubscribe(OTHER);
  assert.deepEqual(last().sent.at(-1), { type: "UNSUBSCRIBE", sessionId: OTHER });
  assert.deepEqual(w.sessions, [SID]);
  assert.throws(() => w.unsubscribe(SID));
});

test("SESSION_DELETED of an extra session forgets it; of the URL's one, 1000 closes for good", async () => {
  const { w } = watcher();
  const deleted: string[] = [];
  w.on("deleted", (sid) => deleted.push(sid));
  await tick();
  last().open();
  w.subscribe(OTHER);
  last().message({ type: "SESSION_DELETED", sessionId: OTHER, timestamp: 0 });
  assert.deepEqual(w.sessions, [SID]);
  last().message({ type: "SESSION_DELETED", sessionId: SID, timestamp: 0 });
  last().drop(1000, "Session deleted");
  await tick(60);
  assert.deepEqual(deleted, [OTHER, SID]);
  assert.equal(w.connection, "closed");
  assert.equal(FakeSocket.all.length, 1);
});

test("a socket that stops answering PINGs is dropped and replaced", async () => {
  const { events } = watcher({ heartbeatIntervalMs: 50 });
  await tick();
  last().open();
  const first = last();
  await tick(75); // one PING went out, unanswered
  assert.deepEqual(first.types(), ["PING"]);
  await tick(100);
  assert.equal(first.closedWith, 4000);
  assert.ok(events.some((e) => e.state === "reconnecting" && e.reason === "heartbeat timeout"));
  assert.ok(FakeSocket.all.length >= 2);
});

test("a PONG keeps the socket", async () => {
  watcher({ heartbeatIntervalMs: 40 });
  await tick();
  last().open();
  const s = last();
  const answer = setInterval(() => s.message({ type: "PONG", timestamp: 0 }), 15);
  await tick(200);
  clearInterval(answer);
  assert.equal(s.closedWith, undefined);
  assert.equal(FakeSocket.all.length, 1);
});

test("before the token expires, a fresh one goes out in AUTH", async () => {
  const b64 = (v: unknown): string => Buffer.from(JSON.stringify(v)).toString("base64url");
  const jwt = (exp: number): string => `${b64({ alg: "none" })}.${b64({ exp })}.sig`;
  const soon = Math.floor(Date.now() / 1000) + 2;
  const reasons: string[] = [];
  watcher({
    token: (why) => {
      reasons.push(why);
      return jwt(why === "initial" ? soon : soon + 3600);
    },
    tokenRefreshMarginMs: 60_000,
  });
  await tick();
  last().open();
  // At most half the remaining lifetime (about 1 s) before it expires.
  await tick(1_300);
  assert.deepEqual(reasons, ["initial", "refresh"]);
  const auth = last().sent.find((m) => m["type"] === "AUTH");
  assert.ok(auth !== undefined && typeof auth["token"] === "string");
});

test("after 4001 a fixed token is not tried again: closed, with TOKEN_EXPIRED", async () => {
  const { w } = watcher({ token: "fixed" });
  const errors: string[] = [];
  w.on("error", (e) => errors.push(e.code));
  await tick();
  last().open();
  last().drop(4001, "Token expired");
  await tick(100);
  assert.equal(w.connection, "closed");
  assert.equal(FakeSocket.all.length, 1);
  assert.deepEqual(errors, ["TOKEN_EXPIRED"]);
});

test("offer(): a REST reply is kept under the same rule as the socket's states", async () => {
  const { w } = watcher();
  await tick();
  last().open();
  last().message({ type: "STATE_SYNC", sessionId: SID, timestamp: 0, state: state(4) });
  w.offer(state(6));
  assert.equal(w.state()?.version, 6);
  last().message({ type: "STATE_UPDATE", sessionId: SID, timestamp: 0, state: state(5) });
  w.offer(state(3));
  assert.equal(w.state()?.version, 6, "never older");
});

test("connect() while a reconnect waits out its backoff tries at once", async () => {
  const { w } = watcher({ reconnect: { initialDelayMs: 60_000, maxDelayMs: 60_000 } });
  await tick();
  last().drop(1006);
  assert.equal(w.connection, "reconnecting");
  assert.equal(FakeSocket.all.length, 1);
  w.connect();
  await tick();
  assert.equal(FakeSocket.all.length, 2, "a new socket without waiting a minute");
});
