// The receiver's verification against Standard Webhooks' published example
// (secret, id, timestamp, payload and signature from the specification), and
// over HTTP: a verified delivery is logged and answered 204, a forged one 401.
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { start, verify } from "../server.mjs";

const SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const ID = "msg_p5jXN8AQM9LWM0D4loKWxJek";
const TS = "1614265330";
const BODY = '{"test": 2432232314}';
const SIG = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

test("the specification's example verifies, and nothing else does", () => {
  const h = { "webhook-id": ID, "webhook-timestamp": TS, "webhook-signature": SIG };
  const at = Number(TS) + 10;
  assert.equal(verify(SECRET, h, BODY, at), true);
  // Two signatures (a rotation): any one matching is enough.
  assert.equal(verify(SECRET, { ...h, "webhook-signature": `v1,AAAA ${SIG}` }, BODY, at), true);
  assert.equal(verify(SECRET, h, BODY + " ", at), false);
  assert.equal(verify(SECRET, { ...h, "webhook-id": "msg_other" }, BODY, at), false);
  assert.equal(verify("whsec_" + Buffer.from("other key").toString("base64"), h, BODY, at), false);
  assert.equal(verify(SECRET, h, BODY, Number(TS) + 301), false, "too old");
  assert.equal(verify(SECRET, { ...h, "webhook-signature": SIG.replace("v1", "v2") }, BODY, at), false);
});

test("over HTTP: verified deliveries are logged, forged ones refused", async () => {
  const log = join(mkdtempSync(join(tmpdir(), "webhook-receiver-")), "d.jsonl");
  const server = await start({ port: 0, secret: SECRET, log });
  const { port } = server.address();
  try {
    const { createHmac } = await import("node:crypto");
    const ts = String(Math.floor(Date.now() / 1000));
    const body = JSON.stringify({ type: "session_expired", data: { session_id: "s", version: 4 } });
    const key = Buffer.from(SECRET.slice(6), "base64");
    const sig = createHmac("sha256", key).update(`evt_1.${ts}.${body}`).digest("base64");
    const send = (signature) =>
      fetch(`http://127.0.0.1:${port}/hook`, {
        method: "POST",
        headers: { "webhook-id": "evt_1", "webhook-timestamp": ts, "webhook-signature": signature },
        body,
      });
    assert.equal((await send(`v1,${sig}`)).status, 204);
    assert.equal((await send("v1,Zm9yZ2Vk")).status, 401);
    const lines = readFileSync(log, "utf8").trim().split("\n").map((l) => JSON.parse(l));
    assert.equal(lines.length, 1);
    assert.deepEqual(
      { type: lines[0].type, session_id: lines[0].session_id, version: lines[0].version, id: lines[0].webhook_id },
      { type: "session_expired", session_id: "s", version: 4, id: "evt_1" },
    );
  } finally {
    server.close();
  }
});
