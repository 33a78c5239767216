/**
 * The REST client: every route of docs/API.md §3 as a typed call. Paths,
 * methods and success statuses come from the generated {@link OPERATIONS}
 * (the server's OpenAPI document), so they cannot drift from the server.
 */
import {
  OPERATIONS,
  type CreateSessionBody,
  type DeviceResponse,
  type OperationId,
  type RegisterDeviceBody,
  type ProbeBody,
  type SwitchBody,
  type SwitchResponse,
  type SyncState,
  type TimeResponse,
} from "./generated/api.js";
import { backoffDelay, sleep, type BackoffOptions } from "./backoff.js";
import { SyncKairosError } from "./errors.js";
import { canRefresh, resolveToken, type TokenSource } from "./token.js";
import { ServerClock, type LocalClock, type TimeEstimate } from "./time.js";

/** How failed requests are retried. */
export interface RetryOptions extends BackoffOptions {
  /** Attempts in all, the first included (default 4; 1 = no retries). */
  maxAttempts?: number;
  /** A `Retry-After` longer than this (ms) is not waited for: the error is returned (default 30,000). */
  maxRetryAfterMs?: number;
}

/** Options of a {@link SyncKairos} client. */
export interface ClientOptions {
  /** The REST base URL, e.g. `https://timers.example.com` or `http://127.0.0.1:8080`. */
  baseUrl: string;
  /** The bearer token, or a provider of fresh ones. */
  token?: TokenSource;
  /** The `fetch` to use (default the global one). */
  fetch?: typeof fetch;
  /** Retries of 429, 503 and transport failures (see {@link RetryOptions}). */
  retry?: RetryOptions;
  /** Time limit of one attempt (ms, default 10,000). */
  timeoutMs?: number;
  /** The local clock (epoch ms; default `Date.now`), for {@link SyncKairos.syncTime}. */
  localNow?: LocalClock;
}

/** Options of one command. */
export interface CommandOptions {
  /**
   * The version the session must be at (`If-Match`); a mismatch is 409
   * `CONFLICT`. Pair it with retries: a command that already applied is then
   * refused instead of applied twice.
   */
  ifMatch?: number;
  /**
   * The `Idempotency-Key` (1 to 255 visible ASCII characters). Default: a
   * fresh random key per call, reused by that call's retries, so a retry after
   * a lost answer replays the first answer instead of applying twice.
   */
  idempotencyKey?: string;
  /** Aborts the call, its retries included. */
  signal?: AbortSignal;
}

/** Options of a read. */
export interface ReadOptions {
  /** Aborts the call, its retries included. */
  signal?: AbortSignal;
}

/** A switch: rotation by default, or the participant named. */
export interface SwitchOptions extends CommandOptions {
  /** Who plays next (default: the next in rotation). */
  nextParticipantId?: string;
  /**
   * This move's network lag as the client estimates it (ms, 0 to 60,000;
   * `lag_ms`): when the session compensates lag (`lag_compensation`), up to
   * the mover's quota of it is not charged.
   */
  lagMs?: number;
}

/** A successful answer with its HTTP details. */
export interface ApiResponse<T> {
  /** The body's `data` (or the bare body of `/v1/time` and the probes). */
  data: T;
  /** HTTP status. */
  status: number;
  /** Response headers. */
  headers: Headers;
  /** `Idempotent-Replayed: true`: this is the stored first answer of a retried command. */
  replayed: boolean;
  /** Attempts made, retries included. */
  attempts: number;
}

const RETRY_STATUSES = new Set([429, 503]);

