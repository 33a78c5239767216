// The web chess clock in a real browser (Debian's Chromium, driven by
// playwright-core; no browser is downloaded) against the real stack: a
// throw-away redis-server and two native SyncKairos servers (the SDK's test
// helpers). scripts/browser-test.sh builds what it needs and runs it.
//
// One host page and one viewer page (two browser contexts) watch one session
// through server A. Measured and printed:
//   - tap → mirror: from the host's tap (Date.now() just before its REST
//     call) to the moment the viewer applied that version, over 20 taps;
//   - agreement: both pages' remaining time of the running clock for the
//     same local instant (they differ only by their offset estimates);
//   - recovery: server A is killed, a switch goes through server B, A is
//     restarted, and both pages must show that switch by themselves.
// Waits are generous (seconds), so that a loaded 2-core runner does not flake;
// the assertions on the numbers are loose, the numbers are printed.
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { chromium } from "playwright-core";
import { serve } from "../serve.mjs";
import { SyncKairos } from "../../../sdk/js/dist/index.js";
import { Stack, sleep, uuid } from "../../../sdk/js/build/test/support/stack.js";

const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const TAPS = 20;
/** Taps at least this far apart: the per-session switch limit is 10 a second. */
const TAP_SPACING_MS = 300;

let stack;
let web;
let browser;
const pageErrors = [];

before(async () => {
  stack = await Stack.start({ servers: 2 });
  web = await serve({ port: 0 });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    // CI runs as root, where Chromium's sandbox cannot start.
    args: ["--headless=new", "--no-sandbox"],
  });
});

after(async () => {
  await browser?.close();
  await web?.close();
  await stack?.close();
});

/** A page of the example, with its `window.chessClock` as async calls. */
async function openPage(path, fragment, viewport) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.on("pageerror", (e) => pageErrors.push(`${path}: ${e.message}`));
  await page.goto(`${web.url}${path}#${new URLSearchParams(fragment)}`);
  const call = (fn, arg) => page.evaluate(fn, arg);
  return {
    page,
    version: () => call(() => window.chessClock.version()),
    status: () => call(() => window.chessClock.state()?.status),
    connection: () => call(() => window.chessClock.connection()),
    statusLine: () => page.locator("#status").textContent(),
    appliedAt: (v) => call((v) => window.chessClock.applied.find((a) => a.version === v)?.at, v),
    /** Waits (polling in the page) until `fn(arg)` is truthy there. */
    until: (fn, arg, timeout = 10_000) => page.waitForFunction(fn, arg, { timeout, polling: 10 }),
  };
}

function untilVersion(p, v, timeout = 10_000) {
  return p.until((v) => (window.chessClock.version() ?? 0) >= v, v, timeout);
}

/** Nearest-rank percentile of sorted numbers. */
function percentile(sorted, p) {
  return sorted[Math.max(0, Math.ceil(p * sorted.length) - 1)];
}

