// SessionWatcher against real native servers: live state, several sessions on
// one socket, reconnects after the gateway dies or restarts, resync of missed
// updates, the close codes a gateway really sends, heartbeats and tokens.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { SessionWatcher, SyncKairos, type ConnectionInfo, type SyncState, type WatcherOptions } from "../src/index.js";
import { chess } from "./support/fixtures.js";
import { Proxy } from "./support/proxy.js";
import { Stack, sleep, uuid, waitUntil } from "./support/stack.js";

let stack: Stack;
let sk: SyncKairos;
const open: SessionWatcher[] = [];

before(async () => {
  // Two servers over one Redis: a self-hosted deployment of two instances.
  stack = await Stack.start({ servers: 2, env: { JWT_LEEWAY_SECONDS: "0", SWITCH_RATE_LIMIT: "0" } });
  sk = new SyncKairos({ baseUrl: stack.server.url, token: stack.token() });
});
after(async () => {
  for (const w of open) w.close();
  await stack.close();
});

/** A watcher that records its versions and connection changes. */
function watch(sessionId: string, options: Partial<WatcherOptions> = {}, url = stack.server.url) {
  const w = new SessionWatcher({
    url,
    sessionId,
    token: () => stack.token({ role: "viewer", sid: sessionId }),
    reconnect: { initialDelayMs: 100, maxDelayMs: 1_000 },
    ...options,
  });
  open.push(w);
  const versions: number[] = [];
  const connection: ConnectionInfo[] = [];
  const errors: string[] = [];
  w.on("state", (s, sid) => {
    if (sid === sessionId) versions.push(s.version);
  });
  w.on("connection", (c) => connection.push(c));
  w.on("error", (e) => errors.push(e.code));
  return { w, versions, connection, errors };
}

async function running(): Promise<{ sid: string; white: string; black: string }> {
  const body = chess();
  await sk.createSession(body);
  await sk.start(body.session_id);
  const [white, black] = body.participants.map((p) => p.participant_id) as [string, string];
  return { sid: body.session_id, white, black };
}

const increasing = (v: number[]): boolean => v.every((x, i) => i === 0 || x > (v[i - 1] as number));

describe("live state", () => {
  test("the state on connect, every update after it, and clocks computed from them", async () => {
    const { sid, white, black } = await running();
    const { w, versions } = watch(sid);
    await w.waitFor((s) => s.version === 2);
    assert.equal(w.connection, "open");
    await sk.switchTurn(sid);
    const s = await w.waitFor((st) => st.version === 3);
    assert.equal(s.active_participant_id, black);
    assert.deepEqual(versions, [2, 3]);
    assert.ok(w.clock.synced, "TIME_SYNC ran on connect");
    const [c0, c1] = w.clocks();
    assert.equal(c0?.participantId, white);
    assert.equal(c1?.isActive, true);
    assert.ok((w.remainingMs(black) ?? 0) <= 60_000);
  });

  test("several sessions on one socket, one not created yet", async () => {
    const a = await running();
    const b = await running();
    const later = chess();
    const { w } = watch(a.sid, { token: stack.token({ role: "admin" }) });
    await w.waitFor();
    w.subscribe(b.sid);
    w.subscribe(later.session_id);
    await w.waitFor((s) => s.version === 2, { sessionId: b.sid });
    await sk.createSession(later);
    const created = await w.waitFor(() => true, { sessionId: later.session_id });
    assert.equal(created.status, "pending");
    await sk.switchTurn(b.sid);
    await w.waitFor((s) => s.version === 3, { sessionId: b.sid });
    w.unsubscribe(b.sid);
    await sk.switchTurn(b.sid);
    await sleep(300);
    assert.equal(w.state(b.sid), undefined, "an unsubscribed session is forgotten");
  });

  test("a deleted session: the event, then closed for good", async () => {
    const { sid } = await running();
    const { w, connection } = watch(sid);
    await w.waitFor();
    const deleted = new Promise<string>((r) => w.on("deleted", r));
    await sk.deleteSession(sid);
    assert.equal(await deleted, sid);
    await waitUntil("closed", () => w.connection === "closed");
    assert.equal(connection.at(-1)?.code, 1000);
    assert.ok(!connection.some((c) => c.state === "reconnecting"));
  });
});

