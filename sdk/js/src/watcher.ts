/**
 * `SessionWatcher`: watches sessions over the gateway's WebSocket
 * (docs/API.md §5) and keeps what a client needs to draw live clocks: the
 * newest state of each session and an estimate of the server's clock.
 *
 * - Reconnects by itself with jittered exponential backoff, following the
 *   close codes: never after 1000 (session deleted), 1008, 1009 or 4003;
 *   with a fresh token from the provider after 4001 (a fixed token cannot be
 *   refreshed: it stops there); backing off after 1013 and 4029; promptly
 *   (jittered) after 1012; with backoff after a missed heartbeat or a drop.
 * - Resyncs after a reconnect (the gateway's `STATE_SYNC`, and `SUBSCRIBE`
 *   again for every extra session) and never applies a version older than the
 *   one it holds.
 * - Watches several sessions on one socket (`SUBSCRIBE`).
 * - Sends `PING` heartbeats and drops a socket that stopped answering.
 * - Sends a fresh token (`AUTH`) before the socket's token expires.
 * - Estimates the server's clock with `TIME_SYNC` exchanges.
 */
import type { SyncState } from "./generated/api.js";
import { CLOSE_CODES, type ClientIn } from "./generated/ws.js";
import { backoffDelay, type BackoffOptions } from "./backoff.js";
import { clocks, deadlineMs, remainingMs, type Clock } from "./clock.js";
import { Emitter } from "./emitter.js";
import { ServerClock, type LocalClock, type TimeEstimate } from "./time.js";
import { canRefresh, resolveToken, tokenExpiry, type TokenSource } from "./token.js";

/** The part of the WebSocket API the watcher uses (browsers, Node ≥ 22, React Native). */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
}

/** A WebSocket constructor. */
export type WebSocketConstructor = new (url: string) => WebSocketLike;

/** Where the watcher's connection is. */
export type ConnectionState =
  /** The first connection is being made. */
  | "connecting"
  /** Connected (the gateway sent `CONNECTED`). */
  | "open"
  /** The connection dropped; a new one is scheduled or being made. */
  | "reconnecting"
  /** Closed for good: by {@link SessionWatcher.close}, or a close code that forbids reconnecting. */
  | "closed";

/** A change of the connection. */
export interface ConnectionInfo {
  state: ConnectionState;
  /** The close code that caused it, when a socket closed. */
  code?: number;
  /** The close reason, when a socket closed. */
  reason?: string;
  /** When reconnecting: the delay before the next attempt (ms). */
  retryInMs?: number;
  /** When reconnecting: the number of attempts since the last stable connection. */
  attempt?: number;
}

/** An `ERROR` message of the gateway, or why the watcher stopped. */
export interface WatcherError {
  /** The gateway's code (`SESSION_NOT_FOUND`, `FORBIDDEN`, …) or `CLOSED_<code>` for a final close. */
  code: string;
  message: string;
}

/** Events of a {@link SessionWatcher}. */
export type WatcherEvents = {
  /** A newer state of a watched session (never an older one). */
  state: (state: SyncState, sessionId: string) => void;
  /** The connection changed. */
  connection: (info: ConnectionInfo) => void;
  /** A watched session was deleted. */
  deleted: (sessionId: string) => void;
  /** The gateway refused something, or the watcher stopped for good. */
  error: (error: WatcherError) => void;
  /** The server-clock estimate improved or moved. */
  time: (estimate: TimeEstimate) => void;
};

/** Options of a {@link SessionWatcher}. */
export interface WatcherOptions {
  /** The gateway: `wss://ws.example.com`, `ws://127.0.0.1:8080` (http(s) works too); `/ws` is added. */
  url: string;
  /** The session of the URL; more can be added with {@link SessionWatcher.subscribe}. */
  sessionId: string;
  /** The token, or a provider of fresh ones (needed to refresh and to reconnect after 4001). */
  token?: TokenSource;
  /** The WebSocket constructor (default the global one). */
  WebSocket?: WebSocketConstructor;
  /** The local clock (epoch ms; default `Date.now`). */
  localNow?: LocalClock;
  /** Backoff between reconnects (default 250 ms doubling up to 30 s). */
  reconnect?: BackoffOptions;
  /** A `PING` goes out this often; a socket that answered nothing since the previous one is dropped (ms, default 10,000). */
  heartbeatIntervalMs?: number;
  /** A connection attempt that is not open by then is dropped (ms, default 10,000). */
  connectTimeoutMs?: number;
  /** `TIME_SYNC` exchanges right after each connect (default 5). */
  timeSyncSamples?: number;
  /** One more `TIME_SYNC` exchange this often while connected (ms, default 30,000). */
  timeSyncIntervalMs?: number;
  /** Send `AUTH` with a fresh token this long before the token expires (ms, default 60,000; at most half its remaining life). */
  tokenRefreshMarginMs?: number;
  /**
   * Refresh the socket's token with `AUTH` before it expires (default true,
   * when the token is a provider). `false` lets the gateway close the socket
   * with 4001 at expiry, after which the watcher reconnects with a fresh token.
   */
  authRefresh?: boolean;
  /** Connect at once (default); `false` waits for {@link SessionWatcher.connect}. */
  autoConnect?: boolean;
}