test("web chess clock: host and viewer stay in step, and recover from a killed server", async () => {
  const [serverA, serverB] = stack.servers;
  const sid = uuid();
  const hostToken = stack.token({ role: "host", sid, sub: "host", ttlSecs: 3600 });
  const viewerToken = stack.token({ role: "viewer", sid, sub: "viewer", ttlSecs: 3600 });

  // The viewer opens first, on a phone-sized screen, and waits for the game.
  const viewer = await openPage("/viewer.html", { api: serverA.url, ws: serverA.url, session: sid, token: viewerToken }, { width: 390, height: 844 });
  await viewer.until(() => window.chessClock.connection() === "open");

  // The host finds no session, so it offers the form; Create with the defaults (5 min + 3 s).
  const host = await openPage("/", { api: serverA.url, ws: serverA.url, session: sid, token: hostToken }, { width: 1000, height: 700 });
  const form = host.page.locator("#create");
  await form.waitFor({ state: "visible", timeout: 10_000 });
  assert.equal(await host.page.locator("#minutes").inputValue(), "5");
  assert.equal(await host.page.locator("#increment").inputValue(), "3");
  await host.page.getByRole("button", { name: "Create" }).click();
  await host.until(() => window.chessClock.ready && window.chessClock.version() === 1);
  await viewer.until(() => window.chessClock.ready && window.chessClock.version() === 1);
  assert.equal(await form.isVisible(), false, "the form goes once the game exists");
  const created = await host.page.evaluate(() => window.chessClock.state());
  assert.equal(created.sync_mode, "per_participant");
  assert.equal(created.increment_ms, 3000);
  assert.deepEqual(created.participants.map((p) => p.total_time_ms), [300_000, 300_000]);
  // White is index 0, Black index 1; the names ride in the metadata, by participant id.
  assert.deepEqual(created.participants.map((p) => created.metadata.names[p.participant_id]), ["White", "Black"]);
  assert.deepEqual(await viewer.page.locator(".clock .name").allTextContents(), ["White", "Black"]);
  assert.equal(await host.page.locator(".clock .time").first().textContent(), "5:00.0");
  assert.equal(await viewer.page.locator("button").count(), 0, "the viewer has no controls");

  // Start through the page's button.
  await host.page.getByRole("button", { name: "Start" }).click();
  await untilVersion(host, 2);
  await untilVersion(viewer, 2);
  assert.equal(await viewer.status(), "running");
  // Only the side whose turn it is can be tapped.
  const faces = host.page.locator("button.clock");
  assert.equal(await faces.count(), 2);
  // The faces are redrawn on the next animation frame after the state lands.
  await host.until(() => {
    const f = document.querySelectorAll("button.clock");
    return f.length === 2 && !f[0].disabled && f[1].disabled;
  });
  assert.equal(await faces.nth(0).isEnabled(), true, "White's turn: White's clock is live");
  assert.equal(await faces.nth(1).isEnabled(), false);

  // 20 taps; after each, both pages' reading of the running clock for one instant.
  const delays = [];
  const diffs = [];
  for (let i = 0; i < TAPS; i++) {
    const before = await host.version();
    await untilVersion(viewer, before);
    const tappedAt = await host.page.evaluate(() => window.chessClock.tap());
    const target = before + 1;
    await untilVersion(viewer, target, 5_000);
    await untilVersion(host, target, 5_000);
    const shownAt = await viewer.appliedAt(target);
    assert.ok(typeof shownAt === "number", `the viewer applied version ${target}`);
    delays.push(shownAt - tappedAt);

    const t = Date.now();
    const [a, b] = await Promise.all([
      host.page.evaluate((t) => ({ v: window.chessClock.version(), r: window.chessClock.remainingAt(t), s: window.chessClock.state() }), t),
      viewer.page.evaluate((t) => ({ v: window.chessClock.version(), r: window.chessClock.remainingAt(t) }), t),
    ]);
    assert.equal(a.v, b.v, "both pages hold the same version");
    const active = a.s.participants.findIndex((p) => p.is_active);
    assert.ok(active >= 0 && a.s.status === "running");
    diffs.push(Math.abs(a.r[active] - b.r[active]));
    // The other clock stands still, identical on both.
    assert.equal(a.r[1 - active], b.r[1 - active]);

    const wait = TAP_SPACING_MS - (Date.now() - tappedAt);
    if (wait > 0) await sleep(wait);
  }
  for (const d of delays) assert.ok(d >= 0 && d <= 5_000, `tap → mirror ${d} ms is within 5 s`);
  const agreeMs = Math.max(...diffs);
  assert.ok(agreeMs <= 100, `the running clock agrees within 100 ms on both pages (got ${agreeMs} ms)`);

  // The keyboard and the clock face switch too; Pause and Resume work.
  let v = await host.version();
  await host.page.keyboard.press("Space");
  await untilVersion(viewer, ++v);
  await sleep(TAP_SPACING_MS);
  const activeFace = faces.nth((await host.page.evaluate(() => window.chessClock.state().participants.findIndex((p) => p.is_active))));
  await activeFace.click();
  await untilVersion(viewer, ++v);
  await host.page.getByRole("button", { name: "Pause" }).click();
  await untilVersion(viewer, ++v);
  assert.equal(await viewer.status(), "paused");
  await viewer.until(() => document.getElementById("status").textContent.startsWith("paused"), undefined, 5_000);
  assert.match(await viewer.statusLine(), /^paused · version \d+ · server offset [+−]\d+ ± \d+ ms · connection open$/);
  await host.page.getByRole("button", { name: "Resume" }).click();
  await untilVersion(viewer, ++v);
  assert.equal(await viewer.status(), "running");

  // Recovery: kill A; the pages notice and say so.
  await serverA.kill();
  await host.until(() => window.chessClock.connection() === "reconnecting", undefined, 10_000);
  await viewer.until(() => window.chessClock.connection() === "reconnecting", undefined, 10_000);
  // The status line (drawn on the next frame) names the close code.
  await viewer.until(() => /connection reconnecting \(closed 1006\)/.test(document.getElementById("status").textContent), undefined, 5_000);
  // A switch through B, with the SDK in Node.
  const admin = new SyncKairos({ baseUrl: serverB.url, token: stack.token({ role: "admin" }) });
  const switched = await admin.switchTurn(sid);
  assert.equal(switched.version, v + 1);
  const restartAt = Date.now();
  await serverA.restart();
  const readyAt = Date.now();
  // Both pages reconnect with backoff and resync by themselves.
  await untilVersion(host, switched.version, 15_000);
  await untilVersion(viewer, switched.version, 15_000);
  const shown = Math.max(await host.appliedAt(switched.version), await viewer.appliedAt(switched.version));
  const recoveredMs = shown - restartAt;
  assert.equal(await host.connection(), "open");
  assert.equal(await viewer.connection(), "open");
  assert.equal(await viewer.page.evaluate(() => window.chessClock.state().active_participant_id), switched.active_participant_id);

  // Screenshots, outside the repository.
  const dir = mkdtempSync(join(tmpdir(), "synckairos-web-chess-clock-"));
  await host.page.screenshot({ path: join(dir, "host.png") });
  await viewer.page.screenshot({ path: join(dir, "viewer.png") });
  console.log(`screenshots: ${join(dir, "host.png")} ${join(dir, "viewer.png")}`);

  assert.deepEqual(pageErrors, [], "no uncaught error in either page");

  const sorted = [...delays].sort((x, y) => x - y);
  const results = {
    taps: delays.length,
    tapToMirrorMs: { p50: percentile(sorted, 0.5), p95: percentile(sorted, 0.95), max: sorted[sorted.length - 1], all: delays },
    clocksAgreeWithinMs: agreeMs,
    agreementSamples: diffs.length,
    recoveredMs,
    serverReadyAfterRestartMs: readyAt - restartAt,
    offsets: {
      host: await host.page.evaluate(() => window.chessClock.offset()),
      viewer: await viewer.page.evaluate(() => window.chessClock.offset()),
    },
    chromium: browser.version(),
  };
  const file = join(dir, "browser-results.json");
  writeFileSync(file, JSON.stringify(results, null, 2) + "\n");
  console.log(
    `browser: tap→mirror p50 ${results.tapToMirrorMs.p50} ms p95 ${results.tapToMirrorMs.p95} ms max ${results.tapToMirrorMs.max} ms; ` +
      `clocks agree within ${agreeMs} ms; recovered in ${recoveredMs} ms`,
  );
  console.log(`results: ${file}`);
});

