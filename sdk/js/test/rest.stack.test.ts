// Every route and every error code the SDK can meet, against a real native
// server over a real Redis (test/support/stack.ts), with JWT auth on.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import {
  OPERATIONS,
  SyncKairos,
  SyncKairosError,
  isSyncKairosError,
  type CreateSessionBody,
  type ErrorCode,
  type OperationId,
  type RouteErrorCode,
} from "../src/index.js";
import { execFileSync } from "node:child_process";
import { join } from "node:path";
import { chess } from "./support/fixtures.js";
import { REPO_ROOT, Server, Stack, sleep, uuid } from "./support/stack.js";

/** Runs `f`, which must fail with `code` (and `status`); returns the error. */
async function refused(f: () => Promise<unknown>, code: ErrorCode | RouteErrorCode, status: number): Promise<SyncKairosError> {
  try {
    await f();
  } catch (e) {
    assert.ok(e instanceof SyncKairosError, `a SyncKairosError, not ${String(e)}`);
    assert.equal(e.code, code, e.message);
    assert.equal(e.status, status);
    seen.add(`${status} ${code}`);
    return e;
  }
  assert.fail(`expected ${status} ${code}`);
}

/** `status code` pairs met by this file, checked against the document at the end. */
const seen = new Set<string>();

let stack: Stack;
let sk: SyncKairos;

before(async () => {
  stack = await Stack.start({ env: { SWITCH_RATE_LIMIT: "3" } });
  sk = new SyncKairos({ baseUrl: stack.server.url, token: stack.token({ role: "admin" }) });
});
after(async () => stack.close());

describe("sessions", () => {
  test("create, read, start, switch, pause, resume, complete, delete", async () => {
    const body = chess();
    const [white, black] = body.participants.map((p) => p.participant_id) as [string, string];
    const created = await sk.createSession(body);
    assert.equal(created.status, "pending");
    assert.equal(created.version, 1);
    assert.deepEqual(await sk.getSession(body.session_id), created);
    const started = await sk.start(body.session_id, { ifMatch: 1 });
    assert.equal(started.active_participant_id, white);
    const switched = await sk.switchTurn(body.session_id);
    assert.equal(switched.active_participant_id, black);
    assert.equal(switched.version, 3);
    const named = await sk.switchTurn(body.session_id, { nextParticipantId: black });
    assert.equal(named.active_participant_id, black);
    const paused = await sk.pause(body.session_id);
    assert.equal(paused.status, "paused");
    assert.equal(paused.cycle_started_at, null);
    const resumed = await sk.resume(body.session_id);
    assert.equal(resumed.status, "running");
    const done = await sk.complete(body.session_id);
    assert.equal(done.status, "completed");
    await sk.deleteSession(body.session_id);
    await refused(() => sk.getSession(body.session_id), "SESSION_NOT_FOUND", 404);
    await sk.deleteSession(body.session_id); // idempotent
    await refused(() => sk.createSession(body), "SESSION_DELETED", 409);
  });

  test("cancel ends a session as cancelled", async () => {
    const body = chess();
    await sk.createSession(body);
    assert.equal((await sk.cancel(body.session_id)).status, "cancelled");
    await refused(() => sk.start(body.session_id), "INVALID_STATE_TRANSITION", 400);
  });

  test("service routes: time, health, ready, openapi", async () => {
    const before = Date.now();
    const t = await sk.time();
    assert.ok(Math.abs(t.timestamp_ms - before) < 5_000);
    assert.equal(t.server_version, "2.0.0");
    assert.deepEqual(await sk.health(), { status: "ok" });
    assert.deepEqual(await sk.ready(), { status: "ready" });
    const doc = await sk.openapi();
    assert.equal(doc["openapi"], "3.0.3");
    const estimate = await sk.syncTime(3);
    assert.ok(Math.abs(estimate.offsetMs) <= estimate.errorBoundMs + 2, JSON.stringify(estimate));
  });
});