/** A fresh random Idempotency-Key. */
export function newIdempotencyKey(): string {
  const c = (globalThis as { crypto?: { randomUUID?: () => string } }).crypto;
  if (c?.randomUUID !== undefined) return c.randomUUID();
  // React Native without a crypto polyfill: 128 random bits from Math.random
  // are enough to keep keys of one session apart.
  let s = "";
  for (let i = 0; i < 32; i++) s += Math.floor(Math.random() * 16).toString(16);
  return s;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** `Retry-After` in ms (delta seconds or an HTTP date), or `undefined`. */
export function retryAfterMs(value: string | null, now: number = Date.now()): number | undefined {
  if (value === null || value.trim() === "") return undefined;
  const s = Number(value);
  if (Number.isFinite(s)) return Math.max(0, s * 1000);
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

/**
 * A client of one SyncKairos deployment's REST API.
 *
 * ```ts
 * const sk = new SyncKairos({ baseUrl: "http://127.0.0.1:8080", token: () => myBackend.token() });
 * const state = await sk.createSession({ session_id, sync_mode: "per_participant", total_time_ms: 300_000, participants });
 * await sk.start(state.session_id);
 * ```
 */
export class SyncKairos {
  readonly baseUrl: string;
  readonly #token: TokenSource | undefined;
  readonly #fetch: typeof fetch;
  readonly #retry: Required<RetryOptions>;
  readonly #timeoutMs: number;
  readonly #localNow: LocalClock;
  #cachedToken: string | undefined;

  constructor(options: ClientOptions) {
    this.baseUrl = options.baseUrl.replace(/\/+$/, "");
    this.#token = options.token;
    const f = options.fetch ?? globalThis.fetch;
    if (typeof f !== "function") throw new TypeError("SyncKairos needs a fetch (none is global here)");
    this.#fetch = f.bind(globalThis);
    this.#retry = {
      maxAttempts: Math.max(1, options.retry?.maxAttempts ?? 4),
      initialDelayMs: options.retry?.initialDelayMs ?? 200,
      maxDelayMs: options.retry?.maxDelayMs ?? 5_000,
      factor: options.retry?.factor ?? 2,
      maxRetryAfterMs: options.retry?.maxRetryAfterMs ?? 30_000,
    };
    this.#timeoutMs = options.timeoutMs ?? 10_000;
    this.#localNow = options.localNow ?? Date.now;
  }

  // --- sessions -------------------------------------------------------------

  /** `POST /v1/sessions`: a new session, `pending` at version 1. */
  async createSession(body: CreateSessionBody, options: Omit<CommandOptions, "ifMatch"> = {}): Promise<SyncState> {
    return (await this.request<SyncState>("createSession", { body, command: options })).data;
  }

  /** `GET /v1/sessions/:id`. */
  async getSession(sessionId: string, options: ReadOptions = {}): Promise<SyncState> {
    return (await this.request<SyncState>("getSession", { sessionId, signal: options.signal })).data;
  }

  /** `DELETE /v1/sessions/:id` (also fine when it does not exist). */
  async deleteSession(sessionId: string, options: Omit<CommandOptions, "ifMatch"> = {}): Promise<void> {
    await this.request<null>("deleteSession", { sessionId, command: options });
  }

  /** `POST /v1/sessions/:id/start`: `pending` → `running`, the first participant active. */
  async start(sessionId: string, options: CommandOptions = {}): Promise<SyncState> {
    return (await this.request<SyncState>("startSession", { sessionId, command: options })).data;
  }

  /** `POST /v1/sessions/:id/switch`: ends the running turn and passes it on. */
  async switchTurn(sessionId: string, options: SwitchOptions = {}): Promise<SwitchResponse> {
    const fields: SwitchBody = {};
    if (options.nextParticipantId !== undefined) fields.next_participant_id = options.nextParticipantId;
    if (options.lagMs !== undefined) fields.lag_ms = options.lagMs;
    const body = Object.keys(fields).length === 0 ? undefined : fields;
    return (await this.request<SwitchResponse>("switchTurn", { sessionId, body, command: options })).data;
  }

  /** `POST /v1/sessions/:id/pause`: charges the running turn and stops the clock. */
  async pause(sessionId: string, options: CommandOptions = {}): Promise<SyncState> {
    return (await this.request<SyncState>("pauseSession", { sessionId, command: options })).data;
  }

  /** `POST /v1/sessions/:id/resume`. */
  async resume(sessionId: string, options: CommandOptions = {}): Promise<SyncState> {
    return (await this.request<SyncState>("resumeSession", { sessionId, command: options })).data;
  }

  /** `POST /v1/sessions/:id/complete`: ends the session, charging the running turn. */
  async complete(sessionId: string, options: CommandOptions = {}): Promise<SyncState> {
    return (await this.request<SyncState>("completeSession", { sessionId, command: options })).data;
  }

  /** `POST /v1/sessions/:id/cancel`: ends the session as cancelled. */
  async cancel(sessionId: string, options: CommandOptions = {}): Promise<SyncState> {
    return (await this.request<SyncState>("cancelSession", { sessionId, command: options })).data;
  }

  // --- push devices ------------------------------------------------------------

  /**
   * `POST /v1/sessions/:id/devices`: registers a participant's push token
   * (a participant's token may register only itself), or renews it. The
   * answer says until when (`expires_at`), never the token.
   */
  async registerDevice(sessionId: string, device: RegisterDeviceBody, options: ReadOptions = {}): Promise<DeviceResponse> {
    return (await this.request<DeviceResponse>("registerDevice", { sessionId, body: device, signal: options.signal })).data;
  }

  /** `DELETE /v1/sessions/:id/devices/:token` (also fine when it is not registered). */
  async removeDevice(sessionId: string, token: string, options: ReadOptions = {}): Promise<void> {
    await this.request<null>("removeDevice", { sessionId, pathToken: token, signal: options.signal });
  }

  // --- service ----------------------------------------------------------------

  /** `GET /v1/time`: the server's (Redis) time. */
  async time(options: ReadOptions = {}): Promise<TimeResponse> {
    return (await this.request<TimeResponse>("getTime", { signal: options.signal })).data;
  }

  /**
   * Estimates the server's clock with `samples` exchanges of `GET /v1/time`
   * (the same method as the WebSocket's `TIME_SYNC`; there a sample is
   * tighter, since the server stamps receive and send separately).
   */
  async syncTime(samples = 5, options: ReadOptions = {}): Promise<TimeEstimate> {
    const clock = new ServerClock({ localNow: this.#localNow });
    let last: TimeEstimate | undefined;
    for (let i = 0; i < Math.max(1, samples); i++) {
      const t0 = this.#localNow();
      const r = await this.request<TimeResponse>("getTime", { signal: options.signal, retry: false });
      const t3 = this.#localNow();
      last = clock.add(t0, r.data.timestamp_ms, r.data.timestamp_ms, t3);
    }
    return last as TimeEstimate;
  }

  /** `GET /health`. */
  async health(options: ReadOptions = {}): Promise<ProbeBody> {
    return (await this.request<ProbeBody>("getHealth", { signal: options.signal })).data;
  }

  /** `GET /ready`: a 503 answers `{status: "not_ready"}` rather than throwing. */
  async ready(options: ReadOptions = {}): Promise<ProbeBody> {
    return (await this.request<ProbeBody>("getReady", { signal: options.signal, retry: false, acceptStatuses: [503] })).data;
  }

  /** `GET /v1/openapi.json`: the OpenAPI document of the deployment. */
  async openapi(options: ReadOptions = {}): Promise<Record<string, unknown>> {
    return (await this.request<Record<string, unknown>>("getOpenApi", { signal: options.signal })).data;
  }

  // --- the one request path -------------------------------------------------

  /**
   * Calls one operation and returns its answer with the HTTP details. Every
   * method above goes through here: retries (429/503 honouring
   * `Retry-After`, and transport failures), the token (a provider is asked
   * again once after a 401), `If-Match` and the per-call `Idempotency-Key`.
   */
  async request<T>(
    operation: OperationId,
    init: {
      sessionId?: string;
      /** The `{token}` of a device path. */
      pathToken?: string;
      body?: unknown;
      command?: CommandOptions;
      signal?: AbortSignal | undefined;
      retry?: boolean;
      acceptStatuses?: number[];
    } = {},
  ): Promise<ApiResponse<T>> {
    const op = OPERATIONS[operation];
    let path: string = op.path;
    if (path.includes("{id}")) {
      if (init.sessionId === undefined) throw new TypeError(`${operation} needs a session id`);
      path = path.replace("{id}", encodeURIComponent(init.sessionId));
    }
    if (path.includes("{token}")) {
      if (init.pathToken === undefined) throw new TypeError(`${operation} needs a token`);
      path = path.replace("{token}", encodeURIComponent(init.pathToken));
    }
    const mutation = op.method !== "GET";
    const signal = init.command?.signal ?? init.signal;
    const headers: Record<string, string> = { accept: "application/json" };
    if (init.body !== undefined) headers["content-type"] = "application/json";
    if (init.command?.ifMatch !== undefined) headers["if-match"] = String(init.command.ifMatch);
    // One key per call, the same on every retry of it.
    if (mutation) headers["idempotency-key"] = init.command?.idempotencyKey ?? newIdempotencyKey();
    const body = init.body === undefined ? undefined : JSON.stringify(init.body);
    const maxAttempts = init.retry === false ? 1 : this.#retry.maxAttempts;
    const needsToken = op.auth;

    let refreshed = false;
    for (let attempt = 1; ; attempt++) {
      if (needsToken && this.#token !== undefined) {
        if (this.#cachedToken === undefined || typeof this.#token === "string") {
          this.#cachedToken = await resolveToken(this.#token, "initial");
        }
        headers["authorization"] = `Bearer ${this.#cachedToken ?? ""}`;
      }
      let response: Response;
      try {
        response = await this.#attempt(`${this.baseUrl}${path}`, op.method, headers, body, signal);
      } catch (e) {
        const err = e as SyncKairosError;
        if (err.code === "ABORTED" || attempt >= maxAttempts) throw withAttempts(err, attempt);
        await sleep(backoffDelay(attempt - 1, this.#retry), signal);
        continue;
      }
      const status = response.status;
      if (status === op.ok || (status >= 200 && status < 300) || init.acceptStatuses?.includes(status)) {
        return {
          data: (await readSuccess(response, operation, op.body)) as T,
          status,
          headers: response.headers,
          replayed: response.headers.get("idempotent-replayed") === "true",
          attempts: attempt,
        };
      }
      const error = await readError(response, attempt);
      if (status === 401 && needsToken && canRefresh(this.#token) && !refreshed) {
        refreshed = true;
        this.#cachedToken = await resolveToken(this.#token, "expired");
        continue; // a fresh token does not count as a retry
      }
      if (!RETRY_STATUSES.has(status) || attempt >= maxAttempts) throw error;
      const after = retryAfterMs(response.headers.get("retry-after"));
      if (after !== undefined && after > this.#retry.maxRetryAfterMs) throw error;
      // The server's Retry-After when it gives one (plus a little jitter, so
      // that refused clients do not all come back in the same millisecond),
      // else capped exponential backoff.
      const wait =
        after === undefined ? backoffDelay(attempt - 1, this.#retry) : after + Math.random() * this.#retry.initialDelayMs;
      await sleep(wait, signal);
    }
  }

  async #attempt(
    url: string,
    method: string,
    headers: Record<string, string>,
    body: string | undefined,
    signal: AbortSignal | undefined,
  ): Promise<Response> {
    const controller = new AbortController();
    const onAbort = (): void => controller.abort(signal?.reason);
    if (signal?.aborted) onAbort();
    signal?.addEventListener("abort", onAbort, { once: true });
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      controller.abort();
    }, this.#timeoutMs);
    try {
      const init: RequestInit = { method, headers, signal: controller.signal };
      if (body !== undefined) init.body = body;
      return await this.#fetch(url, init);
    } catch (e) {
      if (timedOut) {
        throw new SyncKairosError({ status: 0, code: "TIMEOUT", message: `no answer from ${method} ${url} within ${this.#timeoutMs} ms`, cause: e });
      }
      if (signal?.aborted) throw new SyncKairosError({ status: 0, code: "ABORTED", message: "aborted", cause: e });
      throw new SyncKairosError({ status: 0, code: "NETWORK_ERROR", message: `${method} ${url}: ${String(e)}`, cause: e });
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
    }
  }
}

function withAttempts(e: SyncKairosError, attempts: number): SyncKairosError {
  if (!(e instanceof SyncKairosError)) return e;
  return new SyncKairosError({
    status: e.status,
    code: e.code,
    message: e.message,
    details: e.details,
    retryAfterSeconds: e.retryAfterSeconds,
    attempts,
    cause: e.cause,
  });
}

async function readSuccess(response: Response, operation: OperationId, body: "data" | "bare" | "none"): Promise<unknown> {
  if (response.status === 204 || body === "none") return null;
  let json: unknown;
  try {
    json = await response.json();
  } catch (e) {
    throw new SyncKairosError({ status: response.status, code: "INVALID_RESPONSE", message: `${operation}: the answer is not JSON`, cause: e });
  }
  if (body === "bare") return json;
  if (!isRecord(json) || !("data" in json)) {
    throw new SyncKairosError({ status: response.status, code: "INVALID_RESPONSE", message: `${operation}: the answer has no "data"` });
  }
  return json["data"];
}

async function readError(response: Response, attempts: number): Promise<SyncKairosError> {
  let json: unknown;
  try {
    json = await response.json();
  } catch {
    json = undefined;
  }
  const error = isRecord(json) ? json["error"] : undefined;
  if (!isRecord(error) || typeof error["code"] !== "string") {
    return new SyncKairosError({
      status: response.status,
      code: "INVALID_RESPONSE",
      message: `HTTP ${response.status} without the documented error body`,
      attempts,
    });
  }
  const retry = error["retry_after_seconds"];
  return new SyncKairosError({
    status: response.status,
    code: error["code"] as SyncKairosError["code"],
    message: typeof error["message"] === "string" ? error["message"] : error["code"],
    details: error["details"],
    retryAfterSeconds: typeof retry === "number" ? retry : undefined,
    attempts,
  });
}