const FINAL_CLOSE_CODES: ReadonlySet<number> = new Set(CLOSE_CODES.filter((c) => !c.reconnect).map((c) => c.code));
const SLOW_DOWN_CODES: ReadonlySet<number> = new Set([1013, 4029]);
const TOKEN_EXPIRED = 4001;
const SERVICE_RESTART = 1012;
/** A connection that lived this long resets the backoff. */
const STABLE_MS = 10_000;
/** The longest delay `setTimeout` takes. */
const MAX_TIMER_MS = 2 ** 31 - 1;

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Watches sessions on a gateway; see the module comment. */
export class SessionWatcher extends Emitter<WatcherEvents> {
  /** The server's clock, estimated over this watcher's sockets. */
  readonly clock: ServerClock;
  readonly sessionId: string;
  readonly #url: string;
  readonly #token: TokenSource | undefined;
  readonly #WebSocket: WebSocketConstructor;
  readonly #reconnect: BackoffOptions;
  readonly #heartbeatMs: number;
  readonly #connectTimeoutMs: number;
  readonly #timeSyncSamples: number;
  readonly #timeSyncIntervalMs: number;
  readonly #refreshMarginMs: number;
  readonly #authRefresh: boolean;

  /** Watched sessions (the URL's first) and the newest state of each. */
  readonly #sessions = new Map<string, SyncState | undefined>();
  #ws: WebSocketLike | undefined;
  #connection: ConnectionState = "connecting";
  #closed = false;
  #attempt = 0;
  #openedAt = 0;
  #needFreshToken = false;
  #lastHeard = 0;
  #lastPing = 0;
  #timers = new Set<ReturnType<typeof setTimeout>>();
  #heartbeat: ReturnType<typeof setInterval> | undefined;
  #timeSyncTimer: ReturnType<typeof setInterval> | undefined;
  #syncInFlight: { t0: number; resolve: () => void } | undefined;
  #burst: Promise<TimeEstimate | undefined> | undefined;
  #reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  #detachHost: (() => void) | undefined;

