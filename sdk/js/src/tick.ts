/** Redraw helpers: call a function every frame, or every `intervalMs`. */

/** Options of {@link tick}. */
export interface TickOptions {
  /**
   * Call every this many ms with a timer instead of every animation frame
   * (default: animation frames where `requestAnimationFrame` exists, else
   * 100 ms, a tenth of a second).
   */
  intervalMs?: number;
}

/**
 * Calls `draw` on every animation frame (browsers, React Native) or timer
 * tick, until the returned function is called. Pair it with
 * `watcher.clocks()` or `watcher.remainingMs(id)`, which compute the live
 * time on each call.
 */
export function tick(draw: () => void, options: TickOptions = {}): () => void {
  const g = globalThis as {
    requestAnimationFrame?: (cb: () => void) => number;
    cancelAnimationFrame?: (handle: number) => void;
  };
  let stopped = false;
  if (options.intervalMs === undefined && g.requestAnimationFrame !== undefined) {
    const raf = g.requestAnimationFrame;
    let handle = 0;
    const frame = (): void => {
      if (stopped) return;
      // The next frame first: a draw that throws must not freeze the clock.
      handle = raf(frame);
      draw();
    };
    handle = raf(frame);
    return () => {
      stopped = true;
      g.cancelAnimationFrame?.(handle);
    };
  }
  const timer = setInterval(() => {
    if (!stopped) draw();
  }, options.intervalMs ?? 100);
  return () => {
    stopped = true;
    clearInterval(timer);
  };
}

/** `m:ss.t` (tenths) for a clock face; `h:mm:ss.t` from an hour up. */
export function formatClock(ms: number): string {
  const tenths = Math.floor(Math.max(0, ms) / 100);
  const t = tenths % 10;
  const s = Math.floor(tenths / 10) % 60;
  const m = Math.floor(tenths / 600) % 60;
  const h = Math.floor(tenths / 36_000);
  const ss = String(s).padStart(2, "0");
  return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${ss}.${t}` : `${m}:${ss}.${t}`;
}
