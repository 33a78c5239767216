/** Capped exponential backoff with full jitter. */

/** How retries and reconnects back off. */
export interface BackoffOptions {
  /** The first delay's ceiling (ms). */
  initialDelayMs?: number;
  /** No delay is longer than this (ms). */
  maxDelayMs?: number;
  /** Growth per attempt. */
  factor?: number;
}

/**
 * The delay before retry number `attempt` (0-based): uniformly random in
 * [ceiling / 2, ceiling], where the ceiling is `initial × factor^attempt`,
 * capped at `maxDelayMs`. Half the ceiling is kept so that a crowd of clients
 * spreads out without any of them hammering the server at once.
 */
export function backoffDelay(attempt: number, options: BackoffOptions = {}, random: () => number = Math.random): number {
  const initial = options.initialDelayMs ?? 250;
  const max = options.maxDelayMs ?? 30_000;
  const factor = options.factor ?? 2;
  const ceiling = Math.min(max, initial * Math.pow(factor, Math.max(0, attempt)));
  return Math.round(ceiling / 2 + random() * (ceiling / 2));
}

/** Resolves after `ms`, or rejects when `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
