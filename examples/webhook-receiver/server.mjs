// A minimal webhook receiver for SyncKairos (docs/API.md §8): it verifies the
// Standard Webhooks signature of each request with node:crypto, appends every
// verified delivery to a JSON-lines file, and answers 204 (401 for a request
// whose signature or timestamp does not verify). No dependencies.
//
//   WEBHOOK_SECRET=whsec_… node server.mjs --port 8792 --log deliveries.jsonl
//
// scripts/up.sh runs it as the local stack's endpoint, so the demo's events
// arrive here. The one piece to copy into a real backend is `verify`.
import { createHmac, timingSafeEqual } from "node:crypto";
import { appendFileSync } from "node:fs";
import { createServer } from "node:http";

/** Whether `headers` carry a valid signature of `body` (a string) with `secret`. */
export function verify(secret, headers, body, nowSeconds = Date.now() / 1000) {
  const id = headers["webhook-id"];
  const ts = headers["webhook-timestamp"];
  const sigs = headers["webhook-signature"];
  if (!id || !ts || !sigs) return false;
  if (!/^\d+$/.test(ts) || Math.abs(nowSeconds - Number(ts)) > 300) return false;
  const key = Buffer.from(secret.replace(/^whsec_/, ""), "base64");
  const expected = createHmac("sha256", key).update(`${id}.${ts}.${body}`).digest();
  return sigs.split(" ").some((part) => {
    const [version, sig] = part.split(",");
    const got = Buffer.from(sig ?? "", "base64");
    return version === "v1" && got.length === expected.length && timingSafeEqual(got, expected);
  });
}

/** Starts the receiver; resolves with the server once it listens. */
export function start({ port, secret, log }) {
  const server = createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks).toString("utf8");
      if (req.method !== "POST" || !verify(secret, req.headers, body)) {
        res.writeHead(req.method === "POST" ? 401 : 405).end();
        return;
      }
      const event = JSON.parse(body);
      const line = JSON.stringify({
        received_at: new Date().toISOString(),
        webhook_id: req.headers["webhook-id"],
        type: event.type,
        session_id: event.data?.session_id,
        version: event.data?.version,
      });
      if (log) appendFileSync(log, line + "\n");
      res.writeHead(204).end();
    });
  });
  return new Promise((resolve) => server.listen(port, "127.0.0.1", () => resolve(server)));
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const arg = (name, fallback) => {
    const i = process.argv.indexOf(`--${name}`);
    return i > 0 ? process.argv[i + 1] : fallback;
  };
  const secret = process.env.WEBHOOK_SECRET;
  if (!secret) {
    console.error("WEBHOOK_SECRET is not set");
    process.exit(2);
  }
  const port = Number(arg("port", "8792"));
  await start({ port, secret, log: arg("log", undefined) });
  console.log(`webhook receiver on http://127.0.0.1:${port}/`);
}