test("web chess clock: a byo-yomi game shows its period on both pages", async () => {
  const server = stack.servers[1];
  const sid = uuid();
  const fragment = (role) => ({ api: server.url, ws: server.url, session: sid, token: stack.token({ role, sid, sub: role, ttlSecs: 3600 }) });
  const viewer = await openPage("/viewer.html", fragment("viewer"), { width: 390, height: 844 });
  await viewer.until(() => window.chessClock.connection() === "open");
  const host = await openPage("/", fragment("host"), { width: 1000, height: 700 });
  await host.page.locator("#create").waitFor({ state: "visible", timeout: 10_000 });

  // The form shows the fields of the control chosen: 3 s of main time, then 3 periods of 5 s.
  await host.page.locator("#control").selectOption("byoyomi");
  assert.equal(await host.page.locator("#increment").isVisible(), false, "no increment for byo-yomi");
  assert.equal(await host.page.locator("#periods").inputValue(), "5");
  await host.page.locator("#minutes").fill("0.05");
  await host.page.locator("#periods").fill("3");
  await host.page.locator("#period").fill("5");
  await host.page.getByRole("button", { name: "Create" }).click();
  await host.until(() => window.chessClock.ready && window.chessClock.version() === 1);
  await viewer.until(() => window.chessClock.ready && window.chessClock.version() === 1);
  const created = await host.page.evaluate(() => window.chessClock.state());
  assert.deepEqual(created.time_control, { type: "byoyomi", periods: 3, period_ms: 5_000 });
  assert.equal(created.increment_ms, 0);
  assert.deepEqual(created.participants.map((p) => [p.total_time_ms, p.periods_left]), [[3_000, 3], [3_000, 3]]);

  const details = (p) => p.page.locator(".clock .detail").allTextContents();
  const detailIs = (p, i, pattern) =>
    p.until(([i, src]) => new RegExp(src).test(document.querySelectorAll(".clock .detail")[i]?.textContent ?? ""), [i, pattern.source], 10_000);
  for (const p of [host, viewer]) {
    await detailIs(p, 0, /^then 3 × 5 s$/);
    assert.deepEqual(await details(p), ["then 3 × 5 s", "then 3 × 5 s"]);
    assert.equal(await p.page.locator("#summary").textContent(), "3 s, then byo-yomi 3 × 5 s");
  }

  // Start: White's 3 s of main time run out, then its first period counts down on both pages.
  await host.page.getByRole("button", { name: "Start" }).click();
  await untilVersion(viewer, 2);
  await detailIs(host, 0, /^period 1 of 3, 0:0[0-4]\.\d$/);
  await detailIs(viewer, 0, /^period 1 of 3, 0:0[0-4]\.\d$/);
  const t = Date.now();
  const [a, b] = await Promise.all([host, viewer].map((p) => p.page.evaluate((t) => window.chessClock.clocksAt(t)[0], t)));
  assert.deepEqual([a.remainingMs, a.periodsLeft, b.remainingMs, b.periodsLeft], [0, 3, 0, 3]);
  assert.ok(Math.abs(a.periodLeftMs - b.periodLeftMs) <= 100, `both pages read the same period (${a.periodLeftMs} and ${b.periodLeftMs} ms)`);
  // The face counts the period down.
  assert.match(await viewer.page.locator(".clock .time").first().textContent(), /^0:0[0-5]\.\d$/);

  // White moves inside a period and keeps it: its face shows the whole period again, Black's main time runs.
  await host.page.evaluate(() => window.chessClock.tap());
  await untilVersion(host, 3);
  await untilVersion(viewer, 3);
  const moved = await host.page.evaluate(() => window.chessClock.state());
  const white = moved.participants[0];
  assert.equal(white.time_remaining_ms, 0);
  const kept = new RegExp(`^period ${3 - white.periods_left + 1} of 3, 0:05\\.0$`);
  for (const p of [host, viewer]) {
    await detailIs(p, 0, kept);
    await detailIs(p, 1, /^then 3 × 5 s$/);
    assert.equal(await p.page.locator(".clock .time").first().textContent(), "0:05.0");
  }
  assert.deepEqual(pageErrors, [], "no uncaught error in either page");
});