describe("push devices", () => {
  test("register (201, then 200 renewing it), only one's own; remove, idempotently", async () => {
    const body = chess();
    const [white, black] = body.participants.map((p) => p.participant_id) as [string, string];
    await sk.createSession(body);
    const token = `fcm:APA91b-${"x".repeat(150)}`;
    const as = (sub: string): SyncKairos =>
      new SyncKairos({ baseUrl: stack.server.url, token: stack.token({ role: "participant", sid: body.session_id, sub }) });
    const whitePlayer = as(white);
    const first = await whitePlayer.request("registerDevice", {
      sessionId: body.session_id,
      body: { participant_id: white, token, platform: "android" },
    });
    assert.equal(first.status, 201);
    assert.deepEqual(Object.keys(first.data as object).sort(), ["expires_at", "participant_id", "platform"]);
    const again = await whitePlayer.registerDevice(body.session_id, { participant_id: white, token, platform: "android" });
    assert.equal(again.participant_id, white);
    assert.equal(again.platform, "android");
    assert.ok(Date.parse(again.expires_at) >= Date.parse((first.data as { expires_at: string }).expires_at));
    assert.ok(Date.parse(again.expires_at) > Date.now() + 29 * 86_400_000, again.expires_at);
    await refused(
      () => whitePlayer.registerDevice(body.session_id, { participant_id: black, token: "t", platform: "ios" }),
      "FORBIDDEN",
      403,
    );
    await refused(
      () => sk.registerDevice(body.session_id, { participant_id: uuid(), token: "t", platform: "ios" }),
      "VALIDATION_ERROR",
      400,
    );
    await refused(
      () => sk.registerDevice(uuid(), { participant_id: white, token: "t", platform: "web" }),
      "SESSION_NOT_FOUND",
      404,
    );
    const bad = await refused(
      () => sk.registerDevice(body.session_id, { participant_id: white, token: "a b", platform: "fax" as "web" }),
      "VALIDATION_ERROR",
      400,
    );
    assert.deepEqual(
      (bad.details as { field: string }[]).map((d) => d.field),
      ["token", "platform"],
    );
    // The token's ':' travels percent-encoded; removing twice is fine.
    await whitePlayer.removeDevice(body.session_id, token);
    await whitePlayer.removeDevice(body.session_id, token);
    await refused(() => sk.removeDevice(uuid(), token), "SESSION_NOT_FOUND", 404);
  });
});

