import assert from "node:assert/strict";
import { test } from "node:test";
import { tick } from "../src/index.js";

test("a draw that throws does not stop the frames", async () => {
  const g = globalThis as { requestAnimationFrame?: (cb: () => void) => number; cancelAnimationFrame?: (h: number) => void };
  const timers = new Map<number, ReturnType<typeof setTimeout>>();
  const errors: unknown[] = [];
  let n = 0;
  // As a browser does: an error of a frame callback is reported, and that is all.
  g.requestAnimationFrame = (cb) => {
    const h = ++n;
    timers.set(
      h,
      setTimeout(() => {
        try {
          cb();
        } catch (e) {
          errors.push(e);
        }
      }, 5),
    );
    return h;
  };
  g.cancelAnimationFrame = (h) => clearTimeout(timers.get(h));
  try {
    let calls = 0;
    const stop = tick(() => {
      calls++;
      if (calls === 2) throw new Error("a bad frame");
    });
    await new Promise((r) => setTimeout(r, 80));
    stop();
    const after = calls;
    await new Promise((r) => setTimeout(r, 30));
    assert.ok(after >= 5, `kept drawing after the throw: ${after} frames`);
    assert.equal(calls, after, "stopped");
    assert.equal(errors.length, 1, "the error was the host's to report");
  } finally {
    delete g.requestAnimationFrame;
    delete g.cancelAnimationFrame;
  }
});

test("without animation frames it ticks on a timer", async () => {
  let calls = 0;
  const stop = tick(() => calls++, { intervalMs: 10 });
  await new Promise((r) => setTimeout(r, 75));
  stop();
  assert.ok(calls >= 4, `${calls}`);
});