  constructor(options: WatcherOptions) {
    super();
    this.sessionId = options.sessionId.toLowerCase();
    this.#url = toWsUrl(options.url);
    this.#token = options.token;
    const ws = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (ws === undefined) throw new TypeError("SessionWatcher needs a WebSocket (none is global here)");
    this.#WebSocket = ws;
    this.clock = new ServerClock(options.localNow === undefined ? {} : { localNow: options.localNow });
    this.#reconnect = { initialDelayMs: 250, maxDelayMs: 30_000, factor: 2, ...options.reconnect };
    this.#heartbeatMs = options.heartbeatIntervalMs ?? 10_000;
    this.#connectTimeoutMs = options.connectTimeoutMs ?? 10_000;
    this.#timeSyncSamples = Math.max(0, options.timeSyncSamples ?? 5);
    this.#timeSyncIntervalMs = options.timeSyncIntervalMs ?? 30_000;
    this.#refreshMarginMs = options.tokenRefreshMarginMs ?? 60_000;
    this.#authRefresh = options.authRefresh ?? true;
    this.#sessions.set(this.sessionId, undefined);
    this.#detachHost = watchHost(() => {
      if (this.#connection === "reconnecting") this.connect();
    });
    if (options.autoConnect !== false) this.connect();
  }

  // --- what a client reads ----------------------------------------------------

  /** Where the connection is. */
  get connection(): ConnectionState {
    return this.#connection;
  }

  /** The sessions this watcher watches, the URL's first. */
  get sessions(): string[] {
    return [...this.#sessions.keys()];
  }

  /** The newest state of a watched session (default the URL's), or `undefined` before the first. */
  state(sessionId: string = this.sessionId): SyncState | undefined {
    return this.#sessions.get(sessionId.toLowerCase());
  }

  /** Every participant's clock now (by the server-clock estimate); `[]` before the first state. */
  clocks(sessionId: string = this.sessionId): Clock[] {
    const st = this.state(sessionId);
    return st === undefined ? [] : clocks(st, this.clock.now());
  }

  /** A participant's remaining time now (ms); `undefined` before the first state or for a stranger. */
  remainingMs(participantId: string, sessionId: string = this.sessionId): number | undefined {
    const st = this.state(sessionId);
    return st === undefined ? undefined : remainingMs(st, participantId, this.clock.now());
  }

  /** When the running clock runs out if nobody acts (server epoch ms), or `null`. */
  deadlineMs(sessionId: string = this.sessionId): number | null {
    const st = this.state(sessionId);
    return st === undefined ? null : deadlineMs(st);
  }

  /**
   * Resolves with the first state of `sessionId` (default the URL's) for
   * which `predicate` holds, the one held now included; rejects after
   * `timeoutMs` (default 10,000).
   */
  waitFor(predicate: (state: SyncState) => boolean = () => true, options: { sessionId?: string; timeoutMs?: number } = {}): Promise<SyncState> {
    const sid = (options.sessionId ?? this.sessionId).toLowerCase();
    const held = this.state(sid);
    if (held !== undefined && predicate(held)) return Promise.resolve(held);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        stop();
        reject(new Error(`no matching state of ${sid} within ${options.timeoutMs ?? 10_000} ms`));
      }, options.timeoutMs ?? 10_000);
      const stop = this.on("state", (st, id) => {
        if (id === sid && predicate(st)) {
          clearTimeout(timer);
          stop();
          resolve(st);
        }
      });
    });
  }

  // --- what a client does -----------------------------------------------------

  /**
   * Opens the socket (done by the constructor unless `autoConnect: false`).
   * While a reconnect waits out its backoff, this tries at once instead: the
   * watcher calls it itself when a browser comes back `online` or its page
   * becomes visible again.
   */
  connect(): void {
    if (this.#closed || this.#ws !== undefined) return;
    if (this.#reconnectTimer !== undefined) {
      this.#clear(this.#reconnectTimer);
      this.#reconnectTimer = undefined;
    }
    void this.#open();
  }

  /**
   * Offers a state the caller got elsewhere (a REST reply to its own
   * command), so the screen need not wait for the WebSocket's copy. It is
   * kept under the same rule as the socket's: never older than what is held.
   */
  offer(state: SyncState): void {
    this.#apply(state.session_id.toLowerCase(), state);
  }

  /** Also watch `sessionId` on this socket (`SUBSCRIBE`; again after every reconnect). */
  subscribe(sessionId: string): void {
    const sid = sessionId.toLowerCase();
    if (this.#sessions.has(sid)) return;
    this.#sessions.set(sid, undefined);
    this.#send({ type: "SUBSCRIBE", sessionId: sid });
  }

  /** Stop watching `sessionId` (not the URL's session: close the watcher for that). */
  unsubscribe(sessionId: string): void {
    const sid = sessionId.toLowerCase();
    if (sid === this.sessionId) throw new Error("the URL's session cannot be unsubscribed; close the watcher instead");
    if (this.#sessions.delete(sid)) this.#send({ type: "UNSUBSCRIBE", sessionId: sid });
  }

  /** Asks the gateway for the current state of every watched session (`RECONNECT`). */
  resync(): void {
    for (const sid of this.#sessions.keys()) this.#send({ type: "RECONNECT", sessionId: sid });
  }

  /**
   * Runs `samples` `TIME_SYNC` exchanges now and resolves with the estimate
   * (`undefined` if the socket closed first).
   */
  syncTime(samples = 5): Promise<TimeEstimate | undefined> {
    return this.#timeBurst(samples);
  }

  /** Closes the socket for good. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#teardown();
    this.#detachHost?.();
    const ws = this.#ws;
    this.#ws = undefined;
    if (ws !== undefined) {
      detach(ws);
      try {
        ws.close(1000, "client closed");
      } catch {
        // already closing
      }
    }
    this.#setConnection({ state: "closed" });
  }

  // --- the socket -------------------------------------------------------------

  async #open(): Promise<void> {
    let token: string | undefined;
    try {
      token = await resolveToken(this.#token, this.#needFreshToken ? "expired" : "initial");
    } catch (e) {
      this.emit("error", { code: "TOKEN_PROVIDER_FAILED", message: String(e) });
      this.#scheduleReconnect(undefined, "the token provider failed", true);
      return;
    }
    if (this.#closed || this.#ws !== undefined) return;
    this.#needFreshToken = false;
    let url = `${this.#url}?sessionId=${encodeURIComponent(this.sessionId)}`;
    if (token !== undefined) url += `&token=${encodeURIComponent(token)}`;
    let ws: WebSocketLike;
    try {
      ws = new this.#WebSocket(url);
    } catch (e) {
      this.emit("error", { code: "CONNECT_FAILED", message: String(e) });
      this.#scheduleReconnect(undefined, String(e), true);
      return;
    }
    this.#ws = ws;
    const connectTimer = this.#after(this.#connectTimeoutMs, () => {
      if (this.#ws === ws && this.#connection !== "open") this.#abandon(ws, 4000, "connect timeout");
    });
    ws.onopen = () => {
      this.#openedAt = this.clock.localNow();
      this.#lastHeard = this.#openedAt;
    };
    ws.onmessage = (ev) => {
      if (this.#ws !== ws) return;
      this.#lastHeard = this.clock.localNow();
      if (typeof ev.data !== "string") return;
      let msg: unknown;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        return;
      }
      if (isRecord(msg)) this.#onMessage(msg, token, connectTimer);
    };
    ws.onerror = () => {
      // A close event follows; it decides what happens next.
    };
    ws.onclose = (ev) => {
      if (this.#ws !== ws) return;
      this.#ws = undefined;
      detach(ws);
      this.#onClose(ev.code, ev.reason);
    };
  }

  #onMessage(msg: Record<string, unknown>, token: string | undefined, connectTimer: ReturnType<typeof setTimeout>): void {
    switch (msg["type"]) {
      case "CONNECTED":
        this.#clear(connectTimer);
        this.#onConnected(token);
        return;
      case "STATE_SYNC":
      case "STATE_UPDATE": {
        const sid = msg["sessionId"];
        const st = msg["state"];
        if (typeof sid === "string" && isRecord(st)) this.#apply(sid.toLowerCase(), st as unknown as SyncState);
        return;
      }
      case "SESSION_DELETED": {
        const sid = typeof msg["sessionId"] === "string" ? msg["sessionId"].toLowerCase() : this.sessionId;
        // The gateway unsubscribed the socket from it; a new incarnation needs
        // a new SUBSCRIBE (or a new watcher for the URL's session).
        if (sid === this.sessionId) this.#sessions.set(sid, undefined);
        else this.#sessions.delete(sid);
        this.emit("deleted", sid);
        return;
      }
      case "TIME_SYNC": {
        const { t0, t1, t2 } = msg;
        const inflight = this.#syncInFlight;
        if (inflight !== undefined && t0 === inflight.t0 && typeof t1 === "number" && typeof t2 === "number") {
          const estimate = this.clock.add(inflight.t0, t1, t2, this.clock.localNow());
          this.#syncInFlight = undefined;
          inflight.resolve();
          this.emit("time", estimate);
        }
        return;
      }
      case "AUTH_OK": {
        const exp = msg["exp"];
        if (typeof exp === "number") this.#scheduleRefresh(exp);
        return;
      }
      case "ERROR":
        this.emit("error", {
          code: typeof msg["code"] === "string" ? msg["code"] : "ERROR",
          message: typeof msg["message"] === "string" ? msg["message"] : "",
        });
        return;
      default:
        // PONG and anything newer: hearing from the gateway is all that counts.
        return;
    }
  }

  #onConnected(token: string | undefined): void {
    this.#setConnection({ state: "open" });
    // The gateway sends the URL's session's STATE_SYNC by itself; the others
    // are subscribed again, each answered with its STATE_SYNC.
    for (const sid of this.#sessions.keys()) {
      if (sid !== this.sessionId) this.#send({ type: "SUBSCRIBE", sessionId: sid });
    }
    this.#lastPing = this.#lastHeard;
    this.#heartbeat = setInterval(() => this.#beat(), this.#heartbeatMs);
    if (this.#timeSyncSamples > 0) void this.#timeBurst(this.#timeSyncSamples);
    if (this.#timeSyncIntervalMs > 0) {
      this.#timeSyncTimer = setInterval(() => void this.#timeBurst(1), this.#timeSyncIntervalMs);
    }
    const exp = token === undefined ? undefined : tokenExpiry(token);
    if (exp !== undefined) this.#scheduleRefresh(exp);
  }

  /** Keeps `state` unless it is older than what is held (docs/API.md §5). */
  #apply(sid: string, state: SyncState): void {
    if (!this.#sessions.has(sid)) return; // unsubscribed meanwhile
    const held = this.#sessions.get(sid);
    if (held !== undefined) {
      if (state.created_at === held.created_at) {
        if (state.version <= held.version) return;
      } else if (Date.parse(state.created_at) < Date.parse(held.created_at)) {
        return; // a message about an older incarnation of the id
      }
    }
    this.#sessions.set(sid, state);
    this.emit("state", state, sid);
  }

  #beat(): void {
    const ws = this.#ws;
    if (ws === undefined) return;
    // Nothing heard since the previous PING went out: the link is dead even
    // if the socket does not know it yet.
    if (this.#lastHeard < this.#lastPing) {
      this.#abandon(ws, 4000, "heartbeat timeout");
      return;
    }
    this.#lastPing = this.clock.localNow();
    this.#send({ type: "PING" });
  }

  async #timeBurst(samples: number): Promise<TimeEstimate | undefined> {
    // One exchange at a time: a reply is matched to its request by t0.
    while (this.#burst !== undefined) await this.#burst;
    const run = async (): Promise<TimeEstimate | undefined> => {
      for (let i = 0; i < samples; i++) {
        const ws = this.#ws;
        if (ws === undefined || this.#connection !== "open") break;
        const t0 = this.clock.localNow();
        const answered = await new Promise<boolean>((resolve) => {
          const timer = setTimeout(() => resolve(false), 5_000);
          this.#syncInFlight = {
            t0,
            resolve: () => {
              clearTimeout(timer);
              resolve(true);
            },
          };
          if (!this.#send({ type: "TIME_SYNC", t0 })) {
            clearTimeout(timer);
            resolve(false);
          }
        });
        this.#syncInFlight = undefined;
        if (!answered) break;
      }
      return this.clock.estimate;
    };
    this.#burst = run();
    try {
      return await this.#burst;
    } finally {
      this.#burst = undefined;
    }
  }

  #scheduleRefresh(expSeconds: number): void {
    if (!this.#authRefresh || !canRefresh(this.#token)) return;
    // Judged on the server's clock, which decides when the token expires.
    const left = expSeconds * 1000 - this.clock.now();
    const margin = Math.min(this.#refreshMarginMs, left / 2);
    const ws = this.#ws;
    this.#after(Math.max(0, left - margin), () => {
      if (this.#ws !== ws || ws === undefined) return;
      resolveToken(this.#token, "refresh").then(
        (fresh) => {
          if (fresh !== undefined && this.#ws === ws) this.#send({ type: "AUTH", token: fresh });
        },
        (e: unknown) => this.emit("error", { code: "TOKEN_PROVIDER_FAILED", message: String(e) }),
      );
    });
  }

  #onClose(code: number, reason: string): void {
    this.#teardown();
    if (this.#closed) return;
    const lived = this.#openedAt > 0 ? this.clock.localNow() - this.#openedAt : 0;
    this.#openedAt = 0;
    if (FINAL_CLOSE_CODES.has(code)) {
      this.#closed = true;
      this.#detachHost?.();
      if (code !== 1000) this.emit("error", { code: `CLOSED_${code}`, message: reason });
      this.#setConnection({ state: "closed", code, reason });
      return;
    }
    if (code === TOKEN_EXPIRED && !canRefresh(this.#token)) {
      // A fixed token cannot become fresh: reconnecting with it is refused.
      this.#closed = true;
      this.#detachHost?.();
      this.emit("error", { code: "TOKEN_EXPIRED", message: "the token expired and there is no provider to ask for a fresh one" });
      this.#setConnection({ state: "closed", code, reason });
      return;
    }
    if (lived >= STABLE_MS && !SLOW_DOWN_CODES.has(code)) this.#attempt = 0;
    if (code === TOKEN_EXPIRED) this.#needFreshToken = true;
    // 1012 and 4001: the next attempt goes out promptly (jittered); the rest
    // back off, 1013 and 4029 for at least a second.
    const prompt = code === SERVICE_RESTART || code === TOKEN_EXPIRED;
    this.#scheduleReconnect(code, reason, !prompt);
  }

  #scheduleReconnect(code: number | undefined, reason: string, backOff: boolean): void {
    if (this.#closed) return;
    const attempt = backOff ? this.#attempt++ : 0;
    let delay = backoffDelay(attempt, this.#reconnect);
    if (code !== undefined && SLOW_DOWN_CODES.has(code)) delay = Math.max(delay, 1_000);
    const info: ConnectionInfo = { state: "reconnecting", reason, retryInMs: delay, attempt: this.#attempt };
    if (code !== undefined) info.code = code;
    this.#setConnection(info);
    this.#reconnectTimer = this.#after(delay, () => {
      this.#reconnectTimer = undefined;
      this.connect();
    });
  }

  /** Gives up on a socket that is not known to be dead by the socket itself. */
  #abandon(ws: WebSocketLike, code: number, reason: string): void {
    if (this.#ws !== ws) return;
    this.#ws = undefined;
    detach(ws);
    try {
      ws.close(code, reason);
    } catch {
      // a socket still connecting may refuse; it is dropped either way
    }
    this.#onClose(code, reason);
  }

  #send(msg: ClientIn): boolean {
    const ws = this.#ws;
    if (ws === undefined || ws.readyState !== 1 || this.#connection !== "open") return false;
    try {
      ws.send(JSON.stringify(msg));
      return true;
    } catch {
      return false;
    }
  }

  #setConnection(info: ConnectionInfo): void {
    this.#connection = info.state;
    this.emit("connection", info);
  }

  #after(ms: number, f: () => void): ReturnType<typeof setTimeout> {
    const t = setTimeout(() => {
      this.#timers.delete(t);
      f();
    }, Math.min(MAX_TIMER_MS, Math.max(0, ms)));
    this.#timers.add(t);
    return t;
  }

  #clear(t: ReturnType<typeof setTimeout>): void {
    clearTimeout(t);
    this.#timers.delete(t);
  }

  #teardown(): void {
    for (const t of this.#timers) clearTimeout(t);
    this.#timers.clear();
    if (this.#heartbeat !== undefined) clearInterval(this.#heartbeat);
    if (this.#timeSyncTimer !== undefined) clearInterval(this.#timeSyncTimer);
    this.#heartbeat = undefined;
    this.#timeSyncTimer = undefined;
    this.#syncInFlight?.resolve();
    this.#syncInFlight = undefined;
  }
}

/**
 * Calls `retry` when a browser comes back online or its page becomes visible
 * (a phone waking up): the moments a waiting reconnect should not wait.
 * Elsewhere (Node, React Native without these events) it does nothing.
 * Returns the function that stops it.
 */
function watchHost(retry: () => void): () => void {
  const g = globalThis as {
    addEventListener?: (type: string, f: () => void) => void;
    removeEventListener?: (type: string, f: () => void) => void;
    document?: { visibilityState?: string };
  };
  if (typeof g.addEventListener !== "function" || typeof g.removeEventListener !== "function") return () => {};
  const onOnline = (): void => retry();
  const onVisible = (): void => {
    if (g.document?.visibilityState === "visible") retry();
  };
  g.addEventListener("online", onOnline);
  g.addEventListener("visibilitychange", onVisible);
  return () => {
    g.removeEventListener?.("online", onOnline);
    g.removeEventListener?.("visibilitychange", onVisible);
  };
}

function detach(ws: WebSocketLike): void {
  ws.onopen = null;
  ws.onmessage = null;
  ws.onclose = null;
  ws.onerror = null;
}

/** `http(s)://h` → `ws(s)://h/ws`; a URL that already ends in `/ws` is kept. */
export function toWsUrl(url: string): string {
  let u = url.replace(/\/+$/, "");
  if (u.startsWith("http://")) u = "ws://" + u.slice(7);
  else if (u.startsWith("https://")) u = "wss://" + u.slice(8);
  return u.endsWith("/ws") ? u : `${u}/ws`;
}
