// The server-clock estimate through a slow, asymmetric link, from a client
// whose own clock is 3 s fast. The server's clock is Redis TIME on this same
// machine, so the true offset is known: −3000 ms (to the gateway's own
// estimate of Redis time, within a millisecond or two here).
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { SessionWatcher, SyncKairos } from "../src/index.js";
import { chess } from "./support/fixtures.js";
import { Proxy } from "./support/proxy.js";
import { Stack } from "./support/stack.js";

const SKEW_MS = 3_000;
const TRUE_OFFSET = -SKEW_MS;
/** The gateway's own uncertainty about Redis time (same machine: small). */
const GATEWAY_SLACK_MS = 2;

let stack: Stack;
let sid: string;

before(async () => {
  stack = await Stack.start();
  const body = chess();
  await new SyncKairos({ baseUrl: stack.server.url, token: stack.token() }).createSession(body);
  sid = body.session_id;
});
after(async () => stack.close());

for (const [upMs, downMs] of [
  [0, 0],
  [40, 40],
  [20, 90],
  [90, 20],
] as const) {
  test(`TIME_SYNC through a link of ${upMs} ms up, ${downMs} ms down`, async () => {
    const proxy = await Proxy.start(stack.server.port, upMs, downMs);
    const w = new SessionWatcher({
      url: proxy.url,
      sessionId: sid,
      token: stack.token(),
      localNow: () => Date.now() + SKEW_MS,
      timeSyncSamples: 0,
    });
    try {
      await w.waitFor();
      const e = await w.syncTime(8);
      assert.ok(e !== undefined, "an estimate");
      const error = Math.abs(e.offsetMs - TRUE_OFFSET);
      console.log(
        `time sync ${upMs}/${downMs} ms: offset ${e.offsetMs} ± ${e.errorBoundMs} ms (true ${TRUE_OFFSET}); off by ${error} ms`,
      );
      assert.ok(error <= e.errorBoundMs + GATEWAY_SLACK_MS, `the true offset is inside the bound: off by ${error}, bound ${e.errorBoundMs}`);
      // The bound is about half the round trip, never much more.
      assert.ok(e.errorBoundMs <= (upMs + downMs) / 2 + 25, `bound ${e.errorBoundMs}`);
      // clock.now() is the server's time, not the skewed local one.
      assert.ok(Math.abs(w.clock.now() - Date.now()) <= e.errorBoundMs + GATEWAY_SLACK_MS + 5);
    } finally {
      w.close();
      await proxy.close();
    }
  });
}

test("REST /v1/time gives an estimate too (wider: one stamp for both legs)", async () => {
  const proxy = await Proxy.start(stack.server.port, 30, 30);
  try {
    const client = new SyncKairos({ baseUrl: proxy.url, localNow: () => Date.now() + SKEW_MS });
    const e = await client.syncTime(5);
    const error = Math.abs(e.offsetMs - TRUE_OFFSET);
    console.log(`REST time sync 30/30 ms: offset ${e.offsetMs} ± ${e.errorBoundMs} ms; off by ${error} ms`);
    assert.ok(error <= e.errorBoundMs + GATEWAY_SLACK_MS);
  } finally {
    await proxy.close();
  }
});