describe("reconnects", () => {
  test("the gateway killed and restarted: reconnects by itself and carries on", async () => {
    const { sid } = await running();
    const server = stack.servers[1];
    assert.ok(server !== undefined);
    const { w, versions, connection } = watch(sid, {}, server.url);
    await w.waitFor();
    await server.kill();
    await waitUntil("reconnecting", () => w.connection === "reconnecting");
    await server.restart();
    await waitUntil("open again", () => w.connection === "open", 15_000);
    await sk.switchTurn(sid);
    await w.waitFor((s) => s.version === 3);
    assert.deepEqual(versions, [2, 3]);
    const drop = connection.find((c) => c.state === "reconnecting");
    console.log(`reconnect: dropped with ${drop?.code}, ${connection.filter((c) => c.state === "reconnecting").length} attempts`);
  });

  test("resync: updates missed while the gateway was down arrive as the newest state, never an older one", async () => {
    const { sid } = await running();
    const [a, b] = stack.servers as [typeof stack.servers[0], typeof stack.servers[0]];
    const seen: number[] = [];
    const { w } = watch(sid, {}, b.url);
    w.on("state", (s: SyncState) => seen.push(s.version));
    await w.waitFor();
    await b.kill();
    // Three commands through the other instance while this one is down.
    const other = new SyncKairos({ baseUrl: a.url, token: stack.token() });
    await other.switchTurn(sid);
    await other.switchTurn(sid);
    const last = await other.switchTurn(sid);
    await b.restart();
    const s = await w.waitFor((st) => st.version === last.version, { timeoutMs: 15_000 });
    assert.equal(s.active_participant_id, last.active_participant_id);
    assert.deepEqual(seen, [2, 5], "the missed versions are skipped, none goes back");
    assert.ok(increasing(seen));
  });

  test("SIGTERM: 1012, and the next attempt goes out at once", async () => {
    const { sid } = await running();
    const server = stack.servers[1];
    assert.ok(server !== undefined);
    const { w, connection } = watch(sid, {}, server.url);
    await w.waitFor();
    await server.stop();
    const r = connection.find((c) => c.state === "reconnecting");
    assert.equal(r?.code, 1012);
    assert.ok((r?.retryInMs ?? 99_999) <= 250, `prompt: ${r?.retryInMs} ms`);
    await server.restart();
    await waitUntil("open again", () => w.connection === "open", 15_000);
  });

  test("a frozen link (no close, no data) is found by the heartbeat and replaced", async () => {
    const { sid } = await running();
    const proxy = await Proxy.start(stack.server.port);
    try {
      const { w, connection } = watch(sid, { heartbeatIntervalMs: 300 }, proxy.url);
      await w.waitFor();
      const t = Date.now();
      proxy.freeze();
      await waitUntil("dropped", () => connection.some((c) => c.reason === "heartbeat timeout"), 5_000);
      const detected = Date.now() - t;
      await waitUntil("open again", () => w.connection === "open" && connection.at(-1)?.state === "open", 5_000);
      await sk.switchTurn(sid);
      await w.waitFor((s) => s.version === 3);
      console.log(`heartbeat: a frozen link was detected after ${detected} ms (interval 300 ms)`);
      assert.ok(detected <= 1_500, `${detected} ms`);
    } finally {
      await proxy.close();
    }
  });

  test("4029: too many messages, then a backoff of at least a second", async () => {
    const own = await Stack.start({ env: { MESSAGES_PER_SECOND: "3" } });
    try {
      const client = new SyncKairos({ baseUrl: own.server.url, token: own.token() });
      const body = chess();
      await client.createSession(body);
      const w = new SessionWatcher({ url: own.server.url, sessionId: body.session_id, token: own.token(), timeSyncSamples: 0 });
      open.push(w);
      const connection: ConnectionInfo[] = [];
      w.on("connection", (c) => connection.push(c));
      await w.waitFor();
      // One message past the limit, no more: a gateway that closes with
      // frames still unread resets the TCP connection, and the 4029 close
      // frame can be lost with it (the client then sees 1006).
      for (let i = 0; i < 4; i++) w.resync();
      await waitUntil("4029", () => connection.some((c) => c.code === 4029), 5_000);
      const r = connection.find((c) => c.code === 4029);
      assert.ok((r?.retryInMs ?? 0) >= 1_000, `${r?.retryInMs} ms`);
      await waitUntil("open again", () => connection.at(-1)?.state === "open", 10_000);
      w.close();
    } finally {
      await own.close();
    }
  });
});

