// The type generator: the committed output is what the committed documents
// generate, and a schema construct it does not understand fails loudly.
// Offline: only the files of the repository.

import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { test } from "node:test";
import { DEFAULT_OPENAPI, DEFAULT_WS, OUT_DIR, exportedNames, generate } from "./gen-types.mjs";

const openapi = JSON.parse(await readFile(DEFAULT_OPENAPI, "utf8"));
const ws = JSON.parse(await readFile(DEFAULT_WS, "utf8"));
const copy = (v) => structuredClone(v);

test("the committed generated files are what the committed documents generate", async () => {
  const files = generate(openapi, ws);
  assert.deepEqual(Object.keys(files), ["api.ts", "ws.ts"]);
  for (const [name, text] of Object.entries(files)) {
    const committed = await readFile(join(OUT_DIR, name), "utf8");
    assert.ok(
      committed === text,
      `src/generated/${name} is out of date; regenerate it with \`node scripts/gen-types.mjs\``,
    );
  }
});

test("the output is deterministic", () => {
  assert.deepEqual(generate(copy(openapi), copy(ws)), generate(openapi, ws));
});

test("the contract names exist", () => {
  const names = exportedNames(openapi, ws);
  for (const n of ["SyncState", "Participant", "SwitchResponse", "ErrorResponse", "OPERATIONS", "OperationId", "ErrorCodeOf", "ErrorCode", "IDEMPOTENCY_KEY_MAX_LENGTH", "IDEMPOTENCY_KEY_PATTERN"]) {
    assert.ok(names["api.ts"].includes(n), `api.ts exports ${n}`);
  }
  for (const n of ["ClientIn", "ClientOut", "InPing", "InTimeSync", "OutStateUpdate", "OutAuthOk", "OutError", "CLOSE_CODES", "CloseCodeNumber"]) {
    assert.ok(names["ws.ts"].includes(n), `ws.ts exports ${n}`);
  }
  const { "api.ts": api, "ws.ts": wsText } = generate(openapi, ws);
  assert.match(api, /switchTurn: \{\n {4}method: "POST",\n {4}path: "\/v1\/sessions\/\{id\}\/switch",\n {4}ok: 200,/);
  assert.match(wsText, /state: SyncState;/, "the WebSocket state is the REST SyncState");
  assert.match(wsText, /import type \{ SyncState \} from "\.\/api\.js";/);
  assert.doesNotMatch(api + wsText, /[:<|&,(]\s*any\b|\bany\[\]/, "never `any`");
});

test("an unknown schema construct throws", () => {
  const doc = copy(openapi);
  doc.components.schemas.Odd = { not: { type: "string" } };
  assert.throws(() => generate(doc, ws), /components\.schemas\.Odd: unsupported schema keyword "not"/);

  const tuple = copy(openapi);
  tuple.components.schemas.Pair = { type: "array", prefixItems: [{ type: "string" }] };
  assert.throws(() => generate(tuple, ws), /unsupported schema keyword "prefixItems"/);

  const badType = copy(openapi);
  badType.components.schemas.SyncState.properties.version.type = "bigint";
  assert.throws(() => generate(badType, ws), /SyncState\.properties\.version: unknown type "bigint"/);

  const badRef = copy(openapi);
  badRef.components.schemas.Participant.properties.group_id = { $ref: "#/definitions/Group" };
  assert.throws(() => generate(badRef, ws), /unsupported \$ref/);

  const message = copy(ws);
  message.server_to_client.oneOf[0].properties.sessionId = { type: "string", patternProperties: {} };
  assert.throws(() => generate(openapi, message), /unsupported schema keyword "patternProperties"/);
});

test("an error response without x-error-codes throws", () => {
  const doc = copy(openapi);
  delete doc.paths["/v1/sessions"].post.responses["400"]["x-error-codes"];
  assert.throws(() => generate(doc, ws), /an error response without x-error-codes/);
});

test("a WebSocket state that is not the REST SyncState is inlined", () => {
  const changed = copy(ws);
  const state = changed.server_to_client.oneOf.find((v) => v.properties.type.const === "STATE_SYNC").properties.state;
  state.properties.extra = { type: "string" };
  const out = generate(openapi, changed)["ws.ts"];
  assert.match(out, /state: \{\n/);
  assert.match(out, /state: SyncState;/, "STATE_UPDATE still matches");
});
