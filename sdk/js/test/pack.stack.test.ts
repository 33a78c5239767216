// `npm pack` builds a tarball; a fresh Node project installs it and uses it
// against the local stack, from JavaScript and, type-checked, from TypeScript.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { REPO_ROOT, Stack, uuid } from "./support/stack.js";

const SDK = join(REPO_ROOT, "sdk/js");
const npm = (args: string[], cwd: string): string =>
  execFileSync("npm", args, { cwd, encoding: "utf8", env: { ...process.env, npm_config_audit: "false", npm_config_fund: "false" } });

let stack: Stack;
let dir: string;

before(async () => {
  stack = await Stack.start();
  dir = mkdtempSync(join(tmpdir(), "sk-sdk-pack-"));
});
after(async () => {
  await stack.close();
  rmSync(dir, { recursive: true, force: true });
});

test("the packed tarball installs into a fresh project and works there", async () => {
  const out = npm(["pack", "--json", "--pack-destination", dir], SDK);
  const [info] = JSON.parse(out.slice(out.indexOf("["))) as { filename: string; files: { path: string }[] }[];
  assert.ok(info !== undefined);
  const files = info.files.map((f) => f.path);
  assert.ok(files.includes("dist/index.js") && files.includes("dist/index.d.ts"), files.join(", "));
  assert.ok(!files.some((f) => f.startsWith("src/") || f.startsWith("test/") || f.startsWith("build/")), "only what a user needs");

  const app = join(dir, "app");
  execFileSync("mkdir", ["-p", app]);
  writeFileSync(join(app, "package.json"), JSON.stringify({ name: "app", private: true, type: "module" }));
  npm(["install", "--offline", "--no-package-lock", join(dir, info.filename)], app);
  assert.deepEqual(
    readdirSync(join(app, "node_modules")).filter((f) => !f.startsWith(".")),
    ["synckairos"],
    "no runtime dependencies",
  );

  // What a web developer writes, run by Node.
  writeFileSync(
    join(app, "clock.mjs"),
    `import { SyncKairos, SessionWatcher, formatClock } from "synckairos";
const [base, token, sid, white, black] = process.argv.slice(2);
const sk = new SyncKairos({ baseUrl: base, token });
await sk.createSession({ session_id: sid, sync_mode: "per_participant", total_time_ms: 300000,
  participants: [{ participant_id: white, participant_index: 0, total_time_ms: 300000 },
                 { participant_id: black, participant_index: 1, total_time_ms: 300000 }] });
const watcher = new SessionWatcher({ url: base, sessionId: sid, token });
await sk.start(sid);
await sk.switchTurn(sid);
const st = await watcher.waitFor((s) => s.version === 3);
// The first TIME_SYNC answer may come after the states (a loaded machine).
if (!watcher.clock.synced) await new Promise((r) => watcher.on("time", r));
const c = watcher.clocks();
console.log(JSON.stringify({ version: st.version, active: st.active_participant_id, faces: c.map((x) => formatClock(x.remainingMs)), offset: watcher.clock.estimate }));
watcher.close();
`,
  );
  const sid = uuid();
  const white = uuid();
  const black = uuid();
  const printed = execFileSync(process.execPath, ["clock.mjs", stack.server.url, stack.token(), sid, white, black], {
    cwd: app,
    encoding: "utf8",
    timeout: 20_000,
  });
  const result = JSON.parse(printed) as { version: number; active: string; faces: string[]; offset: unknown };
  assert.equal(result.version, 3);
  assert.equal(result.active, black);
  assert.equal(result.faces.length, 2);
  assert.ok(result.offset !== undefined, "the clock was synced");

  // The shipped declarations type-check a TypeScript user's code, strictly.
  writeFileSync(
    join(app, "typed.ts"),
    `import { SyncKairos, SessionWatcher, isSyncKairosError, type SyncState, type ErrorCodeOf } from "synckairos";
const sk = new SyncKairos({ baseUrl: "http://127.0.0.1:8080", token: async () => "jwt" });
export async function turn(sid: string): Promise<number> {
  try {
    const r = await sk.switchTurn(sid, { ifMatch: 3 });
    return r.version;
  } catch (e) {
    if (isSyncKairosError(e, "CONFLICT")) return -1;
    throw e;
  }
}
const code: ErrorCodeOf<"switchTurn"> = "CONFLICT";
const w = new SessionWatcher({ url: "ws://127.0.0.1:8080", sessionId: "s" });
w.on("state", (s: SyncState) => void s.participants.map((p) => p.time_remaining_ms));
export { code };
`,
  );
  writeFileSync(
    join(app, "tsconfig.json"),
    JSON.stringify({ compilerOptions: { strict: true, noEmit: true, module: "NodeNext", moduleResolution: "NodeNext", target: "ES2022", lib: ["ES2022", "DOM"], types: [] }, files: ["typed.ts"] }),
  );
  execFileSync(process.execPath, [join(SDK, "node_modules/typescript/bin/tsc"), "-p", app], { encoding: "utf8" });
});