describe("refusals", () => {
  test("validation, with the details of every broken rule", async () => {
    const body = chess();
    const bad = { ...body, total_time_ms: 10, participants: [{ ...body.participants[0], participant_id: "nope" }] } as CreateSessionBody;
    const e = await refused(() => sk.createSession(bad), "VALIDATION_ERROR", 400);
    const fields = (e.details as { field: string }[]).map((d) => d.field).sort();
    assert.deepEqual(fields, ["participants.0.participant_id", "total_time_ms"]);
    await refused(() => sk.getSession("not-a-uuid"), "VALIDATION_ERROR", 400);
    await sk.createSession(body);
    await sk.start(body.session_id);
    await refused(() => sk.switchTurn(body.session_id, { nextParticipantId: uuid() }), "VALIDATION_ERROR", 400);
    await refused(() => sk.switchTurn(body.session_id, { idempotencyKey: "bad key with spaces" }), "VALIDATION_ERROR", 400);
  });

  test("an id that is taken, and an unknown session", async () => {
    const body = chess();
    await sk.createSession(body);
    await refused(() => sk.createSession(body), "SESSION_EXISTS", 409);
    await refused(() => sk.start(uuid()), "SESSION_NOT_FOUND", 404);
  });

  test("If-Match: a stale version is a CONFLICT with both versions", async () => {
    const body = chess();
    await sk.createSession(body);
    const e = await refused(() => sk.start(body.session_id, { ifMatch: 7 }), "CONFLICT", 409);
    assert.deepEqual(e.details, { expected_version: 7, actual_version: 1 });
  });

  test("tokens: none, invalid, another session's, a role that may not, out of turn", async () => {
    const body = chess();
    const [white, black] = body.participants.map((p) => p.participant_id) as [string, string];
    await sk.createSession(body);
    await sk.start(body.session_id);
    const as = (token: string | undefined): SyncKairos =>
      new SyncKairos(token === undefined ? { baseUrl: stack.server.url } : { baseUrl: stack.server.url, token });
    await refused(() => as(undefined).getSession(body.session_id), "UNAUTHORIZED", 401);
    await refused(() => as("not.a.jwt").getSession(body.session_id), "UNAUTHORIZED", 401);
    await refused(() => as(stack.token({ role: "admin", ttlSecs: -120 })).getSession(body.session_id), "UNAUTHORIZED", 401);
    await refused(() => as(stack.token({ role: "host", sid: uuid() })).getSession(body.session_id), "FORBIDDEN", 403);
    const viewer = as(stack.token({ role: "viewer", sid: body.session_id }));
    assert.equal((await viewer.getSession(body.session_id)).version, 2);
    await refused(() => viewer.switchTurn(body.session_id), "FORBIDDEN", 403);
    const blackPlayer = as(stack.token({ role: "participant", sid: body.session_id, sub: black }));
    await refused(() => blackPlayer.switchTurn(body.session_id), "FORBIDDEN", 403);
    const whitePlayer = as(stack.token({ role: "participant", sid: body.session_id, sub: white }));
    assert.equal((await whitePlayer.switchTurn(body.session_id)).active_participant_id, black);
  });

  test("a token provider is asked again once after a 401", async () => {
    const reasons: string[] = [];
    const client = new SyncKairos({
      baseUrl: stack.server.url,
      token: (why) => {
        reasons.push(why);
        return stack.token({ role: "admin", ttlSecs: why === "initial" ? -120 : 600 });
      },
    });
    const body = chess();
    await client.createSession(body);
    assert.deepEqual(reasons, ["initial", "expired"]);
    await client.getSession(body.session_id);
    assert.deepEqual(reasons, ["initial", "expired"], "the fresh token is kept");
  });

  test("auth required but no key configured: 500 AUTH_NOT_CONFIGURED, not retried", async () => {
    const keyless = await Server.start(stack.redis, "", { JWT_SECRET: "" });
    try {
      const client = new SyncKairos({ baseUrl: keyless.url, token: stack.token() });
      const e = await refused(() => client.getSession(uuid()), "AUTH_NOT_CONFIGURED", 500);
      assert.equal(e.attempts, 1);
    } finally {
      await keyless.kill();
    }
  });

  test("a base URL with a wrong path: 404 NOT_FOUND", async () => {
    const client = new SyncKairos({ baseUrl: `${stack.server.url}/api`, token: stack.token() });
    await refused(() => client.getSession(uuid()), "NOT_FOUND", 404);
    seen.delete("404 NOT_FOUND"); // a route error: no operation lists it
  });

  test("a body over 256 KiB is refused as too large", async () => {
    const body = { ...chess(), metadata: { blob: "x".repeat(300_000) } };
    await refused(() => sk.createSession(body), "PAYLOAD_TOO_LARGE", 413);
  });
});

