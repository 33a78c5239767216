// The server-clock estimate: the cases of the Rust client's
// `the_overlap_of_the_samples_intervals_is_the_estimate`, so both clients
// compute the same estimate from the same samples.
import assert from "node:assert/strict";
import { test } from "node:test";
import { ServerClock, estimate, sampleOf } from "../src/index.js";

test("the overlap of the samples' intervals is the estimate (as in the Rust client)", () => {
  // True offset 10; legs (up, down): (40, 60), (55, 45), (50, 50).
  const e = estimate([
    { offsetMs: 0, rttMs: 100 },
    { offsetMs: 15, rttMs: 100 },
    { offsetMs: 10, rttMs: 100 },
  ]);
  assert.deepEqual(e, { offsetMs: 8, errorBoundMs: 44 });
  assert.ok(Math.abs(e.offsetMs - 10) <= e.errorBoundMs);
  // One sample: its own interval.
  assert.deepEqual(estimate([{ offsetMs: 3, rttMs: 20 }]), { offsetMs: 3, errorBoundMs: 11 });
  // Disjoint intervals fall back to the smallest round trip.
  assert.deepEqual(
    estimate([
      { offsetMs: 0, rttMs: 2 },
      { offsetMs: 100, rttMs: 4 },
    ]),
    { offsetMs: 0, errorBoundMs: 2 },
  );
  assert.throws(() => estimate([]), RangeError);
});

test("one exchange gives offset and round trip by the NTP formulas", () => {
  // Client 1000 ms behind; 30 ms up, 70 ms down; 5 ms in the server.
  const t0 = 10_000;
  const t1 = t0 + 1000 + 30;
  const t2 = t1 + 5;
  const t3 = t2 - 1000 + 70;
  const s = sampleOf(t0, t1, t2, t3);
  assert.equal(s.rttMs, 100);
  assert.equal(s.offsetMs, 1000 - 20); // off by the legs' asymmetry / 2
  assert.ok(Math.abs(s.offsetMs - 1000) <= s.rttMs / 2);
});

test("ServerClock keeps a window of samples and answers now()", () => {
  let local = 5_000;
  const clock = new ServerClock({ localNow: () => local, window: 2 });
  assert.equal(clock.synced, false);
  assert.equal(clock.errorBoundMs, Infinity);
  assert.equal(clock.now(), 5_000);
  clock.add(0, 500, 500, 10); // offset 495, rtt 10
  assert.deepEqual(clock.estimate, { offsetMs: 495, errorBoundMs: 6 });
  assert.equal(clock.now(), 5_495);
  // A sample far off (a stepped clock) with the other dropped out of the window.
  clock.add(0, 900, 900, 2);
  clock.add(0, 901, 901, 2);
  assert.equal(clock.offsetMs, 900);
  local = 6_000;
  assert.equal(clock.now(), 6_900);
  clock.reset();
  assert.equal(clock.estimate, undefined);
});

test("an old sample counts for less: its interval widens with its age (200 ppm)", () => {
  let local = 0;
  const clock = new ServerClock({ localNow: () => local });
  clock.add(0, 100, 100, 4); // offset 98, ±3
  local = 600_000;
  // Ten minutes later a sample with a wide interval of its own: the old one
  // is now ±123 (3 + 120 of possible drift), so the new one decides.
  const e = clock.add(600_000, 600_150, 600_150, 600_010); // offset 145, ±6
  assert.deepEqual(e, { offsetMs: 145, errorBoundMs: 6 });
  assert.deepEqual(estimate([{ offsetMs: 0, rttMs: 0, ageMs: 1_000_000 }]), { offsetMs: 0, errorBoundMs: 201 });
});
