/** A small typed event emitter (no dependency on Node's or the DOM's). */

/** Handler signatures by event name. */
export type EventMap = { [event: string]: (...args: never[]) => void };

export class Emitter<E extends EventMap> {
  readonly #handlers = new Map<keyof E, Set<E[keyof E]>>();

  /** Calls `handler` on every `event`; returns the function that stops it. */
  on<K extends keyof E>(event: K, handler: E[K]): () => void {
    let set = this.#handlers.get(event);
    if (set === undefined) {
      set = new Set();
      this.#handlers.set(event, set);
    }
    set.add(handler);
    return () => this.off(event, handler);
  }

  /** Stops calling `handler` on `event`. */
  off<K extends keyof E>(event: K, handler: E[K]): void {
    this.#handlers.get(event)?.delete(handler);
  }

  /**
   * Calls every handler of `event`. A handler that throws does not stop the
   * others nor the caller: its error is reported asynchronously, as an
   * uncaught error of the host would be.
   */
  protected emit<K extends keyof E>(event: K, ...args: Parameters<E[K]>): void {
    const set = this.#handlers.get(event);
    if (set === undefined) return;
    for (const h of [...set]) {
      try {
        (h as (...a: Parameters<E[K]>) => void)(...args);
      } catch (e) {
        setTimeout(() => {
          throw e;
        }, 0);
      }
    }
  }
}
