/**
 * The server's clock, estimated from NTP-style exchanges (`TIME_SYNC` on the
 * WebSocket, or `GET /v1/time`).
 *
 * One exchange: the client sends at `t0` (its clock), the server receives at
 * `t1` and replies at `t2` (Redis time), the client receives at `t3`. Then
 * `offset = ((t1 − t0) + (t2 − t3)) / 2` and `rtt = (t3 − t0) − (t2 − t1)`.
 * Both legs took a non-negative time, so the true offset lies within
 * `rtt / 2` of the sample's offset (widened by the 1 ms resolution of the
 * stamps). The estimate is the middle of where every sample's interval
 * overlaps, and half the overlap is its error bound: never wider than the
 * best sample's own interval, and narrower when the legs' asymmetry varies.
 * This is the method of the Rust client (`synckairos_client::ws::estimate`).
 */

/** One exchange, reduced: the offset it measured and its round trip (ms). */
export interface TimeSample {
  /** Server minus local clock by this exchange (ms). */
  offsetMs: number;
  /** Round trip minus the server's own processing time (ms, ≥ 0). */
  rttMs: number;
  /**
   * How old the sample is (ms, default 0). The local clock's rate error makes
   * an old sample less certain: its interval widens by {@link DRIFT_PPM} of
   * its age, as the gateway's own clock filter does.
   */
  ageMs?: number;
}

/** The rate error allowed for an ordinary quartz clock (parts per million). */
export const DRIFT_PPM = 200;

/** The server's clock as seen from here: `serverNow = localNow + offsetMs`. */
export interface TimeEstimate {
  /** Server minus local clock (ms). */
  offsetMs: number;
  /** The true offset is within ± this many ms of `offsetMs`. */
  errorBoundMs: number;
}

/** The sample of one exchange (`t0`, `t3` local; `t1`, `t2` server; epoch ms). */
export function sampleOf(t0: number, t1: number, t2: number, t3: number): TimeSample {
  return {
    offsetMs: (t1 - t0 + (t2 - t3)) / 2,
    rttMs: Math.max(0, t3 - t0 - (t2 - t1)),
  };
}

/** The estimate of a non-empty set of samples (see the module comment). */
export function estimate(samples: readonly TimeSample[]): TimeEstimate {
  if (samples.length === 0) throw new RangeError("estimate needs at least one sample");
  const half = (s: TimeSample): number => s.rttMs / 2 + 1 + ((s.ageMs ?? 0) * DRIFT_PPM) / 1e6;
  let lo = -Infinity;
  let hi = Infinity;
  for (const s of samples) {
    lo = Math.max(lo, s.offsetMs - half(s));
    hi = Math.min(hi, s.offsetMs + half(s));
  }
  let offset: number;
  let bound: number;
  if (lo <= hi) {
    offset = (lo + hi) / 2;
    bound = (hi - lo) / 2;
  } else {
    // Intervals that do not overlap mean a clock stepped meanwhile: fall back
    // to the sample with the smallest round trip alone.
    let best = samples[0] as TimeSample;
    for (const s of samples) if (s.rttMs < best.rttMs) best = s;
    offset = best.offsetMs;
    bound = half(best);
  }
  // Rounded as the Rust client rounds (half away from zero, bound up).
  return { offsetMs: roundHalfAway(offset), errorBoundMs: Math.ceil(bound) };
}

function roundHalfAway(x: number): number {
  return x < 0 ? -Math.round(-x) : Math.round(x);
}

/** Where the local time comes from (epoch ms); `Date.now` unless a test injects one. */
export type LocalClock = () => number;

/**
 * A running estimate of the server's clock. Feed it exchanges with
 * {@link ServerClock.add}; it keeps the most recent `window` samples (old ones
 * drift with the local clock's rate error) and answers {@link ServerClock.now}.
 */
export class ServerClock {
  readonly #local: LocalClock;
  readonly #window: number;
  #samples: { sample: TimeSample; at: number }[] = [];
  #estimate: TimeEstimate | undefined;

  constructor(options: { localNow?: LocalClock; window?: number } = {}) {
    this.#local = options.localNow ?? Date.now;
    this.#window = Math.max(1, options.window ?? 16);
  }

  /** Adds one exchange (`t0`, `t3` local; `t1`, `t2` server). */
  add(t0: number, t1: number, t2: number, t3: number): TimeEstimate {
    this.#samples.push({ sample: sampleOf(t0, t1, t2, t3), at: t3 });
    if (this.#samples.length > this.#window) this.#samples.splice(0, this.#samples.length - this.#window);
    this.#estimate = estimate(this.#samples.map(({ sample, at }) => ({ ...sample, ageMs: Math.max(0, t3 - at) })));
    return this.#estimate;
  }

  /** Forgets every sample (after the local clock stepped, say). */
  reset(): void {
    this.#samples = [];
    this.#estimate = undefined;
  }

  /** The current estimate, or `undefined` before the first exchange. */
  get estimate(): TimeEstimate | undefined {
    return this.#estimate;
  }

  /** Whether at least one exchange has completed. */
  get synced(): boolean {
    return this.#estimate !== undefined;
  }

  /** Server minus local clock (ms); 0 before the first exchange. */
  get offsetMs(): number {
    return this.#estimate?.offsetMs ?? 0;
  }

  /** Error bound of {@link ServerClock.offsetMs} (ms); `Infinity` before the first exchange. */
  get errorBoundMs(): number {
    return this.#estimate?.errorBoundMs ?? Infinity;
  }

  /** The local clock (epoch ms). */
  localNow(): number {
    return this.#local();
  }

  /** The server's time now, by the estimate (epoch ms). */
  now(): number {
    return this.#local() + this.offsetMs;
  }
}