describe("idempotency and retries", () => {
  test("a retry after a lost answer replays the first answer: applied once", async () => {
    const body = chess();
    await sk.createSession(body);
    await sk.start(body.session_id);
    // A fetch that loses the first answer after the server applied the command.
    let calls = 0;
    const keys: (string | null)[] = [];
    const lossy: typeof fetch = async (input, init) => {
      keys.push(new Headers(init?.headers).get("idempotency-key"));
      const r = await fetch(input, init);
      if (++calls === 1) throw new TypeError("connection reset");
      return r;
    };
    const client = new SyncKairos({ baseUrl: stack.server.url, token: stack.token(), fetch: lossy, retry: { initialDelayMs: 10 } });
    const r = await client.request<{ version: number }>("switchTurn", { sessionId: body.session_id, command: {} });
    assert.equal(r.attempts, 2);
    assert.equal(r.replayed, true, "Idempotent-Replayed: true");
    assert.equal(keys.length, 2);
    assert.equal(keys[0], keys[1], "the same key on the retry");
    assert.equal(r.data.version, 3, "applied once");
    assert.equal((await sk.getSession(body.session_id)).version, 3);
  });

  test("the same key for another command is IDEMPOTENCY_KEY_REUSED", async () => {
    const body = chess();
    await sk.createSession(body);
    await sk.start(body.session_id, { idempotencyKey: "k-1" });
    const again = await sk.request<{ version: number }>("startSession", { sessionId: body.session_id, command: { idempotencyKey: "k-1" } });
    assert.equal(again.replayed, true);
    await refused(() => sk.pause(body.session_id, { idempotencyKey: "k-1" }), "IDEMPOTENCY_KEY_REUSED", 422);
  });

  test("429 from the switch limit: returned without retries, waited out with them (Retry-After)", async () => {
    const body = chess();
    await sk.createSession(body);
    await sk.start(body.session_id);
    const once = new SyncKairos({ baseUrl: stack.server.url, token: stack.token(), retry: { maxAttempts: 1 } });
    // SWITCH_RATE_LIMIT=3 per second; refused attempts count too.
    let limited: SyncKairosError | undefined;
    for (let i = 0; i < 6 && limited === undefined; i++) {
      try {
        await once.switchTurn(body.session_id);
      } catch (e) {
        if (isSyncKairosError(e, "RATE_LIMIT_EXCEEDED")) limited = e;
        else throw e;
      }
    }
    assert.ok(limited !== undefined, "the limit was reached");
    assert.equal(limited.status, 429);
    assert.ok((limited.retryAfterSeconds ?? 0) >= 1);
    seen.add("429 RATE_LIMIT_EXCEEDED");
    const t = Date.now();
    const r = await sk.request<{ version: number }>("switchTurn", { sessionId: body.session_id, command: {} });
    assert.ok(r.attempts >= 1);
    if (r.attempts > 1) assert.ok(Date.now() - t >= 500, "it waited for the window");
  });

  test("503 while Redis is down: retried until it is back", async () => {
    // A stack of its own: this test stops its Redis.
    const own = await Stack.start();
    try {
      const client = new SyncKairos({
        baseUrl: own.server.url,
        token: own.token(),
        retry: { maxAttempts: 8, initialDelayMs: 200, maxDelayMs: 1_000 },
      });
      const body = chess();
      await client.createSession(body);
      const once = new SyncKairos({ baseUrl: own.server.url, token: own.token(), retry: { maxAttempts: 1 } });
      await own.redis.kill();
      await refused(() => once.getSession(body.session_id), "SERVICE_UNAVAILABLE", 503);
      const back = sleep(800).then(() => own.redis.restart());
      // Redis kept nothing, so the session is gone once it is back: the
      // retries end in the answer of the restarted Redis.
      const e = await refused(() => client.getSession(body.session_id), "SESSION_NOT_FOUND", 404);
      assert.ok(e.attempts > 1, `retried (${e.attempts} attempts)`);
      await back;
    } finally {
      await own.close();
    }
  });

  test("an unreachable server is a transport error after the retries", async () => {
    const client = new SyncKairos({ baseUrl: "http://127.0.0.1:9", retry: { maxAttempts: 2, initialDelayMs: 10 } });
    try {
      await client.time();
      assert.fail("no server there");
    } catch (e) {
      assert.ok(isSyncKairosError(e, "NETWORK_ERROR"));
      assert.equal(e.status, 0);
      assert.equal(e.attempts, 2);
    }
  });
});

test("every error met here is one the document lists for its operation, and the server's document is the generated one", async () => {
  const doc = (await sk.openapi()) as { paths: Record<string, Record<string, { operationId: string }>> };
  const ids = new Set<string>();
  for (const item of Object.values(doc.paths)) for (const op of Object.values(item)) ids.add(op.operationId);
  assert.deepEqual([...ids].sort(), Object.keys(OPERATIONS).sort());
  const listed = new Set<string>();
  for (const id of Object.keys(OPERATIONS) as OperationId[]) {
    for (const [status, codes] of Object.entries(OPERATIONS[id].errors)) for (const c of codes as readonly string[]) listed.add(`${status} ${c}`);
  }
  for (const s of seen) assert.ok(listed.has(s), `${s} is in the document`);
  assert.ok(seen.size >= 12, `met ${seen.size} error kinds: ${[...seen].join(", ")}`);
  // The SDK's generated types are what the running server's document generates.
  execFileSync(
    process.execPath,
    [join(REPO_ROOT, "sdk/js/scripts/gen-types.mjs"), "--check", "--openapi", `${stack.server.url}/v1/openapi.json`],
    { stdio: "inherit" },
  );
});