describe("tokens", () => {
  test("AUTH refreshes the socket's token before it expires: no reconnect", async () => {
    const { sid } = await running();
    const reasons: string[] = [];
    const { w, connection } = watch(sid, {
      token: (why) => {
        reasons.push(why);
        return stack.token({ role: "viewer", sid, ttlSecs: 3 });
      },
      tokenRefreshMarginMs: 1_500,
    });
    await w.waitFor();
    await sleep(5_000); // past the first token's expiry
    await sk.switchTurn(sid);
    await w.waitFor((s) => s.version === 3);
    assert.ok(reasons.filter((r) => r === "refresh").length >= 1, reasons.join(","));
    assert.ok(!connection.some((c) => c.state === "reconnecting"), JSON.stringify(connection));
  });

  test("4001 at expiry: reconnects with a fresh token from the provider", async () => {
    const { sid } = await running();
    const reasons: string[] = [];
    const { w, connection } = watch(sid, {
      token: (why) => {
        reasons.push(why);
        return stack.token({ role: "viewer", sid, ttlSecs: why === "initial" ? 2 : 600 });
      },
      authRefresh: false,
    });
    await w.waitFor();
    await waitUntil("4001", () => connection.some((c) => c.code === 4001), 6_000);
    await waitUntil("open again", () => connection.at(-1)?.state === "open", 5_000);
    assert.deepEqual(reasons, ["initial", "expired"]);
    await sk.switchTurn(sid);
    await w.waitFor((s) => s.version === 3);
  });

  test("a fixed token that expires: 4001, then closed for good (no fresh token to reconnect with)", async () => {
    const { sid } = await running();
    const { w, connection, errors } = watch(sid, { token: stack.token({ role: "viewer", sid, ttlSecs: 2 }) });
    await w.waitFor();
    await waitUntil("closed", () => w.connection === "closed", 10_000);
    assert.deepEqual(
      connection.filter((c) => c.code !== undefined).map((c) => c.code),
      [4001],
    );
    assert.ok(errors.includes("TOKEN_EXPIRED"));
  });

  test("an expired token on connect: 1008, closed for good", async () => {
    const { sid } = await running();
    const { w, connection } = watch(sid, { token: stack.token({ role: "viewer", sid, ttlSecs: -60 }) });
    await waitUntil("closed", () => w.connection === "closed", 5_000);
    assert.equal(connection.at(-1)?.code, 1008);
  });

  test("4003: a refreshed token for another session closes for good", async () => {
    const { sid } = await running();
    const { w, connection } = watch(sid, {
      token: (why) => stack.token({ role: "viewer", sid: why === "initial" ? sid : uuid(), ttlSecs: 3 }),
      tokenRefreshMarginMs: 2_000,
    });
    await w.waitFor();
    await waitUntil("closed", () => w.connection === "closed", 6_000);
    assert.equal(connection.at(-1)?.code, 4003);
    assert.ok(!connection.some((c) => c.state === "reconnecting"));
  });

  test("a bad token: 1008 at once, no reconnect", async () => {
    const { sid } = await running();
    const { w, connection } = watch(sid, { token: "not-a-token" });
    await waitUntil("closed", () => w.connection === "closed", 5_000);
    assert.equal(connection.at(-1)?.code, 1008);
  });
});
